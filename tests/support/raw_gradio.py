"""Gradio's HTTP protocol spoken by hand, as an attacker speaks it: join the queue and read the event stream, the
simple /call/ API, uploads; and the test of an answer: a refusal in a person's sentence, never Python text or a 500."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

STREAM_TIMEOUT_S = 60.0
# What must never reach a person or a client: Python's own words.
PYTHON_TEXT = re.compile(
    r"Traceback|File \"|line \d+, in|\b[A-Z][A-Za-z]*(Error|Exception)\b|\bNoneType\b|<class |object has no "
    r"attribute|is not subscriptable|index out of range|unexpected keyword|positional argument|invalid literal|"
    r"not supported between|could not convert|\bkwargs\b|\bself\.|\bNone\b"
)
# Gradio's own generic answer when a handler raised something that is not a gr.Error (show_error=False hides it).
GRADIO_GENERIC = ("verbose error reporting", "An unexpected error", "Connection errored out", "Error")


@dataclass(frozen=True)
class Answer:
    """How a request was answered: the HTTP status, whether the event succeeded (None: no event ran), the sentence
    or detail that came back, and the event's output data when it succeeded."""

    status: int
    success: bool | None
    message: str
    data: Any = None

    @property
    def refused(self) -> bool:
        return self.status >= 400 or self.success is False

    def kind(self) -> str:
        """How it was answered, for a summary: failed (HTTP 5xx, a bare error, Python text), refused with a
        sentence, refused with Gradio's own short answer to a malformed request, or a harmless success."""
        if self.status >= 500:
            return "failed"
        if not self.refused:
            return "harmless success"
        if sentence_problem(self.message) is None:
            return "refused with a sentence"
        if PYTHON_TEXT.search(self.message) or len(self.message) > 1000 or self.message.strip() in GRADIO_GENERIC:
            return "failed"
        return "refused with Gradio's own short answer"

    def problem(self, *, sentence_required: bool = False) -> str | None:
        """Why this answer is not acceptable, or None: a 5xx, an empty or generic error, Python text. An HTTP 4xx of
        Gradio's own to a malformed request may be short JSON rather than a sentence, unless `sentence_required`."""
        if self.status >= 500:
            return f"HTTP {self.status}: {self.message[:300]}"
        if not self.refused:
            return None
        problem = sentence_problem(self.message)
        if problem is None or sentence_required or self.status < 400:
            return problem
        if len(self.message) > 1000 or "Traceback" in self.message or 'File "' in self.message:
            return f"HTTP {self.status} with a long or Python answer: {self.message[:300]!r}"
        return None


def sentence_problem(message: str) -> str | None:
    """Why `message` is not a sentence for a person, or None when it is one."""
    text = message.strip()
    if not text or text in GRADIO_GENERIC or any(generic in text for generic in GRADIO_GENERIC[:3]):
        return f"a bare or generic error: {text!r}"
    if PYTHON_TEXT.search(text):
        return f"Python text: {text[:300]!r}"
    if len(text) > 2000:
        return f"an answer {len(text)} characters long"
    if not re.search(r"[A-Za-z]{2,}.*[.!?:)]\s*$", text, re.DOTALL) or " " not in text:
        return f"not a sentence: {text[:300]!r}"
    return None


def detail_text(response: httpx.Response) -> str:
    """An HTTP refusal's words: FastAPI's `detail` (a string, or a validator's per-field messages), or the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # a validator's answer: one {"is_valid", "message"} per input, or pydantic's
        messages = [item.get("message") or item.get("msg") or "" for item in detail if isinstance(item, dict)]
        return " ".join(message for message in messages if message) or json.dumps(detail)
    if isinstance(detail, dict):
        return str(detail.get("error") or detail.get("message") or json.dumps(detail))
    return str(detail)


def fn_index_in(config: dict[str, Any], api_name: str) -> int:
    """The `fn_index` a page sends for the event named `api_name` (with or without its leading "/") in an app's
    config (a client's `config`, or the app's `/config` answer)."""
    [index] = [dep["id"] for dep in config["dependencies"] if dep.get("api_name") == api_name.lstrip("/")]
    return int(index)


def join(http: httpx.Client, body: Any, *, raw: bytes | None = None, read: bool = True) -> Answer:
    """POST /gradio_api/queue/join with `body` (or the bytes `raw`), then read the session's stream to the end."""
    content = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
    response = http.post("gradio_api/queue/join", content=content, headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        return Answer(response.status_code, None, detail_text(response))
    event_id = response.json().get("event_id")
    session = body.get("session_hash") if isinstance(body, dict) else None
    if not read or not isinstance(session, str):
        return Answer(200, None, str(event_id))
    return read_stream(http, "gradio_api/queue/data", {"session_hash": session}, event_id)


def join_event(http: httpx.Client, fn_index: Any, data: Any, session: str | None = None, **extra: Any) -> Answer:
    """Join the queue for one event with its `data` list, in a fresh session unless one is given."""
    body = {
        "data": data,
        "event_data": None,
        "fn_index": fn_index,
        "trigger_id": None,
        "session_hash": session or uuid.uuid4().hex[:11],
        **extra,
    }
    return join(http, body)


def read_stream(http: httpx.Client, path: str, params: dict[str, str] | None, event_id: str | None) -> Answer:
    """Read Gradio's SSE stream until our event completes: its success, its sentence, its data."""
    with http.stream("GET", path, params=params, timeout=STREAM_TIMEOUT_S) as stream:
        if stream.status_code != 200:
            return Answer(stream.status_code, None, stream.read().decode(errors="replace"))
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                continue
            if not line.startswith("data:"):
                continue
            payload = json.loads(line[5:].strip() or "null")
            finished = _finished(payload, event, event_id)
            if finished is not None:
                return finished
    return Answer(200, None, "the stream ended without the event's end")


def _finished(payload: Any, event: str, event_id: str | None) -> Answer | None:
    """The answer in one message of the stream, or None while the event goes on."""
    if isinstance(payload, dict) and "msg" in payload:  # /queue/data
        if payload.get("event_id") not in (None, event_id):
            return None
        if payload["msg"] == "unexpected_error":
            return Answer(200, False, str(payload.get("message") or ""))
        if payload["msg"] != "process_completed":
            return None
        output = payload.get("output") or {}
        if payload.get("success"):
            return Answer(200, True, "", output.get("data"))
        return Answer(200, False, str(output.get("error") or ""))
    if event == "complete":  # /call/<api_name>/<event_id>
        return Answer(200, True, "", payload)
    if event == "error":  # a handler's refusal: {"error": "<sentence>", "duration": ...}; else a bare text or null
        message = payload.get("error") if isinstance(payload, dict) else payload
        return Answer(200, False, "" if message is None else str(message))
    return None


def call(http: httpx.Client, api_name: str, body: Any, *, raw: bytes | None = None) -> Answer:
    """POST /gradio_api/call/<api_name> (the simple API), then read its event's stream."""
    content = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
    response = http.post(f"gradio_api/call/{api_name}", content=content, headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        return Answer(response.status_code, None, detail_text(response))
    event_id = response.json()["event_id"]
    return read_stream(http, f"gradio_api/call/{api_name}/{event_id}", None, event_id)


def run_outside_queue(http: httpx.Client, config: dict[str, Any], api_name: str, data: list[Any]) -> httpx.Response:
    """POST /gradio_api/run/predict for the event named `api_name` (in `config`), as a page sends a queue-less event
    (and an attacker may, private events included)."""
    body = {"data": data, "fn_index": fn_index_in(config, api_name), "session_hash": uuid.uuid4().hex}
    return http.post("gradio_api/run/predict", json=body)


def upload(http: httpx.Client, name: str, content: bytes, content_type: str = "application/octet-stream") -> Answer:
    """POST /gradio_api/upload with one file; a success's data is the list of paths Gradio kept."""
    response = http.post("gradio_api/upload", files={"files": (name, content, content_type)})
    if response.status_code != 200:
        return Answer(response.status_code, None, detail_text(response))
    return Answer(200, True, "", response.json())
