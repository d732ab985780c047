"""`gradio app.py` (Gradio's reload mode): the model loads once, an edit rebuilds the page, and the page still works."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from tests.support.app_process import ROOT, app_environment, browser_client, free_port, wait_until_model_ready

pytestmark = pytest.mark.slow  # `gradio app.py` for real

FAST = {"width": 256, "height": 256, "num_inference_steps": 2, "prior_num_inference_steps": 2}
REBUILT = "reload: the page (mascot/ui, app.py) is rebuilt"
# Gradio's page route rendering its template while the reloader has no config in place (seen in CI, 2026-12-05).
GRADIO_RELOAD_RACE = ("gradio/routes.py", "in main", "jinja2.exceptions.UndefinedError: 'None' has no attribute 'get'")


def serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def poll(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def generate_once_swapped(url: str, downloads: Path) -> tuple[list, str]:
    """/generate from a fresh client, once Gradio's reloader has swapped the page: it logs "Changes detected" before
    it runs app.py again and swaps, so under load a client may still read the old page's config, whose event the new
    page refuses at queue/join (400). A browser reloads on the reloader's signal; here the client is made again."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return browser_client(url, str(downloads)).predict(
                prompt="after a reload", seed=1, **FAST, api_name="/generate"
            )
        except httpx.HTTPStatusError as error:
            if error.response.status_code != 400 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def tracebacks(log: str) -> list[str]:
    """Each traceback in `log`, from its frames to its exception's line: not the log lines after it, which name our
    modules whoever raised it (Gradio's reloader, say, iterating sys.modules while the model's thread imports)."""
    found = []
    for block in log.split("Traceback (most recent call last):")[1:]:
        lines = block.splitlines()[1:]
        frames = list(itertools.takewhile(lambda line: line.startswith(" "), lines))
        found.append("\n".join(lines[: len(frames) + 1]))  # the frames, then the exception's line
    return found


def test_gradio_reload_mode_loads_the_model_once_and_rebuilds_the_page_after_an_edit(tmp_path):
    watched = tmp_path / "watched"  # an extra watched folder: the test edits a file there, never the project's
    watched.mkdir()
    edited = watched / "edited.py"
    edited.write_text("VERSION = 0\n")
    port = free_port()
    log_path = tmp_path / "reload.log"
    gradio_cli = Path(sys.executable).parent / "gradio"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(gradio_cli), "app.py", "--watch-dirs", str(watched), "--", "--model", "tiny", "--port", str(port)],
            cwd=ROOT,
            env=app_environment(tmp_path / "data", tmp_path),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the CLI and the app it runs are one group, stopped together
        )
    url = f"http://127.0.0.1:{port}/"

    def log() -> str:
        return log_path.read_text(errors="replace")

    try:
        poll(lambda: serves(url), 120, "the page")
        client = browser_client(url, str(tmp_path / "downloads"))
        wait_until_model_ready(client)
        rebuilt_at_start = log().count(REBUILT)
        version = 0
        while log().count(REBUILT) == rebuilt_at_start:  # edit until the watcher, which first notes the file, sees it
            version += 1
            edited.write_text(f"VERSION = {version}\n")
            os.utime(edited, (time.time() + version, time.time() + version))
            time.sleep(0.5)
            assert version < 240, f"no reload after {version} edits\n{log()[-3000:]}"
        poll(lambda: "Changes detected" in log() and serves(url), 60, "the page after the reload")
        images, status = generate_once_swapped(url, tmp_path / "downloads")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    assert status.startswith("Done") and len(images) == 1
    assert log().count("is ready on cpu") == 1  # the model was loaded once, not once per run of app.py
    # No traceback through our code. Under load, a page request that reaches Gradio while its reloader swaps the page
    # can fail inside Gradio's own page route (the page's config is None for a moment): their race, not ours. Its
    # traceback passes through our ASGI middlewares, as every request's does, so it is told apart by where it is raised.
    ours = [
        trace
        for trace in tracebacks(log())
        if ("/mascot/" in trace or "app.py" in trace) and not all(mark in trace for mark in GRADIO_RELOAD_RACE)
    ]
    assert ours == [], ours[0][-3000:] if ours else ""
