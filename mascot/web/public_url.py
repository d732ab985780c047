"""The page's public address, for the links and image URLs the app writes: a setting where one is set, else the
request's own Host; forwarded headers only from our proxies (mascot.web.clients.ProxyTrust)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from mascot.settings import HOST_NAME, Given, SettingsError
from mascot.web.clients import ProxyTrust, is_from_proxy

HOST_PATTERN = HOST_NAME  # what a request's Host must look like to be written into a link
FALLBACK_HOST = "127.0.0.1:7860"
MCP_MOUNT = "/gradio_api/mcp"  # where Gradio mounts its MCP server's app


def check_public_url(url: str) -> str:
    """A MASCOT_PUBLIC_URL as the app uses it (no trailing slash); SettingsError, naming the variable, otherwise."""
    checked = Given(argparse.Namespace(), {"MASCOT_PUBLIC_URL": url}).public_url(
        "MASCOT_PUBLIC_URL", "the page's public address"
    )
    if checked is None:
        raise SettingsError("MASCOT_PUBLIC_URL is empty: set it to an address such as https://mascots.example.org.")
    return checked


@dataclass(frozen=True)
class PublicAddress:
    """Works out the root URL (no trailing slash) of the page a request came from."""

    public_url: str | None = None  # MASCOT_PUBLIC_URL, checked; wins over anything a request says
    proxies: ProxyTrust = field(default_factory=ProxyTrust)

    def root_url(self, http_request: Any, *, forwarded_host: bool = True) -> str:
        """The page's root URL. From a request through one of our proxies, its X-Forwarded-Proto and (unless
        `forwarded_host` is False, as for link previews, which others' caches keep) X-Forwarded-Host."""
        if self.public_url:
            return self.public_url
        headers = getattr(http_request, "headers", None) or {}
        proxied = is_from_proxy(http_request, self.proxies)
        scheme = getattr(getattr(http_request, "url", None), "scheme", None) or "http"
        host = first_value(headers.get("host"))
        if proxied:
            scheme = first_value(headers.get("x-forwarded-proto")) or scheme
            if forwarded_host:
                host = first_value(headers.get("x-forwarded-host")) or host
        if scheme not in ("http", "https"):
            scheme = "http"
        if host is None or not HOST_PATTERN.fullmatch(host):
            host = FALLBACK_HOST
        return f"{scheme}://{host}{root_path_of(http_request)}"


def first_value(header: str | None) -> str | None:
    """The first of a header's comma-separated values (proxies append), trimmed; None when empty."""
    if not header:
        return None
    return str(header).split(",")[0].strip().lower() or None


def root_path_of(http_request: Any) -> str:
    """The path the app is mounted under ("" at the root), when it is a plain path."""
    # gr.Request wraps Starlette's request (and would turn any other attribute into JSON first).
    raw = http_request if isinstance(http_request, Request) else getattr(http_request, "request", None)
    if not isinstance(raw, Request):
        return ""
    # Gradio mounts its MCP server (--mcp) as an app of its own: a tool call's root path ends in the mount.
    root_path = str(raw.scope.get("root_path") or "").rstrip("/").removesuffix(MCP_MOUNT)
    return root_path if re.fullmatch(r"(/[A-Za-z0-9._~-]+)*", root_path) else ""
