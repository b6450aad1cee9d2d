"""The web view over HTTP (in-process ASGI): status codes, headers, the token and Host rules, bad input."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from audit_plugin import AuditQuery, Message, MessageAuditTrail, MessageType
from audit_plugin.exceptions import AuditError, InvalidFieldError
from audit_plugin.model.messages import short_id
from audit_plugin.web import check_bind, create_app
from audit_plugin.web.filters import FILTERS, parse_search
from audit_plugin.web.security import CONTENT_SECURITY_POLICY
from tests.cli_support import assert_one_line_error, run_cli
from tests.web.sample import HOSTILE_CONVERSATION, Sample
from tests.web.server import serving

TOKEN = "s3cret-token-for-tests"


@asynccontextmanager
async def client_for(database_url: str, **options: object) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the view; without a way to authenticate in ``options``, the view runs with no_auth."""
    if not {"token", "tokens", "proxy", "no_auth"} & options.keys():
        options["no_auth"] = True
    app = create_app(database_url, **options)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as client:
            yield client


class Scripts(HTMLParser):
    """Collects every <script> and every inline event-handler attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.handlers: list[str] = []
        self.inline_code: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [f"{tag} {name}" for name, _ in attrs if name.startswith("on")]
        self.handlers += [f"{tag} {name}" for name, value in attrs if value and value.lower().startswith("javascript:")]
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_code.append(data)


def page_urls(sample: Sample) -> list[str]:
    first = sample.conversation_ids[0]
    return [
        "/",
        "/search",
        "/search?status=failed&message_type=command&limit=10",
        f"/conversation?id={sample.conversation}",
        f"/conversation?id={first}",
        f"/message?id={first}",
        "/agent?name=planner&days=1",
        "/live",
        "/integrity",
        "/integrity?run=1",
    ]


async def test_every_page_answers_200_with_the_security_headers_and_no_inline_script(
    database_url: str, sample: Sample
) -> None:
    async with client_for(database_url) as client:
        for url in page_urls(sample):
            response = await client.get(url)
            assert response.status_code == 200, (url, response.text[:500])
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-type"].startswith("text/html")
            parser = Scripts()
            parser.feed(response.text)
            assert parser.scripts and all(script.get("src", "").startswith("/static/") for script in parser.scripts)
            assert parser.inline_code == [] and parser.handlers == [], url
        static = await client.get("/static/app.js")
        assert static.status_code == 200 and "content-security-policy" in static.headers
    policy = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert policy["script-src"] == "'self'" and policy["default-src"] == "'none'"


async def test_vendored_scripts_are_served_from_the_package(database_url: str, sample: Sample) -> None:
    async with client_for(database_url) as client:
        for name in ("htmx-4.0.1.min.js", "mermaid-12.3.0.min.js", "htmx-LICENSE.txt", "mermaid-LICENSE.txt"):
            assert (await client.get(f"/static/vendor/{name}")).status_code == 200, name


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start_time=yesterday", "start_time"),
        ("end_time=2026-13-01", "end_time"),
        ("status=LOST", "status"),
        ("message_type=SHOUT", "message_type"),
        ("trace_id=xyz", "trace_id"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("limit=100000", "limit"),
        ("cursor=nonsense", "cursor"),
        ("cursor=not-a-time|abc", "cursor"),
        ("start_time=2026-02-01&end_time=2026-01-01", "start_time"),
        ("from_agent=" + quote("a\x00b"), "from_agent"),
        ("correlation_id=" + "x" * 2000, "correlation_id"),
    ],
)
async def test_a_bad_filter_is_a_400_page_naming_the_field(tmp_path: Path, query: str, field: str) -> None:
    async with client_for(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}") as client:
        response = await client.get(f"/search?{query}")
    assert response.status_code == 400, response.text[:300]
    assert f'<strong class="field">{field}</strong>' in response.text
    detail = re.search(r'<p class="detail">(.*?)</p>', response.text, re.DOTALL)
    assert detail and field in detail.group(1)
    assert not re.search(r"sqlite|asyncpg|SELECT|Traceback", detail.group(1), re.IGNORECASE)


async def test_missing_and_unknown_ids(database_url: str, sample: Sample) -> None:
    async with client_for(database_url) as client:
        assert (await client.get("/message")).status_code == 400
        assert (await client.get("/agent?name=")).status_code == 400
        assert (await client.get("/agent?name=planner&days=0")).status_code == 400
        assert (await client.get("/message?id=nope")).status_code == 404
        assert (await client.get("/conversation?id=nope")).status_code == 404
        assert (await client.get("/no/such/page")).status_code == 404
        bad_checkpoint = await client.get("/integrity?checkpoint=" + quote("{not json"))
        assert bad_checkpoint.status_code == 400 and "checkpoint" in bad_checkpoint.text


async def test_short_ids_and_unique_starts_work_on_every_page(database_url: str, sample: Sample) -> None:
    failed = sample.conversation_ids[4]
    async with client_for(database_url) as client:
        for url in (
            f"/conversation?id={short_id(failed)}",
            f"/conversation?id={failed[:-4]}",
            "/conversation?id=conv-w",
            f"/message?id={short_id(failed)}",
            f"/message?id={failed[:-4]}",
        ):
            response = await client.get(url)
            assert response.status_code == 200, (url, response.text[:300])
            assert "conv-web" in response.text, url
        page = (await client.get(f"/message?id={short_id(failed)}")).text
        assert f'<code class="id">{failed}</code>' in page
        ambiguous = await client.get("/conversation?id=conv-")
        assert ambiguous.status_code == 300
        assert "is ambiguous" in ambiguous.text
        assert 'href="/conversation?id=conv-web"' in ambiguous.text
        assert f">{escape(HOSTILE_CONVERSATION)}</a>" in ambiguous.text  # listed as text
        assert "<script>alert" not in ambiguous.text
        not_a_message = await client.get("/message?id=conv-web")
        assert not_a_message.status_code == 404 and "no message with id" in not_a_message.text


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from([*FILTERS, "limit", "cursor"]),
    value=st.text(max_size=60) | st.from_regex(r"20\d\d-\d\d-\d\dT\d\d:\d\d(:\d\d)?(Z|[+-]\d\d:\d\d)?", fullmatch=True),
)
def test_any_parameter_value_becomes_a_typed_query_or_an_error_naming_it(name: str, value: str) -> None:
    try:
        search = parse_search({name: value})
    except AuditError as exc:
        assert isinstance(exc, ValueError | TypeError)
        assert str(getattr(exc, "field", "")).removeprefix("AuditQuery.") == name, (name, value, exc)
        return
    assert isinstance(search.query, AuditQuery)


async def test_keyset_pages_visit_every_record_once_in_order(database_url: str, sample: Sample) -> None:
    seen: list[str] = []
    async with client_for(database_url) as client:
        url = "/search?limit=4"
        pages = 0
        while url:
            response = await client.get(url)
            assert response.status_code == 200
            seen += re.findall(r'<tr data-id="([^"]+)"', response.text)
            found = re.search(r'<a class="next" href="([^"]+)"', response.text)
            url = found.group(1).replace("&amp;", "&") if found else ""
            pages += 1
    total = len(sample.conversation_ids) + len(sample.hostile_ids) + sample.noise
    assert len(seen) == len(set(seen)) == total
    assert pages == -(-total // 4)


def test_no_auth_is_for_loopback_only() -> None:
    check_bind("127.0.0.1", no_auth=True)
    check_bind("::1", no_auth=True)
    check_bind("0.0.0.0")
    with pytest.raises(InvalidFieldError) as refused:
        check_bind("0.0.0.0", no_auth=True)
    assert refused.value.field == "host"


def test_a_view_without_a_way_to_authenticate_is_refused(database_url: str) -> None:
    with pytest.raises(InvalidFieldError) as refused:
        create_app(database_url)
    assert refused.value.field == "auth"
    with pytest.raises(InvalidFieldError) as short:
        create_app(database_url, token="short")
    assert short.value.field == "token"
    with pytest.raises(InvalidFieldError):
        create_app(database_url, token=TOKEN, no_auth=True)


def test_serve_refuses_no_auth_off_loopback(tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--host", "0.0.0.0", "--port", "0", "--no-auth", database_url=f"sqlite:///{tmp_path / 'a.db'}"
    )
    assert_one_line_error(result, 2, "loopback only")


async def test_on_loopback_only_loopback_host_names_are_answered(database_url: str) -> None:
    async with client_for(database_url) as client:
        assert (await client.get("/", headers={"host": "localhost:8765"})).status_code == 200
        assert (await client.get("/", headers={"host": "evil.example:8765"})).status_code == 421


def test_importing_audit_plugin_does_not_import_the_web_stack() -> None:
    code = (
        "import sys, audit_plugin, audit_plugin.cli\n"
        "loaded = sorted(m for m in ('starlette', 'jinja2', 'uvicorn', 'audit_plugin.web') if m in sys.modules)\n"
        "print(loaded)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


async def test_a_store_failure_is_a_503_page_without_database_text(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "audit.db"
    async with client_for(f"sqlite+aiosqlite:///{path}") as client:
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE message_audit_log")
        response = await client.get("/search")
    assert response.status_code == 503
    assert "could not be read" in response.text
    assert not re.search(r"no such table|message_audit_log|sqlite3|OperationalError", response.text)


async def test_encrypted_and_erased_payloads_are_shown_as_such(database_url: str, tmp_path: Path) -> None:
    from audit_plugin import Message, MessageAuditTrail, MessageType
    from audit_plugin.privacy.crypto import SUBJECT_HEADER, LocalKeyFileProvider

    provider = LocalKeyFileProvider(tmp_path / "master.key")
    secret = "card 4111 1111 1111 1111"
    async with MessageAuditTrail(database_url, key_provider=provider) as sealed:
        kept = Message("alice-agent", "bank", MessageType.COMMAND, {"pay": secret}, headers={SUBJECT_HEADER: "alice"})
        gone = Message("bob-agent", "bank", MessageType.COMMAND, {"pay": secret}, headers={SUBJECT_HEADER: "bob"})
        await sealed.log_message(kept)
        await sealed.log_message(gone)
        assert await sealed.erase_subject("bob") == 1
    async with client_for(database_url) as client:  # the view has no key: it cannot open either
        encrypted = await client.get(f"/message?id={kept.message_id}")
        erased = await client.get(f"/message?id={gone.message_id}")
        listing = await client.get("/search?to_agent=bank")
    assert encrypted.status_code == erased.status_code == 200
    assert "<strong>encrypted</strong>" in encrypted.text and secret not in encrypted.text
    assert "<strong>erased</strong>" in erased.text and "<code>bob</code>" in erased.text
    assert "payload encrypted" in listing.text and "payload erased" in listing.text


async def test_an_embedded_view_streams_its_trails_commits_without_waiting_for_the_tick(
    writer: MessageAuditTrail,
) -> None:
    before, after = (Message("live-sender", "live-receiver", MessageType.EVENT) for _ in range(2))
    await writer.log_message(before)
    async with (
        serving(lambda base: create_app(writer, live_interval=600.0, token=TOKEN)) as base,  # the tick: ten minutes
        httpx.AsyncClient(base_url=base, timeout=60, headers={"authorization": f"Bearer {TOKEN}"}) as client,
        client.stream("GET", "/live/events") as events,
    ):
        lines = events.aiter_lines()

        async def next_record() -> str:
            async for line in lines:
                if line.startswith("data: "):
                    return line
            raise AssertionError("the stream ended")

        assert before.message_id in await asyncio.wait_for(next_record(), timeout=60)  # the first read: done
        await writer.log_message(after)
        assert after.message_id in await asyncio.wait_for(next_record(), timeout=60)
    assert not writer.closed  # the application's trail is the application's to close
