"""Browser identity: a signed random token in an HttpOnly cookie, the middleware that sets it, and its owner hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from starlette.requests import cookie_parser

from mascot.settings import Settings

logger = logging.getLogger(__name__)

COOKIE_NAME = "mascot_browser"
# On https: "__Host-" makes browsers refuse the cookie unless it is Secure, Path=/ and has no Domain, so a sibling
# site (another share link on gradio.live) cannot plant one for us.
SECURE_COOKIE_NAME = "__Host-mascot_browser"
COOKIE_NAMES = (SECURE_COOKIE_NAME, COOKIE_NAME)
COOKIE_MAX_AGE_S = 400 * 24 * 3600  # browsers cap cookie lifetimes at 400 days
SECRET_FILE_NAME = "secret.key"
MIN_SECRET_CHARACTERS = 32
# Mixed into every signature so that a MAC made with the same secret for another purpose never verifies here.
SIGNATURE_CONTEXT = b"mascot-browser-token-v1:"
# secrets.token_urlsafe(32): 43 characters of base64url; an HMAC-SHA256 in unpadded base64url is 43 as well.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_COOKIE_CHARACTERS = 200

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def load_secret(settings: Settings) -> bytes:
    """MASCOT_SECRET when set (replicas share it); else the secret generated once into the data folder."""
    if settings.secret:
        if len(settings.secret) < MIN_SECRET_CHARACTERS:
            logger.warning(
                "MASCOT_SECRET has %d characters; use at least %d random ones (e.g. `openssl rand -hex 32`), "
                "or a short secret lets anyone forge another browser's cookie.",
                len(settings.secret),
                MIN_SECRET_CHARACTERS,
            )
        return settings.secret.encode()
    return _load_or_create_secret_file(settings.data_dir / SECRET_FILE_NAME)


def _load_or_create_secret_file(path: Path) -> bytes:
    """The secret in `path`, created first (mode 600) when missing. Its text works as MASCOT_SECRET too."""
    if not path.exists():
        _create_secret_file(path)
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < MIN_SECRET_CHARACTERS:
        # Regenerating it would silently give every browser a new identity and hide its history; say so instead.
        raise RuntimeError(f"{path} is empty or too short to be a secret; restore it, or delete it to start afresh.")
    if path.stat().st_mode & 0o077:
        logger.warning("%s can be read by other users; it should have mode 600 (chmod 600 %s).", path, path)
    return secret.encode()


def _create_secret_file(path: Path) -> None:
    """Write a new secret without a window where it is readable or half-written, and without racing a sibling."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_hex(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # fails if another process made it first: then theirs is the secret
            logger.info("Generated a new secret in %s.", path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)


class BrowserIdentity:
    """Issues and verifies cookie values: a random token plus its HMAC-SHA256, and the hash the store keeps."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("The identity secret is empty.")
        self._secret = secret

    def issue(self) -> str:
        """A new cookie value: `<token>.<signature>`, the token 256 random bits."""
        token = secrets.token_urlsafe(32)
        return f"{token}.{self._sign(token)}"

    def owner_hash(self, cookie_value: str | None) -> str | None:
        """The sha256 hex of the token when the value is well formed and signed by us; None otherwise."""
        if not isinstance(cookie_value, str) or len(cookie_value) > MAX_COOKIE_CHARACTERS:
            return None
        token, dot, signature = cookie_value.partition(".")
        if not dot or not TOKEN_PATTERN.fullmatch(token) or not TOKEN_PATTERN.fullmatch(signature):
            return None
        if not hmac.compare_digest(signature, self._sign(token)):
            return None
        return hashlib.sha256(token.encode("ascii")).hexdigest()

    def owner_from_cookies(self, cookies: Mapping[str, str]) -> str | None:
        """The owner hash from whichever of our cookies is valid (the https name first)."""
        for name in COOKIE_NAMES:
            owner = self.owner_hash(cookies.get(name))
            if owner is not None:
                return owner
        return None

    def owner_from_request(self, request: object | None) -> str | None:
        """The owner hash of anything with `.cookies` (gr.Request, starlette Request); None without a valid cookie."""
        try:
            # A queued event's gr.Request hands out its cookies as gradio's Obj, which is iterable but no Mapping.
            cookies = dict(getattr(request, "cookies", None) or {})
        except (TypeError, ValueError):
            return None
        return self.owner_from_cookies(cookies)

    def _sign(self, token: str) -> str:
        digest = hmac.new(self._secret, SIGNATURE_CONTEXT + token.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class IdentityCookieMiddleware:
    """Pure ASGI: gives an http request without a valid cookie a new identity, visible downstream at once."""

    def __init__(self, app: ASGIApp, identity: BrowserIdentity) -> None:
        self.app = app
        self.identity = identity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if is_https(scope):
            # On https only the "__Host-" cookie is ours: one by the plain name may have been set by a sibling site
            # (another share link under gradio.live) to have someone's first visit work under the setter's identity.
            scope = without_cookies(scope, (COOKIE_NAME,))
        if self.identity.owner_from_cookies(request_cookies(scope)) is not None:
            await self.app(scope, receive, send)
            return
        secure = is_https(scope)
        name = SECURE_COOKIE_NAME if secure else COOKIE_NAME
        value = self.identity.issue()
        send_with_cookie = _adding_header(send, set_cookie(name, value, secure))
        await self.app(with_cookie(scope, name, value), receive, send_with_cookie)


def _adding_header(send: Send, header: bytes) -> Send:
    """`send`, with a Set-Cookie header appended to the response start; body messages pass as they come."""

    async def send_with_cookie(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", header)]}
        await send(message)

    return send_with_cookie


def set_cookie(name: str, value: str, secure: bool) -> bytes:
    """The Set-Cookie value: Lax on http; Secure, SameSite=None and Partitioned on https (the Spaces iframe)."""
    attributes = [f"{name}={value}", "Path=/", f"Max-Age={COOKIE_MAX_AGE_S}", "HttpOnly"]
    attributes += ["Secure", "SameSite=None", "Partitioned"] if secure else ["SameSite=Lax"]
    return "; ".join(attributes).encode("latin-1")


def is_https(scope: Scope) -> bool:
    """Whether the browser talks https to us: the scope's scheme, or the proxy's X-Forwarded-Proto (Spaces, share)."""
    if scope.get("scheme") == "https":
        return True
    forwarded = first_header(scope, b"x-forwarded-proto") or ""
    # A chain of proxies appends; the first entry is what the browser used.
    return forwarded.split(",")[0].strip().lower() == "https"


Headers = tuple[tuple[bytes, bytes], ...]


async def send_sentence(send: Send, status: int, sentence: bytes, headers: Headers = ()) -> None:
    """A whole plain-text answer: a refusal's sentence, as our middlewares answer before the app sees a request."""
    plain = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(sentence)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*plain, *headers]})
    await send({"type": "http.response.body", "body": sentence})


def first_header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header, as starlette's `request.headers.get` (and so `request.cookies`) reads it."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def request_cookies(scope: Scope) -> dict[str, str]:
    """The cookies the downstream app will see: starlette's own parser over the same header."""
    return cookie_parser(first_header(scope, b"cookie") or "")


def with_cookie(scope: Scope, name: str, value: str) -> Scope:
    """A copy of `scope` with one Cookie header: the other cookies unchanged, ours replaced by the new identity."""
    return without_cookies(scope, COOKIE_NAMES, adding=f"{name}={value}")


def without_cookies(scope: Scope, names: tuple[str, ...], adding: str | None = None) -> Scope:
    """A copy of `scope` with one Cookie header: the cookies called `names` left out (and `adding` added)."""
    pairs = [
        pair.strip()
        for key, header in scope.get("headers", [])
        if key.lower() == b"cookie"
        for pair in header.decode("latin-1").split(";")
        if pair.strip() and pair.split("=", 1)[0].strip() not in names
    ]
    if adding is not None:
        pairs.append(adding)
    headers = [(key, header) for key, header in scope.get("headers", []) if key.lower() != b"cookie"]
    if pairs:
        headers.append((b"cookie", "; ".join(pairs).encode("latin-1")))
    return {**scope, "headers": headers}
