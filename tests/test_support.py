"""The wait between tests on a shared app process: it waits out the jobs a test left and names one that stays."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.app_process import AppProcess


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
