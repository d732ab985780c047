"""My mascots, the Gallery, likes, privacy, deletion and the daily quota, through the API as browsers use it.

The app runs in this process with a fake generator (the page layer is what is tested here; the real tiny pipeline
is driven end to end in test_app_process.py) and a real store, identity cookie and Gradio queue.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from datetime import timedelta

import gradio as gr
import pytest
from gradio_client import Client

from tests.support.app_process import read_health
from tests.support.site import FAST, like, make, mine, prompts, public, serve

pytestmark = pytest.mark.slow  # the app served in this process, driven through gradio_client


@pytest.fixture
def site_behind_a_proxy(tmp_path, monkeypatch):
    """As on a Space: one proxy in front (the test, on loopback), whose X-Forwarded-For names the client; small
    quotas."""
    yield from serve(
        tmp_path,
        monkeypatch,
        ["--daily-quota", "3", "--address-daily-quota", "4"],
        {"MASCOT_TRUSTED_PROXIES": "1", "MASCOT_PROXY_ADDRESSES": "127.0.0.1"},
    )


@pytest.fixture
def site_with_blocked_words(tmp_path, monkeypatch):
    """An operator's blocked-words file: one word and one phrase."""
    words = tmp_path / "blocked-words.txt"
    words.write_text("# the operator's list\ngore\nblood bath  # a phrase\n", encoding="utf-8")
    yield from serve(tmp_path, monkeypatch, ["--daily-quota", "5", "--blocked-words", str(words)])


def test_the_gallery_shows_everyones_public_mascots_newest_first(site):
    alice, bob = site.browser(), site.browser()
    make(alice, "alice's otter")
    make(bob, "bob's fox")
    assert prompts(public(site.browser())) == ["bob's fox", "alice's otter"]
    assert prompts(mine(alice)) == ["alice's otter"]


def test_a_private_mascot_is_seen_only_by_its_maker(site):
    alice, bob = site.browser(), site.browser()
    make(alice, "secret project")
    (secret,) = mine(alice)
    alice.predict(secret["public_id"], False, api_name="/set_public")
    assert mine(alice)[0]["is_public"] is False
    assert public(bob) == []
    with pytest.raises(Exception, match="private or was deleted"):
        bob.predict(secret["public_id"], api_name="/mascot")
    with pytest.raises(Exception, match="private or was deleted"):
        like(bob, secret["public_id"])
    with pytest.raises(Exception, match="Only the browser that made"):
        bob.predict(secret["public_id"], True, api_name="/set_public")
    _public_id, _image, info, *_rest = alice.predict(secret["public_id"], api_name="/mascot")
    assert info.startswith("**secret project**")
    alice.predict(secret["public_id"], True, api_name="/set_public")
    assert prompts(public(bob)) == ["secret project"]


def test_likes_count_once_per_browser_and_toggle(site):
    alice, bob, carol = site.browser(), site.browser(), site.browser()
    make(alice, "likeable")
    make(alice, "less likeable")
    liked_id = next(m["public_id"] for m in mine(alice) if m["prompt"] == "likeable")
    assert like(bob, liked_id) == (True, 1)
    assert like(bob, liked_id) == (False, 0)
    assert like(bob, liked_id) == (True, 1)
    assert like(carol, liked_id) == (True, 2)
    assert prompts(public(alice, sort="Most liked")) == ["likeable", "less likeable"]
    assert prompts(public(alice, sort="Newest")) == ["less likeable", "likeable"]
    assert [m["liked"] for m in public(bob, sort="Most liked")] == [True, False]


def test_cleared_cookies_on_one_network_count_three_likes_and_another_network_one_more(site_behind_a_proxy):
    site = site_behind_a_proxy
    alice = site.browser("192.0.2.99")
    make(alice, "popular otter")
    [public_id] = [mascot["public_id"] for mascot in mine(alice)]
    cookies = [site.browser("203.0.113.7") for _cookie in range(5)]  # one person clearing cookies, or one office

    assert [like(cookie, public_id) for cookie in cookies] == [(True, 1), (True, 2), (True, 3), (True, 3), (True, 3)]
    assert like(site.browser("198.51.100.20"), public_id) == (True, 4)
    _public_id, _image, _info, _share_link, _download, details, *_rest = alice.predict(public_id, api_name="/mascot")
    assert (details["like_count"], details["liked"]) == (4, False)
    assert public(alice, sort="Most liked")[0]["like_count"] == 4
    assert like(cookies[0], public_id) == (False, 4)  # a like over the cap now counts in its place


def test_two_browsers_each_see_only_their_own_likes_under_liked_by_me(site):
    alice, bob, carol = site.browser(), site.browser(), site.browser()
    for prompt in ("an otter", "a fox", "an owl"):
        make(alice, prompt)
    ids = {mascot["prompt"]: mascot["public_id"] for mascot in mine(alice)}
    _gallery, _page, label, mascots = bob.predict(1, "Liked by me", api_name="/gallery")
    assert (mascots, label) == ([], "You have not liked any mascots yet — press ♡ on one you like.")
    like(bob, ids["an otter"])
    like(bob, ids["an owl"])
    like(carol, ids["a fox"])

    _gallery, _page, label, mascots = bob.predict(1, "Liked by me", api_name="/gallery")
    assert (prompts(mascots), label) == (["an owl", "an otter"], "Page 1 of 1 · 2 mascots")
    assert all(mascot["liked"] for mascot in mascots)
    assert prompts(public(carol, sort="Liked by me")) == ["a fox"]
    assert public(alice, sort="Liked by me") == []
    _gallery, _page, label, mascots = bob.predict(1, "Liked by me", "fox", api_name="/gallery")
    assert (mascots, label) == ([], "No mascots match “fox”.")
    assert prompts(bob.predict(1, "Liked by me", "OTTER", api_name="/gallery")[3]) == ["an otter"]

    like(bob, ids["an owl"])  # unliked: gone on the next look
    assert prompts(public(bob, sort="Liked by me")) == ["an otter"]


def test_only_the_maker_can_delete_and_a_deleted_mascot_is_gone_everywhere(site):
    alice, bob = site.browser(), site.browser()
    make(alice, "short-lived")
    (mascot,) = mine(alice)
    with pytest.raises(Exception, match="Only the browser that made"):
        bob.predict(mascot["public_id"], api_name="/delete")
    assert prompts(public(bob)) == ["short-lived"]
    alice.predict(mascot["public_id"], api_name="/delete")
    assert mine(alice) == [] and public(bob) == []
    assert not any(site.app.settings.images_dir.rglob("*.png"))
    with pytest.raises(Exception, match="private or was deleted"):
        alice.predict(mascot["public_id"], api_name="/mascot")


def test_pages_of_the_gallery(site):
    alice = site.browser()
    for index in range(5):
        make(alice, f"mascot {index}")
    # 5 is today's quota and a page holds 24: paging itself is tested on the store with small pages.
    gallery, page, label, mascots = alice.predict(1, "Newest", api_name="/gallery")
    assert (page, label) == (1, "Page 1 of 1 · 5 mascots")
    assert len(gallery) == 5 and prompts(mascots)[0] == "mascot 4"
    _gallery, page, _label, _mascots = alice.predict(9, "Newest", api_name="/gallery")
    assert page == 1  # past the end shows the last page


def test_searching_finds_every_word_in_the_idea_style_or_brand_and_old_calls_list_everything(site):
    alice, bob, carol = site.browser(), site.browser(), site.browser()
    make(alice, "an otter barista")  # the API's default style: Sticker
    make(alice, "a robot otter", style="Pixel art")
    make(bob, "a robot fox", brand="Ocean blue")
    make(bob, "a secret otter")
    secret = next(mascot for mascot in mine(bob) if mascot["prompt"] == "a secret otter")
    bob.predict(secret["public_id"], False, api_name="/set_public")

    _gallery, page, label, mascots = carol.predict(1, "Newest", "OTTER", api_name="/gallery")
    assert (prompts(mascots), page, label) == (
        ["a robot otter", "an otter barista"],
        1,
        "2 mascots match “OTTER” · page 1 of 1",
    )
    assert prompts(carol.predict(1, "Newest", "otter  pixel", api_name="/gallery")[3]) == ["a robot otter"]
    assert prompts(carol.predict(search="ocean ROBOT", api_name="/gallery")[3]) == ["a robot fox"]
    assert prompts(carol.predict(1, "Newest", "sticker barista", api_name="/gallery")[3]) == ["an otter barista"]
    assert carol.predict(9, "Most liked", "otter", api_name="/gallery")[1] == 1  # past the end: the last page
    _gallery, _page, label, mascots = carol.predict(1, "Newest", "otter unicorn", api_name="/gallery")
    assert (mascots, label) == ([], "No mascots match “otter unicorn”.")
    # Clients written before search call without it, and still get everything.
    _gallery, _page, label, mascots = carol.predict(1, "Newest", api_name="/gallery")
    assert (prompts(mascots), label) == (
        ["a robot fox", "a robot otter", "an otter barista"],
        "Page 1 of 1 · 3 mascots",
    )

    _gallery, _page, label, mascots = bob.predict(1, "otter", api_name="/my_mascots")
    assert (prompts(mascots), label) == (["a secret otter"], "1 mascot matches “otter” · page 1 of 1")
    assert prompts(alice.predict(1, "Otter", api_name="/my_mascots")[3]) == ["a robot otter", "an otter barista"]
    assert prompts(alice.predict(1, "fox", api_name="/my_mascots")[3]) == []  # Bob's fox is not Alice's
    assert prompts(mine(bob)) == ["a secret otter", "a robot fox"]  # the old call: page only


def test_a_search_too_long_is_refused_with_a_sentence(site):
    alice = site.browser()
    make(alice, "o" * 200)
    too_long = re.escape("search must be at most 200 characters (got 201).")
    with pytest.raises(Exception, match=too_long):
        alice.predict(1, "Newest", "o" * 201, api_name="/gallery")
    with pytest.raises(Exception, match=too_long):
        alice.predict(1, "o" * 201, api_name="/my_mascots")
    assert len(alice.predict(1, "Newest", " " + "O" * 200 + " ", api_name="/gallery")[3]) == 1


def test_the_daily_quota_refuses_for_free_and_really_resets_at_midnight_utc(site):
    alice, bob = site.browser(), site.browser()
    make(alice, "one", num_images_per_prompt=4)
    assert alice.predict(api_name="/quota").startswith("1 of 5 mascots left today · resets in 2 h 0 min")
    with pytest.raises(Exception, match="1 of 5 mascots left today"):
        make(alice, "two", num_images_per_prompt=2)
    make(alice, "three")
    with pytest.raises(Exception, match="made your 5 mascots for today"):
        make(alice, "four")
    assert len(site.fake.requests) == 2  # the refusals never reached the generator
    make(bob, "bob is not held up")
    site.clock.now += timedelta(hours=2, minutes=1)  # 00:01 UTC the next day
    make(alice, "a new day")
    assert prompts(mine(alice))[0] == "a new day"


def test_browsers_on_one_network_share_its_daily_quota_and_the_refusal_says_so(site_behind_a_proxy):
    site = site_behind_a_proxy
    alice, bob = site.browser("203.0.113.7"), site.browser("203.0.113.7")  # two cookie jars, one household
    carol = site.browser("198.51.100.20")
    make(alice, "alice's otter", num_images_per_prompt=3)  # Alice's own quota (3) is spent; the network has 1 left
    assert bob.predict(api_name="/quota").startswith("1 of your network's 4 mascots left today · resets in 2 h")
    with pytest.raises(Exception, match="made your 3 mascots for today"):  # her own refusal comes first
        make(alice, "more")
    with pytest.raises(Exception, match=re.escape("Your network has 1 of its 4 mascots left today")):
        make(bob, "two foxes", num_images_per_prompt=2)
    make(bob, "one fox")
    with pytest.raises(Exception, match=re.escape("Your network has made its 4 mascots for today")):
        make(bob, "a third fox")
    with pytest.raises(Exception, match="Your network has made its 4 mascots"):
        make(site.browser("203.0.113.7"), "a fresh cookie changes nothing")
    assert len(site.fake.requests) == 2  # the refusals never reached the generator
    assert carol.predict(api_name="/quota").startswith("3 of 3 mascots left today")
    make(carol, "another network", num_images_per_prompt=3)
    site.clock.now += timedelta(hours=2, minutes=1)  # 00:01 UTC the next day
    make(bob, "a new day", num_images_per_prompt=3)
    assert prompts(mine(bob))[0] == "a new day"


THANKS = "Thank you for the report: the operator will look at this mascot."
UNDER_REVIEW = "Hidden from the gallery after reports; the operator will review it."


def report(client: Client, public_id: str, reason: str = "") -> str:
    return client.predict(public_id, reason, api_name="/report")


def test_reports_from_three_networks_take_a_mascot_out_of_the_gallery_for_all_but_its_owner(site_behind_a_proxy):
    site = site_behind_a_proxy
    alice, stranger = site.browser("203.0.113.7"), site.browser("192.0.2.99")
    make(alice, "a rude otter")
    make(alice, "a polite fox")
    rude = next(mascot["public_id"] for mascot in mine(alice) if mascot["prompt"] == "a rude otter")
    for _cookie in range(3):  # one person with three cookies is still one network
        assert report(site.browser("198.51.100.20"), rude, "offensive") == THANKS
    assert report(site.browser("192.0.2.5"), rude, "violence") == THANKS
    assert prompts(public(stranger)) == ["a polite fox", "a rude otter"]

    assert report(site.browser("2001:db8::1"), rude) == THANKS  # the third network

    _gallery, _page, label, mascots = stranger.predict(1, "Newest", api_name="/gallery")
    assert (prompts(mascots), label) == (["a polite fox"], "Page 1 of 1 · 1 mascot")
    with pytest.raises(Exception, match="private or was deleted"):
        stranger.predict(rude, api_name="/mascot")
    owned = {mascot["prompt"]: mascot for mascot in mine(alice)}
    assert owned["a rude otter"]["moderation_note"] == UNDER_REVIEW
    assert owned["a polite fox"]["moderation_note"] == ""
    _public_id, _image, info, *_rest = alice.predict(rude, api_name="/mascot")
    assert UNDER_REVIEW in info
    with pytest.raises(Exception, match="Until the operator restores it, it cannot be made public"):
        alice.predict(rude, True, api_name="/set_public")
    assert site.app.store.restore_mascot(rude)  # what `python -m mascot.admin restore` does
    assert prompts(public(stranger)) == ["a polite fox", "a rude otter"]


def test_a_report_counts_once_and_the_refusals_arrive_as_sentences(site):
    alice, bob = site.browser(), site.browser()
    make(alice, "an otter")
    (mascot,) = mine(alice)
    with pytest.raises(Exception, match="This is your own mascot: make it private or delete it instead"):
        report(alice, mascot["public_id"], "spam")
    with pytest.raises(Exception, match="This mascot is private or was deleted"):
        report(bob, "AAAAAAAAAAAA", "spam")
    with pytest.raises(Exception, match="reason must be one of 'offensive', 'sexual', 'violence', 'spam'"):
        report(bob, mascot["public_id"], "boring")
    assert report(bob, mascot["public_id"], "spam") == THANKS
    assert report(bob, mascot["public_id"], "offensive") == "You reported this mascot already."
    [listed] = site.app.store.reported_mascots()
    assert (listed.public_id, listed.reasons) == (mascot["public_id"], {"spam": 1})


def test_one_job_in_flight_per_browser_and_a_cancelled_job_costs_nothing(site):
    alice = site.browser()
    site.fake.gate.clear()
    job = alice.submit(prompt="slow", seed=1, **FAST, api_name="/generate")
    assert site.fake.started.wait(10)
    with pytest.raises(Exception, match=r"still being made|already have a mascot"):
        make(alice, "impatient")
    assert alice.predict(api_name="/cancel") == "Cancelling…"
    site.fake.gate.set()
    _images, status = job.result(timeout=30)
    assert status.startswith("Cancelled")
    assert alice.predict(api_name="/quota").startswith("5 of 5 mascots left today")
    make(alice, "patient")
    assert prompts(mine(alice)) == ["patient"]


def test_a_share_link_opens_a_public_mascot_for_a_first_time_visitor(site):
    alice = site.browser()
    make(alice, "shareable", seed=42)
    (mascot,) = mine(alice)
    visitor = site.browser()
    public_id, _image, info, share_link, _download, details, *_rest = visitor.predict(
        mascot["public_id"], api_name="/mascot"
    )
    assert public_id == mascot["public_id"] == details["public_id"]
    assert share_link.endswith(f"/?mascot={mascot['public_id']}")
    assert "Seed 42" in info and details["like_count"] == 0 and details["liked"] is False


def test_a_style_and_brand_shape_what_the_model_sees_while_the_mascot_keeps_the_persons_words(site):
    alice = site.browser()
    make(alice, "an otter barista", style="Sticker", brand="Ocean blue", seed=9)
    seen = site.fake.requests[-1]
    assert seen.prompt.startswith("an otter barista, mascot character, die-cut sticker")
    assert seen.prompt.endswith("navy and sky blue colour palette, white accents")
    (mascot,) = mine(alice)
    assert mascot["prompt"] == "an otter barista"
    _id, _image, info, *_rest = alice.predict(mascot["public_id"], api_name="/mascot")
    assert "Style Sticker · brand Ocean blue" in info
    with pytest.raises(Exception, match=r"style 'Baroque' is not one of this app's presets"):
        make(alice, "an otter", style="Baroque")


def test_a_logo_is_uploaded_once_mixed_in_and_remembered_with_the_mascot(site, tmp_path):
    from gradio_client import handle_file
    from PIL import Image

    logo_file = tmp_path / "logo.png"
    Image.new("RGBA", (300, 200), (200, 30, 30, 255)).save(logo_file)
    alice = site.browser()
    logo_id = alice.predict(handle_file(str(logo_file)), api_name="/upload_logo")
    # The file's id, and the grant that makes it this browser's (the same upload again: the same answer).
    assert re.fullmatch(r"[0-9a-f]{64}\.[A-Za-z0-9_-]{43}", logo_id)
    assert alice.predict(handle_file(str(logo_file)), api_name="/upload_logo") == logo_id

    make(alice, "a fox", logo=logo_id, logo_weight=0.5)
    assert site.fake.requests[-1].logo == logo_id and site.fake.requests[-1].logo_weight == 0.5
    assert site.fake.logos[-1].size == (300, 200) and site.fake.logos[-1].mode == "RGB"
    (mascot,) = mine(alice)
    _id, _image, info, *_rest = alice.predict(mascot["public_id"], api_name="/mascot")
    assert "mixed in at 0.5" in info

    with pytest.raises(Exception, match="no longer here"):
        make(alice, "a fox", logo="0" * 64)
    not_an_image = tmp_path / "logo.png.txt"
    not_an_image.write_text("<svg onload=alert(1)>")
    with pytest.raises(Exception, match="not an image we can read"):
        alice.predict(handle_file(str(not_an_image)), api_name="/upload_logo")


def test_a_logo_upload_cannot_name_a_file_outside_gradios_upload_folder(site):
    """Raw HTTP, as an attacker would send it (gradio_client would upload the named local file instead)."""
    for path in ("/etc/passwd", str(site.app.settings.data_dir / "secret.key"), "../../etc/passwd"):
        body = json.dumps({"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}]}).encode()
        request = urllib.request.Request(
            site.url + "gradio_api/run/upload_logo", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = response.read().decode()
        except urllib.error.HTTPError as error:
            answer = error.read().decode()
        assert "root:" not in answer
        assert not re.search(r"[0-9a-f]{64}", answer)  # no logo was kept from it
        assert not any((site.app.settings.images_dir / "logos").glob("*.png"))


def test_only_files_in_gradios_upload_folder_count_as_uploads(tmp_path, monkeypatch):
    """Our own check behind Gradio's: a raw payload naming any other file is refused."""
    from mascot.prompt.logos import LogoRefused
    from mascot.ui.logo_panel import uploaded_file

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    inside = tmp_path / "uploads" / "abc" / "logo.png"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"png")
    assert uploaded_file({"path": str(inside)}) == inside.resolve()
    escape = str(tmp_path / "uploads" / ".." / "secret.key")
    (tmp_path / "secret.key").write_text("s")
    for payload in ({"path": "/etc/passwd"}, {"path": escape}, {"path": 5}, "/etc/passwd", {"url": "http://x"}):
        with pytest.raises(LogoRefused, match="could not be found"):
            uploaded_file(payload)


def test_a_transparent_sticker_of_any_visible_mascot_keeps_its_parameters(site):
    from PIL import Image

    alice, visitor = site.browser(), site.browser()
    make(alice, "a sticker fox", seed=4)
    (mascot,) = mine(alice)
    sticker_path = visitor.predict(mascot["public_id"], api_name="/sticker")
    with Image.open(sticker_path) as sticker:
        assert sticker.format == "PNG" and sticker.mode == "RGBA"
        assert "a sticker fox" in sticker.info["parameters"]
    alice.predict(mascot["public_id"], False, api_name="/set_public")
    with pytest.raises(Exception, match="private or was deleted"):
        visitor.predict(mascot["public_id"], api_name="/sticker")


def test_making_a_sticker_clears_stickers_older_than_an_hour(site):
    stickers = site.app.settings.data_dir / "downloads" / "stickers"  # the data folder: Gradio serves none of it
    stickers.mkdir(parents=True, exist_ok=True)
    stale, recent = stickers / "AAAAAAAAAAAA.png", stickers / "BBBBBBBBBBBB.png"
    for path in (stale, recent):
        path.write_bytes(b"png")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    alice = site.browser()
    make(alice, "a sticker fox")
    alice.predict(mine(alice)[0]["public_id"], api_name="/sticker")
    assert not stale.exists() and recent.exists()


def test_the_running_app_keeps_its_jobs_claims_alive(site):
    alice = site.browser()
    site.fake.gate.clear()
    job = alice.submit(prompt="a long wait", seed=1, **FAST, api_name="/generate")
    assert site.fake.started.wait(10)
    assert site.app.claims.refresh_once(site.clock.now + timedelta(minutes=20)) == 1
    site.fake.gate.set()
    job.result(timeout=30)
    assert site.app.claims.refresh_once() == 0  # done: nothing held any more


BLOCKED = "This idea uses words this site does not allow. Please describe your mascot differently."


def test_an_idea_with_a_blocked_word_is_refused_for_free_and_a_fine_one_is_still_made(site_with_blocked_words, caplog):
    site = site_with_blocked_words
    caplog.set_level(logging.INFO, logger="mascot.prompt.wordfilter")
    alice = site.browser()
    for idea in ("a secret otter covered in gore", "a GÖRE otter", "ducks in a b.l.o.o.d bath", "go\u200bre"):
        with pytest.raises(Exception, match=re.escape(BLOCKED)) as caught:
            make(alice, idea, num_images_per_prompt=4)
        assert not re.search(r"gore|blood", str(caught.value), re.IGNORECASE)  # the refusal does not list them
    assert site.fake.requests == []
    assert mine(alice) == [] and public(alice) == []
    assert alice.predict(api_name="/quota").startswith("5 of 5 mascots left today")
    refusals = [record.getMessage() for record in caplog.records if record.name == "mascot.prompt.wordfilter"]
    assert len(refusals) == 4 and "'gore' (line 2 of " in refusals[0] and "'blood bath' (line 3 of " in refusals[2]
    assert not any("secret otter" in message for message in refusals)  # the rule is logged, not the idea

    fine = "a grape otter drinking blood orange juice"  # no blocked word or phrase as whole words
    assert len(make(alice, fine, style="")) == 1
    assert [request.prompt for request in site.fake.requests] == [fine]
    assert alice.predict(api_name="/quota").startswith("4 of 5 mascots left today")


def test_a_blocked_word_in_what_to_avoid_is_accepted(site_with_blocked_words):
    site = site_with_blocked_words
    alice = site.browser()
    make(alice, "a cheerful otter", negative_prompt="gore, blood bath", style="")
    assert site.fake.requests[-1].negative_prompt == "gore, blood bath"
    assert prompts(mine(alice)) == ["a cheerful otter"]


def test_the_generate_handler_refuses_a_blocked_idea_without_its_validator(site_with_blocked_words):
    """The validator is advice: the handler itself is the gate, before anything is claimed or queued."""
    site = site_with_blocked_words
    generate = next(block.fn for block in site.app.demo.fns.values() if block.api_name == "generate")
    with pytest.raises(gr.Error, match=re.escape(BLOCKED)):
        next(generate(prompt="an otter in a blood bath", seed=1, **FAST))
    assert site.fake.requests == [] and site.app.worker.queue_length == 0


def test_the_health_check_says_ready_with_the_model_and_the_queue(site):
    code, report = read_health(site.url)
    assert code == 200
    assert report == {
        "status": "ready",
        "message": "Ready",
        "model": "fake generator",
        "preview_model": True,
        "queue_length": 0,
        "database": "ok",
        "shutting_down": False,
        "compiled": None,  # the fake compiles nothing
    }


def export(client: Client) -> tuple[dict[str, bytes], dict]:
    """A browser's /export_mascots ZIP: its PNGs by name, and mascots.json."""
    import zipfile

    path = client.predict(api_name="/export_mascots")
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        files = {name: archive.read(name) for name in archive.namelist()}
    return {name: data for name, data in files.items() if name != "mascots.json"}, json.loads(files["mascots.json"])


def idea_slug(name: str) -> str:
    """The idea's part of a download name `mascot-<idea>-<12-character share id>.png`."""
    return name.removeprefix("mascot-")[: -len("-XXXXXXXXXXXX.png")]


def test_each_browser_exports_all_its_mascots_across_pages_and_only_its_own(site, monkeypatch):
    import io

    from PIL import Image

    monkeypatch.setattr("mascot.store.export.EXPORT_PAGE_SIZE", 2)  # alice's 3 mascots span two pages of the store
    alice, bob = site.browser(), site.browser()
    make(alice, "../../etc/passwd otter")
    make(alice, "a cheerful otter barista", seed=2)
    make(alice, "Ünïcode Fox!!", seed=3)
    make(bob, "bob's fox")
    pngs, index = export(alice)
    alice_ids = {mascot["public_id"] for mascot in mine(alice)}
    assert len(pngs) == 3 and {name[-16:-4] for name in pngs} == alice_ids
    assert {record["file"] for record in index["mascots"]} == set(pngs)
    for name, data in pngs.items():
        assert "/" not in name and "\\" not in name and ".." not in name
        assert re.fullmatch(r"mascot-[a-z0-9-]{1,40}-[A-Za-z0-9_-]{12}\.png", name), name  # the one download name
        with Image.open(io.BytesIO(data)) as picture:
            assert picture.format == "PNG"
            record = next(record for record in index["mascots"] if record["file"] == name)
            assert picture.info["parameters"].startswith(record["prompt"])
    assert {idea_slug(name) for name in pngs} == {"etc-passwd-otter", "a-cheerful-otter-barista", "unicode-fox"}
    assert {record["prompt"] for record in index["mascots"]} == {
        "../../etc/passwd otter", "a cheerful otter barista", "Ünïcode Fox!!"
    }  # fmt: skip
    assert (index["total"], index["missing"], index["truncated"]) == (3, 0, False)
    assert all(record["is_public"] and record["width"] == 256 for record in index["mascots"])
    bob_pngs, bob_index = export(bob)
    assert [record["prompt"] for record in bob_index["mascots"]] == ["bob's fox"] and len(bob_pngs) == 1
    assert bob_index["mascots"][0]["public_id"] not in alice_ids and not set(bob_pngs) & set(pngs)


def test_a_browser_with_nothing_to_export_is_told_so(site):
    with pytest.raises(Exception, match=r"You have no mascots yet: make one on the Create tab\."):
        site.browser().predict(api_name="/export_mascots")


def test_a_mascot_whose_file_is_gone_is_listed_as_missing_and_the_rest_exported(site):
    alice = site.browser()
    make(alice, "kept otter")
    make(alice, "lost otter", seed=5)
    lost = next(mascot for mascot in mine(alice) if mascot["prompt"] == "lost otter")
    entry = site.app.store.mascot(lost["public_id"], None)
    assert entry is not None
    entry.path.unlink()
    pngs, index = export(alice)
    assert [idea_slug(name) for name in pngs] == ["kept-otter"]
    (missing,) = [record for record in index["mascots"] if record["missing"]]
    assert (missing["public_id"], missing["file"], index["missing"]) == (lost["public_id"], None, 1)


def test_top_this_week_lifts_this_weeks_likes_and_forgets_them_a_week_later(site):
    alice, bob, carol = site.browser(), site.browser(), site.browser()
    make(alice, "an old favourite")
    [old] = mine(alice)
    like(bob, old["public_id"])
    like(carol, old["public_id"])
    site.clock.now += timedelta(days=8)
    make(alice, "a new hit")
    [new, _] = mine(alice)
    like(bob, new["public_id"])

    assert prompts(public(carol, sort="Top this week")) == ["a new hit", "an old favourite"]
    assert prompts(public(carol, sort="Most liked")) == ["an old favourite", "a new hit"]
    site.clock.now += timedelta(days=8)  # a week later nothing was liked this week: newest first
    make(alice, "the newest")
    assert prompts(public(carol, sort="Top this week")) == ["the newest", "a new hit", "an old favourite"]
