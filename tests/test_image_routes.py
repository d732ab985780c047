"""Pictures leave the server only through /images/<id>.png, .thumb.webp and .sticker.png, checked on every request:
every URL the page ever showed a stranger for a mascot (its sticker's too) answers 404 once it is private, taken down
or deleted, while its owner still gets a private one; a ZIP's URL answers its owner alone; Gradio's file route and
cache hold no copy of any of them, nor of a preview.

The app runs in this process with a fake generator and a real store, identity cookie and Gradio queue (test_community).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from gradio import processing_utils
from gradio.blocks import Block
from gradio_client import Client

from tests.support.site import FAST, make, mine, serve

pytestmark = pytest.mark.slow  # the app served in this process, driven through gradio_client and httpx


@pytest.fixture
def site(tmp_path, monkeypatch):
    yield from serve(tmp_path, monkeypatch, ["--daily-quota", "20"])


@pytest.fixture
def full_gradio_folder(tmp_path, monkeypatch):
    """The site with Gradio's temp folder (GRADIO_TEMP_DIR, tests.support.site) full: a 1 MB tmpfs filled to the
    last byte where this machine lets the test mount one (CI runs as root), else every write Gradio makes into its
    cache fails as on a full disk (an injected ENOSPC)."""
    folder = tmp_path / "gradio"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        for name in ("save_pil_to_cache", "save_img_array_to_cache", "save_bytes_to_cache", "save_file_to_cache"):
            monkeypatch.setattr(processing_utils, name, disk_full)
        monkeypatch.setattr(Block, "move_resource_to_block_cache", disk_full)
    try:
        yield from fill_then_serve(folder, tmp_path, monkeypatch, mounted=mounted.returncode == 0)
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(folder)], capture_output=True)


def fill_then_serve(folder: Path, tmp_path, monkeypatch, *, mounted: bool):
    for served in serve(tmp_path, monkeypatch, ["--daily-quota", "20"]):
        if mounted:
            with (folder / "filler").open("wb") as filler, contextlib.suppress(OSError):
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            assert shutil.disk_usage(folder).free < 65536
        yield served


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


SHOWN_URL = r"https?://[^\"'\s<>\\]+?/(?:images|downloads)/[^\"'\s<>?\\]+(?:\?download=1)?"  # as JSON escapes it


def shown_urls(site, viewer: Client, public_id: str) -> set[str]:
    """Every picture URL the page shows `viewer` for the mascot: its gallery thumbnail, the opened picture, its
    download link and its sticker (read from what the page's events return, as the page's JavaScript does)."""
    urls: set[str] = set()
    with httpx.Client(base_url=site.url, cookies=viewer.cookies, timeout=30) as http:
        for api_name, data in (("gallery", [1, "Newest", ""]), ("mascot", [public_id]), ("sticker", [public_id])):
            urls |= set(re.findall(SHOWN_URL, call(http, api_name, data)))
    assert any(public_id in url for url in urls), urls
    return {url for url in urls if public_id in url}


def call(http: httpx.Client, api_name: str, data: list) -> str:
    """The raw event stream of POST /gradio_api/call/<api_name>: what the page receives, unchanged by a client."""
    event_id = http.post(f"gradio_api/call/{api_name}", json={"data": data}).json()["event_id"]
    return http.get(f"gradio_api/call/{api_name}/{event_id}").text


def status(url: str, cookies=None) -> int:
    return httpx.get(url, cookies=cookies, timeout=30).status_code


def test_a_stranger_loses_every_picture_url_once_the_mascot_is_private_and_the_owner_keeps_them(site):
    alice, stranger = site.browser(), site.browser()
    make(alice, "alice's otter")
    [otter] = mine(alice)
    urls = shown_urls(site, stranger, otter["public_id"])
    assert len(urls) >= 4  # thumbnail, picture, download, sticker
    assert any(".sticker.png" in url for url in urls)
    assert all(status(url) == 200 for url in urls)  # public: anyone, even without a cookie

    alice.predict(otter["public_id"], False, api_name="/set_public")

    assert {url: status(url) for url in urls} == dict.fromkeys(urls, 404)
    assert {url: status(url, stranger.cookies) for url in urls} == dict.fromkeys(urls, 404)
    assert {url: status(url, alice.cookies) for url in urls} == dict.fromkeys(urls, 200)


def test_the_download_is_the_picture_as_an_attachment_under_the_one_download_name(site):
    alice = site.browser()
    make(alice, "alice's otter")
    [otter] = mine(alice)
    urls = shown_urls(site, alice, otter["public_id"])
    [download] = [url for url in urls if url.endswith(".png?download=1") and ".sticker." not in url]
    [sticker] = [url for url in urls if url.endswith(".sticker.png?download=1")]

    answer = httpx.get(download, cookies=alice.cookies, timeout=30)

    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    expected = f"mascot-alice-s-otter-{otter['public_id']}.png"
    assert answer.headers["content-disposition"] == f'attachment; filename="{expected}"'
    answer = httpx.get(sticker, cookies=alice.cookies, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    sticker_name = f"mascot-alice-s-otter-{otter['public_id']}-sticker.png"
    assert answer.headers["content-disposition"] == f'attachment; filename="{sticker_name}"'


def test_taken_down_and_deleted_mascots_answer_404(site):
    alice = site.browser()
    make(alice, "alice's otter")
    make(alice, "alice's fox")
    otter, fox = sorted(mine(alice), key=lambda mascot: mascot["prompt"])[::-1]
    stranger = site.browser()
    otter_urls = shown_urls(site, stranger, otter["public_id"])
    fox_urls = shown_urls(site, stranger, fox["public_id"])

    assert site.app.store.hide_mascot(otter["public_id"])  # the operator takes it down
    alice.predict(fox["public_id"], api_name="/delete")

    assert {url: status(url) for url in otter_urls | fox_urls} == dict.fromkeys(otter_urls | fox_urls, 404)
    assert all(status(url, alice.cookies) == 404 for url in fox_urls)  # deleted: gone for its owner too
    assert all(status(url, alice.cookies) == 200 for url in otter_urls)  # taken down: its owner still sees it


def test_a_zip_answers_its_owner_alone_and_goes_when_one_of_its_mascots_is_deleted(site):
    alice, stranger = site.browser(), site.browser()
    make(alice, "alice's otter")
    [otter] = mine(alice)
    [zip_url] = zip_urls(site, alice)

    answer = httpx.get(zip_url, cookies=alice.cookies, timeout=30)
    assert answer.status_code == 200 and answer.content.startswith(b"PK")
    assert answer.headers["content-disposition"].startswith('attachment; filename="my-mascots-')
    assert status(zip_url) == 404 and status(zip_url, stranger.cookies) == 404  # its mascot is public: still hers
    assert status(zip_url.replace("/downloads/", "/downloads/../"), stranger.cookies) == 404

    alice.predict(otter["public_id"], api_name="/delete")

    assert status(zip_url, alice.cookies) == 404  # it held the deleted mascot's picture


def zip_urls(site, client: Client) -> list[str]:
    """The ZIP URL(s) the export event hands the page."""
    with httpx.Client(base_url=site.url, cookies=client.cookies, timeout=30) as http:
        return sorted(set(re.findall(SHOWN_URL, call(http, "export_mascots", []))))


def test_gradio_serves_no_file_of_the_images_folder_and_caches_no_copy(site):
    alice, stranger = site.browser(), site.browser()
    # The run waits after its first step until its preview has reached the page: a run that ends before the handler
    # looks sends only its final answer, and the previews' check below would then see none.
    site.fake.gate.clear()
    job = alice.submit(prompt="alice's otter", seed=1, **FAST, api_name="/generate")
    deadline = time.monotonic() + 60
    while not any(isinstance(gallery, list) for gallery, _status in job.outputs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    site.fake.gate.set()
    job.result()
    previews = [str(gallery) for gallery, _status in job.outputs()[:-1] if isinstance(gallery, list)]
    assert previews and all("data:image/webp;base64," in preview for preview in previews)  # tests.support.fakes
    [otter] = mine(alice)
    shown_urls(site, stranger, otter["public_id"])  # a sticker too
    zip_urls(site, alice)
    images = [path for path in site.app.settings.images_dir.rglob("*") if path.is_file()]
    downloads = [path for path in (site.app.settings.data_dir / "downloads").rglob("*") if path.is_file()]
    assert images and len(downloads) == 2  # the sticker and the ZIP

    for path in images + downloads:
        assert status(f"{site.url}gradio_api/file={path}") != 200
    served = {digest(path) for path in images + downloads}
    cached = [path for path in (site.tmp_path / "gradio").rglob("*") if path.is_file()]
    assert not [path for path in cached if digest(path) in served]
    # Nor any other picture or archive: no preview, no copy of anything made here (no test here uploads one).
    assert not [path for path in cached if path.read_bytes()[:4] in MAGIC], cached


MAGIC = {b"\x89PNG", b"RIFF", b"PK\x03\x04", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"GIF8"}


def test_made_up_ids_and_other_paths_answer_404(site):
    for path in (
        "images/AAAAAAAAAAAA.png",
        "images/AAAAAAAAAAAA.thumb.webp",
        "images/AAAAAAAAAAAA.sticker.png",
        "images/..%2F..%2Fsecret.key.png",
        "downloads/" + "0" * 32 + "/my-mascots-2026-12-04.zip",
        "downloads/..%2F..%2Fsecret.key/x.zip",
    ):
        assert status(site.url + path) == 404


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_with_gradios_temp_folder_full_generate_and_browsing_still_work_and_speak_in_sentences(full_gradio_folder):
    site = full_gradio_folder
    alice, stranger = site.browser(), site.browser()

    job = alice.submit(prompt="an otter on a full disk", seed=1, **FAST, api_name="/generate")
    images, line = job.result(timeout=120)

    assert len(images) == 1 and line.startswith("Done: 1 mascot saved to **My mascots**.")
    [otter] = mine(alice)
    assert otter["prompt"] == "an otter on a full disk"
    _gallery, _page, label, listed = stranger.predict(1, "Newest", "", api_name="/gallery")
    assert [mascot["public_id"] for mascot in listed] == [otter["public_id"]] and label
    urls = shown_urls(site, stranger, otter["public_id"])  # the panel and a sticker too
    assert {url: status(url, stranger.cookies) for url in urls} == dict.fromkeys(urls, 200)
    [zip_url] = zip_urls(site, alice)
    assert status(zip_url, alice.cookies) == 200
    with pytest.raises(Exception, match="private or was deleted"):  # a refusal is still a sentence
        stranger.predict("AAAAAAAAAAAA", api_name="/mascot")


def test_gradios_file_route_fetches_no_other_sites_file_and_finds_ours_under_a_public_path(site, monkeypatch):
    import safehttpx

    fetched: list[str] = []

    async def record(host: str) -> str:  # where Gradio checks a host before it fetches from it
        fetched.append(host)
        raise ValueError("this test fetches nothing")

    monkeypatch.setattr(safehttpx, "async_validate_url", record)
    alice, stranger = site.browser(), site.browser()
    make(alice, "alice's otter")
    [otter] = mine(alice)
    alice.predict(otter["public_id"], False, api_name="/set_public")  # private: hers alone
    for other_site in ("https://example.com/logo.png", "http%3A%2F%2Fexample.com%2Fa.png", "HTTPS://example.com/"):
        answer = httpx.get(f"{site.url}gradio_api/file={other_site}", timeout=30)
        assert (answer.status_code, answer.text) == (404, "This server serves its own mascots' files only.")
    assert fetched == []  # refused before Gradio looked the host up, let alone fetched from it

    # Our picture by its URL under a public address with a path (behind a proxy): our route, with the cookie's check.
    ours = f"{site.url}gradio_api/file=https://mascots.example.org/team/images/{otter['public_id']}.png"
    assert httpx.get(ours, cookies=alice.cookies, timeout=30).content.startswith(b"\x89PNG")
    assert status(ours, stranger.cookies) == 404
    assert fetched == []
