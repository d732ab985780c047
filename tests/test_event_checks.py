"""The checks Gradio runs before an event takes a queue slot (the events' validators) answer in sentences when what is
under them breaks. Gradio passes on the text of whatever a validator raised, so without the guard a bug's or a
database driver's own words (a file path, the database server's address) would reach whoever asked."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gradio_client import Client

from mascot.service.sentences import CHECK_FAILED
from mascot.store.connections import UNREACHABLE
from mascot.store.faults import StoreUnavailable
from tests.support.raw_gradio import Answer, join_event
from tests.support.site import Site, make, mine

SECRET = 'could not open "/srv/mascots/mascots.db": server at "10.0.0.9", port 5432'
# Each checked event's API name, and the service method its check calls first.
CHECKED = {
    "generate": "admit",
    "export_mascots": "admit_export",
    "sticker": "admit_sticker",
    "sticker_mine": "admit_sticker",
}


def broken(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError(SECRET)


@pytest.fixture
def browser(site: Site) -> Client:
    return site.browser()


@pytest.fixture
def http(site: Site, browser: Client) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, cookies=dict(browser.cookies), timeout=60) as client:
        yield client


def join(site: Site, http: httpx.Client, api_name: str, data: list[Any]) -> Answer:
    """Join the queue for the event named `api_name` (a private event's is its handler's name), the rest of its
    inputs None."""
    index, data = padded(site, api_name, data)
    return join_event(http, index, data)


def padded(site: Site, api_name: str, data: list[Any]) -> tuple[int, list[Any]]:
    """The fn_index of the event named `api_name` (a private event's is its handler's name), and `data` with the rest
    of its inputs None."""
    [(index, event)] = [(index, fn) for index, fn in site.app.demo.fns.items() if fn.api_name == api_name]
    return index, data + [None] * (len(event.inputs) - len(data))


def test_every_checked_event_has_its_case_here(site: Site) -> None:
    checked = {fn.api_name for fn in site.app.demo.fns.values() if fn.validator is not None}

    assert checked == set(CHECKED)  # a new checked event needs its case here


@pytest.mark.parametrize("api_name", list(CHECKED))
def test_a_check_that_breaks_answers_with_a_sentence_and_logs_the_cause(
    site: Site, browser: Client, http: httpx.Client, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, api_name: str,
) -> None:  # fmt: skip
    make(browser, "an otter to cut out")  # the sticker's event needs a mascot of this browser's
    [mascot] = mine(browser)
    monkeypatch.setattr(site.app.services.service, CHECKED[api_name], broken)

    data = {"generate": ["an otter"], "export_mascots": []}.get(api_name, [mascot["public_id"]])
    with caplog.at_level(logging.ERROR):
        answer = join(site, http, api_name, data)

    assert answer.status == 400 and answer.message == CHECK_FAILED, answer
    assert "10.0.0.9" not in answer.message
    assert SECRET in caplog.text  # the operator still learns the cause


def test_the_pages_own_first_step_says_a_broken_check_in_a_sentence_on_the_status_line(
    site: Site, http: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(site.app.services.service, "admit", broken)
    index, data = padded(site, "start_generation", ["an otter"])
    body = {"fn_index": index, "data": data, "session_hash": "s1"}

    with caplog.at_level(logging.ERROR):
        answer = http.post("gradio_api/run/predict", json=body)  # outside the queue, as the page sends it

    status, seed, cancel, _ = answer.json()["data"]
    assert answer.status_code == 200 and status == f"Not started: {CHECK_FAILED}", answer.text
    assert seed == {"__type__": "update"} and cancel == {"__type__": "update"}  # left as they were
    assert SECRET not in answer.text and SECRET in caplog.text


def test_a_database_out_of_reach_is_said_on_the_idea_and_the_next_click_works(
    site: Site, browser: Client, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        raise StoreUnavailable(UNREACHABLE)

    with monkeypatch.context() as outage:
        outage.setattr(site.app.store, "resolve_owner", unreachable)
        answer = join(site, http, "generate", ["an otter"])

    assert answer.status == 422 and answer.message == UNREACHABLE, answer  # marked on the field, in the store's words
    make(browser, "made once it is back")
    assert [mascot["prompt"] for mascot in mine(browser)] == ["made once it is back"]


@pytest.mark.parametrize("api_name", ["gallery", "my_mascots", "quota"])
def test_a_page_read_while_the_database_is_out_of_reach_says_so_and_works_once_it_is_back(
    site: Site, browser: Client, monkeypatch: pytest.MonkeyPatch, api_name: str
) -> None:
    """The gallery, My mascots and the quota line read the store with no check first: with the database down they
    answered Gradio's bare "Error" (a resilience walkthrough, PostgreSQL stopped)."""

    def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        raise StoreUnavailable(UNREACHABLE)

    with monkeypatch.context() as outage:
        outage.setattr(site.app.store, "resolve_owner", unreachable)
        with pytest.raises(Exception, match=re.escape(UNREACHABLE)):
            browser.predict(api_name=f"/{api_name}")
    browser.predict(api_name=f"/{api_name}")  # answered again once it is back
