"""Mascot Generator: serve the page at once, load the model in the background.

Usage:
    python app.py                      # the real Kandinsky 2.2 on a GPU, else the offline preview model
    python app.py --model tiny         # the offline preview model (no GPU, no download)
    python app.py --share              # also serve on a public share link
    python app.py --help               # every flag; MASCOT_* variables set the same things
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.routing import Route

from mascot.clock import Clock, utc_now
from mascot.generation.generator import Generator
from mascot.generation.worker import GenerationWorker, LoadGenerator
from mascot.prompt.logos import LogoLibrary
from mascot.prompt.presets import Presets
from mascot.prompt.wordfilter import BlockedWordsError, load_blocked_words
from mascot.service import DownloadFolder, MascotService
from mascot.service.claims import ClaimKeeper
from mascot.settings import Settings, load_settings
from mascot.store.store import MascotStore
from mascot.ui import PageServices, build_demo
from mascot.ui.theme import page_theme
from mascot.web.clients import AddressKeys
from mascot.web.health import HEALTH_PATH, health_endpoint
from mascot.web.identity import BrowserIdentity, IdentityCookieMiddleware, load_secret
from mascot.web.link_preview import PREVIEW_IMAGE_ROUTE, LinkPreviewMiddleware, preview_image_endpoint

ASSETS = Path(__file__).resolve().parent / "assets"
log = logging.getLogger("mascot")


def load_examples() -> list[str]:
    """Example prompts shown under the form, kept in assets/examples.json."""
    return list(json.loads((ASSETS / "examples.json").read_text(encoding="utf-8")))


@dataclass(frozen=True)
class App:
    """Everything `python app.py` runs, wired: the page, the GPU worker, the store and the identity."""

    demo: gr.Blocks
    worker: GenerationWorker
    claims: ClaimKeeper
    store: MascotStore
    identity: BrowserIdentity
    settings: Settings

    def launch(self, **overrides: Any) -> None:
        """Serve the page (the worker must be started); `overrides` are for tests (ports, thread lock)."""
        public_mascot = self.store.public_mascot
        options: dict[str, Any] = {
            "server_name": self.settings.server_name,
            "server_port": self.settings.server_port,
            "share": self.settings.share,
            # Only the images folder may be served: not the database, the secret or the model.
            "allowed_paths": [str(self.settings.images_dir.resolve())],
            "app_kwargs": {
                "middleware": [
                    Middleware(IdentityCookieMiddleware, identity=self.identity),
                    Middleware(LinkPreviewMiddleware, public_mascot=public_mascot),
                ],
                "routes": [
                    Route(HEALTH_PATH, health_endpoint(self.worker, lambda: self.store.schema_version)),
                    Route(PREVIEW_IMAGE_ROUTE, preview_image_endpoint(public_mascot, self.settings.images_dir)),
                ],
            },
            "css_paths": [ASSETS / "style.css"],
            "favicon_path": str(ASSETS / "favicon.png"),
            "theme": page_theme(),
            "ssr_mode": False,  # server-side rendering would bypass the cookie middleware on Spaces
            "run_history": False,  # the app keeps its own history
            "max_file_size": "10mb",
            "show_error": False,  # only our sentences reach people, never tracebacks
        }
        self.demo.launch(**{**options, **overrides})


def kandinsky_loader(settings: Settings) -> LoadGenerator:
    """Load the model chosen by the settings; torch is imported on the worker's thread, not at start."""

    def load_generator(on_status: Callable[[str], None]) -> Generator:
        from mascot.generation.model import load_generator as load_kandinsky

        return load_kandinsky(settings, on_status)

    return load_generator


def create_app(settings: Settings, *, load_generator: LoadGenerator | None = None, clock: Clock = utc_now) -> App:
    """Wire settings -> store -> identity -> worker -> service -> page. Nothing loads the model yet:
    `app.worker.start()` does. Raises BlockedWordsError, before anything is created, when the blocked-words file
    cannot be used."""
    blocked_words = load_blocked_words(settings.blocked_words)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    rules = settings.rules  # the house rules, set once: the store and the service apply them
    store = MascotStore(settings.resolved_database_url, settings.images_dir, rules=rules)
    secret = load_secret(settings)
    identity = BrowserIdentity(secret)
    presets = Presets.load()
    logos = LogoLibrary(settings.images_dir / "logos")  # inside the served folder: Remix shows the logo again
    # The request as the model is given it; the page shows the same in Advanced ("What the model is given").
    prepare = functools.partial(presets.apply, logo_colours=logos.colour_names)
    worker = GenerationWorker(
        load_generator or kandinsky_loader(settings),
        on_finished=lambda job, images, model: store.save_generation(
            job.owner_hash, job.request, images, model, now=clock(), address_hash=job.address_hash
        ),
        on_ended=lambda job: store.release_job(job.owner_hash, job.claim_id),
        prepare=prepare,
        load_logo=logos.open,
        max_queued=settings.queue_max_size,
        max_per_client=rules.max_queued_per_client,
        max_batch_images=settings.max_batch_images,
        save_in_background=settings.speed.save_in_background,
    )
    service = MascotService(
        store=store,
        worker=worker,
        rules=rules,
        address_keys=AddressKeys(secret),
        # Gradio serves its upload folder (not the data folder): stickers and ZIPs are written there.
        downloads=DownloadFolder(lambda: Path(get_upload_folder())),
        presets=presets,
        logos=logos,
        blocked_words=blocked_words,
        clock=clock,
        prepare=prepare,
    )
    # The service resolves device links: every handler hands it the browser's own token hash.
    services = PageServices(
        service=service,
        token_hash_of=identity.owner_from_request,
        trusted_proxies=settings.trusted_proxies,
        examples=load_examples(),
    )
    demo = build_demo(services)
    # api_open=False: with it on, POST /gradio_api/run/<name> would run events around the queue.
    demo.queue(max_size=settings.queue_max_size, api_open=False, default_concurrency_limit=None)
    return App(demo, worker, ClaimKeeper(worker, store, clock), store, identity, settings)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests are not news
    try:
        app = create_app(load_settings(argv))
    except BlockedWordsError as error:
        raise SystemExit(f"Mascot Generator did not start. {error}") from None  # a sentence, not a traceback
    app.worker.start()
    app.claims.start()
    app.launch()


if __name__ == "__main__":
    main()
