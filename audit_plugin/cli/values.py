"""Option values: parsed with errors that name the option, say what is allowed, and suggest the nearest choice.

Each function returns a parser for ``typer.Option(parser=...)``. A bad value
is a ``typer.BadParameter`` (exit 2), worded for the person at the terminal:
``Invalid value for '--status': 'delivred' is not a status; did you mean
'delivered'? (pending, sent, delivered, failed, expired)``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

import typer

E = TypeVar("E", bound=Enum)


def bad_value(option: str, reason: str) -> typer.BadParameter:
    """The error for a bad ``option`` value; Click prefixes ``Invalid value for 'OPTION':``."""
    return typer.BadParameter(reason, param_hint=f"'{option}'")


def suggestion(value: str, choices: list[str]) -> str:
    """``; did you mean 'delivered'?`` when one choice is close to ``value``, else nothing."""
    close = difflib.get_close_matches(value.lower(), [choice.lower() for choice in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def choice(option: str, what: str, members: Mapping[str, Any]) -> Callable[[Any], Any]:
    """A parser accepting any of ``members``' names, in any case."""
    by_name = {name.lower(): member for name, member in members.items()}
    names = list(members)

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value  # the option's default, already a member
        member = by_name.get(value.strip().lower())
        if member is None:
            raise bad_value(option, f"{value!r} is not {what}{suggestion(value, names)} ({', '.join(names)})")
        return member

    return parse


def enum_choice(option: str, what: str, enum_type: type[E], *, by: str = "value") -> Callable[[Any], E]:
    """A parser for ``enum_type``'s members, spelled as their values (lower case) or names (``by="name"``)."""
    members = {(member.name if by == "name" else str(member.value).lower()): member for member in enum_type}
    return choice(option, what, members)


def choices_text(enum_type: type[Enum]) -> str:
    """``pending, sent, delivered, failed or expired``: the choices for help texts."""
    names = [str(member.value).lower() for member in enum_type]
    return ", ".join(names[:-1]) + " or " + names[-1]


def whole_number(option: str, *, minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    """A parser for an integer option within ``[minimum, maximum]``."""

    def parse(value: Any) -> int:
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value).strip().replace("_", ""))
            except ValueError:
                raise bad_value(option, f"{value!r} is not a whole number") from None
        if minimum is not None and number < minimum:
            raise bad_value(option, f"must be at least {minimum:,}, not {number:,}")
        if maximum is not None and number > maximum:
            raise bad_value(option, f"must be at most {maximum:,}, not {number:,}")
        return number

    return parse


def seconds(option: str, *, minimum: float, maximum: float | None = None) -> Callable[[Any], float]:
    """A parser for a duration in seconds (a decimal number) within ``[minimum, maximum]``."""

    def parse(value: Any) -> float:
        if isinstance(value, int | float):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                raise bad_value(option, f"{value!r} is not a number of seconds") from None
        if not math.isfinite(number) or number < minimum:
            raise bad_value(option, f"must be a number of seconds, at least {minimum:g}, not {value}")
        if maximum is not None and number > maximum:
            raise bad_value(option, f"must be at most {maximum:g} seconds, not {value}")
        return number

    return parse


def shard_list(option: str, *, limit: int) -> Callable[[Any], tuple[int, ...] | None]:
    """A parser for shard numbers: ``3``, ``0,2``, ``0-3``, ``0-1,6`` (each below ``limit``), sorted, once each."""

    def parse(value: Any) -> tuple[int, ...] | None:
        if value is None or isinstance(value, tuple):
            return value  # type: ignore[no-any-return]
        text = str(value).strip()
        shards: set[int] = set()
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            if not _digits(low) or (dash and not _digits(high)) or len(low) > 6 or len(high) > 6:
                raise bad_value(option, f"{text!r:.40} is not a list of shard numbers (e.g. 0,2 or 0-3)")
            first, last = int(low), int(high) if dash else int(low)
            if first > last:
                raise bad_value(option, f"{part.strip()!r} is an empty range (write the lower number first)")
            if last >= limit:
                raise bad_value(option, f"shard {last} is out of range (0 to {limit - 1})")
            shards.update(range(first, last + 1))
        return tuple(sorted(shards))

    return parse


def _digits(text: str) -> bool:
    """Only the ASCII digits 0-9 (``str.isdigit`` also takes ``¹`` and ``٣``, which ``int`` may refuse)."""
    return text.isascii() and text.isdigit()
