"""The gate before Gradio's event routes (mascot.web.events), without a server: which requests it answers itself,
with which status and sentence, and which it lets through to Gradio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mascot.web.events import EventShape, Refused, check_event, event_route, has_sentence

SHAPES = {
    0: EventShape("like", ("public_id",)),
    1: EventShape("upload_logo", ("image",), files=frozenset({0})),
    2: EventShape(None, ("mascots",), selects=True),
    3: EventShape("generate", ("prompt", "seed", "in_pages_words"), states=frozenset({2})),  # a State, last
}


def refusal(kind: str, api_name: str, body: object, uploads: Path) -> tuple[int, str] | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        check_event(kind, api_name, raw, SHAPES, uploads)
    except Refused as refused:
        return refused.status, refused.sentence
    return None


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    (folder / "abc").mkdir(parents=True)
    (folder / "abc" / "logo.png").write_bytes(b"png")
    return folder


def file_data(path: object) -> dict[str, object]:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def test_a_well_formed_call_passes(uploads: Path) -> None:
    assert refusal("join", "", {"fn_index": 0, "data": ["abc"]}, uploads) is None
    assert refusal("call", "upload_logo", {"data": [file_data(str(uploads / "abc" / "logo.png"))]}, uploads) is None
    assert refusal("call", "upload_logo", {"data": [None]}, uploads) is None
    assert refusal("join", "", {"fn_index": 2, "data": [[]], "event_data": {"index": 0, "value": 1}}, uploads) is None
    assert refusal("call/v2", "like", {"public_id": "x"}, uploads) is None
    assert refusal("run", "predict", {"fn_index": 0, "data": ["x"]}, uploads) is None  # how the page runs events


def test_an_api_call_may_leave_out_the_pages_state_as_gradio_fills_it_in_but_a_join_may_not(uploads: Path) -> None:
    assert refusal("call", "generate", {"data": ["an otter", 1]}, uploads) is None  # the API's parameters
    assert refusal("call", "generate", {"data": ["an otter", 1, None]}, uploads) is None  # every input
    assert refusal("join", "", {"fn_index": 3, "data": ["an otter", 1, None]}, uploads) is None  # as clients join
    assert refusal("call/v2", "generate", {"prompt": "an otter", "seed": 1}, uploads) is None

    too_few = refusal("call", "generate", {"data": ["an otter"]}, uploads)
    assert too_few == (400, "/generate takes 2 values (prompt, seed) in “data”; this request sent 1.")
    joined_short = refusal("join", "", {"fn_index": 3, "data": ["an otter", 1]}, uploads)
    assert joined_short is not None and "takes 3 values" in joined_short[1], joined_short
    named = refusal("call/v2", "generate", {"prompt": "an otter", "in_pages_words": True}, uploads)
    assert named == (400, "/generate has no parameter named in_pages_words; it takes prompt, seed.")


@pytest.mark.parametrize(
    ("kind", "api_name", "body", "status", "words"),
    [
        ("join", "", b"{oops", 400, "JSON object"),
        ("join", "", b"[" * 50_000 + b"]" * 50_000, 400, "JSON object"),
        ("join", "", [1], 400, "JSON object"),
        ("join", "", {"fn_index": 99, "data": []}, 404, "fn_index"),
        ("join", "", {"fn_index": "0", "data": ["x"]}, 400, "fn_index"),
        ("join", "", {"fn_index": True, "data": ["x"]}, 400, "fn_index"),
        ("join", "", {"fn_index": 0, "data": []}, 400, "/like takes 1 values (public_id)"),
        ("join", "", {"fn_index": 0, "data": ["a", "b"]}, 400, "this request sent 2"),
        ("join", "", {"fn_index": 0, "data": "x"}, 400, "sent no list"),
        ("join", "", {"fn_index": 2, "data": [[]], "event_data": None}, 400, "event_data"),
        ("call", "nothing_here", {"data": []}, 404, "“/nothing_here”"),
        ("call/v2", "like", {"who": 1}, 400, "no parameter named who"),
        ("call", "upload_logo", {"data": ["/etc/passwd"]}, 400, "image must be a file uploaded"),
        ("call", "upload_logo", {"data": [{"path": "/etc/passwd"}]}, 400, "image must be a file uploaded"),
        ("call", "upload_logo", {"data": [file_data("/etc/passwd")]}, 400, "not uploaded here"),
        ("call", "upload_logo", {"data": [file_data("http://169.254.169.254/")]}, 400, "not uploaded here"),
        ("call", "like", {"data": [[{"x": file_data("../../etc/passwd")}]]}, 400, "public_id names a file"),
    ],
)
def test_a_malformed_or_forged_request_is_answered_with_a_sentence(
    uploads: Path, kind: str, api_name: str, body: object, status: int, words: str
) -> None:
    answer = refusal(kind, api_name, body, uploads)

    assert answer is not None and answer[0] == status and words in answer[1], answer


def test_a_file_that_escapes_the_upload_folder_is_not_an_upload(uploads: Path) -> None:
    (uploads.parent / "secret.key").write_text("s")
    for path in (str(uploads / ".." / "secret.key"), str(uploads / "abc"), str(uploads / "abc" / "logo.png\x00")):
        assert refusal("call", "upload_logo", {"data": [file_data(path)]}, uploads) is not None


def test_only_posts_to_gradios_event_routes_are_checked() -> None:
    def route(method: str, path: str) -> tuple[str, str] | None:
        return event_route({"type": "http", "method": method, "path": path})

    assert route("POST", "/gradio_api/queue/join") == ("join", "")
    assert route("POST", "/gradio_api/call/like") == ("call", "like")
    assert route("POST", "/gradio_api/call/v2/like/") == ("call/v2", "like")
    assert route("POST", "/gradio_api/run/gallery") == ("run", "gallery")
    assert route("GET", "/gradio_api/call/like/abc") is None
    assert route("POST", "/gradio_api/upload") is None


def test_only_a_500_carrying_a_sentence_is_a_refusal() -> None:
    assert has_sentence(b'{"error": "search must be at most 200 characters (got 201)."}')
    assert not has_sentence(b'{"error": null}') and not has_sentence(b"Internal Server Error")
