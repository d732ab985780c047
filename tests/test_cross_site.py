"""Another website's page cannot act as its visitor, nor read what the app answers it: raw HTTP with the headers a
browser sends for such a page (Sec-Fetch-Site, Sec-Fetch-Mode, Origin), and the visitor's own cookie.

On https the cookie goes with requests from other sites (SameSite=None, for the Spaces iframe), and Gradio tells any
origin it may read its answers when the host is not localhost: before this guard, such a page could ask for a device
link with the visitor's cookie and read it (an outsider's attack found it)."""

from __future__ import annotations

import httpx
import pytest

from mascot.web.cross_site import CROSS_SITE
from tests.support.site import serve

pytestmark = pytest.mark.slow  # the app served in this process

EVIL = "https://evil.example"
FROM_ANOTHER_SITE = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
PUBLIC_HOST = "mascots.example.com"  # how a deployment is reached: Gradio grants any origin for such a host


@pytest.fixture
def site(tmp_path, monkeypatch):
    yield from serve(tmp_path, monkeypatch, ["--daily-quota", "5"])


@pytest.fixture
def visitor(site):
    with httpx.Client(base_url=site.url, timeout=30) as client:
        client.get("config")  # its identity cookie
        yield client


def ask_for_device_link(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return client.post("gradio_api/call/device_link", json={"data": []}, headers=headers)


def refused(answer: httpx.Response) -> bool:
    return answer.status_code == 403 and answer.text == CROSS_SITE.decode()


def test_a_page_on_another_site_cannot_act_as_its_visitor(visitor):
    assert refused(ask_for_device_link(visitor, {**FROM_ANOTHER_SITE, "Host": PUBLIC_HOST}))
    assert refused(ask_for_device_link(visitor, FROM_ANOTHER_SITE))
    # A sibling subdomain (another Space) is another site too.
    sibling = {"Origin": "https://other-space.hf.space", "Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}
    assert refused(ask_for_device_link(visitor, sibling))
    # A browser that sends no Sec-Fetch-Site: its Origin names another host.
    assert refused(ask_for_device_link(visitor, {"Origin": EVIL, "Host": PUBLIC_HOST}))
    assert refused(ask_for_device_link(visitor, {"Origin": "null", "Host": PUBLIC_HOST}))  # a sandboxed frame
    # Nor may it read: a stream, the list of its visitor's mascots, a picture (the fetches a page's script makes).
    assert refused(visitor.get("gradio_api/queue/data", params={"session_hash": "x"}, headers=FROM_ANOTHER_SITE))
    assert refused(visitor.get("gradio_api/call/my_mascots/x", headers=FROM_ANOTHER_SITE))
    assert refused(visitor.get("images/abcdefghijkl.png", headers=FROM_ANOTHER_SITE))
    # A form posted from there (a navigation, not a fetch) is refused too: it is no GET.
    posted = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert refused(visitor.post("gradio_api/call/delete", data={"data": "x"}, headers=posted))


def test_links_and_pictures_from_other_sites_still_open(visitor):
    navigation = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}
    page = visitor.get("/", params={"mascot": "abc"}, headers={**navigation, "Host": PUBLIC_HOST})
    assert page.status_code == 200 and "<html" in page.text.lower()  # a share link, the Space's iframe
    # An <img> on another site (a public mascot's picture): the browser hands that page an opaque answer.
    embedded = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    assert visitor.get("images/abcdefghijkl.png", headers=embedded).status_code == 404  # not refused: not found


def test_the_page_itself_and_programs_are_served_as_before(site, visitor):
    own = site.url.rstrip("/")
    host = own.removeprefix("http://")
    same_origin = {"Origin": own, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    assert ask_for_device_link(visitor, same_origin).status_code == 200
    assert ask_for_device_link(visitor, {"Origin": own, "Host": host}).status_code == 200  # no Sec-Fetch-Site
    assert ask_for_device_link(visitor, {"Origin": f"https://{PUBLIC_HOST}", "Host": f"{PUBLIC_HOST}:443"}).is_success
    assert ask_for_device_link(visitor, {}).status_code == 200  # gradio_client, curl: no browser headers
    typed = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}  # an address typed in, a bookmark
    assert visitor.get("/", headers=typed).status_code == 200


def test_a_page_cannot_name_its_own_host_as_ours(visitor):
    """A page's script may add X-Forwarded-Host to its fetch (Gradio's CORS answer allows any header); from anyone but
    our proxy it names nothing (an outsider's attack took a device link this way on plain http)."""
    spoofed = {"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example", "Host": PUBLIC_HOST}
    assert refused(ask_for_device_link(visitor, spoofed))
    assert refused(visitor.post("gradio_api/queue/join", json={}, headers=spoofed))


@pytest.fixture
def proxied_visitor(tmp_path, monkeypatch):
    """A visitor of a deployment behind one proxy of ours at 127.0.0.1 (the test's own connections)."""
    environ = {"MASCOT_TRUSTED_PROXIES": "1", "MASCOT_PROXY_ADDRESSES": "127.0.0.1"}
    for site in serve(tmp_path, monkeypatch, [], environ):
        with httpx.Client(base_url=site.url, timeout=30) as client:
            client.get("config")
            yield client


def test_behind_our_proxy_the_host_it_forwards_is_ours(proxied_visitor):
    page = f"https://{PUBLIC_HOST}"
    # The proxy passes its own Host on and says which one the browser asked for.
    assert ask_for_device_link(proxied_visitor, {"Origin": page, "X-Forwarded-Host": PUBLIC_HOST}).status_code == 200
    # A proxy that appends: the first entry is whatever the page's script sent, the last is the proxy's own.
    appended = {"Origin": EVIL, "X-Forwarded-Host": f"evil.example, {PUBLIC_HOST}"}
    assert refused(ask_for_device_link(proxied_visitor, appended))
    both = {"Origin": page, "X-Forwarded-Host": f"evil.example, {PUBLIC_HOST}"}
    assert ask_for_device_link(proxied_visitor, both).status_code == 200


@pytest.fixture
def published_visitor(tmp_path, monkeypatch):
    """A visitor of a deployment whose address is set (MASCOT_PUBLIC_URL), behind a proxy that rewrites Host."""
    for site in serve(tmp_path, monkeypatch, [], {"MASCOT_PUBLIC_URL": f"https://{PUBLIC_HOST}"}):
        with httpx.Client(base_url=site.url, timeout=30) as client:
            client.get("config")
            yield client


def test_the_public_address_is_ours(published_visitor):
    assert ask_for_device_link(published_visitor, {"Origin": f"https://{PUBLIC_HOST}"}).status_code == 200
    spoofed = {"Origin": EVIL, "X-Forwarded-Host": "evil.example"}
    assert refused(ask_for_device_link(published_visitor, spoofed))
