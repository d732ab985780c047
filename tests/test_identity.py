"""Browser identity: signed tokens, the secret, and the cookie middleware in front of a small Starlette app."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from mascot.settings import Settings
from mascot.web import identity as identity_module
from mascot.web.identity import COOKIE_NAME, SECURE_COOKIE_NAME, BrowserIdentity, IdentityCookieMiddleware, load_secret

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


@pytest.fixture
def identity() -> BrowserIdentity:
    return BrowserIdentity(SECRET)


def token_of(cookie_value: str) -> str:
    return cookie_value.partition(".")[0]


def flip(text: str, index: int) -> str:
    """`text` with one base64url character changed."""
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


# Tokens and signatures


def test_an_issued_cookie_verifies_to_the_sha256_of_its_token(identity: BrowserIdentity) -> None:
    value = identity.issue()

    owner = identity.owner_hash(value)

    assert owner == hashlib.sha256(token_of(value).encode()).hexdigest()
    assert identity.owner_hash(value) == owner
    assert token_of(value) not in owner


def test_every_issued_token_is_new_and_carries_at_least_128_random_bits(identity: BrowserIdentity) -> None:
    values = {identity.issue() for _ in range(50)}

    assert len(values) == 50
    assert len({identity.owner_hash(value) for value in values}) == 50
    for value in values:
        raw = base64.urlsafe_b64decode(token_of(value) + "=")
        assert len(raw) * 8 >= 128


def test_a_tampered_token_is_rejected(identity: BrowserIdentity) -> None:
    token, _, signature = identity.issue().partition(".")

    for index in (0, 20, len(token) - 1):
        assert identity.owner_hash(f"{flip(token, index)}.{signature}") is None


def test_a_tampered_signature_is_rejected(identity: BrowserIdentity) -> None:
    token, _, signature = identity.issue().partition(".")

    for index in (0, 20, len(signature) - 1):
        assert identity.owner_hash(f"{token}.{flip(signature, index)}") is None


def test_one_tokens_signature_does_not_vouch_for_another(identity: BrowserIdentity) -> None:
    first, second = identity.issue(), identity.issue()

    assert identity.owner_hash(f"{token_of(first)}.{second.partition('.')[2]}") is None


def test_a_cookie_signed_with_another_secret_is_rejected(identity: BrowserIdentity) -> None:
    foreign = BrowserIdentity(b"another secret, another deployment").issue()

    assert identity.owner_hash(foreign) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        ".",
        "no-dot-at-all",
        "garbage.garbage",
        "x" * 43 + "." + "y" * 43,
        "é" * 43 + "." + "é" * 43,
        "g" * 100_000,
        "a.b.c",
        b"bytes.are.not.text",
    ],
)
def test_malformed_values_are_rejected(identity: BrowserIdentity, value: Any) -> None:
    assert identity.owner_hash(value) is None


def test_a_valid_value_with_extra_characters_is_rejected(identity: BrowserIdentity) -> None:
    value = identity.issue()

    for variant in (value + "=", value + ".", " " + value, value + " ", value.replace(".", ".."), f'"{value}"'):
        assert identity.owner_hash(variant) is None


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        BrowserIdentity(b"")


def test_owner_from_cookies_reads_either_name_and_ignores_invalid_ones(identity: BrowserIdentity) -> None:
    plain, secure = identity.issue(), identity.issue()

    assert identity.owner_from_cookies({COOKIE_NAME: plain}) == identity.owner_hash(plain)
    assert identity.owner_from_cookies({SECURE_COOKIE_NAME: secure}) == identity.owner_hash(secure)
    assert identity.owner_from_cookies({SECURE_COOKIE_NAME: "forged", COOKIE_NAME: plain}) == identity.owner_hash(plain)
    assert identity.owner_from_cookies({"session": plain}) is None
    assert identity.owner_from_cookies({}) is None


def test_owner_from_request_reads_the_request_cookies(identity: BrowserIdentity) -> None:
    value = identity.issue()

    class NoCookies:
        pass

    assert identity.owner_from_request(SimpleNamespace(cookies={COOKIE_NAME: value})) == identity.owner_hash(value)
    assert identity.owner_from_request(None) is None
    assert identity.owner_from_request(NoCookies()) is None


def test_owner_from_request_reads_a_queued_gradio_request(identity: BrowserIdentity) -> None:
    gradio_route_utils = pytest.importorskip("gradio.route_utils")
    value = identity.issue()

    request = gradio_route_utils.Request(cookies={COOKIE_NAME: value, "theme": "dark"})

    assert identity.owner_from_request(request) == identity.owner_hash(value)


# The secret


@pytest.fixture
def private_umask() -> Iterator[None]:
    """A permissive umask, so the test sees the mode the code asks for rather than one a strict umask would give."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_the_secret_is_generated_once_into_the_data_folder_with_mode_600(tmp_path: Path, private_umask: None) -> None:
    settings = Settings(data_dir=tmp_path / "data")

    first = load_secret(settings)
    path = tmp_path / "data" / "secret.key"

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_secret(settings) == first
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary file left


def test_the_generated_secret_survives_a_restart_so_cookies_stay_valid(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    value = BrowserIdentity(load_secret(settings)).issue()

    after_restart = BrowserIdentity(load_secret(settings))

    assert after_restart.owner_hash(value) is not None


def test_two_data_folders_get_different_secrets(tmp_path: Path) -> None:
    assert load_secret(Settings(data_dir=tmp_path / "one")) != load_secret(Settings(data_dir=tmp_path / "two"))


def test_mascot_secret_wins_over_the_file(tmp_path: Path) -> None:
    secret = "s" * 64
    file_secret = load_secret(Settings(data_dir=tmp_path / "with-file"))

    assert load_secret(Settings(data_dir=tmp_path / "with-file", secret=secret)) == secret.encode()
    assert load_secret(Settings(data_dir=tmp_path / "env-only", secret=secret)) == secret.encode()
    assert not (tmp_path / "env-only" / "secret.key").exists()
    assert file_secret != secret.encode()


def test_the_secret_file_text_works_as_mascot_secret_for_replicas(tmp_path: Path) -> None:
    from_file = load_secret(Settings(data_dir=tmp_path))
    text = (tmp_path / "secret.key").read_text()

    assert load_secret(Settings(data_dir=tmp_path / "replica", secret=text.strip())) == from_file


def test_a_short_mascot_secret_is_used_but_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=identity_module.__name__):
        assert load_secret(Settings(data_dir=tmp_path, secret="short")) == b"short"

    assert "MASCOT_SECRET" in caplog.text


def test_an_emptied_secret_file_is_an_error_not_a_silent_new_identity_for_everyone(tmp_path: Path) -> None:
    load_secret(Settings(data_dir=tmp_path))
    (tmp_path / "secret.key").write_text("")

    with pytest.raises(RuntimeError, match="secret"):
        load_secret(Settings(data_dir=tmp_path))


# The middleware


def build_app(identity: BrowserIdentity) -> Starlette:
    """An app that reports which owner and which cookies it saw, plus a streaming endpoint."""

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"owner": identity.owner_from_request(request), "cookies": dict(request.cookies)})

    async def numbers(request: Request) -> StreamingResponse:
        async def count() -> Any:
            for number in range(3):
                yield f"{number}\n"

        return StreamingResponse(count(), media_type="text/plain")

    return Starlette(
        routes=[Route("/whoami", whoami), Route("/numbers", numbers)],
        middleware=[Middleware(IdentityCookieMiddleware, identity=identity)],
    )


@pytest.fixture
def client(identity: BrowserIdentity) -> Iterator[TestClient]:
    with TestClient(build_app(identity)) as test_client:
        yield test_client


def set_cookies(response: Any) -> list[str]:
    return response.headers.get_list("set-cookie")


def cookie_value(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


def test_a_first_request_gets_an_httponly_lax_cookie_and_the_app_already_sees_its_owner(
    client: TestClient, identity: BrowserIdentity
) -> None:
    response = client.get("/whoami")

    [header] = set_cookies(response)
    attributes = [part.strip() for part in header.split(";")]
    assert attributes[0].startswith(f"{COOKIE_NAME}=")
    assert {"Path=/", "HttpOnly", "SameSite=Lax", f"Max-Age={400 * 24 * 3600}"} <= set(attributes)
    assert "Secure" not in attributes
    assert not any(part.lower().startswith("domain") for part in attributes)
    owner = response.json()["owner"]
    assert owner is not None
    assert owner == identity.owner_hash(cookie_value(header))


def test_a_returning_browser_gets_no_new_cookie_and_keeps_its_owner(client: TestClient) -> None:
    first = client.get("/whoami")
    second = client.get("/whoami")

    assert set_cookies(second) == []
    assert second.json()["owner"] == first.json()["owner"]


def test_a_tampered_cookie_gets_a_new_identity(client: TestClient, identity: BrowserIdentity) -> None:
    original = client.get("/whoami")
    value = cookie_value(set_cookies(original)[0])
    token, _, signature = value.partition(".")
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, f"{flip(token, 3)}.{signature}")

    response = client.get("/whoami")

    [header] = set_cookies(response)
    assert response.json()["owner"] not in {None, original.json()["owner"]}
    assert response.json()["cookies"][COOKIE_NAME] == cookie_value(header)  # the forged value never reached the app


def test_a_forged_duplicate_that_the_app_would_read_gets_a_new_identity(identity: BrowserIdentity) -> None:
    """Starlette keeps the last of two same-named cookies: the middleware must judge the one the app will read."""
    valid = identity.issue()
    with TestClient(build_app(identity)) as client:
        response = client.get("/whoami", headers={"Cookie": f"{COOKIE_NAME}={valid}; {COOKIE_NAME}=forged"})

    [header] = set_cookies(response)
    assert response.json()["owner"] == identity.owner_hash(cookie_value(header)) is not None


def test_other_cookies_reach_the_app_unchanged(client: TestClient) -> None:
    client.cookies.set("theme", "dark")

    response = client.get("/whoami")

    assert response.json()["cookies"]["theme"] == "dark"
    assert response.json()["owner"] is not None


def test_every_response_carries_the_cookie_even_an_error(client: TestClient) -> None:
    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert set_cookies(response)[0].startswith(f"{COOKIE_NAME}=")


def test_behind_an_https_proxy_the_cookie_is_host_prefixed_secure_and_partitioned(client: TestClient) -> None:
    response = client.get("/whoami", headers={"X-Forwarded-Proto": "https"})

    [header] = set_cookies(response)
    attributes = [part.strip() for part in header.split(";")]
    assert attributes[0].startswith(f"{SECURE_COOKIE_NAME}=")
    assert {"Path=/", "HttpOnly", "Secure", "SameSite=None", "Partitioned"} <= set(attributes)
    assert "SameSite=Lax" not in attributes
    assert not any(part.lower().startswith("domain") for part in attributes)
    assert response.json()["owner"] is not None


def test_an_https_scheme_gives_the_secure_cookie_and_a_returning_browser_keeps_it(identity: BrowserIdentity) -> None:
    with TestClient(build_app(identity), base_url="https://testserver") as client:
        first = client.get("/whoami")
        second = client.get("/whoami")

    assert set_cookies(first)[0].startswith(f"{SECURE_COOKIE_NAME}=")
    assert set_cookies(second) == []
    assert second.json()["owner"] == first.json()["owner"] is not None


def test_on_https_a_cookie_by_the_plain_name_is_not_ours(identity: BrowserIdentity) -> None:
    """A sibling site (another share link under gradio.live) can set a cookie by the plain name for the parent domain,
    with an identity it holds: a first visit would work under it, and the setter would see what was made. On https
    only the "__Host-" cookie, which no other site can set, is ours."""
    planted = identity.issue()
    with TestClient(build_app(identity), base_url="https://testserver") as client:
        response = client.get("/whoami", headers={"Cookie": f"{COOKIE_NAME}={planted}; theme=dark"})

    [header] = set_cookies(response)
    assert header.startswith(f"{SECURE_COOKIE_NAME}=")
    assert response.json()["owner"] == identity.owner_hash(cookie_value(header)) != identity.owner_hash(planted)
    assert COOKIE_NAME not in response.json()["cookies"] and response.json()["cookies"]["theme"] == "dark"


def test_a_plain_http_proxy_header_keeps_the_lax_cookie(client: TestClient) -> None:
    response = client.get("/whoami", headers={"X-Forwarded-Proto": "http"})

    assert set_cookies(response)[0].startswith(f"{COOKIE_NAME}=")


def test_a_streaming_response_comes_through_whole(client: TestClient) -> None:
    response = client.get("/numbers")

    assert response.text == "0\n1\n2\n"
    assert len(set_cookies(response)) == 1


def test_a_streaming_response_is_not_buffered(identity: BrowserIdentity) -> None:
    """The first chunk must reach the client while the app is still working on the second."""
    first_chunk_delivered = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.wait_for(first_chunk_delivered.wait(), timeout=2)
        await send({"type": "http.response.body", "body": b"two", "more_body": False})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)
        if message.get("body") == b"one":
            first_chunk_delivered.set()

    scope = {"type": "http", "scheme": "http", "method": "GET", "path": "/", "headers": []}
    asyncio.run(IdentityCookieMiddleware(app, identity)(scope, receive, send))

    assert [message.get("body") for message in sent] == [None, b"one", b"two"]
    assert any(key == b"set-cookie" for key, _ in sent[0]["headers"])


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
def test_websocket_and_lifespan_scopes_pass_through_untouched(identity: BrowserIdentity, kind: str) -> None:
    seen: list[tuple[Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, send))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        pass

    scope = {"type": kind, "headers": []}
    asyncio.run(IdentityCookieMiddleware(app, identity)(scope, receive, send))

    assert seen == [(scope, send)]
    assert seen[0][0] is scope
    assert seen[0][1] is send
