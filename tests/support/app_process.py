"""A real `python app.py --model tiny` process on a free port with its own data folder, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
from gradio_client import Client

# A test browser's requests: gradio_client waits 5 s for an answer by default (httpx's), which a busy test machine can
# take to answer a page's config (a test failed so in CI); its event streams get the same bound, and Gradio sends a
# heartbeat on them every 15 s.
CLIENT_TIMEOUT = httpx.Timeout(120)

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests/support/ is two levels down


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_here(app: Any, port: int, timeout_s: float = 120) -> str:
    """Serve `app` (app.App) from this process on `port` and wait until its page answers; returns the page's URL.

    Gradio's own start-up probe (networking.url_ok) gives the page one 3-second HEAD and raises "localhost is not
    accessible" when a busy machine answers later, which once failed a CI run. `_frontend=False` skips only that
    probe; the wait here still proves the page is served, as long as a slow machine needs.
    """
    app.launch(server_port=port, prevent_thread_lock=True, quiet=True, _frontend=False)
    url = f"http://127.0.0.1:{port}/"
    assert wait_for_page(url, timeout_s), f"the page at {url} did not answer within {timeout_s} s"
    return url


def wait_for_page(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Ask for the page at `url` until it answers 200 (True), or until `timeout` passes or `alive()` turns false
    (False): a server in this process or an app process starting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:  # not listening yet, an error page, or no answer within 2 s: ask again
            pass
        time.sleep(0.2)
    return False


def app_command(port: int, *extra_args: str) -> list[str]:
    """`python app.py` on the tiny model and the given port."""
    return [sys.executable, "app.py", "--model", "tiny", "--port", str(port), *extra_args]


def app_environment(data_dir: Path, tmp_dir: Path) -> dict[str, str]:
    """The variables a test's `python app.py` runs with: its own folders, offline, a fixed secret, a large quota."""
    return {
        **os.environ,
        "MASCOT_DATA_DIR": str(data_dir),
        "GRADIO_TEMP_DIR": str(tmp_dir / "gradio"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "MASCOT_SECRET": "test-secret-shared-by-restarts-0123456789abcdef",
        "MASCOT_DAILY_QUOTA": "1000",
    }


def refused_start(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`python app.py` with flags that must stop it at start, run to its end in `tmp_path`'s data folder."""
    return subprocess.run(
        app_command(free_port(), *flags),
        cwd=ROOT,
        env=app_environment(tmp_path / "data", tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


class AppProcess:
    """`python app.py` on a free port with its own data folder; restartable on the same folder."""

    def __init__(
        self,
        data_dir: Path,
        tmp_dir: Path,
        extra_args: tuple[str, ...] = (),
        environment: dict[str, str] | None = None,
    ) -> None:
        self.extra_args = extra_args
        self.environment = dict(environment or {})  # added to app_environment's (replicas: their id, the database)
        self.data_dir = data_dir
        self.tmp_dir = tmp_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None
        self.seconds_to_page = 0.0

    def start(self) -> AppProcess:
        started = time.monotonic()
        self.process = subprocess.Popen(
            app_command(self.port, *self.extra_args),
            cwd=ROOT,
            env={**app_environment(self.data_dir, self.tmp_dir), **self.environment},
            stdout=(self.tmp_dir / "app.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        self._wait_for_page(timeout=120)
        self.seconds_to_page = time.monotonic() - started
        return self

    def _wait_for_page(self, timeout: float) -> None:
        process = self.process
        assert process is not None
        if not wait_for_page(self.url, timeout, alive=lambda: process.poll() is None):
            state = "the app exited" if process.poll() is not None else f"not within {timeout} s"
            raise AssertionError(f"the page was not served ({state})\n{self.log()}")

    def wait_until_idle(self, timeout: float = 300) -> None:
        """Wait until the worker has no queued or running job, so that a job one test left behind never eats into
        the next test's time on a loaded machine; a job still there after `timeout` fails the test that left it."""
        deadline = time.monotonic() + timeout
        jobs = self.jobs()
        while jobs and time.monotonic() < deadline:
            time.sleep(0.5)
            jobs = self.jobs()
        assert jobs == 0, f"{jobs} job(s) still queued or running {timeout:.0f} s after the test\n{self.log()}"

    def jobs(self) -> int:
        """The worker's queued and running jobs, as the health check reports them."""
        return read_health(self.url)[1]["queue_length"]

    def log(self, tail: int | None = 4000) -> str:
        """The process's output so far: its last `tail` characters (all of it with None)."""
        path = self.tmp_dir / "app.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-tail:] if tail else text

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def browser(self, cookies: dict[str, str] | None = None, *, fetch_pictures: bool = True) -> Client:
        """A new browser: a client with its own cookie jar (or the given cookies, to come back as before). Without
        `fetch_pictures` it keeps an answer's picture URLs rather than fetching them: a draining app may exit before
        they are fetched, and a test must not depend on which comes first."""
        return browser_client(self.url, str(self.tmp_dir / "downloads") if fetch_pictures else False, cookies=cookies)


class Browser(Client):
    """gradio_client's Client, except that a request sent while none is in flight first waits for the stream that
    brought the last answer to end.

    Why: with Gradio 6's protocol the server ends a browser's event stream (close_stream) right after the last
    answer it owes. gradio_client 2.7.2 hands a request sent in between, after that answer reached the caller but
    before its reader read the close, to the closing stream, and the close then cancels it (CancelledError) though
    the server ran it: a CI run failed so. The server always ends the stream once nothing is in flight, so this
    waits for an event that comes, and the next request opens a stream of its own.
    """

    def send_data(self, data: Any, hash_data: Any, protocol: Any, request_headers: Any) -> str:
        with self.pending_lock:
            closing_stream = None if self.pending_event_ids else self.streaming_future
        if closing_stream is not None:
            with contextlib.suppress(Exception):  # a failed or timed-out reader: send as gradio_client would
                closing_stream.result(timeout=CLIENT_TIMEOUT.read)
        return super().send_data(data, hash_data, protocol, request_headers)


def browser_client(
    url: str,
    downloads: str | Literal[False],
    *,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Client:
    """A test's browser: gradio_client on `url`, saving pictures to `downloads` (False: keeping their URLs), with
    these cookies and headers, waiting up to CLIENT_TIMEOUT for each answer."""
    kwargs = {"cookies": dict(cookies or {}), "timeout": CLIENT_TIMEOUT}
    return Browser(url, verbose=False, download_files=downloads, headers=headers, httpx_kwargs=kwargs)


def read_health(url: str) -> tuple[int, dict[str, Any]]:
    """The health check of the app at `url`: its HTTP status and its report."""
    try:
        with urllib.request.urlopen(url + "healthz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:  # 503 (loading, draining, warming): the report is in the body all the same
        return error.code, json.loads(error.read())


def wait_until_model_ready(client: Client, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    banner = ""
    while time.monotonic() < deadline:
        banner = client.predict(api_name="/model_status")
        if "Loading" not in banner:
            return banner
        time.sleep(0.5)
    raise AssertionError(f"the model did not load: {banner}")


def is_drawing(job: Any) -> bool:
    """Whether a submitted /generate job has reported a denoising step: it left the queue and runs.

    Every status line the job yielded counts ("Drawing: step 3 of 30."), not only the latest message: the client keeps
    just the last one, and a progress message is followed at once by the step's own update, so polling the latest
    alone can miss every step of a short job.
    """
    lines = [str(output[-1]) for output in job.outputs() if isinstance(output, (list, tuple)) and output]
    progress = job.status().progress_data or []
    return any("step" in line for line in lines) or any("step" in (unit.desc or "") for unit in progress)


def wait_drawing(job: Any, timeout: float) -> None:
    """Until a submitted /generate job runs (see is_drawing). A job that ended first was too short for its test."""
    deadline = time.monotonic() + timeout
    while not is_drawing(job):
        if job.done():
            raise AssertionError(f"the job ended before it was seen drawing: {job.outputs()[-1:]!r}")
        assert time.monotonic() < deadline, "the job never started drawing"
        time.sleep(0.05)


def running_app(tmp_path_factory: Any, name: str, extra_args: tuple[str, ...] = ()) -> Iterator[AppProcess]:
    """A module fixture's body: a fresh `python app.py` in its own folder, stopped afterwards."""
    base = tmp_path_factory.mktemp(name)
    process = AppProcess(base / "data", base, extra_args).start()
    yield process
    process.stop()
