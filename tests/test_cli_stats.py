"""``audit-plugin stats`` and ``retention`` as subprocesses on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

from tests.cli_support import BASE, assert_one_line_error, run_cli, seed_sample


def test_stats_json_has_percentiles_and_volume(database_url: str) -> None:
    seed_sample(database_url)
    result = run_cli("stats", "--json", "--bucket", "day", database_url=database_url)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["total_messages"] == 6
    assert stats["messages_by_status"] == {"DELIVERED": 3, "EXPIRED": 1, "FAILED": 1, "PENDING": 1}
    assert abs(stats["error_rate_percent"] - 100 / 6) < 1e-9
    assert stats["delivery_seconds_percentiles"] == {"p50": 0.02, "p95": 0.03, "p99": 0.03}
    assert abs(stats["avg_delivery_seconds"] - 0.02) < 1e-9
    series = stats["volume"]["series"]
    assert stats["volume"]["bucket"] == "day"
    assert len(series) >= 100  # 100 days back to today, gaps filled with zeros
    assert sum(point["messages"] for point in series) == 6
    assert series[0]["messages"] == 1 and series[-1]["messages"] >= 1


def test_stats_window_table_and_csv(database_url: str) -> None:
    seed_sample(database_url)
    table = run_cli("stats", "--since", "3h", database_url=database_url)
    assert table.returncode == 0, table.stderr
    for text in ("messages", "p50 delivery latency", "10.0 ms", "20.0 ms", "By status", "Busiest agents"):
        assert text in table.stdout
    assert "Messages per hour (UTC)" in table.stdout and "█" in table.stdout

    rows = list(csv.reader(io.StringIO(run_cli("stats", "--csv", "--since", "3h", database_url=database_url).stdout)))
    assert rows[0] == ["section", "key", "value"]
    values = {(section, key): value for section, key, value in rows[1:]}
    assert values[("total", "messages")] == "4"
    assert values[("latency", "p99_seconds")] == "0.02"
    assert values[("status", "FAILED")] == "1"
    assert sum(int(value) for (section, _), value in values.items() if section == "volume_hour") == 4

    since = (BASE - timedelta(minutes=10)).isoformat()  # the sample's times are fixed when the suite starts
    minutes = json.loads(run_cli("stats", "--json", "--since", since, database_url=database_url).stdout)
    assert minutes["volume"]["bucket"] == "minute"  # auto: a short window gets fine bars

    assert_one_line_error(run_cli("stats", "--until", "200d", database_url=database_url), 1, "no messages")
    assert_one_line_error(run_cli("stats", "--bucket", "year", database_url=database_url), 2, "--bucket")
    assert_one_line_error(
        run_cli("stats", "--since", "1m", "--until", "2m", database_url=database_url), 2, "--since is after --until"
    )


def test_retention_dry_run_then_apply(database_url: str) -> None:
    seed_sample(database_url)
    preview = run_cli("retention", "--dry-run", "--policy", "days_30", database_url=database_url)
    assert preview.returncode == 0, preview.stderr
    assert "Policy DAYS_30: 1 record older than" in preview.stdout and "dry run, nothing deleted" in preview.stdout
    assert "NOTIFICATION" in preview.stdout  # the breakdown of what would go

    dry = json.loads(
        run_cli("retention", "--dry-run", "--json", "--policy", "DAYS_30", database_url=database_url).stdout
    )
    assert dry["records_past_retention"] == 1 and dry["deleted"] == 0 and dry["dry_run"] is True

    applied = run_cli("retention", "--policy", "DAYS_30", "--chunk-size", "1", "--csv", database_url=database_url)
    assert applied.returncode == 0, applied.stderr
    [row] = list(csv.DictReader(io.StringIO(applied.stdout)))
    assert row["records_past_retention"] == "1" and row["deleted"] == "1" and row["policy"] == "DAYS_30"

    remaining = json.loads(run_cli("query", "--json", database_url=database_url).stdout)
    assert "old" not in {record["message_id"] for record in remaining} and len(remaining) == 5

    again = run_cli("retention", "--policy", "DAYS_30", database_url=database_url)
    assert again.returncode == 0 and "deleted 0 records" in again.stdout
    forever = run_cli("retention", "--policy", "forever", database_url=database_url)
    assert forever.returncode == 0 and "keeps every record" in forever.stdout
    assert_one_line_error(run_cli("retention", "--policy", "DAYS_7", database_url=database_url), 2, "--policy")
