"""The page's public address: MASCOT_PUBLIC_URL where set, else the request's Host; X-Forwarded-Host and -Proto only
from our proxies, and never into a link preview."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from mascot.settings import load_settings
from mascot.web.clients import ProxyTrust
from mascot.web.public_url import PublicAddress, check_public_url

PROXY = ProxyTrust.parse(1, ["10.0.0.0/8"])


def request(peer: str, **headers: str):
    return SimpleNamespace(client=SimpleNamespace(host=peer), headers=headers, url=SimpleNamespace(scheme="http"))


FORWARDED = {"host": "app.internal:7860", "x-forwarded-host": "mascots.example.org", "x-forwarded-proto": "https"}


def test_forwarded_headers_count_only_from_our_proxy():
    address = PublicAddress(None, PROXY)
    assert address.root_url(request("10.0.0.2", **FORWARDED)) == "https://mascots.example.org"
    assert address.root_url(request("203.0.113.9", **FORWARDED)) == "http://app.internal:7860"
    assert PublicAddress().root_url(request("10.0.0.2", **FORWARDED)) == "http://app.internal:7860"


def test_a_link_preview_never_takes_the_forwarded_host():
    address = PublicAddress(None, PROXY)
    assert address.root_url(request("10.0.0.2", **FORWARDED), forwarded_host=False) == "https://app.internal:7860"


def test_the_public_url_setting_wins_over_anything_a_request_says():
    address = PublicAddress(check_public_url("https://mascots.example.org/"), PROXY)
    assert address.root_url(request("10.0.0.2", **FORWARDED)) == "https://mascots.example.org"
    assert address.root_url(None) == "https://mascots.example.org"


@pytest.mark.parametrize(
    "host", ['evil.org"><script>', "evil.org/path", "a b", "evil.org@x", "", "x" * 300, "evil.org:99999999"]
)
def test_a_host_header_that_is_no_host_is_not_written_into_links(host):
    assert PublicAddress().root_url(request("203.0.113.9", host=host)) == "http://127.0.0.1:7860"


@pytest.mark.parametrize("url", ["mascots.example.org", "ftp://x.org", "https://", "https://a b", "javascript:x"])
def test_a_bad_public_url_is_refused_naming_the_variable(url):
    with pytest.raises(ValueError, match="MASCOT_PUBLIC_URL"):
        check_public_url(url)


def test_the_privacy_settings_are_read_from_the_environment():
    settings = load_settings(
        [], {"MASCOT_PROXY_ADDRESSES": "10.0.0.0/8, 2001:db8::1", "MASCOT_PUBLIC_URL": "https://m.example.org"}
    )
    assert settings.proxy_addresses == ("10.0.0.0/8", "2001:db8::1")
    assert settings.public_url == "https://m.example.org"
    assert load_settings([], {}).proxy_addresses == ()


@pytest.mark.slow
def test_with_a_public_url_the_page_and_its_links_use_it(tmp_path, monkeypatch):
    from tests.support.site import link_for, serve

    served = serve(tmp_path, monkeypatch, [], {"MASCOT_PUBLIC_URL": "https://mascots.example.org"})
    site = next(served)
    try:
        page = httpx.get(site.url, headers={"X-Forwarded-Host": "evil.example"}, timeout=30)
        assert page.status_code == 200 and "evil.example" not in page.text
        link, _qr_code = link_for(site.browser())
        assert link.startswith("https://mascots.example.org/?device=")
    finally:
        next(served, None)
