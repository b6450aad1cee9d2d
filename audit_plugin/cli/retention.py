"""``audit-plugin retention``: delete records past the retention policy, or preview what would go."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from audit_plugin.cli.options import AsCsv, AsJson, DatabaseUrl
from audit_plugin.cli.output import (
    OutputFormat,
    console,
    count_text,
    output_format,
    print_csv,
    print_json,
    progress_bar,
)
from audit_plugin.cli.runner import open_trail, run
from audit_plugin.cli.stats import gather_report, statistics_renderables
from audit_plugin.cli.values import enum_choice, whole_number
from audit_plugin.model.records import RetentionPolicy
from audit_plugin.model.validation import INT64_MAX
from audit_plugin.sinks.documents import iso_time
from audit_plugin.trail import DEFAULT_DATABASE_URL

DEFAULT_CHUNK = 10_000


def retention(
    policy: Annotated[
        RetentionPolicy,
        typer.Option(
            "--policy",
            metavar="POLICY",
            parser=enum_choice("--policy", "a retention policy", RetentionPolicy, by="name"),
            help="How long records are kept: DAYS_30, DAYS_90, DAYS_365 or FOREVER (any case).",
            show_default="DAYS_90",
        ),
    ] = RetentionPolicy.DAYS_90,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")] = False,
    chunk_size: Annotated[
        int,
        typer.Option(
            "--chunk-size",
            metavar="N",
            parser=whole_number("--chunk-size", minimum=1, maximum=INT64_MAX),
            help="Rows deleted per transaction.",
        ),
    ] = DEFAULT_CHUNK,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
) -> None:
    """Apply a retention policy: delete records older than it allows (--dry-run to preview).

    Deletes in chunks of --chunk-size rows, one short transaction each, with a
    progress bar; stopping it midway leaves the rest for the next run.
    """
    fmt = output_format(as_json, as_csv)

    async def apply() -> None:
        async with open_trail(database_url, retention_policy=policy) as trail:
            cutoff = trail.retention_cutoff()
            due = await trail.count_past_retention()
            deleted = 0
            report = None
            if dry_run and due and cutoff is not None and fmt is OutputFormat.TABLE:
                # Timestamps have microsecond precision: "<= cutoff - 1 µs" is "< cutoff".
                report = await gather_report(trail, None, cutoff - timedelta(microseconds=1), with_volume=False)
            if not dry_run and due:
                with progress_bar("deleting") as progress:
                    task = progress.add_task("delete", total=due)
                    async for chunk in trail.apply_retention_policy_in_chunks(chunk_size):
                        deleted += chunk
                        progress.update(task, completed=deleted)
        outcome = {
            "policy": policy.name,
            "cutoff": iso_time(cutoff),
            "dry_run": dry_run,
            "records_past_retention": due,
            "deleted": deleted,
        }
        if fmt is OutputFormat.JSON:
            print_json(outcome)
        elif fmt is OutputFormat.CSV:
            print_csv(list(outcome), [list(outcome.values())])
        elif cutoff is None:
            console.print("Policy FOREVER keeps every record: nothing to delete.")
        elif dry_run:
            console.print(
                f"Policy {policy.name}: {count_text(due, 'record')} older than {iso_time(cutoff)} would be deleted"
                + (" (dry run, nothing deleted)." if due else "."),
                soft_wrap=True,
            )
            for renderable in statistics_renderables(report) if report else []:
                console.print(renderable)
        else:
            console.print(
                f"Policy {policy.name}: deleted {count_text(deleted, 'record')} older than {iso_time(cutoff)}.",
                soft_wrap=True,
            )

    run(apply())
