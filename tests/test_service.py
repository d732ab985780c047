"""The service decides what a person can do, without Gradio: a fake generator, a temporary store, milliseconds."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from mascot.generation.worker import JobState
from mascot.prompt.logos import LogoLibrary
from mascot.service import DownloadFolder, MascotService, Refusal, Visitor, sentences
from mascot.service.starting_pictures import StartingPictures
from mascot.settings import Rules
from mascot.store.imaging import read_parameters
from mascot.store.store import MascotStore
from mascot.ui.pictures import download, sticker_download
from mascot.web.clients import AddressKeys
from tests.support.fakes import FakeGenerator
from tests.support.jobs import finished, storing_worker
from tests.support.store import MODEL, make_request, make_result, owner, save

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
FAST = {"width": 256, "height": 256, "num_inference_steps": 2, "seed": 1}
RULES = Rules(daily_quota=4, address_daily_quota=0, reports_to_hide=1, likes_per_network=3, max_queued_per_client=1)


@dataclass
class Site:
    service: MascotService
    store: MascotStore
    fake: FakeGenerator
    downloads: Path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from serve_service(tmp_path, with_logos=False)


@pytest.fixture
def logo_site(tmp_path: Path) -> Iterator[Site]:
    """With logo mixing, as the app has it: More like this and uploaded logos."""
    yield from serve_service(tmp_path, with_logos=True)


def serve_service(tmp_path: Path, *, with_logos: bool) -> Iterator[Site]:
    store = MascotStore(f"sqlite:///{tmp_path / 'mascots.db'}", tmp_path / "images", rules=RULES)
    fake = FakeGenerator()
    logos = LogoLibrary(tmp_path / "images" / "logos") if with_logos else None
    worker = storing_worker(
        store,
        fake,
        now=NOW,
        max_per_client=RULES.max_queued_per_client,
        load_logo=StartingPictures(store, logos).open if logos is not None else None,
    )
    downloads = tmp_path / "downloads"
    service = MascotService(
        store=store,
        worker=worker,
        rules=RULES,
        address_keys=AddressKeys(b"test secret"),
        downloads=DownloadFolder(downloads),
        logos=logos,
        clock=lambda: NOW,
    )
    yield Site(service, store, fake, downloads)
    fake.gate.set()
    worker.stop()
    store.close()


def who(name: str, address: str = "203.0.113.9") -> Visitor:
    return Visitor(token_hash=owner(name), address=address, page_url="https://mascots.example/app")


def public_id_of(site: Site, name: str) -> str:
    return save(site.store, owner(name), "an otter barista", now=NOW).public_ids[0]


# ---- creating -----------------------------------------------------------------------------------------------------
def test_a_submitted_request_is_made_stored_and_counted_against_the_quota(site: Site) -> None:
    alice = who("alice")
    job = site.service.submit({"prompt": "an otter", **FAST, "num_images_per_prompt": 2}, alice)

    assert finished(job) is JobState.DONE
    assert [entry.request.prompt for entry in site.store.history(owner("alice"))] == ["an otter", "an otter"]
    assert site.service.quota_line(alice).startswith("2 of 4 mascots left today")


def test_admission_names_the_parameter_it_refuses(site: Site) -> None:
    with pytest.raises(Refusal) as refused:
        site.service.admit({"prompt": "an otter", **FAST, "width": 100}, who("alice"))
    assert refused.value.parameter == "width"


def test_admission_reports_every_bad_field_at_once_in_the_apis_words_and_the_pages(site: Site) -> None:
    with pytest.raises(Refusal) as refused:
        site.service.admit({"prompt": " ", **FAST, "width": 100, "num_images_per_prompt": 5}, who("alice"))
    problems = refused.value.problems
    assert [problem.parameter for problem in problems] == ["prompt", "width", "num_images_per_prompt"]
    assert "num_images_per_prompt must be between 1 and 4 (got 5)." in refused.value.message  # the API's names
    assert "Number of mascots must be between 1 and 4 (got 5)." in refused.value.for_people  # the page's labels
    assert "num_images_per_prompt" not in refused.value.for_people and "Your idea is empty" in refused.value.for_people


def test_a_slow_model_gets_quick_settings_the_prior_can_run(site: Site) -> None:
    quick = site.service.quick_settings()  # the fake is a preview model on a CPU
    assert quick == {"width": 512, "height": 512, "num_inference_steps": 10, "prior_num_inference_steps": 5}
    site.service.request_from({"prompt": "an otter", **quick})  # within every range (the prior needs 2 steps)


def test_the_daily_quota_is_refused_before_a_queue_slot_is_taken(site: Site) -> None:
    alice = who("alice")
    assert finished(site.service.submit({"prompt": "an otter", **FAST, "num_images_per_prompt": 3}, alice))

    with pytest.raises(Refusal, match="1 of 4 mascots left today"):
        site.service.admit({"prompt": "two more", **FAST, "num_images_per_prompt": 2}, alice)
    with pytest.raises(Refusal, match="1 of 4 mascots left today"):
        site.service.submit({"prompt": "two more", **FAST, "num_images_per_prompt": 2}, alice)
    assert site.fake.requests[-1].prompt == "an otter"  # nothing else reached the generator


def test_one_job_in_flight_per_browser_and_cancel_frees_it(site: Site) -> None:
    alice = who("alice")
    site.fake.gate.clear()  # the first job waits after its first step
    job = site.service.submit({"prompt": "a slow otter", **FAST}, alice)

    with pytest.raises(Refusal, match="already have a mascot in the works"):
        site.service.admit({"prompt": "another", **FAST}, alice)
    with pytest.raises(Refusal, match="still being made"):  # the store's claim refuses it too
        site.service.submit({"prompt": "another", **FAST}, alice)
    assert site.service.cancel(alice)
    site.fake.gate.set()
    assert finished(job) is JobState.CANCELLED
    assert not site.service.cancel(alice)
    assert finished(site.service.submit({"prompt": "now it may", **FAST}, alice)) is JobState.DONE


def test_a_page_opened_again_follows_its_own_mascot_and_only_so_many_pages_do(site: Site) -> None:
    alice, bob = who("alice"), who("bob", "198.51.100.7")
    site.fake.gate.clear()  # the job waits after its first step
    job = site.service.submit({"prompt": "a slow otter", **FAST}, alice)

    with site.service.following_own_job(bob) as bobs:
        assert bobs is None  # someone else's mascot is never followed
    with site.service.following_own_job(alice) as reloaded, site.service.following_own_job(alice) as second_tab:
        assert reloaded is job and second_tab is job
        with site.service.following_own_job(alice) as third:
            assert third is None  # each follower holds a thread until the job ends: a page opened again and again
    with site.service.following_own_job(alice) as again:
        assert again is job  # the ones that left made room
    site.fake.gate.set()
    assert finished(job) is JobState.DONE
    with site.service.following_own_job(alice) as done:
        assert done is None


def test_two_ipv6_addresses_in_one_slash_64_share_the_queue_cap(site: Site) -> None:
    site.fake.gate.clear()
    site.service.submit({"prompt": "first", **FAST}, who("alice", "2001:db8:1:2::1"))

    # Another cookie at another address of the same /64 is the same network: the cap (1 here) holds.
    with pytest.raises(Refusal, match="Several mascots from your network"):
        site.service.admit({"prompt": "second", **FAST}, who("bob", "2001:db8:1:2:ffff::9"))
    with pytest.raises(Refusal, match="Several mascots from your network"):
        site.service.submit({"prompt": "second", **FAST}, who("bob", "2001:db8:1:2:ffff::9"))
    site.service.admit({"prompt": "elsewhere", **FAST}, who("carol", "2001:db8:1:3::1"))  # another /64
    site.fake.gate.set()


def test_a_request_without_a_cookie_is_checked_but_not_counted(site: Site) -> None:
    assert site.service.admit({"prompt": "an otter", **FAST}, None).prompt == "an otter"


# ---- one mascot ---------------------------------------------------------------------------------------------------
def test_a_like_counts_once_per_browser_and_toggles(site: Site) -> None:
    public_id = public_id_of(site, "alice")

    state, entry = site.service.like(public_id, who("bob"))
    assert (state.liked, state.like_count, entry.like_count) == (True, 1, 1)
    state, _entry = site.service.like(public_id, who("bob"))
    assert (state.liked, state.like_count) == (False, 0)
    with pytest.raises(Refusal, match=sentences.GONE):
        site.service.like("nosuchmascot", who("bob"))


def test_only_the_maker_hides_a_mascot_and_then_only_the_maker_sees_it(site: Site) -> None:
    public_id = public_id_of(site, "alice")

    with pytest.raises(Refusal, match=sentences.NOT_YOURS_TO_SHOW):
        site.service.set_public(public_id, False, who("bob"))
    notice, entry = site.service.set_public(public_id, False, who("alice"))
    assert notice.message == sentences.HIDDEN and entry is not None and not entry.is_public
    with pytest.raises(Refusal, match=sentences.GONE):
        site.service.open(public_id, who("bob"))
    assert site.service.open(public_id, who("alice")).public_id == public_id


@pytest.mark.parametrize("answer", ["false", "true", "0", 0, 1, None, [False]])
def test_showing_a_mascot_takes_a_boolean_and_nothing_that_python_would_call_true(site: Site, answer: object) -> None:
    public_id = public_id_of(site, "alice")
    site.service.set_public(public_id, False, who("alice"))

    with pytest.raises(Refusal, match="is_public must be true or false") as refused:
        site.service.set_public(public_id, answer, who("alice"))

    assert refused.value.parameter == "is_public"
    assert site.store.public_mascot(public_id) is None  # "false" used to publish it


def test_only_the_maker_deletes_a_mascot(site: Site) -> None:
    public_id = public_id_of(site, "alice")

    with pytest.raises(Refusal, match=sentences.NOT_YOURS_TO_DELETE):
        site.service.delete(public_id, who("bob"))
    assert site.service.delete(public_id, who("alice")).message == sentences.DELETED
    with pytest.raises(Refusal, match=sentences.GONE):
        site.service.open(public_id, who("alice"))


def test_a_report_from_enough_networks_takes_a_mascot_out_of_the_gallery_and_ones_own_is_refused(site: Site) -> None:
    public_id = public_id_of(site, "alice")

    with pytest.raises(Refusal):
        site.service.report(public_id, "spam", who("alice"))
    with pytest.raises(Refusal) as bad_reason:
        site.service.report(public_id, "boring", who("bob"))
    assert bad_reason.value.parameter == "reason"
    assert site.service.report(public_id, "spam", who("bob"))  # the rules: one network is enough here
    assert site.store.public_mascot(public_id) is None


def test_a_sticker_keeps_the_parameters_and_old_downloads_are_pruned(site: Site) -> None:
    public_id = public_id_of(site, "alice")
    old = site.downloads / "stickers" / "AAAAAAAAAAAA.png"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"png")
    os.utime(old, (time.time() - 7200,) * 2)

    entry = site.service.sticker(public_id, who("bob"))

    path = site.service.downloads.sticker(public_id)
    assert entry.public_id == public_id and path is not None
    assert path.is_relative_to(site.downloads / "stickers")
    with Image.open(path) as sticker:
        assert sticker.mode == "RGBA"
    assert read_parameters(path)["prompt"] == "an otter barista"
    assert not old.exists()
    assert [file.name for file in path.parent.iterdir()] == [path.name]  # no scratch file left beside it


def test_deleting_a_mascot_removes_its_sticker_and_its_owners_zips_at_once(site: Site) -> None:
    public_id = public_id_of(site, "alice")
    site.service.sticker(public_id, who("bob"))
    made = site.service.export(who("alice"))
    assert site.service.downloads.sticker(public_id) and made.path.is_file()

    site.service.delete(public_id, who("alice"))

    assert site.service.downloads.sticker(public_id) is None and not made.path.exists()
    assert site.service.last_export(who("alice")) is None


def test_the_export_zips_the_browsers_mascots_and_refuses_an_empty_one(site: Site) -> None:
    public_id_of(site, "alice")

    download = site.service.export(who("alice"))

    with zipfile.ZipFile(download.path) as archive:
        index = json.loads(archive.read("mascots.json"))
        assert len([name for name in archive.namelist() if name.endswith(".png")]) == 1
    assert index["total"] == 1 and download.warning is None
    assert download.path.is_relative_to(site.downloads / "exports")
    assert site.service.downloads.export(owner("alice"), download.path.parent.name, download.path.name)
    assert site.service.downloads.export(owner("bob"), download.path.parent.name, download.path.name) is None
    with pytest.raises(Refusal):
        site.service.export(who("carol"))


def test_an_unchanged_export_is_handed_out_again_and_a_change_makes_a_new_one(site: Site) -> None:
    public_id = public_id_of(site, "alice")
    first = site.service.export(who("alice"))

    assert site.service.export(who("alice")).path == first.path  # nothing changed: the same ZIP, no new file
    site.service.set_public(public_id, False, who("alice"))  # its visibility is in mascots.json
    changed = site.service.export(who("alice"))

    assert changed.path != first.path
    assert len(list((site.downloads / "exports").rglob("*.zip"))) == 2


def test_one_export_at_a_time_per_browser_and_a_few_per_ten_minutes_refused_before_the_queue(site: Site) -> None:
    public_id = public_id_of(site, "alice")
    alice = who("alice")

    site.service.admit_export(alice)  # the validator: a queue slot may be taken
    with pytest.raises(Refusal) as running:
        site.service.admit_export(alice)
    assert running.value.message == sentences.EXPORT_RUNNING
    site.service.export(alice)  # ends the lease, whatever happens in it
    for visible in (False, True):  # two more ZIPs of changed mascots: three in ten minutes, the limit
        site.service.set_public(public_id, visible, alice)
        site.service.admit_export(alice)
        site.service.export(alice)
    site.service.set_public(public_id, False, alice)
    with pytest.raises(Refusal) as too_many:
        site.service.admit_export(alice)

    assert too_many.value.message.startswith("You reached the limit of 3 ZIPs per 10 minutes. Try again in ")
    site.service.admit_export(who("bob", address="198.51.100.7"))  # another browser is not held up


def test_the_browsers_of_one_network_cannot_all_export_at_once(site: Site) -> None:
    for name in ("a", "b", "c", "d"):  # network_factor: four browsers' worth
        site.service.admit_export(who(name))

    with pytest.raises(Refusal) as refused:
        site.service.admit_export(who("e"))

    assert refused.value.message == sentences.TOO_MANY_AT_ONCE_HERE


def test_stickers_one_at_a_time_and_ten_a_minute_per_browser(site: Site) -> None:
    public_id = public_id_of(site, "alice")
    bob = who("bob")
    site.service.admit_sticker(bob)
    with pytest.raises(Refusal, match=r"^Your sticker is still being made"):
        site.service.admit_sticker(bob)
    site.service.sticker(public_id, bob)
    for _ in range(9):
        site.service.admit_sticker(bob)
        site.service.sticker(public_id, bob)

    with pytest.raises(Refusal) as refused:
        site.service.admit_sticker(bob)

    assert refused.value.message.startswith("You reached the limit of 10 stickers per minute. Try again in ")
    with pytest.raises(Refusal, match=r"^You reached the limit"):  # the handler is the gate for a racing request
        site.service.sticker(public_id, bob)


def test_logos_and_dropped_pngs_need_the_cookie_and_count_per_browser(site: Site, tmp_path: Path) -> None:
    from mascot.prompt.logos import LogoLibrary
    from mascot.service.limits import HouseLimits, Limit, Limiters

    site.service.logos = LogoLibrary(tmp_path / "logos")
    site.service.limiters = Limiters(HouseLimits(pictures=Limit(per_window=2, window_s=600)))
    logo = tmp_path / "logo.png"
    Image.new("RGB", (40, 40), "red").save(logo)
    with pytest.raises(Refusal) as no_cookie:
        site.service.upload_logo(logo, None)
    assert no_cookie.value.message == sentences.NO_COOKIE

    site.service.upload_logo(logo, who("alice"))
    with pytest.raises(Refusal, match=r"^That picture carries no settings"):  # read, so counted
        site.service.recipe(logo, who("alice"))
    with pytest.raises(Refusal) as refused:
        site.service.upload_logo(logo, who("alice"))

    assert refused.value.message.startswith("You reached the limit of 2 pictures per 10 minutes. Try again in ")
    assert site.service.upload_logo(logo, who("bob", address="198.51.100.7"))


def test_likes_and_reports_count_per_browser_and_network(site: Site) -> None:
    """Each is a row kept for good, and a fresh cookie costs nothing: a review of the store sent 2,000 likes from one
    network, each a new browser."""
    from mascot.service.limits import HouseLimits, Limit, Limiters

    public_id = public_id_of(site, "alice")
    site.service.limiters = Limiters(
        HouseLimits(likes=Limit(per_window=2, window_s=600), reports=Limit(per_window=1, window_s=600))
    )
    site.service.like(public_id, who("bob"))
    site.service.like(public_id, who("bob"))  # taken back: a like all the same
    with pytest.raises(Refusal) as likes:
        site.service.like(public_id, who("bob"))
    assert likes.value.message.startswith("You reached the limit of 2 likes per 10 minutes. Try again in ")
    assert site.service.like(public_id, who("carol"))  # the same network: its cap is four browsers' worth
    site.service.report(public_id, None, who("bob"))
    with pytest.raises(Refusal) as reports:
        site.service.report(public_id, None, who("bob"))
    assert reports.value.message.startswith("You reached the limit of 1 report per 10 minutes. Try again in ")


def test_every_download_of_a_mascot_is_named_after_its_idea_and_share_id(site: Site) -> None:
    public_id = public_id_of(site, "alice")
    expected = f"mascot-an-otter-barista-{public_id}"

    url, png = download("https://mascots.example/app", site.service.open(public_id, who("alice")))
    sticker_url, sticker = sticker_download(
        "https://mascots.example/app", site.service.sticker(public_id, who("alice"))
    )
    with zipfile.ZipFile(site.service.export(who("alice")).path) as archive:
        (entry,) = [name for name in archive.namelist() if name.endswith(".png")]

    # The panel's Download PNG: the checking route as an attachment, under this name (tests/test_image_routes.py).
    assert url == f"https://mascots.example/app/images/{public_id}.png?download=1"
    assert sticker_url == f"https://mascots.example/app/images/{public_id}.sticker.png?download=1"
    assert (png, sticker, entry) == (f"{expected}.png", f"{expected}-sticker.png", f"{expected}.png")


def test_a_remix_puts_one_image_back_and_keeps_its_seed(site: Site) -> None:
    public_id = public_id_of(site, "alice")

    remix = site.service.remix(public_id, who("bob"), vary=False)

    assert remix.values["num_images_per_prompt"] == 1 and remix.values["seed"] == 7
    assert remix.values["prompt"] == "an otter barista" and not remix.randomize_seed


def test_a_dropped_png_of_ours_restores_its_recipe_and_says_so(site: Site) -> None:
    entry = site.store.mascot(public_id_of(site, "alice"), owner("alice"))
    assert entry is not None

    found = site.service.recipe(entry.path, who("alice"))

    assert found.values["prompt"] == "an otter barista" and found.values["seed"] == 7
    assert found.values["num_images_per_prompt"] == 1 and "logo" not in found.values
    assert found.note.startswith("From this Mascot Generator picture: Your idea")


def test_a_dropped_a1111_png_keeps_what_fits_and_names_what_it_left_out(site: Site, tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    text = (
        "a red panda astronaut\nNegative prompt: blurry\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768, Style: Sketchbook, Clip skip: 2"
    )
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    picture = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64)).save(picture, pnginfo=info)

    found = site.service.recipe(picture, who("alice"))

    assert found.values == {
        "prompt": "a red panda astronaut",
        "negative_prompt": "blurry",
        "width": 512,
        "height": 768,
        "num_inference_steps": 30,
        "guidance_scale": 7.0,
        "seed": 42,
        "num_images_per_prompt": 1,
    }
    assert "Left out (this app cannot use them as they are): " in found.note
    assert "Clip skip" in found.note and "Style" in found.note  # a style this app does not have


@pytest.mark.parametrize("kind", ["text", "jpeg", "no recipe", "giant"])
def test_a_dropped_file_that_is_not_a_png_with_a_recipe_is_refused_with_a_sentence(
    site: Site, tmp_path: Path, kind: str
) -> None:
    upload = tmp_path / "upload.png"
    if kind == "text":
        upload.write_text("<?php system($_GET['c']); ?>", encoding="utf-8")
    elif kind == "jpeg":
        Image.new("RGB", (8, 8)).save(upload, format="JPEG")
    elif kind == "no recipe":
        Image.new("RGB", (8, 8)).save(upload, format="PNG")
    else:  # a PNG header claiming 100,000 x 100,000 pixels: refused before any pixel is decoded
        Image.new("1", (1, 1)).save(upload, format="PNG")
        data = bytearray(upload.read_bytes())
        data[16:24] = (100_000).to_bytes(4, "big") * 2
        upload.write_bytes(bytes(data))

    with pytest.raises(Refusal) as refused:
        site.service.recipe(upload, who("alice"))

    expected = sentences.NO_RECIPE if kind == "no recipe" else sentences.NOT_A_RECIPE_PICTURE
    assert refused.value.message == expected


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def test_a_dropped_animated_png_gives_its_recipe_without_a_pixel_decoded(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIL's `.text` decodes every frame to find the text after them: 600 frames of 4096² in 10 MB held a decode slot
    for 47 s (an outsider's attack). The recipe is read from the chunks alone, also when it comes after the frames."""
    upload = tmp_path / "animated.png"
    frames = [Image.new("P", (64, 64), colour) for colour in range(3)]
    frames[0].save(upload, format="PNG", save_all=True, append_images=frames[1:])
    recipe = b"parameters\0a cat in a wizard hat\nSteps: 20, CFG scale: 7, Seed: 123, Size: 512x768"
    data = upload.read_bytes()
    assert data.endswith(png_chunk(b"IEND", b""))
    upload.write_bytes(data[:-12] + png_chunk(b"tEXt", recipe) + png_chunk(b"IEND", b""))

    def no_decoding(*_args: object) -> None:
        raise AssertionError("a pixel was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    found = site.service.recipe(upload, who("alice"))

    assert (found.values["prompt"], found.values["seed"]) == ("a cat in a wizard hat", 123)
    # A broken checksum is a file we cannot read, as PIL would say.
    broken = bytearray(upload.read_bytes())
    broken[-16] ^= 0xFF  # the text chunk's checksum
    upload.write_bytes(bytes(broken))
    with pytest.raises(Refusal) as refused:
        site.service.recipe(upload, who("alice"))
    assert refused.value.message == sentences.NOT_A_RECIPE_PICTURE


def test_more_like_this_says_what_it_costs_and_is_refused_with_the_reason_when_the_quota_cannot_pay(
    site: Site,
) -> None:
    public_id = public_id_of(site, "alice")  # someone else's mascot: bob varies it
    save(site.store, owner("bob"), "three of bob's own", count=3, now=NOW)  # 1 of bob's 4 left; a variation makes 2

    assert site.service.mascots_left_today(who("bob")) == 1
    with pytest.raises(Refusal, match=r"^More like this makes 2 mascots\. You have 1 of 4 mascots left today"):
        site.service.remix(public_id, who("bob"), vary=True)
    assert site.service.remix(public_id, who("bob"), vary=False).values["prompt"] == "an otter barista"


def test_more_like_this_names_the_mascot_by_id_and_its_job_reads_the_picture_copying_it_nowhere(
    logo_site: Site, tmp_path: Path
) -> None:
    public_id = public_id_of(logo_site, "alice")
    bob = who("bob", address="198.51.100.7")

    remix = logo_site.service.remix(public_id, bob, vary=True)

    assert remix.values["logo"] == f"mascot:{public_id}" and remix.logo_path is None
    assert remix.based_on_idea == "an otter barista" and remix.values["num_images_per_prompt"] == 2
    job = logo_site.service.submit({**remix.values, **FAST}, bob)
    assert finished(job) is JobState.DONE
    [picture] = [logo for logo in logo_site.fake.logos if logo is not None]
    assert picture.mode == "RGB" and max(picture.size) <= 512  # the mascot's own pixels, read for the job
    assert not list((tmp_path / "images" / "logos").rglob("*"))  # no copy anywhere Gradio could serve it


def test_more_like_this_of_a_mascot_made_private_before_its_job_runs_fails_with_a_sentence(logo_site: Site) -> None:
    public_id = public_id_of(logo_site, "alice")
    bob = who("bob", address="198.51.100.7")
    values = {**logo_site.service.remix(public_id, bob, vary=True).values, **FAST}
    logo_site.fake.gate.clear()
    blocker = logo_site.service.submit({"prompt": "carol's", **FAST}, who("carol", address="192.0.2.1"))
    assert logo_site.fake.started.wait(10)
    job = logo_site.service.submit(values, bob)  # queued behind carol's: its picture is not read yet

    logo_site.service.set_public(public_id, False, who("alice"))
    logo_site.fake.gate.set()

    assert finished(blocker) is JobState.DONE and finished(job) is JobState.FAILED
    assert job.snapshot.error == sentences.BASED_ON_GONE
    assert logo_site.service.mascots_left_today(bob) == RULES.daily_quota  # nothing was made, nothing counts
    with pytest.raises(Refusal) as refused:
        logo_site.service.admit(values, bob)  # asked again: refused up front, on the picture
    assert (refused.value.message, refused.value.parameter) == (sentences.BASED_ON_GONE, "logo")
    assert logo_site.service.admit(values, who("alice"))  # its owner still may


def test_a_remix_of_a_variation_starts_from_the_same_mascot_while_it_may_be_seen(logo_site: Site) -> None:
    public_id = public_id_of(logo_site, "alice")
    bob = who("bob", address="198.51.100.7")
    job = logo_site.service.submit({**logo_site.service.remix(public_id, bob, vary=True).values, **FAST}, bob)
    assert finished(job) is JobState.DONE
    variation = logo_site.store.history(owner("bob"))[0].public_id

    again = logo_site.service.remix(variation, bob, vary=False)
    assert (again.values["logo"], again.based_on_idea) == (f"mascot:{public_id}", "an otter barista")
    logo_site.service.delete(public_id, who("alice"))
    gone = logo_site.service.remix(variation, bob, vary=False)
    assert (gone.values["logo"], gone.based_on_idea) == ("", None)


# ---- devices ------------------------------------------------------------------------------------------------------
def test_a_device_link_makes_the_phone_show_the_same_mascots(site: Site) -> None:
    public_id_of(site, "alice")
    url = site.service.make_device_link(who("alice"))
    assert url.startswith("https://mascots.example/app/?device=")

    notice = site.service.open_device_link(who("phone"), url.rsplit("=", 1)[1])

    assert notice.message.startswith(sentences.JOINED) and not notice.warning
    assert site.service.owner(who("phone")) == owner("alice")
    assert site.service.other_devices(who("alice")) == (
        f"Your mascots are also shown on 1 other device.\n\n{sentences.NO_OPEN_LINKS}"
    )
    assert site.service.open_device_link(who("tablet"), "not a code").warning


def test_opening_someone_elses_link_asks_first_and_keeps_the_openers_mascots_apart(site: Site) -> None:
    save(site.store, owner("victim"), "a private prototype", count=2, now=NOW)
    code = site.service.make_device_link(who("mallory")).rsplit("=", 1)[1]

    asked = site.service.device_question(who("victim"), code)

    assert asked.text.startswith(sentences.QUESTION) and "Your 2 mascots made in this browser stay yours" in asked.text
    assert (asked.join, asked.join_moving) == (
        sentences.JOIN_KEEPING.format(count="2 mascots"),
        sentences.JOIN_MOVING.format(count="2 mascots"),
    )
    assert site.service.owner(who("victim")) == owner("victim")  # asking changed nothing

    notice = site.service.open_device_link(who("victim"), code)  # the plain choice: keep mine apart

    assert sentences.KEPT_APART.format(count="2 mascots") in notice.message
    assert site.service.owner(who("victim")) == owner("mallory")
    assert site.store.history_page(owner("mallory")).total == 0  # the link's maker got nothing of the victim's
    site.service.stop_showing_here(who("victim"))
    assert site.store.history_page(owner("victim")).total == 2


def test_a_phone_whose_first_browser_follows_another_makes_links_to_what_it_shows_not_to_that_other(
    site: Site,
) -> None:
    """The phone shows the first browser's own mascots, kept apart when that browser opened Gail's link: a link the
    phone makes must show those, never Gail's (a review found it handed out a link to Gail's mascots, private ones
    too, by resolving the phone's owner twice)."""
    save(site.store, owner("gail"), "gail's private prototype", is_public=False, now=NOW)
    save(site.store, owner("harry"), "harry's otter", now=NOW)
    site.service.open_device_link(who("phone"), site.service.make_device_link(who("harry")).rsplit("=", 1)[1])
    site.service.open_device_link(who("harry"), site.service.make_device_link(who("gail")).rsplit("=", 1)[1])
    assert site.service.owner(who("phone")) == owner("harry") and site.service.owner(who("harry")) == owner("gail")

    code = site.service.make_device_link(who("phone")).rsplit("=", 1)[1]
    site.service.open_device_link(who("stranger"), code)

    assert site.service.owner(who("stranger")) == owner("harry")
    assert [entry.prompt for entry in site.store.history(site.service.owner(who("stranger")))] == ["harry's otter"]
    # The stranger, and Harry, who shows Gail's mascots now but takes his own back when he stops.
    assert site.service.other_devices(who("phone")).startswith("Your mascots are also shown on 2 other devices.")


def test_open_links_are_listed_and_revoked_and_a_revoked_link_opens_nothing(site: Site) -> None:
    code = site.service.make_device_link(who("alice")).rsplit("=", 1)[1]
    assert "1 link for another device still works" in site.service.other_devices(who("alice"))

    answer = site.service.revoke_device_links(who("alice"))

    assert answer.notice is not None and answer.notice.message == "1 link revoked."
    assert answer.others.endswith(sentences.NO_OPEN_LINKS)
    assert site.service.device_question(who("phone"), code).text == sentences.EXPIRED
    assert site.service.open_device_link(who("phone"), code).warning
    assert site.service.owner(who("phone")) == owner("phone")


def test_a_share_link_uses_the_page_address(site: Site) -> None:
    public_id = public_id_of(site, "alice")
    entry = site.service.open(public_id, who("bob"))
    assert site.service.share_link(entry, who("bob")) == f"https://mascots.example/app/?mascot={public_id}"


def test_submit_checks_the_request_before_asking_for_the_cookie(site: Site) -> None:
    with pytest.raises(Refusal) as empty:
        site.service.submit({"prompt": " ", **FAST}, None)
    assert empty.value.parameter == "prompt"
    with pytest.raises(Refusal, match="identity cookie"):
        site.service.submit({"prompt": "an otter", **FAST}, None)
    assert site.fake.requests == []


# ---- uploaded logos are their uploader's --------------------------------------------------------------------------
def logo_png(tmp_path: Path) -> Path:
    path = tmp_path / "company-logo.png"
    Image.new("RGB", (120, 80), (20, 90, 200)).save(path)
    return path


def test_a_logo_is_used_by_the_browser_that_uploaded_it_alone(logo_site: Site, tmp_path: Path) -> None:
    """An upload is no public picture: its id, as a public mascot's parameters show it, makes nobody else's mascot."""
    alice, bob = who("alice"), who("bob", address="198.51.100.7")
    granted = logo_site.service.upload_logo(logo_png(tmp_path), alice)
    logo_id = granted.split(".")[0]

    logo_site.service.admit({"prompt": "a fox", **FAST, "logo": granted}, alice)
    for stolen in (granted, logo_id):  # hers as her mascots' parameters show it, and the file's own id
        for check in (logo_site.service.admit, logo_site.service.submit):
            with pytest.raises(Refusal) as refused:
                check({"prompt": "a fox", **FAST, "logo": stolen}, bob)
            assert (refused.value.message, refused.value.parameter) == (sentences.LOGO_NOT_YOURS, "logo")
    # The same picture uploaded in Bob's browser is his to use: the same file, his own grant.
    his = logo_site.service.upload_logo(logo_png(tmp_path), bob)
    assert his != granted and his.split(".")[0] == logo_id
    assert finished(logo_site.service.submit({"prompt": "a fox", **FAST, "logo": his}, bob)) is JobState.DONE


def test_a_remix_keeps_an_uploaded_logo_for_its_maker_alone(logo_site: Site, tmp_path: Path) -> None:
    alice, bob = who("alice"), who("bob", address="198.51.100.7")
    granted = logo_site.service.upload_logo(logo_png(tmp_path), alice)
    assert finished(logo_site.service.submit({"prompt": "a fox", **FAST, "logo": granted}, alice)) is JobState.DONE
    [entry] = logo_site.store.history(owner("alice"))
    assert entry.is_public  # in the gallery, where Bob can remix it

    theirs = logo_site.service.remix(entry.public_id, bob, vary=False)
    assert theirs.values["logo"] == "" and theirs.logo_path is None  # not her file, nor its id
    assert theirs.notice is not None and theirs.notice.message == sentences.LOGO_LEFT_OUT
    own = logo_site.service.remix(entry.public_id, alice, vary=False)
    assert own.values["logo"] == granted and own.notice is None
    assert own.logo_path == logo_site.service.logos.path(granted)


def test_a_mascot_saved_with_a_bare_logo_id_remixes_with_it_for_its_maker(logo_site: Site, tmp_path: Path) -> None:
    """Mascots made before logos were granted keep the logo's bare id: their maker's remix grants it anew."""
    alice, bob = who("alice"), who("bob", address="198.51.100.7")
    logo_id = logo_site.service.upload_logo(logo_png(tmp_path), alice).split(".")[0]
    request = dataclasses.replace(make_request("an old fox"), logo=logo_id)
    saved = logo_site.store.save_generation(owner("alice"), request, make_result(request), MODEL, now=NOW)
    [public_id] = saved.public_ids

    own = logo_site.service.remix(public_id, alice, vary=False)
    logo_site.service.admit({**own.values, **FAST}, alice)  # the granted logo is hers to use again
    assert own.values["logo"].split(".")[0] == logo_id and own.values["logo"] != logo_id
    assert logo_site.service.remix(public_id, bob, vary=False).values["logo"] == ""
