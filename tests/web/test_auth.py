"""Who may read the viewer: tokens, the login page and its session cookie, a proxy's user, roles, recorded reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_plugin import MessageAuditTrail
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.model.access import Role
from audit_plugin.web import ProxyUsers, ViewerToken, create_app, read_token_file
from audit_plugin.web.auth import SESSION_COOKIE
from audit_plugin.web.login import safe_next
from tests.web.sample import Sample

AUDITOR = ViewerToken("audrey", Role.AUDITOR, "auditor-token-0123456789")
READER = ViewerToken("rita", Role.READER, "reader-token-0123456789")
BASE = "http://127.0.0.1:8765"


@asynccontextmanager
async def view(
    database_url: str, *, peer: str = "127.0.0.1", base: str = BASE, **options: object
) -> AsyncIterator[httpx.AsyncClient]:
    options.setdefault("tokens", [AUDITOR, READER])
    app = create_app(database_url, **options)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            yield client


def bearer(token: ViewerToken) -> dict[str, str]:
    return {"authorization": f"Bearer {token.secret}"}


async def test_every_page_needs_authentication_on_loopback_too(database_url: str, sample: Sample) -> None:
    async with view(database_url) as client:
        for path in ("/", "/search", f"/conversation?id={sample.conversation}", "/live", "/integrity", "/live/events"):
            refused = await client.get(path)
            assert refused.status_code == 401, path
            assert sample.conversation not in refused.text and "planner" not in refused.text  # no data
            assert "content-security-policy" in refused.headers and refused.headers["x-content-type-options"]
        page = await client.get("/search", headers={"accept": "text/html"})
        assert page.status_code == 401 and 'action="/login"' in page.text  # a browser gets the login form
        assert (await client.get("/static/app.css")).status_code == 200  # no data in the static files


async def test_bearer_tokens_are_checked(database_url: str, sample: Sample) -> None:
    async with view(database_url) as client:
        assert (await client.get("/search", headers=bearer(AUDITOR))).status_code == 200
        wrong = {"authorization": "Bearer not-the-token-at-all-0000"}
        assert (await client.get("/search", headers=wrong)).status_code == 401
        malformed = await client.get("/search", headers={"authorization": "Basic YTpi"})
        assert malformed.status_code == 400 and "Bearer" in malformed.text


async def test_a_token_in_the_url_is_never_accepted(database_url: str, sample: Sample) -> None:
    async with view(database_url) as client:
        response = await client.get(f"/search?token={AUDITOR.secret}")
        assert response.status_code == 400 and "never accepted in the URL" in response.text
        assert AUDITOR.secret not in response.text
        with_header = await client.get(f"/search?token={AUDITOR.secret}", headers=bearer(AUDITOR))
        assert with_header.status_code == 400


async def test_the_login_page_opens_a_session_with_a_strict_cookie(database_url: str, sample: Sample) -> None:
    async with view(database_url) as client:
        form = await client.get("/login?next=/search")
        assert form.status_code == 200 and 'name="token"' in form.text and "<script" not in form.text
        failed = await client.post("/login", data={"token": "wrong-wrong-wrong-wrong", "next": "/search"})
        assert failed.status_code == 401 and "not valid" in failed.text
        signed_in = await client.post("/login", data={"token": READER.secret, "next": "/search?status=failed"})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/search?status=failed"
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and READER.secret not in cookie
        lowered = cookie.lower()
        assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
        assert "secure" not in lowered  # plain HTTP: a Secure cookie would never come back
        page = await client.get("/search")
        assert page.status_code == 200 and "rita (reader)" in page.text
        assert (await client.post("/logout")).status_code == 303
        assert (await client.get("/search")).status_code == 401  # the session is gone server-side


async def test_over_tls_the_cookie_is_secure(database_url: str) -> None:
    async with view(database_url, base="https://127.0.0.1:8765") as client:
        signed_in = await client.post("/login", data={"token": AUDITOR.secret})
        assert "secure" in signed_in.headers["set-cookie"].lower()
        assert "strict-transport-security" in signed_in.headers


async def test_a_forged_cross_site_login_or_a_foreign_next_is_refused(database_url: str) -> None:
    async with view(database_url) as client:
        forged = await client.post("/login", data={"token": AUDITOR.secret}, headers={"origin": "https://evil.example"})
        assert forged.status_code == 403 and SESSION_COOKIE not in forged.headers.get("set-cookie", "")
        cross_site = {"sec-fetch-site": "cross-site", "origin": BASE}
        assert (await client.post("/login", data={"token": AUDITOR.secret}, headers=cross_site)).status_code == 403
        same = {"sec-fetch-site": "same-origin", "origin": "null"}  # what a browser sends under no-referrer
        assert (await client.post("/login", data={"token": AUDITOR.secret}, headers=same)).status_code == 303
        away = await client.post("/login", data={"token": AUDITOR.secret, "next": "//evil.example/x"})
        assert away.headers["location"] == "/"
    for target in ("https://evil.example/", "//evil.example", "/\\evil", "", "javascript:alert(1)"):
        assert safe_next(target) == "/"
    assert safe_next("/message?id=1") == "/message?id=1"


async def test_a_proxy_user_is_believed_only_from_the_proxy(database_url: str, sample: Sample) -> None:
    proxy = ProxyUsers("X-Forwarded-User", ("10.0.0.5",), frozenset({"boss"}))
    async with view(database_url, peer="10.0.0.5", proxy=proxy, tokens=[]) as client:
        page = await client.get("/search", headers={"x-forwarded-user": "alice@example.com"})
        assert page.status_code == 200 and "alice@example.com (reader)" in page.text
        boss = await client.get("/search", headers={"x-forwarded-user": "boss"})
        assert "boss (auditor)" in boss.text
        assert (await client.get("/search")).status_code == 401
        bad = await client.get("/search", headers={"x-forwarded-user": "a\tb"})
        assert bad.status_code == 400
    async with view(database_url, peer="10.0.0.99", proxy=proxy, tokens=[]) as outsider:
        assert (await outsider.get("/search", headers={"x-forwarded-user": "boss"})).status_code == 401


async def test_the_reader_role_sees_no_payload_values_and_runs_no_proofs(database_url: str, sample: Sample) -> None:
    message_id = sample.conversation_ids[0]
    async with view(database_url) as client:
        as_reader = await client.get(f"/message?id={message_id}", headers=bearer(READER))
        as_auditor = await client.get(f"/message?id={message_id}", headers=bearer(AUDITOR))
        assert as_reader.status_code == as_auditor.status_code == 200
        assert 'id="masked-note"' in as_reader.text and "[REDACTED]" in as_reader.text
        assert 'id="masked-note"' not in as_auditor.text
        refused = await client.get("/integrity?run=1", headers=bearer(READER))
        assert refused.status_code == 403 and "may not verify" in refused.text
        assert (await client.get("/integrity?run=1", headers=bearer(AUDITOR))).status_code == 200
        proof = await client.get(f"/proof?id={message_id}", headers=bearer(READER))
        assert proof.status_code == 403 and "may not prove" in proof.text  # a bundle holds the payload as stored


async def test_each_page_read_is_an_access_entry(database_url: str, sample: Sample) -> None:
    async with view(database_url) as client:
        await client.get("/search?from_agent=planner", headers=bearer(READER))
        await client.get(f"/message?id={sample.conversation_ids[1]}", headers=bearer(AUDITOR))
        await client.get("/search?status=bogus", headers=bearer(READER))  # a 400: nothing was read
    async with MessageAuditTrail(database_url) as trail:
        entries = await trail.access_log()
        assert (await trail.verify()).ok
    message, search = entries
    assert (search.actor, search.role, search.channel, search.action) == ("rita", "reader", "viewer", "search")
    assert search.filter == {"page": "/search", "from_agent": "planner"} and search.records == 3
    assert message.actor == "audrey" and sample.conversation_ids[1] in message.ids


async def test_reads_are_not_recorded_when_told_not_to(database_url: str, sample: Sample) -> None:
    async with view(database_url, record_reads=False) as client:
        assert (await client.get("/search", headers=bearer(AUDITOR))).status_code == 200
    async with MessageAuditTrail(database_url) as trail:
        assert await trail.access_log() == []


def test_token_files(tmp_path: Path) -> None:
    good = tmp_path / "tokens"
    good.write_text(f"# who role token\naudrey auditor {AUDITOR.secret}\n\nrita reader {READER.secret}\n")
    assert [(t.name, t.role) for t in read_token_file(good)] == [("audrey", Role.AUDITOR), ("rita", Role.READER)]
    bare = tmp_path / "bare"
    bare.write_text(AUDITOR.secret + "\n")
    assert [(t.name, t.role) for t in read_token_file(bare)] == [("token", Role.AUDITOR)]
    cases = {
        "audrey boss longenough-0123456789\n": "line 1",
        "audrey auditor short\n": "line 1",
        "audrey auditor\n": "NAME ROLE TOKEN",
        f"a auditor {AUDITOR.secret}\nb reader {AUDITOR.secret}\n": "same secret",
        f"a auditor {AUDITOR.secret}\na reader {READER.secret}\n": "same name",
        "# nothing\n": "no token",
    }
    for content, expected in cases.items():
        path = tmp_path / "bad"
        path.write_text(content)
        with pytest.raises(InvalidFieldError) as refused:
            read_token_file(path)
        assert expected in str(refused.value) and AUDITOR.secret not in str(refused.value)
    with pytest.raises(InvalidFieldError):
        read_token_file(tmp_path / "missing")
    assert AUDITOR.secret not in repr(AUDITOR)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    authorization=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    cookie=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60),
)
async def test_no_header_or_cookie_gets_in_without_the_token(
    database_url: str, authorization: str, cookie: str
) -> None:
    async with view(database_url) as client:
        headers = {"authorization": authorization, "cookie": f"{SESSION_COOKIE}={cookie}"}
        response = await client.get("/search", headers=headers)
    assert response.status_code in (400, 401)
    assert "Traceback" not in response.text
