"""``audit-plugin stats``: totals, failures, latency percentiles and message volume over time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from audit_plugin.cli.options import SINCE_AFTER_UNTIL, AsCsv, AsJson, DatabaseUrl, Since, Until, parse_time
from audit_plugin.cli.output import (
    OutputFormat,
    console,
    key_value_table,
    output_format,
    print_csv,
    print_json,
    seconds_text,
    status_text,
)
from audit_plugin.cli.runner import EXIT_EMPTY, EXIT_USAGE, CliError, open_trail, run
from audit_plugin.cli.values import choices_text, enum_choice
from audit_plugin.model.messages import MessageStatus
from audit_plugin.model.records import AuditStatistics
from audit_plugin.sinks.documents import iso_time
from audit_plugin.trail import DEFAULT_DATABASE_URL, MessageAuditTrail

PERCENTILES = (50, 95, 99)
MAX_BARS = 48
"""Most buckets drawn as bars; longer series are drawn as the most recent ones plus a sparkline."""
SPARK_WIDTH = 72
SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 40

_UNIT_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


class Bucket(StrEnum):
    AUTO = "auto"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


@dataclass(slots=True)
class Report:
    """Everything ``stats`` prints, gathered from the trail."""

    statistics: AuditStatistics
    percentiles: dict[float, float | None]
    unit: str = "hour"
    volume: list[tuple[datetime, int]] = field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None


def unit_for_span(span: timedelta) -> str:
    """The bucket that gives a readable chart for a time span."""
    if span <= timedelta(hours=2):
        return "minute"
    if span <= timedelta(days=3):
        return "hour"
    return "day"


async def gather_report(
    trail: MessageAuditTrail,
    start: datetime | None,
    end: datetime | None,
    bucket: Bucket = Bucket.AUTO,
    *,
    with_volume: bool = True,
) -> Report:
    report = Report(
        statistics=await trail.get_statistics(start, end),
        percentiles=await trail.get_delivery_percentiles(start, end, PERCENTILES),
        start=start,
        end=end,
    )
    if not with_volume or not report.statistics.total_messages:
        return report
    series = None
    if bucket is not Bucket.AUTO:
        unit = bucket.value
    elif start is not None:
        unit = unit_for_span((end or datetime.now(UTC)) - start)
    else:
        unit, series = await unit_for_data(trail, end)
    if series is None:
        series = await trail.get_message_volume(start, end, unit)  # type: ignore[arg-type]
    report.unit = unit
    report.volume = fill_gaps(series, unit)
    return report


async def unit_for_data(
    trail: MessageAuditTrail, end: datetime | None
) -> tuple[str, Sequence[tuple[datetime, int]] | None]:
    """With no window given, the bucket that suits how far the data spreads (looked at coarse to fine).

    Returns the unit and, when it was fetched on the way, the series in that unit (``None`` otherwise).
    """
    units = list(_UNIT_STEP)  # finest first
    unit = units[-1]
    while unit != units[0]:
        series = await trail.get_message_volume(None, end, unit)  # type: ignore[arg-type]
        wanted = unit_for_span(series[-1][0] - series[0][0] + _UNIT_STEP[unit])
        if units.index(wanted) >= units.index(unit):
            return unit, series
        unit = units[units.index(unit) - 1]
    return unit, None


def fill_gaps(volume: Sequence[tuple[datetime, int]], unit: str) -> list[tuple[datetime, int]]:
    """The series with a zero for every empty bucket between the first and the last."""
    if not volume:
        return []
    counts = dict(volume)
    step = _UNIT_STEP[unit]
    filled: list[tuple[datetime, int]] = []
    moment = volume[0][0]
    while moment <= volume[-1][0]:
        filled.append((moment, counts.get(moment, 0)))
        moment += step
    return filled


def sparkline(counts: Sequence[int], width: int = SPARK_WIDTH) -> str:
    """One character per bucket (buckets summed in groups when there are more than ``width``)."""
    if len(counts) > width:
        group = -(-len(counts) // width)
        counts = [sum(counts[i : i + group]) for i in range(0, len(counts), group)]
    top = max(counts, default=0)
    if not top:
        return SPARKS[0] * len(counts)
    return "".join(SPARKS[min(len(SPARKS) - 1, count * len(SPARKS) // (top + 1))] for count in counts)


def bucket_label(moment: datetime, unit: str) -> str:
    return moment.strftime({"minute": "%Y-%m-%d %H:%M", "hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d"}[unit])


def volume_chart(report: Report) -> RenderableType:
    """Bars for the most recent buckets; a sparkline of the whole series above them when it is longer."""
    series = report.volume
    shown = series[-MAX_BARS:]
    top = max((count for _, count in shown), default=0) or 1
    table = Table(show_header=False, box=None)
    table.add_column("bucket", style="dim", no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("bar", no_wrap=True)
    for moment, count in shown:
        bar = "█" * round(BAR_WIDTH * count / top) if count else ""
        table.add_row(bucket_label(moment, report.unit), f"{count:,}", Text(bar, style="cyan"))
    parts: list[RenderableType] = [Text(f"Messages per {report.unit} (UTC)", style="italic")]
    if len(series) > len(shown):
        first, last = bucket_label(series[0][0], report.unit), bucket_label(series[-1][0], report.unit)
        parts.append(Text(f" {first} {sparkline([c for _, c in series])} {last}", style="cyan"))
        parts.append(Text(f" the last {len(shown)} of {len(series)} {report.unit}s:", style="dim"))
    parts.append(table)
    return Group(*parts)


def percentile_label(p: float) -> str:
    return f"p{p:g}"


def statistics_renderables(report: Report) -> list[RenderableType]:
    """The statistics as tables (shared by ``stats`` and ``demo``)."""
    stats = report.statistics
    delivered = stats.messages_by_status.get(MessageStatus.DELIVERED.value, 0)
    overview: list[tuple[str, Any]] = [
        ("messages", f"{stats.total_messages:,}"),
        ("error rate (FAILED)", f"{stats.error_rate:.1f} %"),
        ("mean delivery latency", seconds_text(stats.avg_delivery_time if delivered else None)),
    ]
    overview += [
        (f"{percentile_label(p)} delivery latency", seconds_text(value)) for p, value in report.percentiles.items()
    ]
    by_status = Table(title="By status", title_justify="left")
    by_status.add_column("status")
    by_status.add_column("messages", justify="right")
    for status, count in stats.messages_by_status.items():
        by_status.add_row(status_text(status), f"{count:,}")
    agents = Table(title="Busiest agents", title_justify="left")
    for header in ("sender", "sent", "receiver", "received"):
        agents.add_column(header, justify="right" if header in ("sent", "received") else "left")
    for index in range(max(len(stats.top_senders), len(stats.top_receivers))):
        cells: list[str] = []
        for ranking in (stats.top_senders, stats.top_receivers):
            agent, count = ranking[index] if index < len(ranking) else ("", None)
            cells += [agent, "" if count is None else f"{count:,}"]
        agents.add_row(*cells)
    by_type = Table(title="By type", title_justify="left")
    by_type.add_column("type")
    by_type.add_column("messages", justify="right")
    for message_type, count in stats.messages_by_type.items():
        by_type.add_row(message_type, f"{count:,}")
    side_by_side = Table.grid(padding=(0, 4))
    side_by_side.add_row(by_status, by_type)
    if report.start is None and report.end is None:
        window = "all records"
    else:
        window = f"{iso_time(report.start) or 'first record'} → {iso_time(report.end) or 'now'}"
    renderables: list[RenderableType] = [
        Text(f"Statistics: {window}", style="italic"),
        key_value_table(overview),
        side_by_side,
        agents,
    ]
    if report.volume:
        renderables.append(volume_chart(report))
    return renderables


def report_document(report: Report) -> dict[str, Any]:
    stats = report.statistics
    return {
        "start_time": iso_time(report.start),
        "end_time": iso_time(report.end),
        "total_messages": stats.total_messages,
        "messages_by_status": stats.messages_by_status,
        "messages_by_type": stats.messages_by_type,
        "top_senders": [{"agent": agent, "messages": n} for agent, n in stats.top_senders],
        "top_receivers": [{"agent": agent, "messages": n} for agent, n in stats.top_receivers],
        "avg_delivery_seconds": stats.avg_delivery_time,
        "delivery_seconds_percentiles": {percentile_label(p): v for p, v in report.percentiles.items()},
        "error_rate_percent": stats.error_rate,
        "volume": {
            "bucket": report.unit,
            "series": [{"start": iso_time(moment), "messages": count} for moment, count in report.volume],
        },
    }


def report_rows(report: Report) -> list[tuple[str, str, Any]]:
    """The report as ``(section, key, value)`` rows: one CSV shape for every number."""
    document = report_document(report)
    rows: list[tuple[str, str, Any]] = [
        ("total", "messages", document["total_messages"]),
        ("total", "error_rate_percent", document["error_rate_percent"]),
        ("latency", "avg_seconds", document["avg_delivery_seconds"]),
    ]
    rows += [("latency", f"{key}_seconds", value) for key, value in document["delivery_seconds_percentiles"].items()]
    rows += [("status", key, value) for key, value in document["messages_by_status"].items()]
    rows += [("type", key, value) for key, value in document["messages_by_type"].items()]
    rows += [("sender", item["agent"], item["messages"]) for item in document["top_senders"]]
    rows += [("receiver", item["agent"], item["messages"]) for item in document["top_receivers"]]
    rows += [(f"volume_{report.unit}", item["start"], item["messages"]) for item in document["volume"]["series"]]
    return rows


def print_report(report: Report, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.JSON:
        print_json(report_document(report))
    elif fmt is OutputFormat.CSV:
        print_csv(("section", "key", "value"), report_rows(report))
    else:
        for renderable in statistics_renderables(report):
            console.print(renderable)


def stats(
    since: Since = None,
    until: Until = None,
    bucket: Annotated[
        Bucket,
        typer.Option(
            "--bucket",
            metavar="WIDTH",
            parser=enum_choice("--bucket", "a bar width", Bucket),
            help=f"Chart bar width: {choices_text(Bucket)}.",
        ),
    ] = Bucket.AUTO,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
) -> None:
    """Statistics, delivery-latency percentiles and message volume over time."""
    fmt = output_format(as_json, as_csv)
    start, end = parse_time("--since", since), parse_time("--until", until)
    if start is not None and end is not None and start > end:
        raise CliError(SINCE_AFTER_UNTIL, EXIT_USAGE)

    async def show() -> None:
        async with open_trail(database_url) as trail:
            report = await gather_report(trail, start, end, bucket)
        if not report.statistics.total_messages:
            raise CliError("no messages in this time window", EXIT_EMPTY)
        print_report(report, fmt)

    run(show())
