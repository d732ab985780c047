"""One office, one address (--one-office): each house rule that counts per network counts per browser instead.

Every test runs twice, on the default rules and on one office, with browsers that share one address, so that each
shows both what the office suffered before and what the setting changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mascot.generation.worker import JobState
from mascot.service import DownloadFolder, MascotService, Refusal, Visitor
from mascot.settings import Rules, load_settings
from mascot.store.store import MascotStore
from mascot.web.clients import AddressKeys
from tests.support.fakes import FakeGenerator
from tests.support.jobs import finished, storing_worker
from tests.support.store import owner, save

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
FAST = {"width": 256, "height": 256, "num_inference_steps": 2, "seed": 1}
OFFICE_ADDRESS = "198.51.100.20"  # the office's one NAT address
# Small numbers, so that one or two browsers reach each per-network rule.
RULES = Rules(daily_quota=4, address_daily_quota=5, reports_to_hide=2, likes_per_network=1, max_queued_per_client=1)


@dataclass
class Office:
    service: MascotService
    store: MascotStore
    fake: FakeGenerator
    one_office: bool


@pytest.fixture(params=[False, True], ids=["default rules", "one office"])
def office(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Office]:
    rules = dataclasses.replace(RULES, one_office=request.param)
    store = MascotStore(f"sqlite:///{tmp_path / 'mascots.db'}", tmp_path / "images", rules=rules)
    fake = FakeGenerator()
    worker = storing_worker(
        store,
        fake,
        now=NOW,
        max_per_client=rules.max_queued_per_client,
    )
    service = MascotService(
        store=store,
        worker=worker,
        rules=rules,
        address_keys=AddressKeys(b"test secret"),
        downloads=DownloadFolder(lambda: tmp_path / "downloads"),
        clock=lambda: NOW,
    )
    yield Office(service, store, fake, request.param)
    fake.gate.set()
    worker.stop()
    store.close()


def colleague(name: str) -> Visitor:
    return Visitor(token_hash=owner(name), address=OFFICE_ADDRESS, page_url="https://mascots.example/app")


def test_the_daily_quota_is_each_browsers_own_in_one_office(office: Office) -> None:
    assert finished(office.service.submit({"prompt": "an otter", **FAST, "num_images_per_prompt": 4}, colleague("a")))

    ask = {"prompt": "a heron", **FAST, "num_images_per_prompt": 4}
    if office.one_office:
        assert finished(office.service.submit(ask, colleague("b"))) is JobState.DONE
        assert office.service.quota_line(colleague("c")).startswith("4 of 4 mascots left today")
    else:  # the address's 5 are shared: 1 left for the whole office
        with pytest.raises(Refusal, match="Your network has 1 of its 5 mascots left today"):
            office.service.admit(ask, colleague("b"))
    with pytest.raises(Refusal, match="made your 4 mascots for today"):  # the browser's own cap holds either way
        office.service.admit({"prompt": "again", **FAST}, colleague("a"))


def test_likes_from_one_office_each_count_in_one_office(office: Office) -> None:
    public_id = save(office.store, owner("maker"), "an otter barista", now=NOW).public_ids[0]

    for name in ("a", "b", "c"):
        office.service.like(public_id, colleague(name))

    entry = office.service.open(public_id, colleague("maker"))
    assert entry.like_count == (3 if office.one_office else 1)  # default: one like per network counts here


def test_reports_from_one_office_hide_a_mascot_in_one_office(office: Office) -> None:
    public_id = save(office.store, owner("maker"), "an otter barista", now=NOW).public_ids[0]

    office.service.report(public_id, "spam", colleague("a"))
    office.service.report(public_id, "spam", colleague("b"))

    hidden = office.store.public_mascot(public_id) is None
    assert hidden is office.one_office  # default: two reports from one network are one network's


def test_the_queue_cap_is_each_browsers_own_in_one_office(office: Office) -> None:
    office.fake.gate.clear()  # a's job waits after its first step
    office.service.submit({"prompt": "a slow otter", **FAST}, colleague("a"))

    if office.one_office:
        office.service.admit({"prompt": "meanwhile", **FAST}, colleague("b"))
    else:
        with pytest.raises(Refusal, match="Several mascots from your network"):
            office.service.admit({"prompt": "meanwhile", **FAST}, colleague("b"))
    with pytest.raises(Refusal, match="already have a mascot in the works"):  # one job per browser either way
        office.service.admit({"prompt": "another", **FAST}, colleague("a"))
    office.fake.gate.set()


def test_one_office_is_off_by_default_and_set_by_flag_or_variable() -> None:
    assert not load_settings([], {}).rules.one_office
    assert load_settings(["--one-office"], {}).rules.one_office
    assert load_settings([], {"MASCOT_ONE_OFFICE": "1"}).rules.one_office
    assert not load_settings([], {"MASCOT_ONE_OFFICE": "off"}).rules.one_office


@pytest.mark.parametrize("one_office", [False, True], ids=["default rules", "one office"])
def test_uploads_count_per_browser_only_in_one_office(one_office: bool) -> None:
    from mascot.service.limits import KeyedLimit, Limit
    from mascot.web.identity import COOKIE_NAME, BrowserIdentity
    from mascot.web.uploads import UploadGateMiddleware

    identity = BrowserIdentity(b"s" * 32)
    limit = KeyedLimit(Limit(per_window=1, window_s=600, network_factor=1))  # one upload per network, per browser
    gate = UploadGateMiddleware(
        lambda *_: None, identity=identity, limit=limit, prune=lambda: 0, per_network=not one_office
    )

    def upload_from(cookie: str) -> dict:
        headers = [(b"cookie", f"{COOKIE_NAME}={cookie}".encode()), (b"content-length", b"10")]
        return {
            "type": "http",
            "method": "POST",
            "path": "/gradio_api/upload",
            "headers": headers,
            "client": (OFFICE_ADDRESS, 5000),
            "query_string": b"",
        }

    first, second = identity.issue(), identity.issue()
    assert gate.refusal(upload_from(first)) is None
    refused = gate.refusal(upload_from(second))
    assert (refused is None) is one_office  # default: the office's one upload is spent
    assert gate.refusal(upload_from(first)) is not None  # each browser's own limit holds either way
