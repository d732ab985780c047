"""A queue session's event stream is read (and its events cancelled) only by the browser that joined it: raw HTTP,
two cookie jars, as an attacker who learnt another browser's session_hash would try."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from mascot.web.sessions import (
    FOREIGN,
    FOREIGN_EVENT,
    JOIN_PATH,
    REPEATED,
    JsonBody,
    SessionBindingMiddleware,
    SessionOwners,
)
from tests.support.raw_gradio import fn_index_in
from tests.support.site import serve


@pytest.fixture
def site(tmp_path, monkeypatch):
    yield from serve(tmp_path, monkeypatch, ["--daily-quota", "5"])


def browser(site) -> Iterator[httpx.Client]:
    """A browser with an identity cookie of its own."""
    with httpx.Client(base_url=site.url, timeout=30) as client:
        client.get("config")
        yield client


@pytest.fixture
def victim(site):
    yield from browser(site)


@pytest.fixture
def attacker(site):
    yield from browser(site)


def fn_index(http: httpx.Client, api_name: str) -> int:
    return fn_index_in(http.get("config").json(), api_name)


def join(http: httpx.Client, index: int, session: str) -> httpx.Response:
    body = {"data": [], "event_data": None, "fn_index": index, "trigger_id": None, "session_hash": session}
    return http.post("gradio_api/queue/join", json=body)


def read_stream(http: httpx.Client, session: str) -> tuple[int, str]:
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
        if stream.status_code != 200:
            return stream.status_code, stream.read().decode()
        text = ""
        for line in stream.iter_lines():
            text += line + "\n"
            if "process_completed" in line:
                break
        return 200, text


@pytest.mark.slow
def test_another_browser_cannot_read_or_take_over_a_session(site, victim, attacker):
    index = fn_index(victim, "device_link")  # its result is a fresh device link: a credential
    session = uuid.uuid4().hex

    assert join(victim, index, session).status_code == 200
    assert read_stream(attacker, session) == (403, FOREIGN.decode())
    assert join(attacker, index, session).status_code == 403
    cancel = {"session_hash": session, "fn_index": index, "event_id": "x"}
    assert attacker.post("gradio_api/cancel", json=cancel).status_code == 403
    status, text = read_stream(victim, session)
    assert status == 200 and "?device=" in text

    no_cookie = httpx.get(f"{site.url}gradio_api/queue/data", params={"session_hash": session}, timeout=30)
    assert no_cookie.status_code == 403


@pytest.mark.slow
def test_another_browser_cannot_hold_a_sessions_heartbeat_or_close_its_streams(site, victim, attacker):
    """When a heartbeat ends, Gradio closes its session's waiting events: another browser that learnt the session's
    hash could open its heartbeat and drop it (an outsider's attack noticed it was not bound)."""
    session, index = uuid.uuid4().hex, fn_index(victim, "device_link")
    joined = join(victim, index, session)
    assert joined.status_code == 200

    # Gradio's /cancel ends the event it names whatever session the body names: a session of one's own, or none
    # joined yet, let anyone who learnt an event id end another's Generate (an outsider's attack found it).
    cancel = {"session_hash": uuid.uuid4().hex, "fn_index": index, "event_id": joined.json()["event_id"]}
    refused = attacker.post("gradio_api/cancel", json=cancel)
    assert (refused.status_code, refused.text) == (403, FOREIGN_EVENT.decode())
    assert httpx.post(f"{site.url}gradio_api/cancel", json=cancel, timeout=30).status_code == 403  # no cookie
    with attacker.stream("GET", f"gradio_api/heartbeat/{session}") as beat:
        assert beat.status_code == 403  # before reading: a heartbeat let through never ends
        assert beat.read().decode() == FOREIGN.decode()
    closed = attacker.post(f"gradio_api/stream/{joined.json()['event_id']}/close")
    assert (closed.status_code, closed.text) == (403, FOREIGN_EVENT.decode())
    with victim.stream("GET", f"gradio_api/heartbeat/{session}") as beat:
        assert beat.status_code == 200
        assert next(beat.iter_lines()) == "data: ALIVE"
    status, text = read_stream(victim, session)
    assert status == 200 and "?device=" in text
    assert victim.post("gradio_api/cancel", json={**cancel, "session_hash": session}).status_code == 200  # its own
    # A page's heartbeat opens before it has joined anything: nothing is bound yet, nothing to take.
    with attacker.stream("GET", f"gradio_api/heartbeat/{uuid.uuid4().hex}") as beat:
        assert beat.status_code == 200


@pytest.mark.slow
def test_a_session_named_twice_is_refused_whichever_value_comes_first(site, victim, attacker):
    """The check must read the value Gradio reads: FastAPI takes a query parameter's last value, so a check of the
    first alone let `?session_hash=<mine>&session_hash=<theirs>` read another browser's stream."""
    index = fn_index(victim, "device_link")
    session, own = uuid.uuid4().hex, uuid.uuid4().hex
    assert join(victim, index, session).status_code == 200
    for query in (f"session_hash={own}&session_hash={session}", f"session_hash={session}&session_hash={own}"):
        answer = attacker.get(f"gradio_api/queue/data?{query}")
        assert (answer.status_code, answer.text) == (400, REPEATED.decode())
    twice = f'{{"data": [], "fn_index": {index}, "session_hash": "{own}", "session_hash": "{session}"}}'
    answer = attacker.post("gradio_api/queue/join", content=twice, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.text) == (400, REPEATED.decode())
    status, text = read_stream(victim, session)
    assert status == 200 and "?device=" in text


def test_a_body_that_names_a_key_twice_is_told_apart():
    assert JsonBody.read(b'{"session_hash": "a", "session_hash": "b"}').repeats_a_key
    assert JsonBody.read(b'{"data": [{"x": 1, "x": 2}], "session_hash": "a"}').repeats_a_key
    assert not JsonBody.read(b'{"data": [{"x": 1}], "session_hash": "a", "fn_index": 3}').repeats_a_key
    assert not JsonBody.read(b"not json").repeats_a_key


def read_call(http: httpx.Client, api_name: str, event_id: str) -> tuple[int, str]:
    """GET /gradio_api/call/<api>/<event_id>: the REST-style API's stream of that event, read to its end."""
    with http.stream("GET", f"gradio_api/call/{api_name}/{event_id}") as stream:
        return stream.status_code, stream.read().decode()


@pytest.mark.slow
def test_the_call_api_reads_only_the_results_of_the_browser_that_asked(site, victim, attacker):
    session = uuid.uuid4().hex
    joined = join(victim, fn_index(victim, "device_link"), session)
    assert joined.status_code == 200
    # The page's event id (in the join's answer and its stream) does not open its stream through /call/.
    assert read_call(attacker, "device_link", joined.json()["event_id"]) == (403, FOREIGN_EVENT.decode())
    # Nor does a /call/ that names the page's session: that would read the session's stream.
    stolen = attacker.post("gradio_api/call/device_link", json={"data": [], "session_hash": session})
    assert stolen.status_code == 403
    status, text = read_stream(victim, session)
    assert status == 200 and "?device=" in text

    # A browser's own /call/ reads back its own result, and only it does.
    asked = victim.post("gradio_api/call/device_link", json={"data": []})
    assert asked.status_code == 200
    event_id = asked.json()["event_id"]
    assert read_call(attacker, "device_link", event_id) == (403, FOREIGN_EVENT.decode())
    assert httpx.get(f"{site.url}gradio_api/call/device_link/{event_id}", timeout=30).status_code == 403
    status, text = read_call(victim, "device_link", event_id)
    assert status == 200 and "event: complete" in text and "?device=" in text


def test_an_event_id_is_held_only_by_the_browser_it_was_given_to():
    events = SessionOwners(ttl_s=10)
    assert not events.holds("e1", "alice", now=0)  # unknown: nobody's, unlike allows()
    events.claim("e1", "alice", now=0)
    assert events.holds("e1", "alice", now=5) and not events.holds("e1", "mallory", now=5)
    assert not events.holds("e1", "alice", now=11)  # expired


def test_a_session_is_held_by_its_first_browser_until_it_expires():
    owners = SessionOwners(max_sessions=2, ttl_s=10)
    assert owners.claim("s1", "alice", now=0) and owners.claim("s1", "alice", now=1)
    assert not owners.claim("s1", "mallory", now=2) and not owners.allows("s1", "mallory", now=2)
    assert owners.allows("unknown session", "mallory", now=2)  # nothing to read there
    assert owners.claim("s1", "mallory", now=20)  # expired: bound afresh
    owners.claim("s2", "bob", now=21)
    owners.claim("s3", "carol", now=22)  # the oldest is forgotten beyond max_sessions
    assert owners.allows("s1", "anyone", now=22)


def test_joins_gradio_refuses_push_no_browsers_session_out_of_the_table():
    """The table is bounded (oldest forgotten first). A join used to be bound before Gradio answered it, so cheap joins
    it refuses (an unknown event: 404) could push a victim's session out, and the next joiner would hold it."""
    owners = SessionOwners(max_sessions=2)

    async def gradio(scope, receive, send):  # takes event 1, refuses any other as an unknown event
        body = json.loads((await receive())["body"])
        status, answer = (200, b'{"event_id": "e-%d"}' % body["n"]) if body["fn_index"] == 1 else (404, b"{}")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    middleware = SessionBindingMiddleware(gradio, token_of=lambda cookies: cookies.get("who"), owners=owners)

    def join(who: str, session: str, fn_index: int, n: int) -> int:
        body = json.dumps({"fn_index": fn_index, "session_hash": session, "n": n}).encode()
        return asyncio.run(call(middleware, "POST", JOIN_PATH, body, who))

    assert join("victim", "victims-session", 1, 0) == 200
    for n in range(1, 10):  # each a new session, each refused by Gradio
        assert join("mallory", f"session-{n}", 99, n) == 404
    assert not owners.allows("victims-session", "mallory")  # still the victim's
    assert join("mallory", "victims-session", 1, 10) == 403


async def call(app, method: str, path: str, body: bytes, who: str) -> int:
    """One request through a pure ASGI app; its status."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(b"cookie", f"who={who}".encode())],
    }
    await app(scope, receive, send)
    return statuses[0]
