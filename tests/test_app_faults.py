"""Restarts and faults of a real `python app.py --model tiny` process: SIGTERM mid-job drains, kill -9 then an
immediate new job, and a full disk (a small tmpfs where this machine lets the test mount one)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from gradio_client import Client

from mascot.store.store import MascotStore
from tests.support.app_process import AppProcess, wait_drawing, wait_until_model_ready

pytestmark = pytest.mark.slow  # real `python app.py` processes: SIGTERM, kill -9, a full disk

FAST = {"width": 256, "height": 256, "num_inference_steps": 2, "prior_num_inference_steps": 2}
# Seconds, not ms: each test acts while this runs (queues a second job, fills the disk, sends a signal); a job that
# ended first fails wait_drawing's check rather than the test's own assertions.
SLOW = {"width": 512, "height": 512, "num_inference_steps": 100, "prior_num_inference_steps": 2}


def says(job, words: str) -> bool:
    """Whether a submitted /generate job's latest status line or progress line has these words."""
    outputs = job.outputs()
    progress = job.status().progress_data or []
    return (bool(outputs) and words in str(outputs[-1][-1])) or any(words in (unit.desc or "") for unit in progress)


def wait_until(condition, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def history_captions(client: Client) -> list[str]:
    _gallery, _page, _label, mascots = client.predict(api_name="/my_mascots")
    return [mascot["prompt"] for mascot in mascots]  # the thumbnails' captions also carry the likes


def held_claims(data_dir: Path) -> int:
    """Browsers whose one-job claim is still held in the app's database."""
    store = MascotStore(f"sqlite:///{(data_dir / 'mascots.db').resolve()}", data_dir / "images", upkeep=False)
    try:
        browser = store.tables.browser
        return browser.select().where(browser.job_claim.is_null(False)).count()
    finally:
        store.close()


def long_job(client: Client, prompt: str):
    job = client.submit(prompt=prompt, seed=1, **SLOW, api_name="/generate")
    wait_drawing(job, timeout=120)
    return job


def test_sigterm_mid_job_saves_it_tells_the_queued_frees_the_claims_and_exits_0(tmp_path, monkeypatch):
    monkeypatch.setenv("MASCOT_DRAIN_TIMEOUT_S", "300")  # a loaded CI machine: never cut here
    app = AppProcess(tmp_path / "data", tmp_path).start()
    try:
        alice, bob = app.browser(fetch_pictures=False), app.browser()  # the app exits once alice is answered
        wait_until_model_ready(alice)
        running = long_job(alice, "finished while shutting down")
        queued = bob.submit(prompt="never made", seed=2, **FAST, api_name="/generate")
        wait_until(lambda: says(queued, "In the queue"), what="the second job to wait in our queue")
        sent = time.monotonic()
        assert app.process is not None
        app.process.send_signal(signal.SIGTERM)
        images, status = running.result(timeout=400)
        _, told = queued.result(timeout=60)
        code = app.process.wait(timeout=400)
        drained = time.monotonic() - sent
    finally:
        app.stop()
    print(f"SIGTERM to exit: {drained:.1f} s")
    assert code == 0
    assert len(images) == 1 and status.startswith("Done")
    assert "was not made" in told and "nothing counts against your quota" in told
    assert held_claims(app.data_dir) == 0
    assert "drained in" in app.log(tail=None)
    app.start()
    try:
        assert history_captions(app.browser(cookies=alice.cookies)) == ["finished while shutting down"]
        assert history_captions(app.browser(cookies=bob.cookies)) == []
    finally:
        app.stop()


def test_after_kill_9_mid_job_a_restarted_app_accepts_a_new_job_at_once(tmp_path):
    app = AppProcess(tmp_path / "data", tmp_path).start()
    alice = app.browser()
    wait_until_model_ready(alice)
    long_job(alice, "killed with the process")
    assert app.process is not None
    app.process.kill()
    app.process.wait()
    assert held_claims(app.data_dir) == 1  # the dead run's claim
    restarted = time.monotonic()
    app.start()
    try:
        again = app.browser(cookies=alice.cookies)
        wait_until_model_ready(again)
        images, status = again.predict(prompt="right after the restart", seed=3, **FAST, api_name="/generate")
        locked_out = time.monotonic() - restarted
    finally:
        app.stop()
    print(f"kill -9 to the next job accepted: {locked_out:.1f} s (restart and model load included)")
    assert len(images) == 1 and status.startswith("Done")


def mount_small_tmpfs(folder: Path, size: str = "24m") -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return mounted.returncode == 0


def fill(folder: Path) -> Path:
    """Write until the disk is full; returns the filler file (delete it to free the space)."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def generate_when_accepted(client: Client, prompt: str, timeout: float = 60.0):
    """Generate, asking again while the browser's previous claim is still held; returns the result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.predict(prompt=prompt, seed=5, **FAST, api_name="/generate")
        except Exception as error:
            if "still being made" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for_log(app: AppProcess, words: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while words not in app.log(tail=None):
        assert time.monotonic() < deadline, f"the app never logged {words!r}\n{app.log()}"
        time.sleep(0.2)


def test_a_full_disk_fails_with_sentences_keeps_a_made_mascot_until_there_is_room_and_recovers(tmp_path):
    data_dir = tmp_path / "data"
    if not mount_small_tmpfs(data_dir):
        pytest.fail("this test needs `mount -t tmpfs` (root); see test_lifecycle.py for the in-process fault tests")
    app = AppProcess(data_dir, tmp_path)
    try:
        app.start()
        alice = app.browser()
        wait_until_model_ready(alice)
        filler = fill(data_dir)
        with pytest.raises(Exception, match="cannot save anything right now"):  # the claim itself: nothing charged
            alice.predict(prompt="on a full disk", seed=4, **FAST, api_name="/generate")
        with pytest.raises(Exception, match="cannot save anything right now"):
            alice.predict(api_name="/device_link")
        health = subprocess.run(["curl", "-s", app.url + "healthz"], capture_output=True, text=True).stdout
        filler.unlink()
        running = long_job(alice, "the disk fills while it is drawn")
        filler = fill(data_dir)
        # Made while the disk is full: kept, and saved again until there is room (not thrown away).
        wait_for_log(app, "trying again", timeout=400)
        filler.unlink()
        kept_images, kept_status = running.result(timeout=400)
        freed = time.monotonic()
        images, status = generate_when_accepted(alice, "space again")
        recovered = time.monotonic() - freed
    finally:
        app.stop()
        subprocess.run(["umount", str(data_dir)], capture_output=True)
    print(f"space freed to the next mascot saved: {recovered:.1f} s; health while full: {health}")
    assert json.loads(health)["database"] == "cannot write"
    assert len(kept_images) == 1 and kept_status.startswith("Done")
    assert len(images) == 1 and status.startswith("Done")
