"""A page that goes away under a person's running mascot, in a real Chromium: reloaded by the person (the page
follows the mascot again), or the server killed (when it is back, Gradio reloads the page: the idea is still in the
box, and the person is told, once, what happened to the mascot)."""

from __future__ import annotations

import re

import pytest

from tests.support.app_process import AppProcess
from tests.support.browser import BROWSER_MARKS, DESKTOP, open_advanced, open_page, playwright_api

pytestmark = BROWSER_MARKS

IDEA = "a brave lighthouse keeper owl"


@pytest.fixture()
def app(tmp_path):
    process = AppProcess(tmp_path / "data", tmp_path).start()
    yield process
    process.stop()


def slow_enough_to_be_killed(page) -> None:
    """A run that lasts long enough on the tiny model to be under way when the server dies: the test ends it by
    killing the server, so its length never decides the result."""
    open_advanced(page)
    for label, value in (("Width", "1024"), ("Height", "1024"), ("Steps", "100"), ("Number of mascots", "4")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")


def test_a_killed_server_comes_back_with_the_persons_idea_and_tells_them_their_mascot_was_not_made(chromium, app):
    context, page = open_page(chromium, app)
    playwright_api.expect(page.locator("#speed-note")).to_contain_text("Quick settings")  # applied: not overwritten
    slow_enough_to_be_killed(page)
    page.get_by_label("Your idea").fill(IDEA)
    page.get_by_role("button", name="Generate").click()
    playwright_api.expect(page.locator("#generation-status")).to_contain_text("Drawing", timeout=120_000)

    assert app.process is not None
    app.process.kill()  # SIGKILL: no drain, nobody told; the job's claim stays in the database
    app.process.wait()
    playwright_api.expect(page.get_by_text("Connection to the server was lost")).to_be_visible(timeout=60_000)
    app.start()  # the same folder and port: it frees the dead run's claim

    # Gradio reloads the page once the server answers again: a new page, with the idea put back.
    notice = page.get_by_text("The server restarted while your mascot was waiting or being made")
    playwright_api.expect(notice).to_be_visible(timeout=120_000)
    playwright_api.expect(page.get_by_label("Your idea")).to_have_value(IDEA)
    playwright_api.expect(page.locator("#model-banner")).to_contain_text("Preview mode", timeout=120_000)
    quota = page.locator("#quota-note")
    playwright_api.expect(quota).to_contain_text(re.compile(r"1,?000 of 1,?000 mascots left"))  # nothing counted

    # Told once: the next reload is a page like any other, and the idea is still there to make it again.
    page.reload()
    playwright_api.expect(page.locator("#model-banner")).to_contain_text("Preview mode", timeout=120_000)
    playwright_api.expect(page.get_by_label("Your idea")).to_have_value(IDEA)
    page.wait_for_timeout(2000)  # the load events have answered (the banner is one of them): no notice came
    assert page.get_by_text("The server restarted").count() == 0

    # Another browser has nobody's idea and no notice.
    other = context.browser.new_context(viewport=DESKTOP)
    _, stranger = open_page(chromium, app, other)
    playwright_api.expect(stranger.get_by_label("Your idea")).to_have_value("")
    assert stranger.get_by_text("The server restarted").count() == 0
    other.close()
    context.close()


def test_a_page_opened_again_during_a_run_follows_it_and_its_cancel_works(chromium, app):
    context, page = open_page(chromium, app)
    playwright_api.expect(page.locator("#speed-note")).to_contain_text("Quick settings")
    slow_enough_to_be_killed(page)
    page.get_by_label("Your idea").fill(IDEA)
    page.get_by_role("button", name="Generate").click()
    status, cancel = page.locator("#generation-status"), page.get_by_role("button", name="Cancel")
    playwright_api.expect(status).to_contain_text("Drawing", timeout=120_000)

    page.reload()  # the person's own reload: the run goes on
    playwright_api.expect(status).to_contain_text("Drawing", timeout=120_000)
    playwright_api.expect(cancel).to_be_visible()
    _, second_tab = open_page(chromium, app, context)  # the same browser's second tab follows it too
    playwright_api.expect(second_tab.locator("#generation-status")).to_contain_text("Drawing", timeout=120_000)

    cancel.click()
    playwright_api.expect(status).to_contain_text("Cancel", timeout=120_000)  # "Cancelling…", then "Cancelled."
    playwright_api.expect(second_tab.locator("#generation-status")).to_contain_text("Cancelled", timeout=120_000)
    playwright_api.expect(cancel).to_be_hidden(timeout=120_000)
    playwright_api.expect(second_tab.get_by_role("button", name="Cancel")).to_be_hidden()

    # Nothing is in the way of the next one (the quick settings the reload brought back).
    page.get_by_role("button", name="Generate").click()
    playwright_api.expect(status).to_contain_text("Done", timeout=120_000)
    context.close()
