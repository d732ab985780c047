"""Mascot Generator: serve the page at once, load the model in the background.

Usage:
    python app.py                      # the real Kandinsky 2.2 on a GPU, else the offline preview model
    python app.py --model tiny         # the offline preview model (no GPU, no download)
    python app.py --share              # also serve on a public share link
    python app.py --help               # every flag; MASCOT_* variables set the same things
    gradio app.py                      # reload mode while working on the page: an edit to mascot/ui/ or app.py
                                       # rebuilds the page; the model, worker and store stay (others need a restart)

SIGTERM drains: no new job is admitted, the queued ones are told and charged nothing, the running one is finished and
saved (MASCOT_DRAIN_TIMEOUT_S, see docs/deploying.md), the claims are freed, and the process exits with status 0.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mascot.settings import space_environment

# On a Space with persistent storage the Hugging Face cache moves there, before anything imports huggingface_hub
# (Gradio does), which reads HF_HOME once (mascot.settings.space_storage says when).
os.environ.update(space_environment())

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.routing import Route

# `gradio app.py` runs this file again after each edit, having dropped the project's modules (this one included) from
# sys.modules. The running worker and store must keep their modules (the page compares their classes: JobState,
# ModelState, ...), so they go back before the imports below: only the page (mascot.ui) is then imported anew.
if not gr.NO_RELOAD and "app" in globals():
    sys.modules.update(globals()["app"].runtime_modules)

from mascot.clock import Clock, utc_now
from mascot.generation.adapter_files import AdapterError, check_adapter_files
from mascot.generation.generator import Generator
from mascot.generation.worker import GPU_BATCH_IMAGES, GenerationWorker, LoadGenerator
from mascot.prompt.brands import BrandError, load_house_brands
from mascot.prompt.logos import LogoLibrary
from mascot.prompt.presets import Presets
from mascot.prompt.wordfilter import BlockedWordsError, load_blocked_words
from mascot.service import DownloadFolder, MascotService
from mascot.service.actions import FOLLOWERS_PER_JOB
from mascot.service.claims import ClaimKeeper
from mascot.service.downloads import prune_uploads
from mascot.service.starting_pictures import StartingPictures
from mascot.settings import Settings, SettingsError, load_settings
from mascot.store.store import MascotStore, StoreUnavailable
from mascot.ui import PageServices, build_demo
from mascot.ui.agents import offer_only_agent_tools, wire_agent_tools
from mascot.ui.common import store_faults_in_sentences
from mascot.ui.theme import page_theme
from mascot.web.body_limit import BodyLimitMiddleware
from mascot.web.brand_logos import brand_logo_route
from mascot.web.clients import AddressKeys, ProxyTrust
from mascot.web.cross_site import CrossSiteGuardMiddleware
from mascot.web.events import EventGuardMiddleware, live_shapes
from mascot.web.health import HEALTH_PATH, health_endpoint
from mascot.web.identity import BrowserIdentity, IdentityCookieMiddleware, load_secret
from mascot.web.images import ImageFileMiddleware, image_routes, visible_picture
from mascot.web.link_preview import PREVIEW_IMAGE_ROUTE, LinkPreviewMiddleware, preview_image_endpoint
from mascot.web.public_url import PublicAddress
from mascot.web.serving import drain, serve_until_stopped
from mascot.web.sessions import SessionBindingMiddleware
from mascot.web.uploads import MAX_UPLOAD_BYTES, UploadGateMiddleware

if TYPE_CHECKING:
    from mascot.generation.zero_gpu import ZeroGpuRunner

ASSETS = Path(__file__).resolve().parent / "assets"
log = logging.getLogger("mascot")
# Gradio runs every event handler in one pool of threads (launch's max_threads, 40 by default, shared with Starlette's
# routes). A Generate's handler holds its thread while its job waits in the worker's queue and runs (the agents' one
# without a break), so 41 jobs queued from a few networks left no thread for any other event, picture, page or
# /healthz: each waited for a job to end (16 s on the preview model, an outsider's attack). The pool holds threads for
# every job the worker may hold (its Generate's and the pages following it again, FOLLOWERS_PER_JOB), beside Gradio's
# 40 for everything else (which then have Starlette's own 40).
OTHER_HANDLER_THREADS = 40


def handler_threads(settings: Settings) -> int:
    """Threads for Gradio's handlers: every job the worker may hold (queued, or running in one shared run) waiting in
    its Generate's and its followers', and OTHER_HANDLER_THREADS more."""
    running = max(settings.max_batch_images or 0, GPU_BATCH_IMAGES)
    return OTHER_HANDLER_THREADS + (settings.queue_max_size + running) * (1 + FOLLOWERS_PER_JOB)


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
    services: PageServices
    # The modules the running worker and store were built from: reload mode rebuilds the page on them (reloaded_page).
    runtime_modules: dict[str, ModuleType]

    def start(self) -> App:
        """Free this replica's claims left by a killed run, then load the model and keep the claims."""
        self.claims.start()
        self.worker.start()
        return self

    def drain(self) -> float:
        """Shut down gracefully (SIGTERM; mascot.web.serving.drain). Returns the seconds it took."""
        return drain(self.worker, self.claims, self.settings.drain_timeout_s)

    def serve(self, **overrides: Any) -> None:
        """Serve until SIGTERM or Ctrl-C (drain, then close); `overrides` go to launch."""
        serve_until_stopped(lambda: self.launch(**overrides), self.drain, self.demo.close)

    def owner_of(self, request: Any) -> str | None:
        """The owner hash a request's browser stands for (linked devices resolved); None without a valid cookie."""
        token_hash = self.identity.owner_from_request(request)
        return None if token_hash is None else self.store.resolve_owner(token_hash)

    def own_export(self, request: Any, key: str, name: str) -> Path | None:
        """The ZIP at `<key>/<name>` when the request's browser (linked devices resolved) made it; else None."""
        owner_hash = self.owner_of(request)
        return None if owner_hash is None else self.services.service.downloads.export(owner_hash, key, name)

    @contextlib.asynccontextmanager
    async def _narrow_agent_tools(self, _server: Any) -> AsyncIterator[None]:
        """The server's start (its lifespan, which Gradio enters after making its MCP server and before the first
        request): with --mcp, the MCP server's tools narrowed to the agents' four."""
        if self.settings.mcp_server:
            offer_only_agent_tools(self.demo)
        yield

    def launch(self, **overrides: Any) -> None:
        """Serve the page (the worker must be started); `overrides` are for tests (ports, thread lock)."""
        public_mascot = self.store.public_mascot
        options: dict[str, Any] = {
            "server_name": self.settings.server_name,
            "server_port": self.settings.server_port,
            "share": self.settings.share,
            # Gradio serves no file of the data folder: pictures go out only through mascot.web.images' routes,
            # which check on every request that the mascot is public or the caller's own.
            "allowed_paths": [],
            "app_kwargs": {
                # Before the server takes its first request: an agent never sees the tools that are not theirs.
                "lifespan": self._narrow_agent_tools,
                "middleware": [
                    # Outermost: another site's page cannot act as its visitor, nor read what we answer it.
                    Middleware(
                        CrossSiteGuardMiddleware,
                        proxies=self.services.trusted_proxies,
                        public_url=self.settings.public_url,
                    ),
                    # Then no body may pass the upload cap, with or without a Content-Length.
                    Middleware(BodyLimitMiddleware),
                    # Then an upload without our cookie is refused before the identity middleware makes one.
                    Middleware(
                        UploadGateMiddleware,
                        identity=self.identity,
                        limit=self.services.service.limiters.uploads,
                        prune=lambda: prune_uploads(Path(get_upload_folder())),
                        proxies=self.services.trusted_proxies,
                        per_network=not self.settings.one_office,
                    ),
                    Middleware(IdentityCookieMiddleware, identity=self.identity),
                    # After the cookie: each queue session is read only by the browser that joined it.
                    Middleware(SessionBindingMiddleware, token_of=self.identity.owner_from_cookies),
                    # Then the request's shape: an unknown event, the wrong number of values or a file not uploaded
                    # here is answered with a sentence, not Gradio's bare error or HTTP 500.
                    Middleware(
                        EventGuardMiddleware,
                        shapes=live_shapes(self.demo),
                        upload_folder=lambda: Path(get_upload_folder()),
                    ),
                    Middleware(ImageFileMiddleware),
                    Middleware(
                        LinkPreviewMiddleware, public_mascot=public_mascot, address=self.services.public_address
                    ),
                ],
                "routes": [
                    Route(
                        HEALTH_PATH,
                        health_endpoint(
                            self.worker,
                            lambda: self.store.schema_version,
                            self.store.check_writable,
                            ready_when_compiled=self.settings.speed.ready_when_compiled,
                        ),
                    ),
                    Route(PREVIEW_IMAGE_ROUTE, preview_image_endpoint(public_mascot, self.settings.images_dir)),
                    *image_routes(
                        visible_picture(self.store.visible_picture, self.identity.owner_from_request),
                        self.settings.images_dir,
                        self.services.service.downloads.sticker,
                        self.own_export,
                    ),
                    brand_logo_route(
                        [brand.logo for brand in self.services.service.presets.brands.values() if brand.logo],
                        self.services.service.logos.path if self.services.service.logos else lambda _id: None,
                    ),
                ],
            },
            "css_paths": [ASSETS / "style.css"],
            "favicon_path": str(ASSETS / "favicon.png"),
            "theme": page_theme(),
            "ssr_mode": False,  # server-side rendering would bypass the cookie middleware on Spaces
            "run_history": False,  # the app keeps its own history
            "max_threads": handler_threads(self.settings),  # no waiting Generate takes another event's thread
            "max_file_size": MAX_UPLOAD_BYTES,  # per file; BodyLimitMiddleware caps a whole request at the same
            # A full URL here is the root Gradio writes into the page and its API docs, instead of X-Forwarded-Host.
            **({"root_path": self.settings.public_url} if self.settings.public_url else {}),
            "show_error": False,  # only our sentences reach people, never tracebacks
            # --mcp: agents' tools at /gradio_api/mcp/ (generate, gallery, my_mascots, mascot; see mascot/ui/agents.py)
            "mcp_server": self.settings.mcp_server,
        }
        # uvicorn, which Gradio starts without proxy settings, would believe X-Forwarded-For and -Proto from any
        # loopback client and rewrite the request's address before our ProxyTrust (MASCOT_PROXY_ADDRESSES) sees it.
        os.environ["FORWARDED_ALLOW_IPS"] = ""
        blocking = not overrides.get("prevent_thread_lock", False)
        with warnings.catch_warnings():
            # /generate's one State input says whether the page asked for refusals in its own words; agents never
            # set it and keep the API's parameter names, as they should. Gradio's warning at making the MCP server
            # (that a tool's State keeps its default between calls) would only alarm the operator.
            warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")
            self.demo.launch(**{**options, **overrides, "prevent_thread_lock": True})
        if blocking:
            self.demo.block_thread()  # until SIGTERM's drain closes the page, or Ctrl-C


def kandinsky_loader(settings: Settings) -> LoadGenerator:
    """Load the model chosen by the settings; torch is imported on the worker's thread, not at start."""

    def load_generator(on_status: Callable[[str], None]) -> Generator:
        from mascot.generation.model import load_generator as load_kandinsky

        return load_kandinsky(settings, on_status)

    return load_generator


def create_app(settings: Settings, *, load_generator: LoadGenerator | None = None, clock: Clock = utc_now) -> App:
    """Wire settings -> store -> identity -> worker -> service -> page. Nothing loads the model yet: `app.start()`
    does. Raises BlockedWordsError, before anything is created, when the blocked-words file cannot be used,
    AdapterError when a --lora adapter's files cannot be, and BrandError when a brand of --brands-dir cannot be."""
    blocked_words = load_blocked_words(settings.blocked_words)
    # Before the page opens, not minutes later on the worker's thread: a broken adapter would else fail the model's
    # load, and with it every generation. What only the model can tell (that it fits) is checked when it loads.
    check_adapter_files(settings.lora)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    presets = Presets.load()
    logos = LogoLibrary(
        settings.images_dir / "logos"
    )  # uploaded logos and the house brands'; More like this names its mascot by id
    if settings.brands_dir is not None:  # the operator's brands replace the built-in palettes
        presets = presets.with_brands(load_house_brands(settings.brands_dir, logos))
    rules = settings.rules  # the house rules, set once: the store and the service apply them
    store = MascotStore(
        settings.resolved_database_url,
        settings.images_dir,
        rules=rules,
        replica_id=settings.replica_id,
        database_connections=settings.database_connections,
    )
    secret = load_secret(settings)
    identity = BrowserIdentity(secret)
    # The request as the model is given it; the page shows the same in Advanced ("What the model is given").
    prepare = functools.partial(presets.apply, logo_colours=logos.colour_names)
    claims = ClaimKeeper(store, clock)
    zero_gpu = zero_gpu_runner(settings)  # before anything touches torch: it imports spaces
    load = load_generator or kandinsky_loader(settings)
    worker = GenerationWorker(
        zero_gpu.loading(load) if zero_gpu is not None else load,
        on_finished=lambda job, images, model: store.save_generation(
            job.submission.owner_hash,
            job.submission.request,
            images,
            model,
            now=clock(),
            address_hash=job.submission.address_hash,
        ),
        on_ended=claims.release,  # retried until the database takes it: a full disk must not lock a browser out
        prepare=prepare,
        load_logo=StartingPictures(store, logos).open,  # a mascot to start from: checked when its job runs
        max_queued=settings.queue_max_size,
        max_per_client=rules.max_queued_per_client,
        max_batch_images=settings.max_batch_images,
        save_in_background=settings.speed.save_in_background,
        run_in_handlers=zero_gpu,
        # A database restarting or locked, a disk being freed: the mascot is saved again, not thrown away.
        passing_fault=lambda error: str(error) if isinstance(error, StoreUnavailable) else None,
    )
    claims.claim_ids = worker.claim_ids
    service = MascotService(
        store=store,
        worker=worker,
        rules=rules,
        address_keys=AddressKeys(secret),
        # In the data folder, which Gradio does not serve: our routes check every request (mascot.web.images).
        downloads=DownloadFolder(settings.downloads_dir),
        presets=presets,
        logos=logos,
        logo_secret=secret,  # a logo is granted to the browser that uploaded it, on every replica alike
        blocked_words=blocked_words,
        clock=clock,
        prepare=prepare,
        cut_off=claims.cut_off,  # told on the next page load: Gradio reloads the page when the server is back
    )
    # The service resolves device links: every handler hands it the browser's own token hash.
    proxies = ProxyTrust.parse(settings.trusted_proxies, settings.proxy_addresses)  # both checked by the settings
    if settings.trusted_proxies and not settings.proxy_addresses:
        log.warning(
            "MASCOT_TRUSTED_PROXIES is set but MASCOT_PROXY_ADDRESSES is not: no forwarded header is believed, so "
            "every visitor counts as the proxy's network. Set MASCOT_PROXY_ADDRESSES to the proxies' addresses."
        )
    services = PageServices(
        service=service,
        token_hash_of=identity.owner_from_request,
        trusted_proxies=proxies,
        public_address=PublicAddress(settings.public_url, proxies),
        examples=load_examples(),
        default_lora=settings.default_lora,
        default_lora_strength=settings.default_lora_strength,
    )
    demo = queued_page(build_demo(services), settings, services)
    return App(demo, worker, claims, store, identity, settings, services, runtime_modules())


def zero_gpu_runner(settings: Settings) -> ZeroGpuRunner | None:
    """ZeroGPU (settings.zero_gpu): each Generate's handler runs its job inside @spaces.GPU; None elsewhere."""
    if not settings.zero_gpu:
        return None
    from mascot.generation.zero_gpu import ZeroGpuRunner  # imports spaces: only in this mode

    log.info("ZeroGPU mode: each Generate runs in its own request (@spaces.GPU, %d s)", settings.zero_gpu_duration_s)
    return ZeroGpuRunner(settings.zero_gpu_duration_s)


def queued_page(demo: gr.Blocks, settings: Settings, services: PageServices) -> gr.Blocks:
    """The page with its queue set up (and with --mcp, the agents' tools)."""
    # api_open=False: with it on, POST /gradio_api/run/<name> would run events around the queue.
    demo.queue(max_size=settings.queue_max_size, api_open=False, default_concurrency_limit=None)
    page = wire_agent_tools(demo, services) if settings.mcp_server else demo
    return store_faults_in_sentences(page)  # the store out of reach: its sentence, not a bare "Error"


def runtime_modules() -> dict[str, ModuleType]:
    """The app's loaded modules other than the page's (mascot.ui): those its worker and store are built from, and
    this file's own (the reloader runs it again in the same namespace)."""
    kept = {
        name: module
        for name, module in sys.modules.items()
        if (name == "mascot" or name.startswith("mascot.")) and not name.startswith("mascot.ui")
    }
    return {**kept, "__main__": sys.modules["__main__"]}


def reloaded_page(app: App) -> gr.Blocks:
    """The page rebuilt from freshly imported mascot.ui on the running app (`gradio app.py` after an edit).

    The runtime modules were put back at the top of this file (see there), so mascot.ui, imported anew, is built on
    the classes of the running worker and store.
    """
    from mascot.ui import build_demo as build_reloaded_demo

    log.info("reload: the page (mascot/ui, app.py) is rebuilt; other changes take a restart")
    return queued_page(build_reloaded_demo(app.services), app.settings, app.services)


def start_app(argv: Sequence[str] | None = None) -> App:
    """Settings, the app, the model loading: or one sentence (SystemExit) naming the setting that stops it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests are not news
    try:
        app = create_app(load_settings(argv))
    except (AdapterError, BlockedWordsError, BrandError, SettingsError) as error:
        raise SystemExit(f"Mascot Generator did not start. {error}") from None  # a sentence, not a traceback
    if app.settings.storage_warning:
        log.warning(app.settings.storage_warning)
    return app.start()


def main(argv: Sequence[str] | None = None) -> None:
    start_app(argv).serve()


# `gradio app.py` (reload mode) runs this file as __main__, then runs it again on its watcher thread at start and
# after every edit, with gr.NO_RELOAD false: the app is made once, and each run after that rebuilds the page.
if __name__ == "__main__" and gr.NO_RELOAD:
    app = start_app(sys.argv[1:])
    demo = app.demo  # the reloader swaps in the `demo` of each later run
    app.serve()
elif __name__ == "__main__":
    # The app made by the first run lives on in this module's globals: later runs only rebuild the page.
    demo = reloaded_page(globals()["app"])
