"""Link previews: a share link pasted into a chat app shows the mascot, its idea and its picture; nothing private."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from html.parser import HTMLParser

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from mascot.web.link_preview import SITE_NAME, LinkPreviewMiddleware, shorten
from tests.support.site import make, mine

GRADIO_TAGS = ("Click to try out the app!", "gradio.app", "@Gradio", "header-image.jpg")


class HeadTags(HTMLParser):
    """Every <meta> of a page as (property or name, content) pairs, and its <title>."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: list[tuple[str, str]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        key = values.get("property") or values.get("name")
        if tag == "meta" and key:
            self.meta.append((key, values.get("content") or ""))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def values(self, key: str) -> list[str]:
        return [content for name, content in self.meta if name == key]


def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    """A GET as a link-preview crawler makes it: no cookie, no JavaScript."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def head_tags(url: str) -> HeadTags:
    status, body, _headers = fetch(url)
    assert status == 200
    page = body.decode("utf-8")
    assert not any(gradio_tag in page for gradio_tag in GRADIO_TAGS)  # Gradio's own previews are gone
    tags = HeadTags()
    tags.feed(page)
    return tags


@pytest.mark.slow
def test_a_shared_link_previews_as_its_mascot_with_its_idea_and_picture(site):
    alice = site.browser()
    make(alice, "a cheerful otter barista", width=320, height=256)
    [mascot] = mine(alice)

    tags = head_tags(f"{site.url}?mascot={mascot['public_id']}")

    assert tags.values("og:title") == [f"a cheerful otter barista · {SITE_NAME}"]
    assert tags.title == f"a cheerful otter barista · {SITE_NAME}"
    assert "“a cheerful otter barista”" in tags.values("og:description")[0]
    assert tags.values("og:url") == [f"{site.url}?mascot={mascot['public_id']}"]
    assert tags.values("twitter:card") == ["summary_large_image"]
    assert (tags.values("og:image:width"), tags.values("og:image:height")) == (["320"], ["256"])
    [image_url] = tags.values("og:image")
    assert tags.values("twitter:image") == [image_url]
    assert image_url.startswith(site.url)  # absolute: crawlers do not resolve relative addresses

    status, body, headers = fetch(image_url)
    assert status == 200
    assert headers["content-type"] == "image/png"
    stored = site.app.store.public_mascot(mascot["public_id"])
    assert stored is not None
    assert body == stored.path.read_bytes()
    assert Image.open(io.BytesIO(body)).size == (320, 256)


@pytest.mark.slow
def test_a_forwarded_host_is_never_reflected_into_the_preview(site):
    """Anyone can send X-Forwarded-Host; a cache in front would keep the poisoned preview for everyone."""
    alice = site.browser()
    make(alice, "a cheerful otter barista")
    [mascot] = mine(alice)
    poisoned = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}

    page = httpx.get(f"{site.url}?mascot={mascot['public_id']}", headers=poisoned, timeout=30).text

    tags = HeadTags()
    tags.feed(page)
    assert tags.values("og:url") == [f"{site.url}?mascot={mascot['public_id']}"]
    assert tags.values("og:image")[0].startswith(site.url)
    assert not [
        value for key in ("og:url", "og:image", "twitter:image") for value in tags.values(key) if "evil" in value
    ]


@pytest.mark.slow
def test_a_private_or_unknown_mascot_previews_as_the_site_and_its_picture_is_not_served(site):
    alice = site.browser()
    make(alice, "a secret prototype mascot")
    [mascot] = mine(alice)
    status, _body, headers = fetch(f"{site.url}mascot/{mascot['public_id']}.png")
    assert status == 200
    # A cache in front may keep it, but must ask again before each use: no max-age outlives making it private.
    assert headers["cache-control"] == "public, no-cache"
    alice.predict(mascot["public_id"], False, api_name="/set_public")

    for query in (f"?mascot={mascot['public_id']}", "?mascot=nobody-has-this", "", "?mascot=../../secret.key"):
        tags = head_tags(f"{site.url}{query}")
        assert tags.values("og:title") == [SITE_NAME]
        assert tags.values("og:image") == []
        assert tags.values("twitter:card") == ["summary"]
        assert "secret prototype" not in " ".join(content for _key, content in tags.meta)

    for name in (mascot["public_id"], "nobody-has-this", "..%2F..%2Fsecret.key", "%2e%2e"):
        status, _body, _headers = fetch(f"{site.url}mascot/{name}.png")
        assert status == 404


@pytest.mark.slow
def test_an_idea_cannot_break_out_of_the_preview_tags(site):
    idea = '"><script>alert(1)</script><meta property="og:title" content="fake'
    bob = site.browser()
    make(bob, idea)
    [mascot] = mine(bob)

    status, body, _headers = fetch(f"{site.url}?mascot={mascot['public_id']}")

    assert status == 200
    assert b"<script>alert(1)" not in body
    tags = HeadTags()
    tags.feed(body.decode("utf-8"))
    assert tags.values("og:title") == [shorten(f"{idea} · {SITE_NAME}", 90)]  # one title: the idea, as text


def test_the_page_still_opens_when_the_lookup_fails():
    def broken_store(public_id: str):
        raise RuntimeError("the database is down")

    with TestClient(page_app(broken_store)) as client:
        response = client.get("/?mascot=abcdefghijkl")

    assert response.status_code == 200
    tags = HeadTags()
    tags.feed(response.text)
    assert tags.values("og:title") == [SITE_NAME]
    assert "<p>the page</p>" in response.text


def test_a_page_sent_in_pieces_is_rewritten_whole_and_its_length_is_right():
    with TestClient(page_app(lambda public_id: None)) as client:
        response = client.get("/streamed")  # not the page: left alone
        assert response.text == "<html><head><meta property='og:title' content='kept' /></head></html>"
        response = client.get("/api")
        assert response.json() == {"og:title": "not html"}
        page = client.get("/")

    assert int(page.headers["content-length"]) == len(page.content)
    assert page.text.count("og:title") == 1
    assert "Gradio" not in page.text
    assert page.text.endswith("<p>the page</p></body></html>")


def page_app(public_mascot) -> Starlette:
    """A stand-in for Gradio's app: its page with Gradio's tags (sent in two pieces), an API route, another page."""

    async def index(request):
        async def pieces():
            yield b'<html><head>\n<meta\n  property="og:title"\n  content="Gradio"\n/>\n'
            yield b'<meta name="twitter:card" content="summary_large_image" /></head>'
            yield b"<body><p>the page</p></body></html>"

        return StreamingResponse(pieces(), media_type="text/html; charset=utf-8")

    async def other(request):
        return HTMLResponse("<html><head><meta property='og:title' content='kept' /></head></html>")

    async def api(request):
        return JSONResponse({"og:title": "not html"})

    routes = [Route("/", index), Route("/streamed", other), Route("/api", api)]
    return Starlette(routes=routes, middleware=[Middleware(LinkPreviewMiddleware, public_mascot=public_mascot)])
