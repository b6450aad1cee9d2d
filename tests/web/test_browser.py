"""The web view in a real browser (Debian's chromium through Playwright), on every backend.

Each test serves the app with uvicorn on 127.0.0.1 and an ephemeral port
and fails on any browser console error (a Content-Security-Policy
violation is one) and on any dialog (an injected ``alert`` would be one).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit_plugin import Message, MessageAuditTrail, MessageType
from audit_plugin.web import create_app
from tests.cli_support import run_cli
from tests.web.sample import (
    HOSTILE_AGENT,
    HOSTILE_CONVERSATION,
    HOSTILE_ERROR,
    HOSTILE_PAYLOAD,
    Sample,
)
from tests.web.server import serving

TIMEOUT = 15_000
TOKEN = "browser-test-token-0123456789"


@asynccontextmanager
async def page_on(browser: Any, base: str, *, signed_in: bool = True) -> AsyncIterator[tuple[Any, list[str]]]:
    """A page that records console errors, page errors and dialogs as problems.

    ``signed_in``: every request carries the test's token as a bearer token.
    """
    headers = {"authorization": f"Bearer {TOKEN}"} if signed_in else {}
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, extra_http_headers=headers)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    async def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog: {dialog.message}")
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield page, problems
    finally:
        await context.close()


def web_app(database_url: str) -> Any:
    """The app factory for :func:`serving`: trace links point back at the view's own trace search."""
    return lambda base: create_app(
        database_url, trace_url_template=base + "/search?trace_id={trace_id}", live_interval=0.2, token=TOKEN
    )


async def test_search_filter_conversation_diagram_message_and_trace_link(
    database_url: str, sample: Sample, browser: Any
) -> None:
    async with serving(web_app(database_url)) as base, page_on(browser, base) as (page, problems):
        await page.goto(base + "/search")
        await page.fill("input[name=from_agent]", "planner")
        await page.click("form.filters button[type=submit]")
        await page.wait_for_url(re.compile(r"from_agent=planner"))
        senders = await page.locator("#results td.who a.agent:first-child").all_inner_texts()
        assert senders and set(senders) == {"planner"}
        assert len(senders) == 3

        await page.locator("#results td.cid a").first.click()
        await page.wait_for_selector("#diagram[data-rendered=true] svg")
        assert await page.locator("#diagram svg").count() == 1
        arrows = page.locator("#diagram svg .messageLine0, #diagram svg .messageLine1")
        assert await arrows.count() == len(sample.conversation_ids)
        labels = await page.locator("#diagram svg text.messageText").all_text_contents()
        assert labels[4] == "COMMAND · FAILED · 2 retries"
        assert await page.locator("table.records tbody tr").count() == len(sample.conversation_ids)
        assert await page.locator("ol.thread li").count() == len(sample.conversation_ids)

        failed_id = sample.conversation_ids[4]
        await page.locator(f"table.records tr[data-id='{failed_id}'] td.mid a").click()
        await page.wait_for_url(re.compile(r"/message\?id="))
        assert "report store is read-only" in await page.locator("dl.kv").inner_text()
        assert await page.locator("ol.timeline li").count() >= 2

        trace_id = sample.traced[failed_id]
        await page.click("a.trace-link")
        await page.wait_for_url(re.compile(f"trace_id={trace_id}"))
        assert await page.locator("#results tbody tr").count() == 1
        assert await page.locator(f"#results tr[data-id='{failed_id}']").count() == 1

        await page.goto(base + "/agent?name=planner")
        assert await page.locator("svg.chart rect.bar-sent").count() > 0
        await page.goto(base + "/integrity")
        await page.click("form.verify button")
        await page.wait_for_selector("#verify-result .result.ok")
    assert problems == []


async def test_the_search_box_takes_the_short_ids_the_tables_show(
    database_url: str, sample: Sample, browser: Any
) -> None:
    async def jump(page: Any, text: str) -> None:
        await page.fill("form.jump input[name=id]", text)
        await page.press("form.jump input[name=id]", "Enter")
        await page.wait_for_load_state("load")

    async with serving(web_app(database_url)) as base, page_on(browser, base) as (page, problems):
        await page.goto(base + "/")
        failed_id = sample.conversation_ids[4]
        shown = await page.locator(f"tr[data-id='{failed_id}'] td.mid a").first.inner_text()  # as the table shows it
        await jump(page, shown)
        await page.wait_for_selector("#diagram[data-rendered=true] svg")
        assert await page.locator("h1 .id").inner_text() == sample.conversation

        await jump(page, "conv-w")  # a unique start of a correlation id
        assert await page.locator("h1 .id").inner_text() == sample.conversation
        await page.wait_for_selector("#diagram[data-rendered=true] svg")

        await jump(page, "conv-")  # two conversations start so: both are offered
        assert "is ambiguous" in await page.locator("main").inner_text()
        assert await page.locator("ul.matches li a").count() == 2
        await page.click(f"ul.matches a:text-is('{sample.conversation}')")
        await page.wait_for_selector("#diagram[data-rendered=true] svg")
        assert await page.locator("h1 .id").inner_text() == sample.conversation

        await page.goto(base + f"/message?id={shown}")
        assert await page.locator("p.summary code.id").inner_text() == failed_id
    assert problems == []


async def test_a_retried_then_delivered_message_shows_its_payload_and_a_muted_retry_note(
    database_url: str, sample: Sample, browser: Any
) -> None:
    retried, failed = sample.conversation_ids[2], sample.conversation_ids[4]  # 1 retry, then delivered; failed for good
    async with serving(web_app(database_url)) as base, page_on(browser, base) as (page, problems):
        for path in ("/", f"/conversation?id={sample.conversation}"):
            await page.goto(base + path)
            row = page.locator(f"table.records tr[data-id='{retried}']").first
            assert await row.locator("td.detail code").inner_text() == '{"step": 2, "note": "planner to inventory"}'
            assert await row.locator(".error").count() == 0, path
            note = row.locator("td.detail .retry-note")
            assert await note.inner_text() == "1 retry, last error: timeout once"
            colour = await note.evaluate("element => getComputedStyle(element).color")
            error_colour = await page.locator(f"tr[data-id='{failed}'] td.detail .error").first.evaluate(
                "element => getComputedStyle(element).color"
            )
            assert colour != error_colour, path  # muted, not the red of a failure
            assert (
                "report store is read-only"
                in await page.locator(f"tr[data-id='{failed}'] td.detail").first.inner_text()
            )
        thread = page.locator("ol.thread li").nth(2)
        assert await thread.locator(".error").count() == 0 and await thread.locator(".retry-note").count() == 1
        await page.goto(base + f"/message?id={retried}")
        assert "Last retry error" in await page.locator("dl.kv").inner_text()
        assert await page.locator("dl.kv .error").count() == 0
    assert problems == []


async def test_hostile_store_text_is_shown_as_text_and_never_runs(
    database_url: str, sample: Sample, browser: Any
) -> None:
    hostile_id = sample.hostile_ids[0]
    async with serving(web_app(database_url)) as base, page_on(browser, base) as (page, problems):
        pages = [
            "/",
            "/search",
            f"/search?from_agent={_q(HOSTILE_AGENT)}",
            f"/conversation?id={_q(HOSTILE_CONVERSATION)}",
            f"/message?id={hostile_id}",
            f"/agent?name={_q(HOSTILE_AGENT)}",
            "/live",
        ]
        for path in pages:
            await page.goto(base + path)
            await page.wait_for_load_state("load")
            if path.startswith("/conversation"):
                await page.wait_for_selector("#diagram[data-rendered=true] svg")
                actors = await page.locator("#diagram svg text.actor").all_text_contents()
                assert HOSTILE_AGENT in actors
            text = await page.locator("main").inner_text()
            assert HOSTILE_AGENT in text, path
            assert await page.locator("main img, main script, main svg[onload]").count() == 0, path
        await page.goto(base + f"/message?id={hostile_id}")
        payload = await page.locator("pre.payload").inner_text()
        assert HOSTILE_PAYLOAD in payload
        assert HOSTILE_ERROR in await page.locator("dl.kv").inner_text()
    assert problems == []


async def test_live_view_shows_a_message_sent_after_the_page_loaded(
    database_url: str, sample: Sample, writer: MessageAuditTrail, browser: Any
) -> None:
    async with serving(web_app(database_url)) as base, page_on(browser, base) as (page, problems):
        await page.goto(base + "/live")
        await page.wait_for_selector("#live-status.on")
        message = Message("late-agent", "planner", MessageType.EVENT, {"late": True}, timestamp=datetime.now(UTC))
        await writer.log_message(message)
        row = page.locator(f"#live-rows tr[data-id='{message.message_id}']")
        await row.wait_for()
        assert "late-agent" in await row.inner_text()
        assert await page.locator("#live-rows tr").first.get_attribute("data-id") == message.message_id
    assert problems == []


async def test_conversation_file_is_self_contained_small_and_script_free(
    database_url: str, sample: Sample, browser: Any, tmp_path: Path
) -> None:
    for conversation, count in ((sample.conversation, len(sample.conversation_ids)), (HOSTILE_CONVERSATION, 2)):
        out = tmp_path / "conversation.html"
        result = run_cli("conversation", conversation, "--html", str(out), database_url=database_url)
        assert result.returncode == 0, result.stderr
        html = out.read_text(encoding="utf-8")
        assert len(html.encode()) < 64_000, len(html)  # kilobytes: the diagram is drawn, not a library to draw it
        assert "<script" not in html.lower() and not re.search(r"<link[^>]+href=", html)  # nothing runs or loads
        context = await browser.new_context(offline=True)
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m, problems=problems: problems.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda d, problems=problems: problems.append(d.message))
        try:
            await page.goto(out.as_uri())
            assert await page.locator("#diagram svg g.message").count() == count
            actors = await page.locator("#diagram svg text.actor").all_text_contents()
            if conversation == HOSTILE_CONVERSATION:
                assert HOSTILE_AGENT in actors  # shown as text
                assert await page.locator("main img, main script").count() == 0
            else:
                labels = await page.locator("#diagram svg text.message-label").all_text_contents()
                assert labels[4] == "5. COMMAND · FAILED · 2 retries"
                assert await page.locator("details.message-detail").count() == count
                await page.locator("#diagram svg g.message").nth(4).locator("text").click()
                assert page.url.endswith("#m-5")
                assert await page.locator("#m-5").count() == 1
        finally:
            await context.close()
        assert problems == []


async def test_signing_in_with_the_login_page_and_out_again(database_url: str, sample: Sample, browser: Any) -> None:
    async with serving(web_app(database_url)) as base, page_on(browser, base, signed_in=False) as (page, problems):
        response = await page.goto(base + "/search?from_agent=planner")
        assert response is not None and response.status == 401
        assert await page.locator("#login-form").count() == 1
        assert "planner" not in await page.locator("main").inner_text()  # no data before signing in
        await page.fill("#login-form input[name=token]", "not-the-token-0000000")
        await page.click("#login-form button[type=submit]")
        assert "not valid" in await page.locator("#login-error").inner_text()
        await page.fill("#login-form input[name=token]", TOKEN)
        await page.click("#login-form button[type=submit]")
        await page.wait_for_url(re.compile(r"/search\?from_agent=planner$"))
        assert TOKEN not in page.url
        senders = await page.locator("#results td.who a.agent:first-child").all_inner_texts()
        assert senders and set(senders) == {"planner"}
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read the session
        [cookie] = await page.context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
        await page.goto(base + "/live")  # the live stream authenticates with the cookie too
        await page.wait_for_selector("#live-status.on")
        await page.click("form.who button[type=submit]")
        await page.wait_for_url(re.compile(r"/login$"))
        response = await page.goto(base + "/search")
        assert response is not None and response.status == 401
    assert [p for p in problems if "401" not in p] == []  # the refused page loads are the only errors


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
