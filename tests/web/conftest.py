"""Fixtures for the web view: a seeded trail on every backend, the app, a real browser."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from audit_plugin import MessageAuditTrail
from tests.web.sample import Sample, seed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest_asyncio.fixture
async def writer(database_url: str) -> AsyncIterator[MessageAuditTrail]:
    """A trail that writes, as the agents' process would; the web view opens its own."""
    trail = MessageAuditTrail(database_url)
    await trail.initialize()
    try:
        yield trail
    finally:
        await trail.close()


@pytest_asyncio.fixture
async def sample(writer: MessageAuditTrail) -> Sample:
    return await seed(writer)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[object]:
    """Debian's chromium driven by Playwright (never Playwright's own download)."""
    if shutil.which(str(CHROMIUM)) is None:
        pytest.skip("chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()
