"""Debian's Chromium driven by Playwright for the browser tests: the launch, the marks, a person's first steps."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every browser test module's `pytestmark`.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"),
]
DESKTOP = {"width": 1280, "height": 1000}


def launched_chromium() -> Iterator[Any]:
    """One Chromium for a module's tests (each opens its own contexts: its own cookies), closed after them."""
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def open_page(chromium: Any, app: Any, context: Any = None) -> tuple[Any, Any]:
    """A new browser (context) at desktop size unless one is given, on the app's page once the model is there."""
    context = context or chromium.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app.url)
    playwright_api.expect(page.locator("#model-banner")).to_contain_text("Preview mode", timeout=120_000)
    return context, page


def generate_in_page(page: Any, prompt: str, done: str = "Done") -> None:
    """Type an idea and press Generate, as a person would, then wait for the status to say it is done."""
    page.get_by_label("Your idea").fill(prompt)
    page.get_by_role("button", name="Generate").click()
    playwright_api.expect(page.locator("#generation-status")).to_contain_text(done, timeout=120_000)


def open_advanced(page: Any) -> None:
    """More options, then Advanced inside it, as a person would."""
    page.get_by_text("More options", exact=True).click()
    page.get_by_text("Advanced", exact=True).click()


def make_it_fast(page: Any) -> None:
    """Faster still than the page's quick settings: small and few steps, set through Advanced like a person would."""
    playwright_api.expect(page.locator("#speed-note")).to_contain_text("Quick settings")  # applied: not overwritten
    open_advanced(page)
    for label, value in (("Width", "256"), ("Height", "256"), ("Steps", "2"), ("Idea steps", "2")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
