"""Hostile input, table-driven: every endpoint the running app publishes, every parameter of it, fed what an
attacker sends (giant and non-finite numbers, the wrong types, booleans as strings, NUL bytes, lone surrogates, 1 MB
strings, control and direction characters, paths, URLs and forged file objects, SQL), through raw HTTP (the queue's
join and event stream, the simple /call/ API, uploads) and through gradio_client; then the protocol itself forged and
the uploads poisoned. Every answer must be a refusal in a person's sentence (or a harmless success), never Python
text, a bare "Error" or an HTTP 500, and nothing may change that should not: the victim's mascots stay as they were,
a private mascot stays private.

The app runs in this process on a fake generator, one site for the module (tests/support/site.py).
"""

from __future__ import annotations

import functools
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, ValidationError

from tests.support.app_process import browser_client
from tests.support.raw_gradio import (
    PYTHON_TEXT,
    Answer,
    call,
    detail_text,
    fn_index_in,
    join,
    join_event,
    read_stream,
    sentence_problem,
    upload,
)
from tests.support.site import FAST, Site, make, mine, serve

pytestmark = pytest.mark.slow  # the app served in this process, driven through raw HTTP and gradio_client

FILE_DATA = {"_type": "gradio.FileData"}
LANES = 4  # threads sending an attack's requests, each to its own endpoints


@dataclass
class Tally:
    """How the module's hostile requests were answered, for its summary line."""

    answers: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, answer: Answer) -> None:
        kind = answer.kind()
        with self.lock:
            self.answers[kind] += 1

    def line(self) -> str:
        total = sum(self.answers.values())
        parts = ", ".join(f"{count} {kind}" for kind, count in sorted(self.answers.items()))
        return f"hostile inputs: {total} requests sent; {parts}"


@dataclass
class World:
    """The site, its published API, the victim's mascots and the attacker's own (made before any attack)."""

    site: Site
    api: dict[str, Any]
    config: dict[str, Any]
    clients: list[Client]  # the attacker's; they download nothing: fetching every thumbnail would only be slow
    http: httpx.Client
    own_id: str  # the attacker's own mascot, private
    own_owner: str  # the attacker's owner hash
    victim_private: str
    victim_public: str
    victim_upload: str  # a path in Gradio's upload folder, uploaded by the victim
    tally: Tally = field(default_factory=Tally)

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        return self.api["named_endpoints"]

    def fn_index(self, api_name: str) -> int:
        return fn_index_in(self.config, api_name)

    def valid_value(self, parameter: dict[str, Any]) -> Any:
        """A harmless value for a parameter the case does not attack."""
        name = parameter["parameter_name"]
        if name == "public_id":
            return self.own_id
        if name == "prompt":
            return "a hostile-test otter"
        if name == "image":
            return {"path": self.own_upload, "meta": FILE_DATA}
        if name in FAST:
            return FAST[name]
        if name == "seed":
            return 1
        return parameter["parameter_default"] if parameter["parameter_has_default"] else ""

    @functools.cached_property
    def own_upload(self) -> str:
        answer = upload(self.http, "logo.png", png_bytes())
        assert answer.success, answer
        return str(answer.data[0])

    def record(self, answer: Answer) -> Answer:
        self.tally.note(answer)
        return answer


def png_bytes(size: tuple[int, int] = (32, 32)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, "orange").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One site for the module (conftest's no_job_left_behind waits for its worker after each test)."""
    with pytest.MonkeyPatch.context() as patch:
        served = serve(tmp_path_factory.mktemp("hostile"), patch, ["--daily-quota", "1000"])
        yield next(served)
        next(served, None)  # its clean-up


@pytest.fixture(scope="module")
def world(app: Site, request: pytest.FixtureRequest) -> Iterator[World]:
    victim, attacker = app.browser(), app.browser()
    make(victim, "the victim's private otter")
    make(victim, "the victim's public fox")
    victim_ids = {mascot["prompt"]: mascot["public_id"] for mascot in mine(victim)}
    victim_private = victim_ids["the victim's private otter"]
    victim.predict(victim_private, False, api_name="/set_public")
    make(attacker, "the attacker's own badger")
    [own] = mine(attacker)
    attacker.predict(own["public_id"], False, api_name="/set_public")
    with httpx.Client(base_url=app.url, cookies=dict(victim.cookies), timeout=60) as victim_http:
        victim_upload = upload(victim_http, "victim-logo.png", png_bytes()).data[0]
    cookies = dict(attacker.cookies)
    # The attacker's gradio_client, one per lane: one client's jobs share a session and its stream.
    clients = [browser_client(app.url, False, cookies=cookies) for _ in range(LANES)]
    app.clients.extend(clients)  # closed with the site
    with httpx.Client(base_url=app.url, cookies=cookies, timeout=60) as http:
        built = World(
            site=app,
            api=attacker.view_api(return_format="dict", print_info=False),
            config=http.get("config").json(),
            clients=clients,
            http=http,
            own_id=own["public_id"],
            own_owner=app.app.store.resolve_owner(str(app.app.identity.owner_from_cookies(cookies))),
            victim_private=victim_private,
            victim_public=victim_ids["the victim's public fox"],
            victim_upload=str(victim_upload),
        )
        yield built
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # the summary line shows without -s
            reporter.write_line(built.tally.line())


@pytest.fixture(autouse=True)
def nothing_changed_wrongly(world: World) -> Iterator[None]:
    """After every case: the victim's mascots are as they were, the attacker's own is still there and private."""
    yield
    store = world.site.app.store
    private, public = store.mascot(world.victim_private, None), store.mascot(world.victim_public, None)
    assert private is None, "a stranger sees the victim's private mascot"
    assert public is not None and public.is_public and not public.moderation
    assert public.like_count == 0
    own = store.public_mascot(world.own_id)
    assert own is None, "the attacker's private mascot became public"
    assert store.mascot(world.own_id, world.own_owner) is not None, "the attacker's own mascot is gone"


# ---- every endpoint, every parameter -----------------------------------------------------------------------------
NESTED = [[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]
for _ in range(200):
    NESTED = [NESTED]

HOSTILE: dict[str, Any] = {
    "10_to_the_400": 10**400,
    "2_to_the_63": 2**63,
    "minus_one": -1,
    "zero": 0,
    "one_and_a_half": 1.5,
    "nan": math.nan,
    "infinity": math.inf,
    "minus_infinity": -math.inf,
    "string_1e400": "1e400",
    "word_for_a_number": "twelve",
    "empty_string": "",
    "list": ["a", 1],
    "dict": {"a": 1},
    "null": None,
    "true": True,
    "string_false": "false",
    "string_0": "0",
    "string_true": "true",
    "nul_byte": "otter\x00.png",
    "lone_surrogate": "otter \ud800",
    "one_megabyte": "A" * 1_000_000,
    "control_characters": "\x1b[31mred\x07\x08\x7f",
    "rtl_override": "\u202egnp.exe",
    "path_traversal": "../../../../etc/passwd",
    "absolute_path": "/etc/passwd",
    "file_url": "file:///etc/passwd",
    "metadata_url": "http://169.254.169.254/latest/meta-data/",
    "sql": "' OR 1=1; DROP TABLE mascot_image; --",
    "homoglyphs": "оtter ＡＤＭＩＮ",  # a Cyrillic o and fullwidth letters
    "format_string": "%s%n{0}{name}{__class__}",
    "html": "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "deep_nesting": NESTED,
    "file_data_etc_passwd": {"path": "/etc/passwd", "meta": FILE_DATA},
    "file_data_traversal_url": {
        "path": "../../../etc/passwd",
        "url": "http://169.254.169.254/latest/meta-data/",
        "meta": FILE_DATA,
    },
}
# Every value goes through the queue's join; these also through the simple /call/ API and gradio_client (the same
# handlers behind them: a sample of each kind of value keeps the module fast). gradio_client cannot send NaN or
# infinity (it refuses them), a lone surrogate (it cannot encode one) nor a forged FileData (it would upload that
# path from this machine).
THROUGH_THE_CALL_API = [
    "10_to_the_400", "nan", "word_for_a_number", "list", "dict", "null", "string_false", "nul_byte",
    "lone_surrogate", "one_megabyte", "deep_nesting", "file_data_traversal_url",
]  # fmt: skip
THROUGH_GRADIO_CLIENT = [
    "10_to_the_400", "2_to_the_63", "minus_one", "word_for_a_number", "list", "dict", "null", "string_false",
    "string_0", "nul_byte", "one_megabyte", "rtl_override", "path_traversal", "sql",
]  # fmt: skip


def attacks(world: World, value: Any) -> Iterator[tuple[str, str, list[Any]]]:
    """(endpoint, parameter, data) for every parameter of every published endpoint, `value` in its place."""
    for api_name, endpoint in world.endpoints.items():
        parameters = endpoint["parameters"]
        for position, parameter in enumerate(parameters):
            if isinstance(value, bool) and parameter["python_type"]["type"] == "bool":
                continue  # a boolean where one is meant is no attack
            data = [world.valid_value(other) for other in parameters]
            data[position] = value
            yield api_name, parameter["parameter_name"], data


def must_refuse(world: World, api_name: str, parameter: str, value: Any) -> bool:
    """Whether `value` in `parameter` must be refused (not merely answered harmlessly)."""
    [info] = [p for p in world.endpoints[api_name]["parameters"] if p["parameter_name"] == parameter]
    kind = info["python_type"]["type"]
    if kind == "bool":
        return not isinstance(value, bool)  # booleans are booleans: "false" is no answer to "public?"
    if api_name == "/generate" and kind == "float":
        # Numeric text is a number to the request class, as a form sends it; null is "not given": the default.
        return value is not None and not is_a_number(value)
    return False


def is_a_number(value: Any) -> bool:
    """A finite number, or text that reads as one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        return isinstance(value, int) or math.isfinite(float(value))
    except ValueError:
        return False


def client_answer(client: Client, api_name: str, data: list[Any]) -> Answer:
    """The answer gradio_client got: a success, or its error's sentence (as the server worded it)."""
    try:
        result = client.predict(*data, api_name=api_name)
    except ValidationError as error:  # "N parameter(s) failed validation:\n- name: message" per field
        lines = [line.split(": ", 1)[-1] for line in str(error).splitlines()[1:]]
        return Answer(422, None, " ".join(lines))
    except AppError as error:
        return Answer(200, False, error.message)
    except httpx.HTTPStatusError as error:
        return Answer(error.response.status_code, None, detail_text(error.response))
    return Answer(200, True, "", result)


def assert_none_failed(failures: list[str | None]) -> None:
    found = [failure for failure in failures if failure]
    assert not found, "\n".join(found)


def check(world: World, answer: Answer, api_name: str, parameter: str, value: Any) -> str | None:
    """Why the answer to one attack is wrong, or None."""
    world.record(answer)
    problem = answer.problem(sentence_required=True)
    if problem is None and must_refuse(world, api_name, parameter, value) and not answer.refused:
        problem = "accepted a value that must be refused"
    return None if problem is None else f"{api_name} {parameter}: {problem}"


def attack_everything(world: World, kind: str, send: Callable[[int, str, list[Any]], Answer]) -> None:
    """Send `kind`'s value in every parameter of every endpoint, endpoints spread over LANES threads (an endpoint's
    own cases in order: one job in flight per browser), and fail with every answer that was not acceptable."""
    value = HOSTILE[kind]
    by_endpoint: dict[str, list[tuple[str, list[Any]]]] = {}
    for api_name, parameter, data in attacks(world, value):
        by_endpoint.setdefault(api_name, []).append((parameter, data))

    def attack(lane: int) -> list[str | None]:
        # A lane's endpoints one after another: a pool thread per endpoint could run two of one lane's at once.
        endpoints = list(by_endpoint)[lane::LANES]
        return [
            check(world, send(lane, api_name, data), api_name, parameter, value)
            for api_name in endpoints
            for parameter, data in by_endpoint[api_name]
        ]

    with ThreadPoolExecutor(max_workers=LANES) as pool:
        failures = [failure for lane_failures in pool.map(attack, range(LANES)) for failure in lane_failures]
    assert_none_failed(failures)


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_every_parameter_of_every_endpoint_through_the_queue(world: World, kind: str) -> None:
    attack_everything(world, kind, lambda _lane, api_name, data: join_event(world.http, world.fn_index(api_name), data))


@pytest.mark.parametrize("kind", THROUGH_THE_CALL_API)
def test_every_parameter_of_every_endpoint_through_the_call_api(world: World, kind: str) -> None:
    attack_everything(world, kind, lambda _lane, api_name, data: call(world.http, api_name.lstrip("/"), {"data": data}))


@pytest.mark.parametrize("kind", THROUGH_GRADIO_CLIENT)
def test_every_parameter_of_every_endpoint_through_gradio_client(world: World, kind: str) -> None:
    attack_everything(world, kind, lambda lane, api_name, data: client_answer(world.clients[lane], api_name, data))


# ---- the protocol, ownership, files and uploads, case by case ----------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One hostile request and what must come of it: a refusal in a sentence (holding `words`, when given), any
    refusal (Gradio's own short 4xx to a malformed request counts), or any acceptable answer; then `after`'s checks
    of what changed."""

    send: Callable[[World], Answer]
    expect: str = "sentence"  # "sentence" | "refused" | "answered"
    words: str = ""
    after: Callable[[World, Answer], None] | None = None


def joined(api_name: str, *data: Any) -> Callable[[World], Answer]:
    return lambda world: join_event(world.http, world.fn_index(api_name), list(data))


def called(api_name: str, *data: Any) -> Callable[[World], Answer]:
    return lambda world: call(world.http, api_name, {"data": list(data)})


def by_client(api_name: str, *data: Any) -> Callable[[World], Answer]:
    return lambda world: client_answer(world.clients[0], api_name, list(data))


def raw_join(body: Any) -> Callable[[World], Answer]:
    """A join whose body is `body` as JSON (bytes are sent as they are)."""
    if isinstance(body, bytes):
        return lambda world: join(world.http, None, raw=body)
    return lambda world: join(world.http, body)


def like_body(world: World, **changes: Any) -> dict[str, Any]:
    """A well-formed join of /mascot (it changes nothing) on the victim's public mascot, with `changes`."""
    body = {
        "data": [world.victim_public],
        "event_data": None,
        "fn_index": world.fn_index("mascot"),
        "trigger_id": None,
        "session_hash": "hostile-session",
    }
    return {**body, **changes}


def joined_like(read: bool = True, **changes: Any) -> Callable[[World], Answer]:
    return lambda world: join(world.http, like_body(world, **changes), read=read)


def post(path: str, content: bytes, content_type: str = "application/json") -> Callable[[World], Answer]:
    def send(world: World) -> Answer:
        response = world.http.post(path, content=content, headers={"Content-Type": content_type})
        if response.status_code >= 400:
            return Answer(response.status_code, None, detail_text(response))
        return Answer(response.status_code, True, "", response.text[:200])

    return send


def run_route(api_name: str, *data: Any) -> Callable[[World], Answer]:
    """/gradio_api/run/<api_name>: how the page calls the events outside the queue (browsing)."""

    def send(world: World) -> Answer:
        body = json_bytes({"data": list(data)})
        response = world.http.post(
            f"gradio_api/run/{api_name}", content=body, headers={"Content-Type": "application/json"}
        )
        if response.status_code >= 400:
            return Answer(response.status_code, None, detail_text(response))
        return Answer(200, True, "", response.json())

    return send


def json_bytes(value: Any) -> bytes:
    import json

    return json.dumps(value, allow_nan=True).encode()


def stays_private(world: World, _answer: Answer) -> None:
    assert world.site.app.store.public_mascot(world.own_id) is None


def stored_prompt_is_clean(world: World, answer: Answer) -> None:
    """The prompt saved for the last mascot holds no control, direction or surrogate character."""
    assert answer.success, answer
    [latest, *_] = world.site.app.store.history(world.own_owner)
    assert latest.prompt and all(character.isprintable() for character in latest.prompt), latest.prompt


def logo_upload(content: bytes, name: str = "logo.png", channel: str = "join") -> Callable[[World], Answer]:
    """Upload `content` as a fresh browser (the attacker has many), then hand it to /upload_logo."""

    def send(world: World) -> Answer:
        with httpx.Client(base_url=world.site.url, timeout=60) as fresh:
            fresh.get("config")  # its identity cookie
            uploaded = upload(fresh, name, content)
            if not uploaded.success:
                return uploaded
            file_data = {"path": uploaded.data[0], "meta": FILE_DATA, "orig_name": name}
            if channel == "call":
                return call(fresh, "upload_logo", {"data": [file_data]})
            config = fresh.get("config").json()
            return join_event(fresh, fn_index_in(config, "upload_logo"), [file_data])

    return send


def client_logo(content: bytes, suffix: str) -> Callable[[World], Answer]:
    """gradio_client uploads a local file (its handle_file) and calls /upload_logo with it."""
    from gradio_client import handle_file

    def send(world: World) -> Answer:
        path = world.site.tmp_path / f"client-upload-{len(content)}{suffix}"
        path.write_bytes(content)
        client = browser_client(world.site.url, False)
        world.site.clients.append(client)
        return client_answer(client, "/upload_logo", [handle_file(str(path))])

    return send


def raw_upload(name: str, content: bytes, cookie: bool = True) -> Callable[[World], Answer]:
    def send(world: World) -> Answer:
        with httpx.Client(base_url=world.site.url, timeout=60) as fresh:
            if cookie:
                fresh.get("config")
            return upload(fresh, name, content)

    return send


def upload_stays_inside(world: World, answer: Answer) -> None:
    """A file name with a path in it is kept inside Gradio's upload folder all the same."""
    import os
    from pathlib import Path

    if answer.success:
        folder = Path(os.environ.get("GRADIO_TEMP_DIR", "")).resolve()
        assert all(Path(path).resolve().is_relative_to(folder) for path in answer.data), answer.data


def logo_is_reencoded(world: World, answer: Answer) -> None:
    """A polyglot accepted as a logo is kept as a fresh PNG: the ZIP riding on it is gone."""
    if answer.success:
        [logo_id] = answer.data
        path = world.site.app.services.service.logos.path(logo_id)
        assert path is not None and b"PK\x03\x04" not in path.read_bytes()


def truncated_png() -> bytes:
    return png_bytes((64, 64))[:80]


def bomb_png(width: int, height: int) -> bytes:
    import tempfile
    from pathlib import Path

    from tests.support.bombs import png_bomb

    with tempfile.TemporaryDirectory() as folder:
        return png_bomb(Path(folder) / "bomb.png", width, height).read_bytes()


def zip_bomb() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * (50 * 1024 * 1024))
    return buffer.getvalue()


def polyglot() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", "<script>alert(1)</script>")
    return png_bytes() + buffer.getvalue()


def forged_file(path: Callable[[World], str], api_name: str = "upload_logo") -> Callable[[World], Answer]:
    def send(world: World) -> Answer:
        return join_event(world.http, world.fn_index(api_name), [{"path": path(world), "meta": FILE_DATA}])

    return send


def victims_picture(world: World) -> str:
    entry = world.site.app.store.mascot(world.victim_public, None)
    assert entry is not None
    return str(entry.path)


GOOD = {"seed": 1, **FAST}


def generate(**values: Any) -> Callable[[World], Answer]:
    """/generate through gradio_client, by keyword, on the test's fast settings unless `values` say otherwise."""
    return lambda world: client_keywords(world.clients[0], "/generate", {"prompt": "an otter", **GOOD, **values})


def client_keywords(client: Client, api_name: str, values: dict[str, Any]) -> Answer:
    try:
        return Answer(200, True, "", client.predict(**values, api_name=api_name))
    except ValidationError as error:
        return Answer(422, None, " ".join(line.split(": ", 1)[-1] for line in str(error).splitlines()[1:]))
    except AppError as error:
        return Answer(200, False, error.message)


CASES: dict[str, Case] = {
    # The protocol: bodies, event numbers, data, sessions.
    "join_body_not_json": Case(raw_join(b"{not json"), "refused"),
    "join_body_invalid_utf8": Case(raw_join(b"\xff\xfe{"), "refused"),
    "join_body_empty": Case(raw_join(b""), "refused"),
    "join_body_a_list": Case(raw_join([1, 2]), "refused"),
    "join_body_null": Case(raw_join(b"null"), "refused"),
    "join_body_nested_100000_deep": Case(raw_join(b"[" * 100_000 + b"]" * 100_000), "refused"),
    "join_body_over_a_megabyte": Case(raw_join(b'{"data": ["' + b"A" * 1_100_000 + b'"]}'), "refused"),
    "join_without_fn_index": Case(lambda world: join(world.http, {**like_body(world), "fn_index": None}), "refused"),
    "join_fn_index_minus_one": Case(joined_like(fn_index=-1), "sentence", "fn_index"),
    "join_fn_index_99999": Case(joined_like(fn_index=99_999), "sentence", "fn_index"),
    "join_fn_index_10_to_the_400": Case(joined_like(fn_index=10**400), "sentence", "fn_index"),
    "join_fn_index_as_text": Case(joined_like(fn_index="0"), "sentence", "fn_index"),
    "join_fn_index_1_5": Case(joined_like(fn_index=1.5), "sentence", "fn_index"),
    "join_fn_index_true": Case(joined_like(fn_index=True), "sentence", "fn_index"),
    "join_fn_index_a_list": Case(joined_like(fn_index=[0]), "sentence", "fn_index"),
    "join_without_data": Case(lambda world: join(world.http, {**like_body(world), "data": None}), "sentence", "data"),
    "join_data_a_dict": Case(joined_like(data={"public_id": "x"}), "sentence", "data"),
    "join_data_a_string": Case(joined_like(data="x"), "sentence", "data"),
    "join_too_few_values": Case(joined_like(data=[]), "sentence", "public_id"),
    "join_too_many_values": Case(joined_like(data=["a", "b", "c"]), "sentence", "public_id"),
    "join_without_session_hash": Case(joined_like(session_hash=None), "refused"),
    "join_session_hash_a_number": Case(joined_like(session_hash=12345), "refused"),
    # A session no client could read back (its URL would be too long, or not text): the join alone is answered.
    "join_session_hash_100_kb": Case(joined_like(read=False, session_hash="s" * 100_000), "answered"),
    "join_session_hash_nul_and_surrogate": Case(joined_like(read=False, session_hash="a\x00b\ud800"), "answered"),
    "join_event_data_forged": Case(joined_like(event_data={"index": "../../x", "value": [1]}), "answered"),
    "join_trigger_id_forged": Case(joined_like(trigger_id="'; DROP TABLE x; --"), "answered"),
    "join_as_text_plain": Case(post("gradio_api/queue/join", b"x=1", "text/plain"), "refused"),
    "queue_data_without_session_hash": Case(
        lambda world: read_stream(world.http, "gradio_api/queue/data", None, None), "refused"
    ),
    "cancel_body_not_json": Case(post("gradio_api/cancel", b"{oops"), "refused"),
    "cancel_fields_wrong_types": Case(
        post("gradio_api/cancel", json_bytes({"session_hash": 1, "fn_index": "x"})), "refused"
    ),
    "call_unknown_endpoint": Case(called("no_such_endpoint", 1), "sentence", "no_such_endpoint"),
    "call_v2_unknown_endpoint": Case(
        post("gradio_api/call/v2/no_such_endpoint", b"{}"), "sentence", "no_such_endpoint"
    ),
    "call_v2_unknown_parameter": Case(post("gradio_api/call/v2/like", json_bytes({"who": "me"})), "sentence", "who"),
    "call_v2_file_outside": Case(
        post("gradio_api/call/v2/upload_logo", json_bytes({"image": {"path": "/etc/passwd", "meta": FILE_DATA}})),
        "sentence",
        "image",
    ),
    "call_endpoint_name_traversal": Case(post("gradio_api/call/..%2F..%2Fetc%2Fpasswd", b'{"data": []}'), "refused"),
    "call_body_not_json": Case(post("gradio_api/call/like", b"{oops"), "refused"),
    "call_data_not_a_list": Case(post("gradio_api/call/like", json_bytes({"data": "x"})), "sentence", "data"),
    "call_body_over_a_megabyte": Case(
        post("gradio_api/call/like", b'{"data": ["' + b"A" * 1_100_000 + b'"]}'), "refused"
    ),
    "call_result_of_unknown_event": Case(
        lambda world: read_stream(world.http, "gradio_api/call/like/not-an-event", None, "x"), "refused"
    ),
    "run_gallery_search_lone_surrogate": Case(run_route("gallery", 1, "Newest", "otter \ud800"), "sentence", "search"),
    "run_my_mascots_search_nul": Case(run_route("my_mascots", 1, "otter\x00"), "sentence", "search"),
    "run_gallery_search_too_long": Case(run_route("gallery", 1, "Newest", "x" * 201), "sentence", "search"),
    "run_gallery_sort_unknown": Case(run_route("gallery", 1, "Oldest", ""), "sentence", "sort"),
    "run_gallery_page_10_to_the_400": Case(run_route("gallery", 10**400, "Newest", ""), "answered"),
    "run_generate_around_the_queue": Case(run_route("generate", "an otter"), "refused"),
    "run_unknown_endpoint": Case(run_route("no_such_endpoint"), "sentence", "no_such_endpoint"),
    # Someone else's mascots, by share id.
    "like_the_victims_private_mascot": Case(
        lambda w: join_event(w.http, w.fn_index("like"), [w.victim_private]), "sentence", "private"
    ),
    "report_the_victims_private_mascot": Case(
        lambda w: join_event(w.http, w.fn_index("report"), [w.victim_private, "spam"]), "sentence"
    ),
    "publish_the_victims_private_mascot": Case(
        lambda w: join_event(w.http, w.fn_index("set_public"), [w.victim_private, True]), "sentence"
    ),
    "hide_the_victims_public_mascot": Case(
        lambda w: join_event(w.http, w.fn_index("set_public"), [w.victim_public, False]), "sentence"
    ),
    "delete_the_victims_public_mascot": Case(
        lambda w: join_event(w.http, w.fn_index("delete"), [w.victim_public]), "sentence"
    ),
    "delete_the_victims_private_mascot": Case(
        lambda w: join_event(w.http, w.fn_index("delete"), [w.victim_private]), "sentence"
    ),
    "open_the_victims_private_mascot": Case(
        lambda w: join_event(w.http, w.fn_index("mascot"), [w.victim_private]), "sentence", "private"
    ),
    "sticker_of_the_victims_private_mascot": Case(
        lambda w: join_event(w.http, w.fn_index("sticker"), [w.victim_private]), "sentence"
    ),
    "open_the_victims_private_mascot_by_client": Case(
        lambda w: client_answer(w.clients[0], "/mascot", [w.victim_private]), "sentence"
    ),
    "delete_the_victims_mascot_by_client": Case(
        lambda w: client_answer(w.clients[0], "/delete", [w.victim_public]), "sentence"
    ),
    "share_id_homoglyph_of_the_victims": Case(
        lambda w: join_event(w.http, w.fn_index("mascot"), ["о" + w.victim_private[1:]]),
        "sentence",  # Cyrillic first
    ),
    "share_id_with_nul_inside": Case(
        lambda w: join_event(w.http, w.fn_index("mascot"), [w.victim_private[:6] + "\x00" + w.victim_private[7:]]),
        "sentence",
    ),
    "share_id_negative": Case(joined("mascot", "-1"), "sentence"),
    "share_id_huge": Case(joined("mascot", "9" * 5000), "sentence"),
    "share_id_sql": Case(joined("like", "x' OR '1'='1"), "sentence"),
    "share_id_like_wildcard": Case(joined("like", "%"), "sentence"),
    # Booleans are booleans: nothing published by a string.
    "publish_own_with_text_false_by_client": Case(
        lambda w: client_answer(w.clients[0], "/set_public", [w.own_id, "false"]),
        "sentence",
        "is_public",
        stays_private,
    ),
    "publish_own_with_text_0_by_client": Case(
        lambda w: client_answer(w.clients[0], "/set_public", [w.own_id, "0"]), "sentence", "is_public", stays_private
    ),
    "publish_own_with_1_by_call": Case(
        lambda w: call(w.http, "set_public", {"data": [w.own_id, 1]}), "sentence", "is_public", stays_private
    ),
    "publish_own_with_text_true_by_join": Case(
        lambda w: join_event(w.http, w.fn_index("set_public"), [w.own_id, "true"]),
        "sentence",
        "is_public",
        stays_private,
    ),
    "publish_own_with_a_list": Case(
        lambda w: join_event(w.http, w.fn_index("set_public"), [w.own_id, [True]]),
        "sentence",
        "is_public",
        stays_private,
    ),
    "disconnect_with_text_true": Case(by_client("/disconnect_other_devices", "true"), "sentence", "confirmed"),
    "stop_showing_here_with_1": Case(by_client("/stop_showing_here", 1), "sentence", "confirmed"),
    # Files that were not uploaded here: the system's, our data folder's, the victim's pictures, URLs.
    "logo_file_etc_passwd": Case(forged_file(lambda w: "/etc/passwd"), "sentence", "image"),
    "logo_file_traversal": Case(forged_file(lambda w: "../../../../../../etc/passwd"), "sentence", "image"),
    "logo_file_the_victims_picture": Case(forged_file(victims_picture), "sentence", "image"),
    "logo_file_the_database": Case(
        forged_file(lambda w: str(w.site.app.settings.data_dir / "mascots.db")), "sentence", "image"
    ),
    "logo_file_proc_environ": Case(forged_file(lambda w: "/proc/self/environ"), "sentence", "image"),
    "logo_file_url": Case(forged_file(lambda w: "file:///etc/passwd"), "sentence", "image"),
    "logo_file_metadata_url": Case(
        forged_file(lambda w: "http://169.254.169.254/latest/meta-data/"), "sentence", "image"
    ),
    "logo_file_public_url": Case(forged_file(lambda w: "https://example.com/logo.png"), "sentence", "image"),
    "logo_file_nul_byte": Case(forged_file(lambda w: w.own_upload + "\x00.png"), "sentence", "image"),
    "logo_file_upload_folder_itself": Case(
        forged_file(lambda w: str(__import__("pathlib").Path(w.own_upload).parent.parent)), "sentence", "image"
    ),
    "logo_url_only": Case(
        lambda w: join_event(
            w.http, w.fn_index("upload_logo"), [{"url": "http://169.254.169.254/", "meta": FILE_DATA}]
        ),
        "sentence",
        "image",
    ),
    "logo_not_a_file_object": Case(joined("upload_logo", "/etc/passwd"), "sentence", "image"),
    "logo_file_object_without_meta": Case(joined("upload_logo", {"path": "/etc/passwd"}), "sentence", "image"),
    "search_holding_a_forged_file": Case(
        lambda w: join_event(w.http, w.fn_index("gallery"), [1, "Newest", {"path": "/etc/passwd", "meta": FILE_DATA}]),
        "sentence",
        "search",
    ),
    "private_recipe_event_forged_file": Case(
        lambda w: join_event(w.http, private_fn(w, "remix_picture"), [{"path": "/etc/passwd", "meta": FILE_DATA}]),
        "sentence",
    ),
    # Uploads: what is sent, and what is then read as a logo.
    "upload_without_cookie": Case(raw_upload("logo.png", png_bytes(), cookie=False), "sentence", "cookie"),
    "upload_empty_file": Case(logo_upload(b""), "sentence"),
    "upload_text_as_png": Case(logo_upload(b"just some text, not a picture", "logo.png"), "sentence", "image"),
    "upload_svg_with_script": Case(
        logo_upload(b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "logo.svg"), "sentence", "image"
    ),
    "upload_html": Case(logo_upload(b"<html><script>alert(1)</script></html>", "logo.html"), "sentence", "image"),
    "upload_truncated_png": Case(logo_upload(truncated_png()), "sentence"),
    "upload_20000_square_png": Case(logo_upload(bomb_png(20_000, 20_000)), "sentence", "4,096"),
    "upload_8192_square_1_bit_png": Case(logo_upload(bomb_png(8192, 8192)), "sentence", "8,192"),
    "upload_zip_bomb": Case(logo_upload(zip_bomb(), "logo.zip"), "sentence", "image"),
    "upload_png_zip_polyglot": Case(logo_upload(polyglot()), "answered", after=logo_is_reencoded),
    "upload_png_named_exe": Case(logo_upload(png_bytes(), "logo.exe"), "answered"),
    "upload_truncated_png_by_call": Case(logo_upload(truncated_png(), channel="call"), "sentence"),
    "upload_name_with_traversal": Case(
        raw_upload("../../../../tmp/evil.png", png_bytes()), "answered", after=upload_stays_inside
    ),
    "upload_name_absolute": Case(raw_upload("/etc/cron.d/evil", png_bytes()), "answered", after=upload_stays_inside),
    "upload_name_nul": Case(raw_upload("logo\x00.png", png_bytes()), "answered", after=upload_stays_inside),
    "upload_name_4000_characters": Case(
        raw_upload("a" * 4000 + ".png", png_bytes()), "answered", after=upload_stays_inside
    ),
    "upload_name_rtl_override": Case(raw_upload("\u202egnp.exe", png_bytes()), "answered", after=upload_stays_inside),
    "upload_over_10_mb": Case(raw_upload("big.png", b"\0" * (11 * 1024 * 1024)), "sentence", "MB"),
    "upload_not_multipart": Case(post("gradio_api/upload", json_bytes({"files": ["x"]})), "refused"),
    "upload_text_by_client": Case(client_logo(b"not a picture at all", ".png"), "sentence"),
    "upload_truncated_png_by_client": Case(client_logo(truncated_png(), ".png"), "sentence"),
    "upload_20000_square_png_by_client": Case(client_logo(bomb_png(20_000, 20_000), ".png"), "sentence", "4,096"),
    "upload_zip_bomb_by_client": Case(client_logo(zip_bomb(), ".zip"), "sentence"),
    # /generate, by name through gradio_client: every refusal names the parameter.
    "prior_num_inference_steps_1": Case(generate(prior_num_inference_steps=1), "sentence", "prior_num_inference_steps"),
    "num_inference_steps_0": Case(generate(num_inference_steps=0), "sentence", "num_inference_steps"),
    "num_images_per_prompt_5": Case(generate(num_images_per_prompt=5), "sentence", "num_images_per_prompt"),
    "width_not_a_multiple_of_64": Case(generate(width=300), "sentence", "width"),
    "height_2_to_the_63": Case(generate(height=2**63), "sentence", "height"),
    "seed_2_to_the_32": Case(generate(seed=2**32), "sentence", "seed"),
    "seed_minus_one": Case(generate(seed=-1), "sentence", "seed"),
    "guidance_scale_1e400_text": Case(generate(guidance_scale="1e400"), "sentence", "guidance_scale"),
    "lora_scale_text": Case(generate(lora_scale="strong"), "sentence", "lora_scale"),
    "logo_weight_a_list": Case(generate(logo_weight=[0.5]), "sentence", "logo_weight"),
    "every_number_wrong_at_once": Case(
        generate(seed=-1, width=1, height="x", num_inference_steps=10**400), "sentence", "num_inference_steps"
    ),
    "prompt_1001_characters": Case(generate(prompt="o" * 1001), "sentence", "prompt"),
    "prompt_only_invisible_characters": Case(generate(prompt="\u200b\u200d\ufeff\u202e"), "sentence", "prompt"),
    "prompt_a_number": Case(generate(prompt=12345), "sentence", "prompt"),
    "prompt_a_dict": Case(generate(prompt={"text": "otter"}), "sentence", "prompt"),
    "negative_prompt_a_list": Case(generate(negative_prompt=["blurry"]), "sentence", "negative_prompt"),
    "style_traversal": Case(generate(style="../../etc/passwd"), "sentence", "style"),
    "style_unknown": Case(generate(style="Oil painting"), "sentence", "style"),
    "brand_sql": Case(generate(brand="'; DROP TABLE generation; --"), "sentence", "brand"),
    "adapter_name_traversal": Case(generate(adapter_name="../../lora"), "sentence", "adapter_name"),
    "logo_a_path": Case(generate(logo="../../data/images/logos/x.png"), "sentence", "logo"),
    "logo_unknown_id": Case(generate(logo="0" * 64), "sentence", "logo"),
    "logo_id_uppercase": Case(generate(logo="A" * 64), "sentence", "logo"),
    "prompt_with_rtl_and_controls_is_cleaned": Case(
        generate(prompt="an otter \u202e\x1b[31m\x07 barista"), "answered", after=stored_prompt_is_clean
    ),
    "prompt_with_nul_and_surrogate_is_cleaned": Case(
        lambda w: join_event(w.http, w.fn_index("generate"), generate_data(w, "an otter\x00 \ud800 barista")),
        "answered",
        after=stored_prompt_is_clean,
    ),
    # Searches: matched as text, never as SQL or a pattern.
    "search_percent": Case(by_client("/gallery", 1, "Newest", "%"), "answered"),
    "search_underscore": Case(by_client("/gallery", 1, "Newest", "_"), "answered"),
    "search_sql": Case(by_client("/my_mascots", 1, "') OR 1=1 --"), "answered"),
    "search_201_characters": Case(by_client("/gallery", 1, "Newest", "o" * 201), "sentence", "search"),
    "search_lone_surrogate_by_join": Case(joined("my_mascots", 1, "otter \udfff"), "sentence", "search"),
    "gallery_sort_liked_by_me_as_stranger": Case(by_client("/gallery", 1, "Liked by me", ""), "answered"),
}


def generate_data(world: World, prompt: str) -> list[Any]:
    """/generate's data as a client joins the queue: the API's parameters, then None for the page's State (last)."""
    parameters = world.endpoints["/generate"]["parameters"]
    data = [world.valid_value(parameter) for parameter in parameters]
    data[0] = prompt
    inputs = world.site.app.demo.fns[world.fn_index("generate")].inputs
    return data + [None] * (len(inputs) - len(data))


def private_fn(world: World, function_name: str) -> int:
    """The fn_index of a private event by its handler's name (it has no API name)."""
    handlers = world.site.app.demo.fns
    [index] = [fn_index for fn_index, fn in handlers.items() if getattr(fn.fn, "__name__", "") == function_name]
    return int(fn_index_checked(index))


def fn_index_checked(index: Any) -> int:
    assert isinstance(index, int)
    return index


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_request_is_refused_with_a_sentence_or_changes_nothing(world: World, name: str) -> None:
    case = CASES[name]
    answer = world.record(case.send(world))

    if case.expect == "refused":  # Gradio's own short answer to a malformed request will do, if it is no 500
        problem = answer.problem() if answer.status >= 400 else protocol_problem(answer.message)
    else:
        problem = answer.problem(sentence_required=case.expect == "sentence")
    assert problem is None, f"{name}: {problem}"
    if case.expect != "answered":
        assert answer.refused, f"{name} was accepted: {answer}"
    assert case.words.lower() in answer.message.lower(), f"{name}: {answer.message!r} does not say {case.words!r}"
    if case.after is not None:
        case.after(world, answer)


def protocol_problem(message: str) -> str | None:
    """Why Gradio's own refusal of a malformed request is not acceptable: Python text, or a long answer."""
    if PYTHON_TEXT.search(message) or len(message) > 1000:
        return f"Python text or a long answer: {message[:300]!r}"
    return None


def test_every_event_of_the_page_answers_null_values_and_a_wrong_count_with_a_sentence(world: World) -> None:
    """Private events too (the page's own steps, found by number): each given nulls, then too few values."""
    failures = []
    for dependency in world.config["dependencies"]:
        if not dependency.get("backend_fn", True):
            continue
        for data in ([None] * len(dependency["inputs"]), []):
            answer = world.record(join_event(world.http, dependency["id"], data))
            problem = answer.problem(sentence_required=True)
            if problem is not None:
                failures.append(f"event {dependency['id']} ({dependency.get('api_name')}) with {data}: {problem}")
    assert_none_failed(failures)


def test_sentence_problem_tells_a_sentence_from_python_text() -> None:
    assert sentence_problem("Seed must be a whole number (got 'x').") is None
    assert sentence_problem("Error") is not None
    assert sentence_problem("ValueError: invalid literal for int() with base 10: 'x'") is not None
    assert sentence_problem("Traceback (most recent call last):") is not None
    assert sentence_problem("list index out of range") is not None
