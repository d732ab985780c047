"""The gate before Gradio's event routes (the queue's join, /call/, /run/): a request naming no event, sending the
wrong number of values, or a file that was not uploaded here is answered with a sentence before Gradio reads it.

Gradio answers such requests itself, but badly: an unknown event number or API name is an HTTP 500 (a KeyError), too
few values a bare "Error" (its ValueError is hidden by show_error=False), a file object pointing outside its upload
folder (`/etc/passwd`, another folder, a URL it would fetch) a bare "Error" as well, and a gr.Error raised by an event
outside the queue (/run/) goes out as HTTP 500 with the sentence inside. This pure ASGI middleware checks the body
against the live page's events (`EventShape`, read from its Blocks) and answers 400, 404 or 413 with a sentence in
the JSON Gradio's own refusals use ({"detail": ...}; /run/'s readers look at "error"). It also turns /run/'s
500-with-a-sentence into 400. Checks on the values themselves stay with the service and the request class.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mascot.web.identity import ASGIApp, Message, Receive, Scope, Send
from mascot.web.sessions import read_body, replaying

logger = logging.getLogger(__name__)
# /gradio_api/queue/join, or /gradio_api/{call,call/v2,run,api}/<api_name>
EVENT_ROUTE = re.compile(r"^/gradio_api/(?:queue/join|(call/v2|call|run|api)/([^/]+))/?$")
SHOWN_NAME_CHARACTERS = 60
TOO_LARGE = "This request is larger than 1 MB: send files through /gradio_api/upload, not inside a request."
NOT_JSON = "The request body must be a JSON object, as Gradio's clients send it."
NO_FN_INDEX = "fn_index must be the number of one of the page's events: reload the page."


@dataclass(frozen=True)
class EventShape:
    """What one of the page's events takes: its API name (None: none), each input's name as the API calls it, and
    the positions of the inputs that take a file."""

    api_name: str | None
    parameters: tuple[str, ...]
    files: frozenset[int] = frozenset()
    selects: bool = False  # it reads what was selected (Gradio's SelectData: the join's event_data)
    states: frozenset[int] = frozenset()  # the page's State inputs: the API's own parameters leave them out

    @property
    def api_parameters(self) -> tuple[str, ...]:
        return tuple(name for position, name in enumerate(self.parameters) if position not in self.states)

    @property
    def shown_name(self) -> str:
        return f"/{self.api_name}" if self.api_name else "This event"


Shapes = Callable[[Scope], Mapping[int, EventShape]]  # the live page's events, by fn_index
UploadFolder = Callable[[], Path]


class Refused(Exception):
    """A request answered before Gradio sees it: the HTTP status and the sentence."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence


class EventGuardMiddleware:
    """Pure ASGI, in front of Gradio's routes: see the module's docstring."""

    def __init__(self, app: ASGIApp, *, shapes: Shapes, upload_folder: UploadFolder) -> None:
        self.app = app
        self.shapes = shapes
        self.upload_folder = upload_folder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = event_route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        kind, api_name = route
        body = await read_body(receive)
        try:
            if body is None:
                raise Refused(413, TOO_LARGE)
            check_event(kind, api_name, body, self.shapes(scope), self.upload_folder())
        except Refused as refusal:
            logger.info("Refused an event request to %s (HTTP %d): %s", scope.get("path"), refusal.status, refusal)
            await refuse(send, refusal.status, refusal.sentence)
            return
        if kind in ("run", "api"):
            send = sentence_errors_as_400(send)
        await self.app(scope, replaying(body, receive), send)


def event_route(scope: Scope) -> tuple[str, str] | None:
    """("join", "") or (call | call/v2 | run | api, the API name) for a POST to one of Gradio's event routes."""
    if scope["type"] != "http" or scope.get("method") != "POST":
        return None
    found = EVENT_ROUTE.match(str(scope.get("path", "")))
    if found is None:
        return None
    return ("join", "") if found.group(1) is None else (found.group(1), found.group(2))


def check_event(kind: str, api_name: str, body: bytes, shapes: Mapping[int, EventShape], uploads: Path) -> None:
    """Raise Refused when the request cannot be a call of one of `shapes` with files from `uploads`."""
    payload = parse(body)
    # The page calls events outside the queue as /run/predict with their fn_index, as Gradio's get_fn reads it.
    by_index = kind == "join" or (kind in ("run", "api") and payload.get("fn_index") is not None)
    shape = shape_by_index(payload.get("fn_index"), shapes) if by_index else shape_by_name(api_name, shapes)
    if shape.selects and not is_selection(payload.get("event_data")):
        raise Refused(400, f"{shape.shown_name} needs event_data naming what was selected, as the page sends it.")
    data = payload.get("data")
    values = named_values(payload, shape) if kind == "call/v2" else positional_values(data, shape, kind == "call")
    for position, value in values:
        check_files(value, shape.parameters[position], position in shape.files, uploads)


def parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"null")
    except (ValueError, RecursionError):  # RecursionError: JSON nested a few thousand levels deep
        raise Refused(400, NOT_JSON) from None
    if not isinstance(payload, dict):
        raise Refused(400, NOT_JSON)
    return payload


def shape_by_index(fn_index: Any, shapes: Mapping[int, EventShape]) -> EventShape:
    a_number = isinstance(fn_index, int) and not isinstance(fn_index, bool)
    if not a_number or fn_index not in shapes:
        raise Refused(404 if a_number else 400, NO_FN_INDEX)
    return shapes[fn_index]


def shape_by_name(api_name: str, shapes: Mapping[int, EventShape]) -> EventShape:
    for shape in shapes.values():
        if shape.api_name == api_name:
            return shape
    shown = api_name if len(api_name) <= SHOWN_NAME_CHARACTERS else api_name[:SHOWN_NAME_CHARACTERS] + "…"
    raise Refused(404, f"There is no API endpoint named “/{shown}”: /gradio_api/info lists them.")


def positional_values(data: Any, shape: EventShape, api_call: bool = False) -> Iterator[tuple[int, Any]]:
    """The values of `data` by position, refused unless it is a list of exactly the event's inputs; or, for an API
    call (/call/<name>, where Gradio puts None in the State inputs' places itself), of exactly its API parameters."""
    if api_call and shape.states and isinstance(data, list) and len(data) == len(shape.api_parameters):
        positions = [position for position in range(len(shape.parameters)) if position not in shape.states]
        return zip(positions, data, strict=True)
    wanted = shape.api_parameters if api_call else shape.parameters
    if not isinstance(data, list) or len(data) != len(shape.parameters):
        sent = f"sent {len(data)}" if isinstance(data, list) else "sent no list of them"
        names = f" ({', '.join(wanted)})" if wanted else ""
        raise Refused(400, f"{shape.shown_name} takes {len(wanted)} values{names} in “data”; this request {sent}.")
    return iter(enumerate(data))


def named_values(payload: dict[str, Any], shape: EventShape) -> Iterator[tuple[int, Any]]:
    """/call/v2's values by name, refused when one is not a parameter of the event."""
    unknown = sorted(set(payload) - set(shape.api_parameters) - {"oauth_token"})
    if unknown:
        takes = ", ".join(shape.api_parameters) or "nothing"
        shown = ", ".join(name[:SHOWN_NAME_CHARACTERS] for name in unknown[:5])
        raise Refused(400, f"{shape.shown_name} has no parameter named {shown}; it takes {takes}.")
    return ((shape.parameters.index(name), value) for name, value in payload.items() if name in shape.parameters)


def check_files(value: Any, name: str, takes_a_file: bool, uploads: Path) -> None:
    """A file input takes nothing or a file object; any file object, anywhere in a value, must name a file that was
    uploaded here (Gradio would otherwise be asked to read, or fetch, whatever it names)."""
    if takes_a_file and value is not None and not is_file_object(value):
        raise Refused(400, f"{name} must be a file uploaded through /gradio_api/upload, or nothing.")
    for found in file_objects(value):
        if not is_uploaded(found.get("path"), uploads):
            raise Refused(400, f"{name} names a file that was not uploaded here: upload it through /gradio_api/upload.")


def is_selection(event_data: Any) -> bool:
    """What Gradio's SelectData reads from a join's event_data (it raises on anything less)."""
    return isinstance(event_data, dict) and "index" in event_data and "value" in event_data


def is_file_object(value: Any) -> bool:
    """Gradio's FileData, as its clients send it: {"path": ..., "meta": {"_type": "gradio.FileData"}, ...}."""
    meta = value.get("meta") if isinstance(value, dict) else None
    return isinstance(meta, dict) and meta.get("_type") == "gradio.FileData"


def file_objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every file object inside `value` (lists and dicts walked without recursion: the nesting is the sender's)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if is_file_object(item):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def is_uploaded(path: Any, uploads: Path) -> bool:
    """Whether `path` is a file inside Gradio's upload folder (after resolving `..` and links)."""
    if not isinstance(path, str) or not path or "\x00" in path:
        return False
    try:
        resolved = Path(path).resolve()
        return resolved.is_relative_to(uploads.resolve()) and resolved.is_file()
    except (OSError, ValueError):
        return False


async def refuse(send: Send, status: int, sentence: str) -> None:
    """The refusal as Gradio's own are sent: JSON with "detail" (the page's join and gradio_client read it), and
    "error" too (the page reads that for events outside the queue)."""
    body = json.dumps({"detail": sentence, "error": sentence}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def sentence_errors_as_400(send: Send) -> Send:
    """/run/ answers an event's gr.Error as HTTP 500 with {"error": "<sentence>"}: a refusal, so 400. A 500 without
    a sentence (a real fault) stays 500."""
    held: Message | None = None
    chunks: list[bytes] = []

    async def sending(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message.get("status") == 500:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(bytes(message.get("body", b"")))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        await send({**held, "status": 400 if has_sentence(body) else 500})
        await send({"type": "http.response.body", "body": body})

    return sending


def has_sentence(body: bytes) -> bool:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return False
    return isinstance(error, str) and bool(error.strip())


def event_shapes(blocks: Any) -> dict[int, EventShape]:
    """The events of a Gradio Blocks (its `fns`), read without importing gradio: names from the handlers'
    parameters (as the API names them), else the component's label; file inputs are those whose data has a path."""
    shapes: dict[int, EventShape] = {}
    for fn_index, fn in blocks.fns.items():
        names = list(getattr(fn, "input_parameter_names", None) or [])
        inputs = list(fn.inputs)
        parameters = tuple(_input_name(names, position, block) for position, block in enumerate(inputs))
        files = frozenset(position for position, block in enumerate(inputs) if _takes_a_file(block))
        selects = bool(getattr(fn, "collects_event_data", False))
        states = frozenset(position for position, block in enumerate(inputs) if getattr(block, "skip_api", False))
        shapes[int(fn_index)] = EventShape(fn.api_name or None, parameters, files, selects, states)
    return shapes


def _input_name(names: list[Any], position: int, block: Any) -> str:
    name = names[position] if position < len(names) else None
    return str(name or getattr(block, "label", None) or f"value {position + 1}")


def _takes_a_file(block: Any) -> bool:
    model = getattr(block, "data_model", None)
    return "path" in getattr(model, "model_fields", {})


def live_shapes(fallback: Any) -> Shapes:
    """The events of the page being served: the Blocks of the request's Gradio app (`gradio app.py` swaps in a new
    one after an edit), else `fallback`; read once per Blocks."""
    read: list[tuple[Any, dict[int, EventShape]]] = []  # the Blocks last read (kept, so its id is not reused)

    def shapes(scope: Scope) -> Mapping[int, EventShape]:
        get_blocks = getattr(scope.get("app"), "get_blocks", None)
        blocks = get_blocks() if callable(get_blocks) else fallback
        if not read or read[0][0] is not blocks:
            read[:] = [(blocks, event_shapes(blocks))]
        return read[0][1]

    return shapes
