"""A mascot seen by people, in a real Chromium: the share card, the mascot panel, More like this, and axe-core's
accessibility checks on every tab and in every main state."""

from __future__ import annotations

import collections
import re

import pytest

from mascot.store.export import slug
from tests.support.app_process import ROOT, running_app
from tests.support.browser import BROWSER_MARKS, generate_in_page, make_it_fast, open_page, playwright_api

pytestmark = BROWSER_MARKS

AXE = ROOT / ".ci" / "node" / "node_modules" / "axe-core" / "axe.min.js"  # .ci/run installs it from npm
# Violations that come from inside Gradio's own components, not from our theme or markup: (rule, element, reason).
GRADIO_OWN = (
    ("aria-prohibited-attr", ".empty", "Gradio's empty-value placeholder (an image or gallery with nothing yet) is a "
     "div with aria-label and no role"),
    ("button-name", ".image-container", "Gradio's gr.Image wraps a shown picture in a button without a name"),
)  # fmt: skip
IDEA_WITH_ADDRESS = "an otter that runs https://otter-cafe.example/menu_today"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from running_app(tmp_path_factory, "panel-app")


def serious_violations(page, *, settled: bool = True) -> list[str]:
    """axe-core's critical and serious violations on the page as it is now, less those inside Gradio's own parts.
    `settled`: first wait for Gradio's pending outputs, which it fades while an event runs, to be shown again."""
    if settled:
        page.wait_for_timeout(300)  # the fade starts a moment after the event
        page.wait_for_function(
            "() => !document.querySelector('.pending')"
            " && document.getAnimations().every((a) => a.playState !== 'running')"
        )
    assert AXE.is_file(), f"axe-core is missing: npm install --prefix {AXE.parents[2]} axe-core (as .ci/run does)"
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .filter((v) => v.impact === "critical" || v.impact === "serious")
            .flatMap((v) => v.nodes.map((n) => [v.id, n.target.join(" "), n.failureSummary, n.html]))"""
    )
    return [
        f"{rule} at {target}: {summary}"
        for rule, target, summary, html in violations
        if not any(rule == own and is_element(element, target, html) for own, element, _ in GRADIO_OWN)
    ]


def is_element(element: str, target: str, html: str) -> bool:
    """Whether axe's node is `element` (".class"): by its selector, or by its opening tag's classes. An element that
    Gradio replaced while axe ran (the page is checked while a job draws) has the selector ":root", not its own."""
    opening = re.match(r"<[^>]*>", html)
    classes = re.search(r'\bclass="([^"]*)"', opening.group(0)) if opening else None
    return element in target or (classes is not None and element.removeprefix(".") in classes.group(1).split())


def duplicate_ids(page) -> dict[str, int]:
    ids = page.evaluate("() => [...document.querySelectorAll('[id]')].map((element) => element.id).filter(Boolean)")
    return {name: count for name, count in collections.Counter(ids).items() if count > 1}


def open_in_my_mascots(page, idea: str) -> None:
    page.get_by_role("tab", name="My mascots").click()
    page.locator("#mine-refresh").click()
    page.locator("#mine-gallery").get_by_role("button").filter(has_text=idea).first.click()
    playwright_api.expect(page.locator("#mine-detail-info")).to_contain_text(idea.split("https")[0].strip())


def test_every_tab_and_state_passes_axe_and_the_page_has_no_duplicate_ids(chromium, app, tmp_path):
    context, page = open_page(chromium, app)
    assert serious_violations(page) == [], "Create, empty"
    make_it_fast(page)
    page.get_by_label("Steps", exact=True).fill("40")  # long enough to be looked at while it draws
    page.get_by_label("Steps", exact=True).press("Tab")
    page.get_by_label("Your idea").fill("an accessible owl")
    page.get_by_role("button", name="Generate").click()
    playwright_api.expect(page.locator("#generation-status")).to_contain_text("step", timeout=120_000)
    assert serious_violations(page, settled=False) == [], "Create, generating"
    playwright_api.expect(page.locator("#generation-status")).to_contain_text("Done", timeout=120_000)
    assert serious_violations(page) == [], "Create, result"
    for tab, listing in (("My mascots", "mine"), ("Gallery", "gallery")):
        page.get_by_role("tab", name=tab).click()
        playwright_api.expect(page.locator(f"#{listing}-page")).to_contain_text("1 mascot")
        assert serious_violations(page) == [], tab
    open_in_my_mascots(page, "an accessible owl")
    assert serious_violations(page) == [], "My mascots, panel open"
    page.get_by_role("tab", name="Gallery").click()
    page.locator("#gallery-gallery").get_by_role("button").filter(has_text="an accessible owl").first.click()
    playwright_api.expect(page.locator("#gallery-detail-info")).to_contain_text("an accessible owl")
    assert serious_violations(page) == [], "Gallery, panel open"
    assert duplicate_ids(page) == {}  # every tab and both panels drawn
    page.get_by_role("tab", name="Create").click()
    page.get_by_label("Your idea").fill("")  # an empty idea refused: the validator's message on the field
    page.get_by_role("button", name="Generate").click()
    playwright_api.expect(page.get_by_text("Your idea is empty").first).to_be_visible()  # the page's words
    assert serious_violations(page) == [], "Create, refused"
    context.close()


def test_a_share_link_opens_on_the_mascot_in_the_first_screen_on_a_desktop_and_a_phone(chromium, app, tmp_path):
    context, page = open_page(chromium, app)
    make_it_fast(page)
    generate_in_page(page, "a share-card heron")
    open_in_my_mascots(page, "a share-card heron")
    link = page.locator("#mine-share textarea, #mine-share input").first.input_value()
    context.close()

    for name, viewport in (("desktop", {"width": 1366, "height": 900}), ("phone", {"width": 390, "height": 844})):
        stranger_context = chromium.new_context(viewport=viewport, is_mobile=name == "phone")
        stranger = stranger_context.new_page()
        stranger.set_default_timeout(60_000)
        stranger.goto(link)
        card = stranger.locator("#share-card")
        playwright_api.expect(card.locator("#share-card-image img")).to_be_in_viewport(ratio=0.9)
        playwright_api.expect(card).to_contain_text("a share-card heron")
        playwright_api.expect(card).to_contain_text("0 likes")
        stranger.screenshot(path=str(tmp_path / f"share-card-{name}.png"))
        assert serious_violations(stranger) == [], f"share card, {name}"
        stranger.locator("#share-card-make").click()  # Make your own: the form, the cursor in the idea box
        playwright_api.expect(card).to_be_hidden()
        playwright_api.expect(stranger.get_by_label("Your idea")).to_be_focused()
        playwright_api.expect(stranger.get_by_label("Your idea")).to_be_in_viewport()
        stranger_context.close()


def test_the_panel_shows_the_main_actions_first_and_keeps_the_careful_ones_apart(chromium, app, tmp_path):
    context, page = open_page(chromium, app)
    make_it_fast(page)
    generate_in_page(page, IDEA_WITH_ADDRESS)
    open_in_my_mascots(page, IDEA_WITH_ADDRESS)
    panel = page.locator("#mine-detail")
    # The idea as typed: its web address without the backslashes Markdown escaping used to leave in it.
    playwright_api.expect(page.locator("#mine-detail-info")).to_contain_text(IDEA_WITH_ADDRESS)
    assert "\\" not in page.locator("#mine-detail-info").inner_text()
    actions = page.locator("#mine-main-actions button")
    assert [text.split("·")[0].strip() for text in actions.all_inner_texts()] == [
        "⬇ Download PNG",
        "♡ Like",
        "Remix",
        "More like this",
    ]
    careful = page.locator("#mine-careful")
    playwright_api.expect(careful).to_contain_text("Privacy and deletion")
    assert careful.bounding_box()["y"] > page.locator("#mine-share").bounding_box()["y"]  # below the rest, apart
    assert careful.locator("#mine-delete").count() == 1 and careful.locator("#mine-public").count() == 1
    image = page.locator("#mine-detail-image img").bounding_box()
    assert image["width"] >= 0.4 * panel.bounding_box()["width"]  # the picture large, not a thumbnail
    # One download control: the thumbnails have no toolbar ("download all", "share"), and they show their likes.
    gallery = page.locator("#mine-gallery")
    assert gallery.get_by_role("button", name=r"Download").count() == 0
    assert gallery.get_by_role("button", name="Share").count() == 0
    playwright_api.expect(gallery.get_by_text("♥ 0 ·").first).to_be_visible()
    page.screenshot(path=str(tmp_path / "panel.png"))
    with page.expect_download() as download:
        page.locator("#mine-download").click()
    public_id = link_id(page)
    assert download.value.suggested_filename == f"mascot-{slug(IDEA_WITH_ADDRESS)}-{public_id}.png"
    page.locator("#mine-make-sticker").click()
    with page.expect_download() as sticker:
        page.locator("#mine-sticker").click()
    assert sticker.value.suggested_filename == download.value.suggested_filename.replace(".png", "-sticker.png")
    context.close()


def link_id(page) -> str:
    return page.locator("#mine-share textarea, #mine-share input").first.input_value().rsplit("=", 1)[1]


def test_more_like_this_is_shown_as_based_on_and_can_be_removed(chromium, app, tmp_path):
    context, page = open_page(chromium, app)
    make_it_fast(page)
    generate_in_page(page, "a bashful badger")
    open_in_my_mascots(page, "a bashful badger")
    page.locator("#mine-vary").click()
    based_on = page.locator("#based-on")
    playwright_api.expect(based_on).to_contain_text("Based on “a bashful badger”")
    playwright_api.expect(based_on).to_contain_text("Generate makes 2 new mascots like it")
    playwright_api.expect(based_on).to_be_in_viewport()
    playwright_api.expect(page.locator("#logo-image img")).to_have_count(0)  # not loaded as a logo
    page.screenshot(path=str(tmp_path / "based-on.png"))
    page.locator("#based-on-remove").click()
    playwright_api.expect(based_on).to_be_hidden()

    open_in_my_mascots(page, "a bashful badger")
    page.locator("#mine-vary").click()
    playwright_api.expect(based_on).to_be_visible()
    left = int(re.search(r"2 of the (\d+) mascots? you have left today", based_on.inner_text()).group(1))
    page.get_by_role("button", name="Generate").click()
    playwright_api.expect(page.locator("#generation-status")).to_contain_text("Done: 2 mascots saved", timeout=120_000)
    # Still the starting point, for more: what the next Generate costs is counted from what is left now.
    left_now = f"{left - 2} mascot{'' if left - 2 == 1 else 's'} you have left today"
    playwright_api.expect(based_on).to_contain_text(left_now)
    open_in_my_mascots(page, "a bashful badger")  # the newest: a variation, made from the picked one
    playwright_api.expect(page.locator("#mine-detail-info")).to_contain_text("mixed in at 0.5")
    context.close()


@pytest.fixture(scope="module")
def app_with_one_a_day(tmp_path_factory):
    yield from running_app(tmp_path_factory, "one-a-day", ("--daily-quota", "1"))


def test_more_like_this_at_zero_quota_says_so_and_changes_nothing(chromium, app_with_one_a_day):
    context, page = open_page(chromium, app_with_one_a_day)
    make_it_fast(page)
    generate_in_page(page, "the day's only mascot")
    open_in_my_mascots(page, "the day's only mascot")
    page.locator("#mine-vary").click()
    playwright_api.expect(page.get_by_text("More like this makes 2 mascots. You have made your 1")).to_be_visible()
    playwright_api.expect(page.get_by_role("tab", name="My mascots")).to_have_attribute("aria-selected", "true")
    playwright_api.expect(page.locator("#based-on")).to_be_hidden()
    context.close()
