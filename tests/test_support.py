"""The test support itself: the wait between tests on a shared app process waits out the jobs a test left and names
one that stays; a test browser's next request is not cancelled by the stream that brought its last answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gradio as gr
import gradio_client.client
import pytest

from tests.support.app_process import AppProcess, browser_client, free_port, launch_here


class Health:
    """A stand-in for the app's /healthz: answers the queue lengths given, then repeats the last one."""

    def __init__(self, answers: list[tuple[int, int]]) -> None:
        self.answers = answers  # (HTTP status, queue_length)
        self.asked = 0

    def next(self) -> tuple[int, int]:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return answer


@contextmanager
def serving(health: Health) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, jobs = health.next()
            body = json.dumps({"status": "ready", "queue_length": jobs}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def app_at(url: str, tmp_path) -> AppProcess:
    app = AppProcess(tmp_path / "data", tmp_path)
    app.url = url
    return app


def test_the_wait_returns_once_the_jobs_left_behind_are_done_even_while_the_model_loads(tmp_path):
    health = Health([(503, 0), (200, 2), (200, 1), (200, 0)])
    with serving(health) as url:
        app = app_at(url, tmp_path)
        assert app.jobs() == 0  # 503 while loading still carries the report
        app.wait_until_idle(timeout=30)
    assert health.asked == 4


def test_a_job_that_stays_fails_the_wait_with_a_sentence(tmp_path):
    stuck = r"1 job\(s\) still queued or running 1 s after the test"
    with serving(Health([(200, 1)])) as url, pytest.raises(AssertionError, match=stuck):
        app_at(url, tmp_path).wait_until_idle(timeout=1)


class LateClose:
    """gradio_client's json module, except that the reader reads Gradio's close_stream message only once its client
    has sent another request (or after `patience_s`): the order a busy machine made by chance in a CI run, made every
    time here."""

    def __init__(self, patience_s: float) -> None:
        self.patience_s = patience_s
        self.client: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)

    def loads(self, text: str | bytes) -> Any:
        message = json.loads(text)
        if isinstance(message, dict) and message.get("msg") == "close_stream":
            deadline = time.monotonic() + self.patience_s
            while not self.client.pending_event_ids and time.monotonic() < deadline:
                time.sleep(0.01)
        return message


def test_a_browsers_next_request_is_not_cancelled_by_the_stream_its_last_answer_came_on(monkeypatch):
    with gr.Blocks() as echo_app:
        said = gr.Textbox()
        said.submit(lambda text: text, said, gr.Textbox(), api_name="echo")
    late_close = LateClose(patience_s=5)
    monkeypatch.setattr(gradio_client.client, "json", late_close)
    url = launch_here(echo_app, free_port())
    try:
        browser = browser_client(url, False)
        late_close.client = browser
        # The second request is sent before the first answer's stream has read its close.
        assert [browser.predict(word, api_name="/echo") for word in ("first", "second")] == ["first", "second"]
        browser.close()
    finally:
        echo_app.close()
