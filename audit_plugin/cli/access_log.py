"""``audit-plugin access-log``: who read the trail, when, what they asked for, what they saw.

Lists the chain's access entries (see :mod:`audit_plugin.model.access`),
newest first. Reading the access log needs the auditor role.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from audit_plugin.cli.integrity import ChainId
from audit_plugin.cli.options import AsCsv, AsJson, CliReader, DatabaseUrl, reading_as
from audit_plugin.cli.output import OutputFormat, console, output_format, print_csv, print_json, short_time
from audit_plugin.cli.runner import EXIT_EMPTY, CliError, open_trail, run
from audit_plugin.cli.values import bad_value, whole_number
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.integrity.ledger import DEFAULT_CHAIN_ID
from audit_plugin.model.access import AccessEntry, check_actor_name
from audit_plugin.sinks.documents import iso_time
from audit_plugin.trail import DEFAULT_DATABASE_URL

FIELDS = (
    "sequence",
    "at",
    "actor",
    "role",
    "channel",
    "action",
    "filter",
    "records",
    "ids",
    "decrypted",
    "decrypted_ids",
    "entry_hash",
)
"""The fields of an access-log document, in CSV column order."""


def entry_document(entry: AccessEntry) -> dict[str, Any]:
    return {
        "sequence": entry.sequence,
        "at": iso_time(entry.at),
        "actor": entry.actor,
        "role": entry.role,
        "channel": entry.channel,
        "action": entry.action,
        "filter": entry.filter,
        "records": entry.records,
        "ids": entry.ids,
        "decrypted": entry.decrypted,
        "decrypted_ids": entry.decrypted_ids,
        "entry_hash": entry.entry_hash,
    }


def entries_table(entries: list[AccessEntry]) -> Table:
    table = Table(title="Access log, newest first", title_justify="left")
    for column, justify in (("#", "right"), ("time (UTC)", "left"), ("who", "left"), ("role", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("via")
    table.add_column("action")
    table.add_column("records", justify="right")
    table.add_column("decrypted", justify="right")
    table.add_column("filter", overflow="fold")
    for entry in entries:
        table.add_row(
            str(entry.sequence),
            short_time(entry.at),
            entry.actor,
            entry.role,
            entry.channel,
            entry.action,
            f"{entry.records:,}",
            f"{entry.decrypted:,}",
            json.dumps(entry.filter, ensure_ascii=False, separators=(",", ":")),
        )
    return table


@reading_as("access-log")
def access_log(
    reader: CliReader,
    actor: Annotated[str | None, typer.Option("--actor", metavar="NAME", help="Only this reader's entries.")] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            metavar="N",
            parser=whole_number("--limit", minimum=1, maximum=10_000),
            help="Most entries to show (1 to 10,000).",
        ),
    ] = 50,
    before: Annotated[
        int | None,
        typer.Option(
            "--before", metavar="SEQUENCE", parser=whole_number("--before", minimum=1), help="Entries before this one."
        ),
    ] = None,
    chain_id: ChainId = DEFAULT_CHAIN_ID,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
) -> None:
    """Who read the trail: each recorded read (viewer pages, --record-access commands, API reads with actor=)."""
    fmt = output_format(as_json, as_csv)
    reader.require(reader.role.may_read_access_log, "read the access log")
    if actor is not None:
        try:
            check_actor_name(actor, "--actor")
        except InvalidFieldError as exc:
            raise bad_value("--actor", exc.reason) from None

    async def show() -> None:
        async with open_trail(database_url, chain_id=chain_id, reader=reader) as trail:
            entries = await trail.access_log(limit=limit, before=before, by=actor, actor=reader.reading)
        documents = [entry_document(entry) for entry in entries]
        if fmt is OutputFormat.JSON:
            print_json(documents)
        elif fmt is OutputFormat.CSV:
            rows = [[_cell(document[name]) for name in FIELDS] for document in documents]
            print_csv(list(FIELDS), rows)
        elif entries:
            console.print(entries_table(entries))
        if not entries:
            raise CliError("no access entries" + (f" by {actor!r}" if actor else ""), EXIT_EMPTY)

    run(show())


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) if isinstance(value, dict | list) else value
