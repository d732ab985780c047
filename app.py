"""Mascot Generator: serve the page at once, load the model in the background.

Usage:
    python app.py                      # the real Kandinsky 2.2 on a GPU, else the offline preview model
    python app.py --model tiny         # the offline preview model (no GPU, no download)
    python app.py --share              # also serve on a public share link
    python app.py --help               # every flag; MASCOT_* variables set the same things
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from mascot.identity import BrowserIdentity, IdentityCookieMiddleware, load_secret
from mascot.settings import Settings, load_settings
from mascot.store import MascotStore
from mascot.ui import PageServices, build_demo
from mascot.worker import GenerationWorker

ASSETS = Path(__file__).resolve().parent / "assets"
log = logging.getLogger("mascot")


def load_examples() -> list[str]:
    """Example prompts shown under the form, kept in assets/examples.json."""
    return list(json.loads((ASSETS / "examples.json").read_text(encoding="utf-8")))


def create_app(settings: Settings) -> tuple[gr.Blocks, GenerationWorker, BrowserIdentity, MascotStore]:
    """Wire settings -> store -> identity -> worker -> page. The model loads on the worker's thread."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = MascotStore(settings.resolved_database_url, settings.images_dir)
    swept = store.sweep_orphan_files()
    if swept:
        log.info("removed %d image files that no mascot claimed", swept)
    identity = BrowserIdentity(load_secret(settings))

    def load_generator(on_status):  # noqa: ANN001, ANN202 - torch is imported here, on the worker's thread
        from mascot.model import load_generator as load_kandinsky

        return load_kandinsky(settings, on_status)

    worker = GenerationWorker(
        load_generator,
        on_finished=lambda job, images, model: store.save_generation(job.owner_hash, job.request, images, model),
        max_queued=settings.queue_max_size,
    )
    services = PageServices(
        worker=worker,
        history=store,
        owner_of=identity.owner_from_request,
        examples=load_examples(),
    )
    demo = build_demo(services)
    demo.queue(max_size=settings.queue_max_size, api_open=False, default_concurrency_limit=None)
    return demo, worker, identity, store


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(argv)
    demo, worker, identity, _store = create_app(settings)
    worker.start()
    demo.launch(
        server_name=settings.server_name,
        server_port=settings.server_port,
        share=settings.share,
        allowed_paths=[str(settings.images_dir.resolve())],
        app_kwargs={"middleware": [Middleware(IdentityCookieMiddleware, identity=identity)]},
        css_paths=[ASSETS / "style.css"],
        theme=gr.themes.Soft(primary_hue="orange"),
        ssr_mode=False,
        run_history=False,
        max_file_size="10mb",
        show_error=False,
    )


if __name__ == "__main__":
    main()
