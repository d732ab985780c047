"""The page's public address, worked out once for every link the app hands out: share links, device links, previews."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request

DEFAULT_PAGE_URL = "http://127.0.0.1:7860"  # no HTTP request (a direct call): the default address
MASCOT_PARAMETER = "mascot"
DEVICE_PARAMETER = "device"


def page_url(request: Request | None) -> str:
    """The page's public address, without a trailing slash, as Gradio works out its own root URL: behind a proxy (a
    Space, a share link) from X-Forwarded-Host and -Proto, else from the request, under the app's root path."""
    # Imported here: the service builds its links with this module and never imports gradio.
    from gradio.route_utils import get_root_url

    if request is None:
        return DEFAULT_PAGE_URL
    root_path = getattr(request.scope.get("app"), "root_path", None) or request.scope.get("root_path") or None
    return get_root_url(request=request, route_path=request.url.path, root_path=root_path)


def mascot_url(page: str, public_id: str) -> str:
    """The page with ?mascot=<id>: opens that mascot for anyone, also a first-time visitor."""
    return f"{page}/?{MASCOT_PARAMETER}={quote(public_id)}"


def device_url(page: str, code: str) -> str:
    """The page with ?device=<code>: opening it makes that browser show these mascots (store.device_links)."""
    return f"{page}/?{DEVICE_PARAMETER}={quote(code)}"
