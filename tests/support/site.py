"""A site in this process: the app with a fake generator, a real store, identity cookie and Gradio queue, and what a
browser does on it (make a mascot, list its own and the gallery's, like one).

The page layer is what such tests test; the real tiny pipeline is driven end to end in test_app_process.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from gradio_client import Client

from app import create_app
from mascot.generation.worker import ModelState
from mascot.settings import load_settings
from mascot.ui.device_links import NOTE
from tests.support.app_process import browser_client, free_port, launch_here
from tests.support.fakes import FakeGenerator

FAST = {"width": 256, "height": 256, "num_inference_steps": 2, "prior_num_inference_steps": 2}


class Clock:
    """The page's clock, moved by hand across a day boundary."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def serve(tmp_path, monkeypatch, flags: list[str], environ: dict[str, str] | None = None):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    environ = {"MASCOT_SECRET": "x" * 40, **(environ or {})}
    settings = load_settings(["--data-dir", str(tmp_path / "data"), *flags], environ)
    fake, clock = FakeGenerator(), Clock()
    app = create_app(settings, load_generator=lambda on_status: fake, clock=clock)
    app.worker.start()
    assert app.worker.wait_until_loaded(10).state is ModelState.READY
    site = Site(launch_here(app, free_port()), tmp_path, fake, clock, app)
    yield site
    for client in site.clients:
        client.close()
    app.demo.close()
    fake.gate.set()
    app.worker.stop()
    app.store.close()


class Site:
    def __init__(self, url, tmp_path, fake, clock, app) -> None:
        self.url, self.tmp_path, self.fake, self.clock, self.app = url, tmp_path, fake, clock, app
        self.clients: list[Client] = []

    def wait_until_idle(self, timeout: float = 60) -> None:
        """Wait until the worker has no queued or running job (conftest's no_job_left_behind, for a module's site)."""
        deadline = time.monotonic() + timeout
        while self.app.worker.queue_length and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.app.worker.queue_length == 0, f"{self.app.worker.queue_length} job(s) left after the test"

    def browser(self, address: str | None = None) -> Client:
        """A new browser (its own cookie jar); with `address`, seen through the proxy as coming from there."""
        headers = {"X-Forwarded-For": address} if address else None
        client = browser_client(self.url, str(self.tmp_path / "downloads"), headers=headers)
        self.clients.append(client)
        return client


def make(client: Client, prompt: str, **overrides) -> list[dict]:
    images, _status = client.predict(prompt=prompt, **{"seed": 1, **FAST, **overrides}, api_name="/generate")
    return images


def mine(client: Client, page: int = 1) -> list[dict]:
    """A page of My mascots: each mascot's share id, prompt, likes and visibility, newest first."""
    _gallery, _page, _label, mascots = client.predict(page, api_name="/my_mascots")
    return mascots


def public(client: Client, page: int = 1, sort: str = "Newest") -> list[dict]:
    _gallery, _page, _label, mascots = client.predict(page, sort, api_name="/gallery")
    return mascots


def prompts(mascots: list[dict]) -> list[str]:
    return [mascot["prompt"] for mascot in mascots]


def like(client: Client, public_id: str) -> tuple[bool, int]:
    _info, mascot = client.predict(public_id, api_name="/like")
    return mascot["liked"], mascot["like_count"]


def link_for(client: Client) -> tuple[str, str]:
    """Make a device link in this browser: the link, and the path of its QR code."""
    link, qr_code, note = client.predict(api_name="/device_link")
    assert note == NOTE
    return link, qr_code
