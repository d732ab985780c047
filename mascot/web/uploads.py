"""The gate before Gradio's upload route: only a browser with our cookie, a file of capped size, a few per minute.

Gradio accepts uploads at /gradio_api/upload from anyone, with or without an upload component on the page, and keeps
them in its temp folder. This pure ASGI middleware answers before a byte of the body is read: no valid identity
cookie (web.identity) is 403, too many uploads from one browser or network is 429, each with a sentence (a body over
MAX_UPLOAD_BYTES was refused before this, by web.body_limit). It also has the upload folder pruned of files older than
UPLOAD_KEEP_S, at most once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from starlette.requests import Request

from mascot.service.limits import KeyedLimit, seconds_phrase
from mascot.service.sentences import NO_COOKIE
from mascot.web.clients import ProxyTrust, client_address, network_of
from mascot.web.identity import (
    ASGIApp,
    BrowserIdentity,
    Receive,
    Scope,
    Send,
    request_cookies,
    send_sentence,
)

log = logging.getLogger(__name__)

UPLOAD_PATH_SUFFIX = "/gradio_api/upload"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # launch(max_file_size=...) is the same: logos and our PNGs are far smaller
PRUNE_EVERY_S = 60.0
TOO_LARGE = f"That file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB: upload a smaller one."


def is_upload(scope: Scope) -> bool:
    """Whether the request is a POST to Gradio's upload route (under any root path)."""
    path = str(scope.get("path", "")).rstrip("/")
    return scope["type"] == "http" and scope.get("method") == "POST" and path.endswith(UPLOAD_PATH_SUFFIX)


class UploadGateMiddleware:
    """Pure ASGI, outside the identity middleware (which would give a cookieless request a fresh identity)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        identity: BrowserIdentity,
        limit: KeyedLimit,
        prune: Callable[[], int],
        proxies: ProxyTrust | None = None,
        per_network: bool = True,
    ) -> None:
        self.app = app
        self.identity = identity
        self.limit = limit
        self.prune = prune  # removes old uploads; returns how many went
        self.proxies = proxies or ProxyTrust()  # forwarded headers believed only from these (web/clients.py)
        self.per_network = per_network  # False (settings.one_office): one office's shared address is not capped
        self._pruned_at = float("-inf")
        self._prune_lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_upload(scope):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            status, sentence = refusal
            await answer(send, status, sentence)
            return
        self._prune_now_and_then()
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, sentence) for an upload to refuse before its body is read; None to let it through."""
        owner = self.identity.owner_from_cookies(request_cookies(scope))
        if owner is None:
            return 403, NO_COOKIE
        address = client_address(Request(scope), self.proxies) if self.per_network else ""
        wait = self.limit.take(owner, network_of(address) or "")  # "": the browser's own limit only
        if wait:
            allowed = self.limit.limit
            minutes = round(allowed.window_s / 60)
            return 429, (
                f"You uploaded {allowed.per_window} files in the last {minutes} minutes, the most we take. "
                f"Upload again in {seconds_phrase(wait)}."
            )
        return None

    def _prune_now_and_then(self) -> None:
        now = time.monotonic()
        with self._prune_lock:
            if now - self._pruned_at < PRUNE_EVERY_S:
                return
            self._pruned_at = now
        try:
            removed = self.prune()
        except OSError as error:  # a full or read-only temp folder must not stop the upload being answered
            log.warning("Could not prune old uploads: %s", error)
            return
        if removed:
            log.info("Removed %d uploads older than an hour.", removed)


async def answer(send: Send, status: int, sentence: str) -> None:
    """A plain-text answer; Gradio's page shows an upload's error text as it is."""
    # Connection: close, so that a client still sending its body is not left talking to a closed request.
    await send_sentence(send, status, sentence.encode("utf-8"), ((b"connection", b"close"),))
