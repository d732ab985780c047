"""Binds each Gradio queue session to the browser that opened it: the event stream of a `session_hash` (its progress,
previews, results, a fresh device link) is read, and its events cancelled, only with the cookie that joined it.

Gradio trusts whoever names a `session_hash`; the page makes a random one, but it travels in URLs and logs. Pure
ASGI, in front of Gradio's routes: the first POST /gradio_api/queue/join of a session that Gradio takes records the
browser's token hash, and /queue/data, /queue/join and /cancel for that session from any other browser get 403 with
a sentence.

Gradio's REST-style API (POST /gradio_api/call/<api>, then GET /gradio_api/call/<api>/<event_id>) reads a session's
stream too: the GET streams whatever session the event belongs to, so an event id learnt from a page (a join's
answer) would read that page's results, and a POST naming another browser's session_hash would join it. So a POST
/call/ naming a session must hold it like a join, every event id handed out by a join or a /call/ is bound to the
browser that asked, and the GET answers only that browser.

A session's heartbeat (GET /gradio_api/heartbeat/<session_hash>) is held the same way: when it ends, Gradio closes
the session's waiting events, so another browser's heartbeat could cancel them. An event's stream is closed (POST
/gradio_api/stream/<event_id>/close) or cancelled (POST /gradio_api/cancel, which names a session and an event, and
ends the event whichever session it names) only by the browser given that event id.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from mascot.web.identity import ASGIApp, Message, Receive, Scope, Send, request_cookies, send_sentence

logger = logging.getLogger(__name__)

JOIN_PATH = "/gradio_api/queue/join"
DATA_PATH = "/gradio_api/queue/data"
CANCEL_PATH = "/gradio_api/cancel"
CALL_POST = re.compile(r"^/gradio_api/call/(?:v2/)?[^/]+/?$")  # /call/<api_name>: joins the queue like a join
CALL_GET = re.compile(r"^/gradio_api/call/(?:v2/)?[^/]+/([^/]+)/?$")  # /call/<api_name>/<event_id>: its stream
# The page's heartbeat: when it ends, Gradio closes the session's pending events and drops its state.
HEARTBEAT = re.compile(r"^/gradio_api/heartbeat/([^/]+)/?$")
STREAM_CLOSE = re.compile(r"^/gradio_api/stream/([^/]+)/close/?$")  # ends an event's stream
MAX_ANSWER_BYTES = 64 * 1024  # a join's answer is {"event_id": ...}: this is far more
MAX_BODY_BYTES = 1024 * 1024  # a join names its inputs (uploads go by path): far less than this
MAX_SESSIONS = 100_000  # oldest forgotten first; a forgotten session is simply bound again by its next join
SESSION_TTL_S = 24 * 3600.0
FOREIGN = b"This queue session belongs to another browser. Reload the page."
FOREIGN_EVENT = b"This result belongs to another browser, or has expired: send the request again."
TOO_LARGE = b"This request is too large."
# A parameter named twice is read one way here and maybe another way by Gradio (FastAPI takes a query's last value):
# a check of one value would let the other through. No page or client sends one twice.
REPEATED = b"This request names its queue session more than once."

TokenOf = Callable[[Mapping[str, str]], str | None]  # cookies -> the browser's token hash (identity.owner_from_cookies)


class SessionOwners:
    """session_hash -> the token hash of the browser that joined it first; bounded and thread-safe."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, ttl_s: float = SESSION_TTL_S) -> None:
        self._owners: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_sessions = max_sessions
        self._ttl_s = ttl_s

    def claim(self, session_hash: str, token: str, now: float | None = None) -> bool:
        """Bind the session to `token` if nobody holds it; True when `token` holds it now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            held = self._owners.get(session_hash)
            if held is not None and held[1] > now - self._ttl_s and held[0] != token:
                return False
            self._owners[session_hash] = (token, now)
            self._owners.move_to_end(session_hash)
            while len(self._owners) > self._max_sessions:
                self._owners.popitem(last=False)
            return True

    def holder(self, session_hash: str, now: float | None = None) -> str | None:
        """The token that holds the session, None when nobody does or the hold expired."""
        now = time.monotonic() if now is None else now
        with self._lock:
            held = self._owners.get(session_hash)
        return held[0] if held is not None and held[1] > now - self._ttl_s else None

    def holds(self, session_hash: str, token: str, now: float | None = None) -> bool:
        """Whether `token` joined the session and it has not expired (unknown: no)."""
        return self.holder(session_hash, now) == token

    def allows(self, session_hash: str, token: str | None, now: float | None = None) -> bool:
        """Whether `token` may read or cancel the session: it joined it, or nobody did (nothing to read)."""
        holder = self.holder(session_hash, now)
        return holder is None or holder == token


class SessionBindingMiddleware:
    """Pure ASGI: see the module's docstring. Place it after the identity cookie middleware, which gives every
    browser a token before this runs."""

    def __init__(
        self,
        app: ASGIApp,
        token_of: TokenOf,
        owners: SessionOwners | None = None,
        events: SessionOwners | None = None,
    ) -> None:
        self.app = app
        self.token_of = token_of
        self.owners = owners or SessionOwners()
        self.events = events or SessionOwners()  # event_id -> the browser whose join or /call/ was given it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "")) if scope["type"] == "http" else ""
        method = scope.get("method")
        joins = method == "POST" and (path == JOIN_PATH or CALL_POST.match(path) is not None)
        if path == DATA_PATH:
            hashes = query_values(scope, "session_hash")
            if len(hashes) > 1:
                await refuse(send, 400, REPEATED)
                return
            if hashes and not self.owners.allows(hashes[0], self._token(scope)):
                await refuse(send, 403, FOREIGN)
                return
        elif (event_id := event_named(method, path)) is not None:
            # Strict: Gradio's client hands out these ids only in answers that passed here, each bound below.
            if not self._was_given(event_id, self._token(scope)):
                await refuse(send, 403, FOREIGN_EVENT)
                return
        elif method == "GET" and (beat := HEARTBEAT.match(path)) is not None:
            # Whoever held another browser's heartbeat open could end it, and with it that browser's waiting events.
            if not self.owners.allows(beat.group(1), self._token(scope)):
                await refuse(send, 403, FOREIGN)
                return
        elif joins or (path == CANCEL_PATH and method == "POST"):
            body = await read_body(receive)
            if body is None:
                await refuse(send, 413, TOO_LARGE)
                return
            fields = JsonBody.read(body)  # once: a join's body may be up to MAX_BODY_BYTES
            if fields.repeats_a_key:
                await refuse(send, 400, REPEATED)
                return
            token = self._token(scope)
            session_hash = fields.string("session_hash")
            if not self._session_allowed(path, session_hash, token):
                await refuse(send, 403, FOREIGN)
                return
            # Gradio's /cancel ends the event it names whatever session the body names (its stream closed, its job
            # dropped from the queue). Without an id Gradio refuses it itself.
            cancelled = fields.string("event_id") if path == CANCEL_PATH else None
            if cancelled is not None and not self._was_given(cancelled, token):
                await refuse(send, 403, FOREIGN_EVENT)
                return
            receive = replaying(body, receive)
            if joins and token is not None:
                send = binding_event_ids(send, lambda event_id: self._bind(token, session_hash, event_id))
        await self.app(scope, receive, send)

    def _bind(self, token: str, session_hash: str | None, event_id: str) -> None:
        """A join Gradio took (its answer carries the event id): the session and the event are the browser's now.
        Only then: a join Gradio refused (an unknown event, a full queue) takes none of the bounded table's room,
        so refused requests, however many, push no one's binding out."""
        if session_hash is not None:
            self.owners.claim(session_hash, token)
        self.events.claim(event_id, token)

    def _session_allowed(self, path: str, session_hash: str | None, token: str | None) -> bool:
        if session_hash is None:
            return True  # Gradio answers a join without one itself (a /call/ without one runs in its own session)
        if path == CANCEL_PATH:
            return self.owners.allows(session_hash, token)
        return token is not None and self.owners.allows(session_hash, token)  # bound once Gradio takes it (_bind)

    def _was_given(self, event_id: str, token: str | None) -> bool:
        """Whether the browser `token` was given the event id (by a join or a /call/ that passed here): only it may
        read, close or cancel the event."""
        return token is not None and self.events.holds(event_id, token)

    def _token(self, scope: Scope) -> str | None:
        return self.token_of(request_cookies(scope))


def binding_event_ids(send: Send, bind: Callable[[str], object]) -> Send:
    """A `send` that holds a successful answer's body until it is whole, binds the event id it carries, then sends
    it: the client cannot ask for the event's stream before the id is bound."""
    status = 0
    held: list[bytes] = []

    async def send_after_binding(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body" and status == 200:
            held.append(bytes(message.get("body", b"")))
            if message.get("more_body"):
                return
            body = b"".join(held)
            # A join's answer is {"event_id": ...}; a longer one carries no id we bind.
            event_id = JsonBody.read(body).string("event_id") if len(body) <= MAX_ANSWER_BYTES else None
            if event_id is not None:
                bind(event_id)
            message = {"type": "http.response.body", "body": body, "more_body": False}
        await send(message)

    return send_after_binding


def event_named(method: object, path: str) -> str | None:
    """The event id a request reads (GET /call/<api>/<event_id>) or ends (POST /stream/<event_id>/close); else None."""
    found = CALL_GET.match(path) if method == "GET" else STREAM_CLOSE.match(path) if method == "POST" else None
    return found.group(1) if found is not None else None


def query_values(scope: Scope, name: str) -> list[str]:
    """Every value the query string gives `name`, blank ones too (as Starlette parses it for Gradio)."""
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    return parse_qs(query, keep_blank_values=True).get(name, [])


@dataclass(frozen=True)
class JsonBody:
    """A JSON body read once: its top-level object's fields (none when it is no JSON object), and whether an object in
    it names a key twice (Python's json keeps the last, other parsers the first: whatever is checked here must be
    what Gradio reads)."""

    fields: dict[str, object]
    repeats_a_key: bool = False

    @classmethod
    def read(cls, body: bytes) -> JsonBody:
        repeated = False

        def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
            nonlocal repeated
            repeated = repeated or len({key for key, _ in items}) < len(items)
            return dict(items)

        try:
            parsed = json.loads(body, object_pairs_hook=pairs)
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands of levels deep (HTTP 500 before)
            return cls({})  # not JSON: Gradio refuses it itself, and no field of it is read here
        return cls(parsed if isinstance(parsed, dict) else {}, repeated)

    def string(self, name: str) -> str | None:
        """The string field `name` (a join's session_hash, its answer's event_id), or None."""
        value = self.fields.get(name)
        return value if isinstance(value, str) else None


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when it passes MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then whatever comes next (a disconnect)."""
    sent = False

    async def receive_again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


async def refuse(send: Send, status: int, sentence: bytes) -> None:
    logger.info("Refused a queue request (HTTP %d): %s", status, sentence.decode())
    await send_sentence(send, status, sentence)
