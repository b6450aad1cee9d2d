"""Out-of-range option values are bad input (exit 2, one line naming the option), never "a bug" (exit 70)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_support import assert_one_line_error, run_cli, seed_sample

OUT_OF_RANGE = [
    (("query", "--since", "99999999999999d"), "'--since'"),
    (("query", "--since", "1" + "0" * 400 + "s"), "'--since'"),
    (("query", "--until", "9999-12-31T23:59:59-05:00"), "'--until'"),
    (("query", "--since", "0001-01-01T00:00:00+05:00"), "'--since'"),
    (("query", "--offset", "9223372036854775808"), "'--offset'"),
    (("query", "--limit", "100001"), "'--limit'"),
    (("agent", "alice", "--days", "100000000"), "'--days'"),
    (("agent", "alice", "--days", "10000000000"), "'--days'"),
    (("tail", "--lines", "100001"), "'--lines'"),
    (("tail", "--interval", "nan"), "'--interval'"),
    (("tail", "--lookback", "1e300"), "'--lookback'"),
    (("retention", "--chunk-size", "9223372036854775808"), "'--chunk-size'"),
]


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One seeded SQLite file for the whole module: these commands never write."""
    url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('cli-edge')) / 'audit.db'}"
    seed_sample(url)
    return url


@pytest.mark.parametrize(("args", "option"), OUT_OF_RANGE, ids=[" ".join(a)[:40] for a, _ in OUT_OF_RANGE])
def test_out_of_range_option_is_bad_input_naming_the_option(
    sqlite_url: str, args: tuple[str, ...], option: str
) -> None:
    assert_one_line_error(run_cli(*args, database_url=sqlite_url), 2, option)


def test_the_same_answers_on_every_backend(database_url: str) -> None:
    """The values that reached PostgreSQL as a driver error (exit 3) are bad input there too."""
    seed_sample(database_url)
    for args, option in (OUT_OF_RANGE[0], OUT_OF_RANGE[2], OUT_OF_RANGE[4], OUT_OF_RANGE[6]):
        assert_one_line_error(run_cli(*args, database_url=database_url), 2, option)
    result = run_cli("query", "--offset", "9223372036854775807", database_url=database_url)
    assert result.returncode == 1, result.stderr  # the largest offset is an empty page: nothing matched
