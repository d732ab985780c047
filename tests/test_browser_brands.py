"""The house brands as a person sees them (Debian's Chromium, driven by Playwright): pictures to pick, in view."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.app_process import running_app

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "brands.example"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from running_app(tmp_path_factory, "brands-app", ("--brands-dir", str(EXAMPLE)))


def test_a_person_picks_a_brand_by_its_picture_and_its_logo_comes_along(app):
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = chromium.new_page(viewport={"width": 390, "height": 844})  # a phone
        page.set_default_timeout(60_000)
        page.goto(app.url)
        pictures = page.locator("#brand-pictures")
        playwright_api.expect(page.locator("#brand-note")).to_contain_text("No brand")
        picture = pictures.locator("img").first
        playwright_api.expect(picture).to_be_visible()  # in view without opening a folded panel
        assert "/brand-logos/" in (picture.get_attribute("src") or "")
        # The logo really loaded (complete, with its pixels), not a broken image.
        page.wait_for_function("() => document.querySelector('#brand-pictures img')?.naturalWidth > 0")

        picture.click()

        playwright_api.expect(page.locator("#brand-note")).to_contain_text("Brand: Mascot Generator")
        page.get_by_text("More options", exact=True).click()
        page.get_by_text("Mix in your logo (optional)", exact=True).click()
        playwright_api.expect(page.locator("#logo-image img")).to_be_visible()
        playwright_api.expect(page.locator("#logo-colours")).to_contain_text("Its colours")
        page.get_by_role("button", name="No brand").click()
        playwright_api.expect(page.locator("#brand-note")).to_contain_text("No brand")
        chromium.close()
