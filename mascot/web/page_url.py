"""The links the app hands out (share links, device links), from the page's public address (web.public_url)."""

from __future__ import annotations

from urllib.parse import quote

DEFAULT_PAGE_URL = "http://127.0.0.1:7860"  # no HTTP request (a direct call): the default address (web.public_url)
MASCOT_PARAMETER = "mascot"
DEVICE_PARAMETER = "device"


def mascot_url(page: str, public_id: str) -> str:
    """The page with ?mascot=<id>: opens that mascot for anyone, also a first-time visitor."""
    return f"{page}/?{MASCOT_PARAMETER}={quote(public_id)}"


def device_url(page: str, code: str) -> str:
    """The page with ?device=<code>: opening it makes that browser show these mascots (store.device_links)."""
    return f"{page}/?{DEVICE_PARAMETER}={quote(code)}"
