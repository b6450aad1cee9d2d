"""``audit-plugin query``: one page of records matching every filter given."""

from __future__ import annotations

from dataclasses import replace

from audit_plugin.cli.options import (
    AsCsv,
    AsJson,
    CliReader,
    DatabaseUrl,
    Limit,
    Offset,
    query_filters,
    reading_as,
    resolved_filters,
)
from audit_plugin.cli.output import (
    OutputFormat,
    console,
    output_format,
    print_record_documents,
    records_table,
    trace_linker,
)
from audit_plugin.cli.runner import EXIT_EMPTY, CliError, open_trail, run
from audit_plugin.model.records import AuditQuery
from audit_plugin.sinks.documents import record_document
from audit_plugin.trail import DEFAULT_DATABASE_URL


@query_filters
@reading_as("query")
def query(
    filters: AuditQuery,
    reader: CliReader,
    limit: Limit = 100,
    offset: Offset = 0,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: AsJson = False,
    as_csv: AsCsv = False,
) -> None:
    """Records matching every filter given, newest first (page with --limit/--offset)."""
    fmt = output_format(as_json, as_csv)

    async def show() -> None:
        async with open_trail(database_url, reader=reader) as trail:
            audit_query = replace(await resolved_filters(trail, filters, reader.reading), limit=limit, offset=offset)
            records = await trail.query_messages(audit_query, actor=reader.reading)
            total = await trail.count_messages(audit_query) if records and fmt is OutputFormat.TABLE else 0
            link = trace_linker(trail)
        if not records:
            if fmt is not OutputFormat.TABLE:  # an empty array (or a header row) for scripts: `| jq` still parses
                print_record_documents([], fmt)
            raise CliError("no records match", EXIT_EMPTY)
        if fmt is OutputFormat.TABLE:
            shown = f"{offset + 1}-{offset + len(records)} of {total:,}"
            console.print(records_table(records, link, title=f"Audit records {shown}, newest first"))
        else:
            print_record_documents([record_document(record, link(record)) for record in records], fmt)

    run(show())
