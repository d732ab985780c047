"""Requests that other websites' pages send with a visitor's cookie are refused.

On https the identity cookie is SameSite=None (a Space's page is an iframe in huggingface.co, which needs it), so a
page on another site could send requests that carry it and act as its visitor: delete their mascots, ask for a
device link. Gradio answers any origin with Access-Control-Allow-Origin and -Credentials when the host is not
localhost, so such a page could even read the answers (the device link, a private picture).

Browsers say where a request comes from: Sec-Fetch-Site (every current browser), else an Origin header that names
another host. From another site, or another subdomain of ours (a sibling Space), this passes only navigations (a
share link opened from a chat, the Space's iframe) and GET/HEAD requests whose answer the other page cannot read (an
<img> of a public mascot); everything else is answered 403 with a sentence. Gradio's CORS middleware sits outside
this one (it answers preflights itself, and adds its headers to every answer), but what passes here is never readable
by the page that caused it: a browser shows a navigation to the person, and hands a no-cors answer to the page opaque,
whatever its headers say. Programs that are no browser (gradio_client, curl, MCP clients) send neither header and are
served as before.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from mascot.web.identity import ASGIApp, Receive, Scope, Send, first_header, send_sentence

logger = logging.getLogger(__name__)

CROSS_SITE = b"Requests from other websites are not accepted here. Open the Mascot Generator page itself."
OTHER_SITES = frozenset({"cross-site", "same-site"})  # same-site: another subdomain of the site, a sibling Space
UNREADABLE_MODES = frozenset({"navigate", "no-cors"})  # the page that sent it cannot read the answer
READING_METHODS = frozenset({"GET", "HEAD"})


class CrossSiteGuardMiddleware:
    """Pure ASGI, outermost: see the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not from_another_site(scope):
            await self.app(scope, receive, send)
            return
        mode = (first_header(scope, b"sec-fetch-mode") or "").strip().lower()
        if scope.get("method") in READING_METHODS and mode in UNREADABLE_MODES:
            await self.app(scope, receive, send)
            return
        logger.info("Refused a request from another site: %s %s", scope.get("method"), scope.get("path"))
        await send_sentence(send, 403, CROSS_SITE)


def from_another_site(scope: Scope) -> bool:
    """Whether a browser sent this request for a page of another site (or of another subdomain of ours)."""
    site = first_header(scope, b"sec-fetch-site")
    if site is not None:
        return site.strip().lower() in OTHER_SITES
    origin = first_header(scope, b"origin")
    if origin is None:
        return False  # a program, or a browser's same-origin GET: browsers send Origin on every cross-origin fetch
    return origin_host(origin) not in own_hosts(scope)


def origin_host(origin: str) -> str | None:
    """An Origin header's host[:port], lower case; None for "null" (a sandboxed frame, a file) or nonsense."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    return without_default_port(parts.netloc.lower()) or None


def own_hosts(scope: Scope) -> set[str]:
    """The names this request reached us by: its Host, and the host a proxy says the browser asked for."""
    hosts = {(first_header(scope, b"host") or "").strip().lower()}
    forwarded = first_header(scope, b"x-forwarded-host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip().lower())  # a chain of proxies appends: the first is the browser's
    return {without_default_port(host) for host in hosts if host}


def without_default_port(host: str) -> str:
    """`example.com:443` and `example.com` are one origin's host (an Origin header leaves the default port out)."""
    return host.removesuffix(":443").removesuffix(":80")
