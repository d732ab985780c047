"""Use my mascots on another device, through the app as browsers use it (each `Client` is one cookie jar).

The app runs in this process with a fake generator and a real store, identity cookie and Gradio queue, as in
test_community.py; the whole flow in a real browser on the real tiny pipeline is in test_browser.py. Opening a link is
the page load with ?device=<code>, which no API client can call: `open_link` does what the page does, a queued event
joined with the page's query string and the browser's cookie.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid

import httpx
import pytest
from gradio_client import Client
from PIL import Image

from mascot.ui.device_links import (
    ALREADY,
    EXPIRED,
    JOINED,
    KEPT_APART,
    NO_OPEN_LINKS,
    NO_OTHER_DEVICES,
    TOO_MANY,
    qr_image,
)
from tests.support.app_process import browser_client
from tests.support.raw_gradio import call, fn_index_in, run_outside_queue
from tests.support.site import FAST, link_for, make, mine, prompts

pytestmark = pytest.mark.slow  # the app served in this process, driven through gradio_client

NOTHING_SHARED = f"{NO_OTHER_DEVICES}\n\n{NO_OPEN_LINKS}"  # the panel's line when no device or link is left


def open_link(site, client: Client, link: str, *, move_mine: bool = False) -> list[tuple[str, str]]:
    """Open `link` in this browser as its page's buttons do (keeping its own mascots apart, or with `move_mine`
    moving them after the person confirmed); returns the notices shown, as (level, message)."""
    query = urllib.parse.urlsplit(link).query
    api_name = "open_device_link_moving_mine" if move_mine else "open_device_link"
    fn_index = fn_index_in(client.config, api_name)
    session = uuid.uuid4().hex
    data = [True] if move_mine else []
    body = {"data": data, "event_data": None, "fn_index": fn_index, "trigger_id": None, "session_hash": session}
    notices = []
    with httpx.Client(base_url=site.url, cookies=client.cookies, timeout=30) as http:
        http.post(f"gradio_api/queue/join?{query}", json=body).raise_for_status()
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line.removeprefix("data:"))
                if message.get("msg") == "log":
                    notices.append((message["level"], message["log"]))
                if message.get("msg") == "process_completed":
                    assert message["success"], message
                    break
    return notices


def test_a_phone_that_opens_the_link_shares_my_mascots_both_ways_and_the_code_is_spent(site):
    alice, phone, carol = site.browser(), site.browser(), site.browser()
    make(alice, "alice's otter")
    make(phone, "the phone's fox")
    link, qr_code = link_for(alice)
    assert re.fullmatch(re.escape(site.url) + r"\?device=[A-Za-z0-9_-]{32}", link)
    with Image.open(qr_code) as shown:
        assert shown.format == "PNG"
        assert shown.convert("RGB").tobytes() == qr_image(link).tobytes()

    assert open_link(site, phone, link, move_mine=True) == [
        ("info", f"{JOINED} The 1 mascot made here before moved along.")
    ]

    assert prompts(mine(phone)) == prompts(mine(alice)) == ["the phone's fox", "alice's otter"]
    otter = next(mascot["public_id"] for mascot in mine(phone) if mascot["prompt"] == "alice's otter")
    phone.predict(otter, api_name="/delete")  # the phone manages Alice's mascots
    assert prompts(mine(alice)) == ["the phone's fox"]
    assert open_link(site, carol, link) == [("warning", EXPIRED)]  # a third browser cannot use the spent code
    assert mine(carol) == []
    assert open_link(site, phone, link) == [("info", ALREADY)]  # a reload of the opened link changes nothing


def test_the_two_devices_share_one_daily_quota_and_one_job_in_flight(site):
    alice, phone = site.browser(), site.browser()
    make(alice, "alice's otters", num_images_per_prompt=2)
    make(phone, "the phone's fox")
    open_link(site, phone, link_for(alice)[0])

    assert alice.predict(api_name="/quota").startswith("2 of 5 mascots left today")
    assert phone.predict(api_name="/quota").startswith("2 of 5 mascots left today")
    site.fake.gate.clear()
    site.fake.started.clear()  # set by the mascots made above
    job = alice.submit(prompt="slow", seed=1, **FAST, api_name="/generate")
    assert site.fake.started.wait(10)
    with pytest.raises(Exception, match=r"still being made|already have a mascot"):
        make(phone, "impatient")
    site.fake.gate.set()
    job.result(timeout=30)
    make(phone, "patient")
    with pytest.raises(Exception, match="made your 5 mascots for today"):
        make(alice, "one too many")


def test_opening_ones_own_link_or_a_made_up_one_changes_nothing(site):
    alice = site.browser()
    make(alice, "alice's otter")
    link, _qr_code = link_for(alice)

    assert open_link(site, alice, link) == [("info", ALREADY)]
    for made_up in ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "../../etc/passwd", "x" * 10_000, ""):
        stranger = site.browser()
        make(stranger, "a stranger's gull")
        assert open_link(site, stranger, f"{site.url}?device={urllib.parse.quote(made_up)}") == [("warning", EXPIRED)]
        assert prompts(mine(stranger)) == ["a stranger's gull"]
    assert open_link(site, site.browser(), link)[0][0] == "info"  # the code was not spent by its maker


def test_a_page_without_a_code_does_nothing(site):
    visitor = site.browser()
    make(visitor, "a visitor's crab")

    assert open_link(site, visitor, site.url) == []
    assert prompts(mine(visitor)) == ["a visitor's crab"]


def test_a_sixth_open_link_is_refused_with_a_sentence(site):
    alice = site.browser()
    for _ in range(5):
        link_for(alice)
    with pytest.raises(Exception, match=re.escape(TOO_MANY)):
        link_for(alice)


def test_a_forwarded_host_from_a_client_that_is_no_proxy_of_ours_is_not_believed(site):
    """A link is a credential: a client cannot make the app write another host into it (the page's address from
    our proxies or MASCOT_PUBLIC_URL is tested in test_public_url.py)."""
    proxied = browser_client(
        site.url,
        str(site.tmp_path / "downloads"),
        headers={"X-Forwarded-Host": "mascots.example.org", "X-Forwarded-Proto": "https"},
    )
    site.clients.append(proxied)

    link, _qr_code = link_for(proxied)

    assert re.fullmatch(re.escape(site.url) + r"\?device=[A-Za-z0-9_-]{32}", link)


def test_a_leaked_link_is_undone_from_the_phone_and_nobody_else_keeps_my_mascots(site):
    laptop, phone, stranger = site.browser(), site.browser(), site.browser()
    make(laptop, "the laptop's otter")
    open_link(site, phone, link_for(laptop)[0])
    open_link(site, stranger, link_for(laptop)[0])  # the link was seen by someone else
    assert prompts(mine(stranger)) == ["the laptop's otter"]

    phone.predict(False, api_name="/disconnect_other_devices")  # the person answered "Cancel": nothing happens
    assert prompts(mine(stranger)) == ["the laptop's otter"]
    assert phone.predict(True, api_name="/disconnect_other_devices") == NOTHING_SHARED

    assert prompts(mine(phone)) == ["the laptop's otter"]
    assert mine(stranger) == [] and mine(laptop) == []
    [otter] = mine(phone)
    assert phone.predict(otter["public_id"], False, api_name="/set_public") is not None  # the phone owns it now


def test_a_phone_stops_showing_my_mascots_and_the_laptop_keeps_them(site):
    laptop, phone = site.browser(), site.browser()
    make(laptop, "the laptop's otter")
    assert laptop.predict(True, api_name="/stop_showing_here") == NOTHING_SHARED  # nothing to stop yet
    open_link(site, phone, link_for(laptop)[0])

    with pytest.raises(Exception, match="first made in this browser"):
        laptop.predict(True, api_name="/stop_showing_here")
    assert phone.predict(True, api_name="/stop_showing_here") == NOTHING_SHARED

    assert mine(phone) == []
    assert prompts(mine(laptop)) == ["the laptop's otter"]
    make(phone, "the phone's own fox")  # a browser of its own again, with its own quota
    assert prompts(mine(laptop)) == ["the laptop's otter"]


def test_a_link_from_someone_else_never_hands_them_the_openers_mascots(site):
    attacker, victim = site.browser(), site.browser()
    make(attacker, "the attacker's bait")
    make(victim, "the victim's diary")
    [diary] = mine(victim)
    victim.predict(diary["public_id"], False, api_name="/set_public")

    notices = open_link(site, victim, link_for(attacker)[0])  # the default button: keep mine apart

    assert notices == [("info", f"{JOINED} {KEPT_APART.format(count='1 mascot')}")]
    assert prompts(mine(attacker)) == ["the attacker's bait"]
    with pytest.raises(Exception, match="Only the browser that made a mascot can delete it"):
        attacker.predict(diary["public_id"], api_name="/delete")
    assert victim.predict(True, api_name="/stop_showing_here").startswith(NO_OTHER_DEVICES)
    assert prompts(mine(victim)) == ["the victim's diary"]


def test_open_links_are_shown_and_revoked_and_then_do_not_work(site):
    laptop, phone = site.browser(), site.browser()
    make(laptop, "the laptop's otter")
    link, _qr_code = link_for(laptop)

    shown = laptop.predict(api_name="/revoke_device_links")

    assert shown == NOTHING_SHARED
    assert open_link(site, phone, link) == [("warning", EXPIRED)]
    assert mine(phone) == []


def test_the_laptop_a_phone_disconnected_keeps_none_of_the_zips_of_their_mascots(site):
    # The ZIPs are kept under the owner hash of the browser that made the mascots first: once the phone took them
    # over, the laptop (a stranger now) still downloaded them, the phone's private and deleted mascots included.
    laptop, phone = site.browser(), site.browser()
    make(laptop, "the laptop's otter")
    open_link(site, phone, link_for(laptop)[0])
    make(phone, "the phone's secret fox")
    fox = next(mascot for mascot in mine(phone) if mascot["prompt"] == "the phone's secret fox")
    phone.predict(fox["public_id"], False, api_name="/set_public")
    with httpx.Client(base_url=site.url, cookies=phone.cookies, timeout=30) as http:
        exported = call(http, "export_mascots", {"data": []})
    [zip_url] = [item["url"] for item in exported.data]
    assert httpx.get(zip_url, cookies=laptop.cookies, timeout=30).status_code == 200  # linked: one browser

    assert phone.predict(True, api_name="/disconnect_other_devices") == NOTHING_SHARED

    assert httpx.get(zip_url, cookies=laptop.cookies, timeout=30).status_code == 404
    # Nor is it offered to the laptop's page (the event that shows the ZIP just made).
    with httpx.Client(base_url=site.url, cookies=laptop.cookies, timeout=30) as http:
        offered = run_outside_queue(http, laptop.config, "offer_zip", [])
    assert offered.status_code == 200 and "/downloads/" not in offered.text
