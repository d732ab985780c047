"""The first five minutes, in Chromium at a desktop's and a phone's size: open the page, type an idea, press Enter,
watch it being made and see it without scrolling, find it in My mascots, open its share link in another browser.
Screenshots go to $MASCOT_SCREENSHOTS (default: the test's tmp folder), to be looked at."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.support.app_process import running_app
from tests.support.browser import BROWSER_MARKS, playwright_api

pytestmark = BROWSER_MARKS
SIZES = {"desktop": (1366, 900), "phone": (390, 844)}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from running_app(tmp_path_factory, "first-five-minutes-app")


def screenshots_folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MASCOT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def inside_viewport(page, locator) -> bool:
    box = locator.bounding_box()
    viewport = page.viewport_size
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= viewport["width"]
        and box["y"] + box["height"] <= viewport["height"]
    )


@pytest.mark.parametrize("device", list(SIZES))
def test_the_first_five_minutes(chromium, app, tmp_path, device):
    shots = screenshots_folder(tmp_path)
    width, height = SIZES[device]
    phone = device == "phone"
    context = chromium.new_context(viewport={"width": width, "height": height}, is_mobile=phone, has_touch=phone)
    page = context.new_page()
    page.set_default_timeout(60_000)
    expect = playwright_api.expect

    # 1. Open the page: one line says it is the preview model; the form starts at the quick settings and says so.
    page.goto(app.url)
    expect(page.locator("#model-banner")).to_contain_text("Preview mode: pictures are placeholders", timeout=120_000)
    expect(page.locator("#speed-note")).to_contain_text("Quick settings for this machine: 512 × 512, 10 steps")
    assert "--model" not in page.locator("#model-banner").inner_text()  # the operator's words are in the log
    idea, generate = page.get_by_label("Your idea"), page.get_by_role("button", name="Generate")
    assert inside_viewport(page, idea) and inside_viewport(page, generate)  # the idea first, Generate beside it
    expect(page.get_by_text("Press Enter or Generate.")).to_be_visible()
    expect(page.locator("#cancel")).to_be_hidden()  # nothing to cancel yet
    page.screenshot(path=str(shots / f"{device}-1-opened.png"))

    # 2. An example idea fills the box in one click; then type one's own and press Enter.
    first_example = page.locator("#idea-examples button").first
    example = first_example.inner_text().strip()
    assert example
    first_example.click()
    expect(idea).to_have_value(example)
    prompt = f"a cheerful otter barista on a {device}"
    idea.fill(prompt)
    started = time.monotonic()
    idea.press("Enter")

    # 3. The progress and the result, without scrolling.
    status = page.locator("#generation-status")
    expect(status).to_contain_text("step", timeout=120_000)
    expect(page.locator("#cancel")).to_be_visible()
    assert inside_viewport(page, status)
    page.screenshot(path=str(shots / f"{device}-2-working.png"))
    expect(status).to_contain_text("Done: 1 mascot saved", timeout=180_000)
    seconds = time.monotonic() - started
    print(f"\n{device}: the first mascot took {seconds:.1f} s from Enter to Done")
    result = page.locator("#result-gallery img").first
    expect(result).to_be_visible()
    expect(page.locator("#cancel")).to_be_hidden()
    page.screenshot(path=str(shots / f"{device}-3-finished.png"))
    assert page.evaluate("() => window.scrollY") == 0  # nothing scrolled the page for us
    assert inside_viewport(page, result), result.bounding_box()
    if phone:  # and not under Generate: it is pinned to the foot of the screen only once the idea is scrolled away
        box, button = result.bounding_box(), generate.bounding_box()
        assert box["y"] >= button["y"] + button["height"] or box["y"] + box["height"] <= button["y"], (box, button)
    if device == "desktop":
        docs = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"
        page.screenshot(path=str(docs))

    # 4. Find the mascot in My mascots and open it.
    page.get_by_role("tab", name="My mascots").click()
    thumbnail = page.locator("#mine-gallery").get_by_role("button").filter(has_text=prompt).first
    expect(thumbnail).to_be_visible()
    thumbnail.click()
    share_box = page.locator("#mine-share textarea, #mine-share input").first
    expect(share_box).to_have_value(re.compile(r"/\?mascot="))
    share_link = share_box.input_value()
    assert "/?mascot=" in share_link
    page.screenshot(path=str(shots / f"{device}-4-my-mascots.png"))

    # 5. Its share link in a fresh browser context (a stranger).
    stranger_context = chromium.new_context(viewport={"width": width, "height": height}, is_mobile=phone)
    stranger = stranger_context.new_page()
    stranger.goto(share_link)
    card = stranger.locator("#share-card")  # the shared mascot first, in the first screen
    expect(card).to_contain_text(prompt, timeout=60_000)
    expect(card.locator("#share-card-image img")).to_be_in_viewport(ratio=0.9)
    stranger.screenshot(path=str(shots / f"{device}-5-shared.png"))
    stranger_context.close()
    context.close()
