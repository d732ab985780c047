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

The host a request reached us by is its Host header, the page's public address (MASCOT_PUBLIC_URL) and, only from a
proxy of ours (MASCOT_PROXY_ADDRESSES), the X-Forwarded-Host that proxy wrote. A browser's script may add an
X-Forwarded-Host of its own to a fetch (Gradio's CORS answer allows any header): believed from anyone, it let a page
name its own host as ours and pass (an outsider's attack found it).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from mascot.web.clients import ProxyTrust
from mascot.web.identity import ASGIApp, Receive, Scope, Send, first_header, send_sentence

logger = logging.getLogger(__name__)

CROSS_SITE = b"Requests from other websites are not accepted here. Open the Mascot Generator page itself."
OTHER_SITES = frozenset({"cross-site", "same-site"})  # same-site: another subdomain of the site, a sibling Space
UNREADABLE_MODES = frozenset({"navigate", "no-cors"})  # the page that sent it cannot read the answer
READING_METHODS = frozenset({"GET", "HEAD"})


class CrossSiteGuardMiddleware:
    """Pure ASGI, outermost: see the module's docstring."""

    def __init__(self, app: ASGIApp, proxies: ProxyTrust | None = None, public_url: str | None = None) -> None:
        self.app = app
        self.hosts = OwnHosts(proxies or ProxyTrust(), public_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not from_another_site(scope, self.hosts):
            await self.app(scope, receive, send)
            return
        mode = (first_header(scope, b"sec-fetch-mode") or "").strip().lower()
        if scope.get("method") in READING_METHODS and mode in UNREADABLE_MODES:
            await self.app(scope, receive, send)
            return
        logger.info("Refused a request from another site: %s %s", scope.get("method"), scope.get("path"))
        await send_sentence(send, 403, CROSS_SITE)


def from_another_site(scope: Scope, hosts: OwnHosts) -> bool:
    """Whether a browser sent this request for a page of another site (or of another subdomain of ours)."""
    site = first_header(scope, b"sec-fetch-site")
    if site is not None:
        return site.strip().lower() in OTHER_SITES
    origin = first_header(scope, b"origin")
    if origin is None:
        return False  # a program, or a browser's same-origin GET: browsers send Origin on every cross-origin fetch
    return origin_host(origin) not in hosts.of(scope)


def origin_host(origin: str) -> str | None:
    """An Origin header's host[:port], lower case; None for "null" (a sandboxed frame, a file) or nonsense."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    return without_default_port(parts.netloc.lower()) or None


class OwnHosts:
    """The names a request may have reached us by."""

    def __init__(self, proxies: ProxyTrust, public_url: str | None) -> None:
        self.proxies = proxies
        self.public_host = origin_host(public_url) if public_url else None

    def of(self, scope: Scope) -> set[str]:
        """Its Host, the public address's host, and the host our proxy says the browser asked for."""
        hosts = {(first_header(scope, b"host") or "").strip().lower()}
        if self.public_host:
            hosts.add(self.public_host)
        forwarded = self.forwarded_host(scope)
        if forwarded:
            hosts.add(forwarded)
        return {without_default_port(host) for host in hosts if host}

    def forwarded_host(self, scope: Scope) -> str | None:
        """X-Forwarded-Host as our outermost proxy wrote it; None unless the connection is one of our proxies. A proxy
        that appends puts the browser's own header (anything its script chose) first, so the entry taken is the one
        `hops` from the right, as for X-Forwarded-For (web.clients.client_address)."""
        client = scope.get("client")
        if not client or not self.proxies.trusts(str(client[0])):
            return None
        entries = [entry.strip().lower() for entry in (first_header(scope, b"x-forwarded-host") or "").split(",")]
        entries = [entry for entry in entries if entry]
        return entries[max(0, len(entries) - self.proxies.hops)] if entries else None


def without_default_port(host: str) -> str:
    """`example.com:443` and `example.com` are one origin's host (an Origin header leaves the default port out)."""
    return host.removesuffix(":443").removesuffix(":80")
