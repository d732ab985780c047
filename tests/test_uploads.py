"""Gradio's upload route through raw HTTP, as an attacker sends it: no cookie, too large, too many (web.uploads); and
the per-browser limits of exports and stickers refused before a queue slot is taken."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from mascot.service import Visitor, sentences
from mascot.service.downloads import UPLOAD_KEEP_S, prune_uploads
from mascot.web.body_limit import MALFORMED_UPLOAD, REQUEST_TOO_LARGE, TOO_MANY_FILES, MultipartParts
from mascot.web.uploads import MAX_UPLOAD_BYTES, TOO_LARGE
from tests.support.raw_gradio import fn_index_in
from tests.support.site import make, mine

BOUNDARY = "mascotboundary"


def post_upload(url: str, body: bytes, cookie: str | None = None, length: int | None = None) -> tuple[int, str]:
    """POST /gradio_api/upload as raw HTTP; `length` overrides the Content-Length (a client may lie or send more)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(len(body) if length is None else length),
    }
    if cookie:
        headers["Cookie"] = cookie
    connection.putrequest("POST", "/gradio_api/upload")
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    if length is None:
        connection.send(body)
    response = connection.getresponse()
    answer = response.status, response.read().decode()
    connection.close()
    return answer


def multipart(name: str, content: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def browser_cookie(url: str) -> str:
    """The identity cookie a first visit gets, as a browser would send it back."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("GET", "/config")
    response = connection.getresponse()
    response.read()
    connection.close()
    return str(response.getheader("set-cookie")).split(";")[0]


def uploaded_files(site) -> list[Path]:
    folder = Path(os.environ["GRADIO_TEMP_DIR"])
    return [path for path in folder.rglob("*") if path.is_file()] if folder.is_dir() else []


def test_an_upload_without_the_browser_cookie_is_refused_before_its_body_is_read(site) -> None:
    for cookie in (None, "mascot_browser=forged.value", "mascot_browser=" + "A" * 43 + "." + "B" * 43):
        status, answer = post_upload(site.url, multipart("logo.png", b"x" * 1000), cookie)
        assert (status, answer) == (403, sentences.NO_COOKIE)
    # The Content-Length promised 9 MB that never came: the answer did not wait for it.
    started = time.monotonic()
    assert post_upload(site.url, b"", None, length=9 * 1024 * 1024)[0] == 403
    assert time.monotonic() - started < 2
    assert uploaded_files(site) == []


def test_an_upload_over_the_size_cap_is_refused_and_one_with_the_cookie_is_taken(site) -> None:
    cookie = browser_cookie(site.url)

    assert post_upload(site.url, b"", cookie, length=MAX_UPLOAD_BYTES + 1) == (413, TOO_LARGE)
    status, answer = post_upload(site.url, multipart("logo.png", b"fine"), cookie)

    assert status == 200 and len(json.loads(answer)) == 1


def post_chunked(url: str, path: str, body: bytes, cookie: str) -> tuple[int, str]:
    """A POST whose body is sent chunked (no Content-Length), 1 MB a chunk, as a client may send any body."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    chunks = (body[start : start + 1024 * 1024] for start in range(0, len(body), 1024 * 1024))
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Cookie": cookie}
    # The server may answer and close while the rest is still being sent: its answer is read all the same.
    with contextlib.suppress(OSError):
        connection.request("POST", path, body=chunks, headers=headers, encode_chunked=True)
    response = connection.getresponse()
    answer = response.status, response.read().decode()
    connection.close()
    return answer


def test_a_body_sent_without_a_length_is_capped_as_a_whole_not_per_file(site) -> None:
    """Gradio's max_file_size is per file and its parser takes 1000 files a request: an outsider's attack wrote 72 MB
    with one chunked upload of 8 files of 9 MB each."""
    cookie = browser_cookie(site.url)
    nine_mb = b"x" * (9 * 1024 * 1024)
    two_files = multipart("a.png", nine_mb).removesuffix(f"--{BOUNDARY}--\r\n".encode()) + multipart("b.png", nine_mb)
    # An upload takes one file now: its second is refused as it begins, before the whole passes the cap.
    assert post_chunked(site.url, "/gradio_api/upload", two_files, cookie) == (413, TOO_MANY_FILES)
    kept = sum(path.stat().st_size for path in uploaded_files(site))
    assert kept <= MAX_UPLOAD_BYTES
    eleven_mb = multipart("a.png", b"x" * (11 * 1024 * 1024))
    assert post_chunked(site.url, "/gradio_api/upload", eleven_mb, cookie) == (413, TOO_LARGE)
    assert sum(path.stat().st_size for path in uploaded_files(site)) - kept <= MAX_UPLOAD_BYTES
    # Gradio's component server reads every file of a request into memory: the same cap.
    status, answer = post_chunked(site.url, "/gradio_api/component_server", two_files, cookie)
    assert (status, answer) == (413, REQUEST_TOO_LARGE)
    # Under the cap, a chunked upload is taken as before.
    status, answer = post_chunked(site.url, "/gradio_api/upload", multipart("logo.png", b"fine"), cookie)
    assert status == 200 and len(json.loads(answer)) == 1


def test_an_upload_takes_one_file_so_the_limit_counts_files(site) -> None:
    """The limit counts requests: an outsider's attack sent 999 files in one, counted as one upload (each a folder and
    a file in Gradio's temp folder). The page's uploads each carry one file."""
    cookie = browser_cookie(site.url)
    two = multipart("a.png", b"a").removesuffix(f"--{BOUNDARY}--\r\n".encode()) + multipart("b.png", b"b")

    assert post_upload(site.url, two, cookie) == (413, TOO_MANY_FILES)
    assert post_chunked(site.url, "/gradio_api/upload", two * 100, cookie) == (413, TOO_MANY_FILES)
    status, answer = post_upload(site.url, multipart("logo.png", b"fine"), cookie)
    assert status == 200 and len(json.loads(answer)) == 1


def test_the_parts_of_an_upload_are_counted_however_its_body_is_cut():
    one = multipart("a.png", b"a")
    two = one.removesuffix(f"--{BOUNDARY}--\r\n".encode()) + multipart("b.png", b"b")
    for body, parts in ((one, 1), (two, 2), (two.removesuffix(f"--{BOUNDARY}--\r\n".encode()), 2)):
        for size in (1, 2, 3, len(BOUNDARY) + 2, len(BOUNDARY) + 3, len(body)):
            counted = MultipartParts(BOUNDARY.encode())
            for start in range(0, len(body), size):
                counted.read(body[start : start + size])
            assert (counted.parts, counted.too_many) == (parts, parts > 1), (size, body)


def content_type(value: str) -> dict:
    return {"type": "http", "headers": [(b"content-type", value.encode())]}


def test_an_uploads_boundary_is_read_as_gradios_parser_reads_it():
    """An outsider naming the boundary twice, or in another case, had the parts counted against a boundary the body
    did not use while Gradio's parser (python-multipart: the last value) split every file (a review found it)."""
    for header in (
        f'multipart/form-data; boundary="{BOUNDARY}"',
        f"multipart/form-data; boundary=decoy; boundary={BOUNDARY}",
        f"Multipart/Form-Data; Boundary=decoy; boundary={BOUNDARY}",
    ):
        parts = MultipartParts.of(content_type(header))
        assert parts is not None and parts.delimiter == f"--{BOUNDARY}".encode(), header
    for header in ("multipart/form-data", "multipart/form-data; boundary=", f"multipart/form-data; boundary=; b={1}"):
        parts = MultipartParts.of(content_type(header))
        assert parts is not None and parts.malformed, header
    assert MultipartParts.of(content_type("application/json")) is None


def test_an_upload_with_an_empty_boundary_is_refused(site) -> None:
    cookie = browser_cookie(site.url)
    parts = urlsplit(site.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = multipart("a.png", b"a")
    headers = {"Content-Type": "multipart/form-data; boundary=", "Cookie": cookie}
    connection.request("POST", "/gradio_api/upload", body=body, headers=headers)
    response = connection.getresponse()
    assert (response.status, response.read().decode()) == (400, MALFORMED_UPLOAD)
    connection.close()


def test_one_browser_can_upload_only_so_many_files_in_ten_minutes(site) -> None:
    cookie = browser_cookie(site.url)
    allowed = site.app.services.service.limiters.uploads.limit.per_window
    for _ in range(allowed):
        assert post_upload(site.url, multipart("a.txt", b"a"), cookie)[0] == 200

    status, answer = post_upload(site.url, multipart("a.txt", b"a"), cookie)

    assert status == 429 and answer.startswith(f"You uploaded {allowed} files in the last 10 minutes")


def test_uploads_older_than_an_hour_are_removed_and_fresh_ones_kept(site) -> None:
    cookie = browser_cookie(site.url)
    folder = Path(os.environ["GRADIO_TEMP_DIR"])
    old_upload = folder / ("0" * 40) / "old.png"
    old_upload.parent.mkdir(parents=True, exist_ok=True)
    old_upload.write_bytes(b"old")
    assert post_upload(site.url, multipart("fresh.txt", b"fresh"), cookie)[0] == 200  # the first prunes
    kept = {path.name for path in uploaded_files(site)}
    assert "old.png" in kept  # it arrived just now (ctime): an hour has not passed

    removed = prune_uploads(folder, max_age_s=0)

    assert removed >= 2 and not old_upload.exists() and not old_upload.parent.exists()
    assert UPLOAD_KEEP_S == 3600


def join(site, client, api_name: str, data: list) -> tuple[int, str]:
    """POST /gradio_api/queue/join for an event, with the client's cookies: (status, the answer's detail or id)."""
    fn_index = fn_index_in(client.config, api_name)
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": "s" * 11, "trigger_id": None}).encode()
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    parts = urlsplit(site.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("POST", "/gradio_api/queue/join", body, {"Content-Type": "application/json", "Cookie": cookie})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, str(answer.get("detail", answer.get("event_id")))


def test_exports_past_the_browsers_limit_are_refused_with_a_sentence_before_the_queue(site) -> None:
    alice = site.browser()
    make(alice, "an otter")
    first = alice.predict(api_name="/export_mascots")
    assert Path(alice.predict(api_name="/export_mascots")).read_bytes() == Path(first).read_bytes()  # reused
    for prompt in ("a fox", "a badger"):
        make(alice, prompt)
        alice.predict(api_name="/export_mascots")
    make(alice, "a heron")
    queued = len(site.app.demo._queue)

    status, detail = join(site, alice, "export_mascots", [])

    assert status == 400 and detail.startswith("You reached the limit of 3 ZIPs per 10 minutes. Try again in ")
    assert len(site.app.demo._queue) == queued  # no queue slot was taken
    zips = site.app.settings.data_dir / "downloads" / "exports"
    assert len(list(zips.rglob("*.zip"))) == 3  # the reused one: no file


def test_a_second_sticker_while_the_first_is_being_made_is_refused_before_the_queue(site) -> None:
    alice = site.browser()
    make(alice, "an otter")
    public_id = mine(alice)[0]["public_id"]
    token_hash = site.app.identity.owner_from_cookies(dict(alice.cookies))
    site.app.services.service.admit_sticker(Visitor(token_hash, "127.0.0.1"))  # as if its first were queued

    status, detail = join(site, alice, "sticker", [public_id])

    assert (status, detail) == (400, sentences.STICKER_RUNNING)
