"""Option-value parsers, counts in words, and the trimmed output stream: pure functions, no process."""

from __future__ import annotations

import io

import pytest
import typer

from audit_plugin import MessageStatus, RetentionPolicy
from audit_plugin.cli.output import TrimmedLines, count_text
from audit_plugin.cli.values import enum_choice, seconds, whole_number


def reason(error: typer.BadParameter) -> str:
    return error.format_message()


@pytest.mark.parametrize("spelled", ["failed", "FAILED", "Failed", " failed "])
def test_a_choice_in_any_case(spelled: str) -> None:
    assert enum_choice("--status", "a status", MessageStatus)(spelled) is MessageStatus.FAILED


def test_a_choice_by_name() -> None:
    parse = enum_choice("--policy", "a retention policy", RetentionPolicy, by="name")
    assert parse("days_365") is RetentionPolicy.DAYS_365
    assert parse(RetentionPolicy.FOREVER) is RetentionPolicy.FOREVER  # the default passes through


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [("delivred", "'delivered'"), ("FIALED", "'failed'"), ("pendng", "'pending'"), ("expird", "'expired'")],
)
def test_a_typo_gets_the_nearest_choice(typed: str, suggested: str) -> None:
    with pytest.raises(typer.BadParameter) as caught:
        enum_choice("--status", "a status", MessageStatus)(typed)
    assert f"did you mean {suggested}?" in reason(caught.value)
    assert "'--status'" in reason(caught.value)


def test_a_value_far_from_every_choice_lists_them_without_a_guess() -> None:
    with pytest.raises(typer.BadParameter) as caught:
        enum_choice("--status", "a status", MessageStatus)("zzzz")
    assert "did you mean" not in reason(caught.value)
    assert "(pending, sent, delivered, failed, expired)" in reason(caught.value)


@pytest.mark.parametrize(("typed", "number"), [("1", 1), ("100000", 100_000), ("1_000", 1000), (" 7 ", 7), (5, 5)])
def test_whole_numbers_in_range(typed: str | int, number: int) -> None:
    assert whole_number("--limit", minimum=1, maximum=100_000)(typed) == number


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("0", "must be at least 1, not 0"),
        ("-3", "must be at least 1, not -3"),
        ("100001", "must be at most 100,000, not 100,001"),
        ("ten", "'ten' is not a whole number"),
        ("1.5", "'1.5' is not a whole number"),
        ("", "'' is not a whole number"),
    ],
)
def test_whole_numbers_out_of_range_say_so(typed: str, says: str) -> None:
    with pytest.raises(typer.BadParameter) as caught:
        whole_number("--limit", minimum=1, maximum=100_000)(typed)
    assert says in reason(caught.value)


@pytest.mark.parametrize("typed", ["0", "0.01", "nan", "inf", "-1", "soon"])
def test_seconds_below_the_minimum_or_not_numbers(typed: str) -> None:
    with pytest.raises(typer.BadParameter) as caught:
        seconds("--interval", minimum=0.05)(typed)
    assert "'--interval'" in reason(caught.value)
    assert seconds("--interval", minimum=0.05)("0.25") == 0.25


@pytest.mark.parametrize(
    ("count", "noun", "text"),
    [
        (0, "record", "0 records"),
        (1, "record", "1 record"),
        (2, "record", "2 records"),
        (1, "retry", "1 retry"),
        (3, "retry", "3 retries"),
        (1, "day", "1 day"),
        (7, "day", "7 days"),
        (12_345, "message", "12,345 messages"),
        (2, "data key", "2 data keys"),
    ],
)
def test_counts_in_words(count: int, noun: str, text: str) -> None:
    assert count_text(count, noun) == text


def test_trimmed_lines_drop_trailing_spaces_across_writes() -> None:
    sink = io.StringIO()
    stream = TrimmedLines(sink)
    stream.write("a table   \nrow ")
    stream.write("continues   \n\n  indented stays\n")
    stream.write("no newline yet  ")
    assert sink.getvalue() == "a table\nrow continues\n\n  indented stays\n"
    stream.flush()
    assert sink.getvalue().endswith("no newline yet  ")
    assert not stream.isatty()
