"""``audit-plugin serve``: the read-only web view of a trail (needs ``audit-plugin[web]``)."""

from __future__ import annotations

from typing import Annotated

import typer

from audit_plugin.cli.options import DatabaseUrl
from audit_plugin.cli.runner import EXIT_USAGE, CliError, display_url, open_trail, run
from audit_plugin.cli.values import whole_number
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.trail import DEFAULT_DATABASE_URL

TOKEN_ENV = "AUDIT_WEB_TOKEN"


def serve(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    host: Annotated[
        str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on; off loopback needs --token.")
    ] = ("127.0.0.1"),
    port: Annotated[
        int,
        typer.Option(
            "--port",
            metavar="PORT",
            parser=whole_number("--port", minimum=0, maximum=65535),
            help="Port to listen on, 0 to 65,535 (0: any free port).",
        ),
    ] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            envvar=TOKEN_ENV,
            show_envvar=True,
            help="Secret every visitor must present (open the page once with ?token=...). Required off loopback.",
        ),
    ] = None,
) -> None:
    """Serve a read-only web view: search, conversations as sequence diagrams, messages, agents, live, integrity."""
    try:
        import uvicorn

        from audit_plugin.web import check_bind, create_app
    except ImportError as exc:
        raise CliError(
            f"serve needs the web extra ({exc.name} is missing): pip install 'audit-plugin[web]'", EXIT_USAGE
        ) from None
    try:
        check_bind(host, token)
    except InvalidFieldError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None

    async def check_store() -> None:
        async with open_trail(database_url):  # a missing or unreachable store is one clear line, before binding
            pass

    run(check_store())
    where = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    typer.echo(f"audit-plugin: serving {display_url(database_url)} read-only at {where} (Ctrl-C to stop)", err=True)
    uvicorn.run(create_app(database_url, host=host, token=token), host=host, port=port, log_level="warning")
