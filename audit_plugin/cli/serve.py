"""``audit-plugin serve``: the read-only web view of a trail (needs ``audit-plugin[web]``).

Authentication is on by default, on loopback too: tokens from
``--token-file`` (``NAME ROLE TOKEN`` lines), or one auditor token from
``AUDIT_WEB_TOKEN``, or else a token generated now and printed once on
stderr. ``--proxy-user-header`` also believes a reverse proxy's user.
``--no-auth`` (loopback only) serves without. A token is never taken on
the command line (other users of the machine see command lines).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from audit_plugin.cli.options import DatabaseUrl
from audit_plugin.cli.runner import EXIT_USAGE, CliError, display_url, open_trail, run
from audit_plugin.cli.values import whole_number
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.trail import DEFAULT_DATABASE_URL

TOKEN_ENV = "AUDIT_WEB_TOKEN"
KEY_FILE_ENV = "AUDIT_KEY_FILE"


def serve(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port",
            metavar="PORT",
            parser=whole_number("--port", minimum=0, maximum=65535),
            help="Port to listen on, 0 to 65,535 (0: any free port).",
        ),
    ] = 8765,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="FILE",
            help="Tokens, one 'NAME ROLE TOKEN' line each (role reader or auditor), or one bare auditor token. "
            f"Without it: ${TOKEN_ENV}, else a token generated and printed once.",
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No authentication: every visitor is the auditor (loopback only).")
    ] = False,
    proxy_user_header: Annotated[
        str | None,
        typer.Option(
            "--proxy-user-header",
            metavar="HEADER",
            help="Believe this header (e.g. X-Forwarded-User) as the user a reverse proxy authenticated.",
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option("--trusted-proxy", metavar="ADDRESS", help="The proxy's address or network (repeatable)."),
    ] = None,
    proxy_auditor: Annotated[
        list[str] | None,
        typer.Option("--proxy-auditor", metavar="USER", help="A proxy user with the auditor role (repeatable)."),
    ] = None,
    no_record_reads: Annotated[
        bool, typer.Option("--no-record-reads", help="Do not record the pages read in the hash chain.")
    ] = False,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            metavar="FILE",
            envvar=KEY_FILE_ENV,
            show_envvar=True,
            help="Master key file (LocalKeyFileProvider): auditors see encrypted payloads decrypted.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", metavar="FILE", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", metavar="FILE", help="The certificate's key (PEM).")] = (
        None
    ),
) -> None:
    """Serve a read-only web view: search, conversations as sequence diagrams, messages, agents, live, integrity."""
    try:
        import uvicorn

        from audit_plugin.web import ProxyUsers, ViewerToken, check_bind, create_app, generate_token, read_token_file
    except ImportError as exc:
        raise CliError(
            f"serve needs the web extra ({exc.name} is missing): pip install 'audit-plugin[web]'", EXIT_USAGE
        ) from None
    if (tls_cert is None) != (tls_key is None):
        raise CliError("--tls-cert and --tls-key go together", EXIT_USAGE)
    generated = None
    options: dict[str, Any] = {"host": host, "no_auth": no_auth, "record_reads": not no_record_reads}
    try:
        check_bind(host, no_auth=no_auth)
        if proxy_user_header is not None:
            options["proxy"] = ProxyUsers(
                proxy_user_header, tuple(trusted_proxy or ("127.0.0.1", "::1")), frozenset(proxy_auditor or ())
            )
        elif trusted_proxy or proxy_auditor:
            raise CliError("--trusted-proxy and --proxy-auditor go with --proxy-user-header", EXIT_USAGE)
        if not no_auth:
            if token_file is not None:
                options["tokens"] = read_token_file(token_file)
            elif os.environ.get(TOKEN_ENV):
                options["tokens"] = [ViewerToken("token", "auditor", os.environ[TOKEN_ENV])]  # type: ignore[arg-type]
            elif proxy_user_header is None:
                generated = generate_token()
                options["tokens"] = [ViewerToken("generated", "auditor", generated)]  # type: ignore[arg-type]
        elif token_file is not None or proxy_user_header is not None:
            raise CliError("--no-auth cannot be combined with --token-file or --proxy-user-header", EXIT_USAGE)
        if key_file is not None:
            from audit_plugin.privacy.crypto import LocalKeyFileProvider

            options["key_provider"] = LocalKeyFileProvider(key_file, create=False)
    except InvalidFieldError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None

    async def check_store() -> None:
        async with open_trail(database_url):  # a missing or unreachable store is one clear line, before binding
            pass

    run(check_store())
    scheme = "https" if tls_cert is not None else "http"
    where = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}/"
    typer.echo(f"audit-plugin: serving {display_url(database_url)} read-only at {where} (Ctrl-C to stop)", err=True)
    if generated is not None:  # shown once, here only; never logged
        typer.echo(f"audit-plugin: sign in with this token (valid until the server stops): {generated}", err=True)
    elif no_auth:
        typer.echo("audit-plugin: no authentication (--no-auth): anyone on this machine is the auditor", err=True)
    uvicorn.run(
        create_app(database_url, **options),
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
