"""A real browser for the console tests: Debian's Chromium driven by Playwright, and the
console served by uvicorn in this process. Screenshots go to tests/artifacts/console/ (ignored)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from playwright.sync_api import Page

from tests.integration.wftools import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """An ASGI app on a free port (lifespan included); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the console did not start within 30 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/topology")
    assert page.url == f"{base}/login", page.url  # not signed in: the login form, nothing else
    page.fill("input[name=token]", token)
    page.click("form.login button")
    page.wait_for_url(f"{base}/topology")
