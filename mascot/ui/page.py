"""build_demo: the whole page (banner, Create, My mascots, Gallery) and what happens when it opens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from mascot.generation.worker import GenerationWorker, ModelState
from mascot.service import Refusal
from mascot.ui.browse import BrowseTab, build_browse_tab, page_event
from mascot.ui.common import DEFAULTS, PageServices, plural, visitor, visitor_or_none
from mascot.ui.create import (
    adapter_controls,
    build_create_tab,
    dimensions_to_size,
    follow_own_mascot_on_load,
    quota_handler,
)
from mascot.ui.detail import detail_values
from mascot.ui.device_links import build_device_prompt, build_device_row, wire_device_links
from mascot.ui.export import build_export_row
from mascot.ui.house import brand_pictures_handler
from mascot.ui.pictures import picture_url
from mascot.ui.share_card import ShareCard, build_share_card, share_card_values, wire_share_card

__all__ = ["PageServices", "build_demo", "model_banner"]

QUEUE_BANNER_SECONDS = 5.0
QUICK_FIELDS = ("width", "height", "num_inference_steps", "prior_num_inference_steps")
# The preview banner's folded details, for people; the operator's reason and remedy are logged (generation.model).
PREVIEW_WHY = (
    "<details><summary>Why?</summary>This server runs a tiny test model instead of Kandinsky 2.2 (it has no "
    "graphics card, or could not fetch the real model), so the pictures are abstract placeholders. Everything else "
    "works as it will with the real model: try it, your mascots are kept. The person who runs the site can switch "
    "to the real model (see the README).</details>"
)
# What the page does in the browser beyond CSS: Generate pinned on a phone only when the idea is out of view, and a
# PNG dropped anywhere on the Create tab restoring its settings.
PAGE_JS = (Path(__file__).resolve().parents[2] / "assets" / "page.js").read_text(encoding="utf-8")
SHARED_MASCOT_GONE = "The mascot this link points to is private now, or was deleted."

# Every hour, delete what Gradio cached more than a day ago (a page open that long shows its images again on reload).
GRADIO_CACHE_CLEANUP = (3600, 86400)


def build_demo(services: PageServices) -> gr.Blocks:
    """The whole page. Component variables carry the names of the parameters they feed."""
    # Gradio copies every image it shows into its cache: without a clean-up that copy of the images folder only grows.
    with gr.Blocks(title="Mascot Generator", delete_cache=GRADIO_CACHE_CLEANUP) as demo:
        gr.Markdown(
            "# Mascot Generator\nType an idea, pick a style, press Enter: mascots to download, share and vote on.",
            elem_id="header",
        )
        device_prompt = build_device_prompt()  # a page opened with ?device=<code> asks before anything changes
        share = build_share_card()  # a share link opens on its mascot, in the first screen
        banner = gr.Markdown(model_banner(services.service.worker), label="Model status", elem_id="model-banner")
        with gr.Tabs() as tabs:
            with gr.Tab("Create", id="create"):
                form = build_create_tab(services)
            with gr.Tab("My mascots", id="mine") as mine_tab:
                mine = build_browse_tab(services, "mine", tab=mine_tab, demo=demo, form=form, tabs=tabs)
                build_export_row(services)
                device_row = build_device_row(services)
            with gr.Tab("Gallery", id="gallery") as gallery_tab:
                gallery = build_browse_tab(services, "gallery", tab=gallery_tab, demo=demo, form=form, tabs=tabs)
        demo.load(None, js=PAGE_JS, queue=False, api_visibility="private")
        demo.load(_model_status(services.service.worker), outputs=banner, queue=False, api_name="model_status")
        # While the model loads, the banner follows it; once loaded, the adapter controls appear and the timer stops.
        # The quick settings too: they depend on the model, so they are applied once it is known.
        timer = gr.Timer(2.0)
        quick = [form.generation_inputs[name] for name in QUICK_FIELDS]
        gr.on(
            [demo.load, timer.tick],
            fn=_model_state_handler(services),
            inputs=quick,
            outputs=[
                banner,
                form.generation_inputs["adapter_name"],
                form.generation_inputs["lora_scale"],
                timer,
                *quick,
                form.size,
                form.speed_note,
            ],
            queue=False,
            api_visibility="private",
        )
        # The queue count follows each job's own news (queued, started, done), not only the 5-second timer.
        form.status.change(
            fn=lambda: model_banner(services.service.worker),
            outputs=banner,
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
        # Afterwards the banner keeps saying how long the queue is.
        gr.Timer(QUEUE_BANNER_SECONDS).tick(
            fn=lambda: model_banner(services.service.worker), outputs=banner, queue=False, api_visibility="private"
        )
        if form.house.brand_pictures is not None:
            demo.load(
                brand_pictures_handler(services),
                outputs=form.house.brand_pictures,
                queue=False,
                api_visibility="private",
            )
        show_quota = {"fn": quota_handler(services), "outputs": form.quota_note, "queue": False}
        demo.load(**show_quota, api_name="quota")
        notice = page_notice()
        demo.load(_cut_off_handler(services), outputs=notice, queue=False, api_visibility="private")
        follow_own_mascot_on_load(services, demo, form)
        wire_share_card(share, tabs)
        demo.load(
            _shared_mascot_handler(services, gallery, share, notice),
            outputs=[notice, *share.outputs(), *gallery.detail.outputs()],
            queue=False,
            api_visibility="private",
        )
        # A page opened with ?device=<code> (a link made in My mascots on another device) becomes that browser.
        refresh = [page_event(services, "mine", mine), page_event(services, "gallery", gallery), show_quota]
        wire_device_links(services, demo, device_row, device_prompt, refresh)
    return demo


def _model_status(worker: GenerationWorker) -> Callable[[], str]:
    def model_status() -> str:
        """Which model is loaded (or why not yet) and how long the queue is."""
        return model_banner(worker)

    return model_status


def _model_state_handler(services: PageServices) -> Callable[..., tuple[Any, ...]]:
    def model_state(*shown: Any) -> tuple[Any, ...]:
        loading = services.service.worker.status.state is ModelState.LOADING
        head = model_banner(services.service.worker), *adapter_controls(services), gr.Timer(active=loading)
        return *head, *quick_settings_values(services, shown)

    return model_state


def quick_settings_values(services: PageServices, shown: tuple[Any, ...]) -> tuple[Any, ...]:
    """Where the model is slow, the quick settings for the fields in QUICK_FIELDS, the size and a note saying so;
    skipped while the model loads, where it is fast, and for fields a person already changed from the defaults."""
    quick = services.service.quick_settings()
    untouched = all(value == getattr(DEFAULTS, name) for name, value in zip(QUICK_FIELDS, shown, strict=True))
    if not quick or not untouched:
        return (gr.skip(),) * (len(QUICK_FIELDS) + 2)
    values = tuple(quick[name] for name in QUICK_FIELDS)
    size = dimensions_to_size(quick["width"], quick["height"])
    note = (
        f"⚡ Quick settings for this machine: {quick['width']} × {quick['height']}, "
        f"{plural(quick['num_inference_steps'], 'step')} (More options: larger, slower)."
    )
    return *values, size, note


def model_banner(worker: GenerationWorker) -> str:
    """One plain line for people: which model is loaded (or why not yet) and how long the queue is. What an operator
    does about it is in the log and the README."""
    status = worker.status
    if status.state is ModelState.LOADING:
        return f"⏳ **Loading the model:** {status.message} The page works; Generate opens when it is ready."
    if status.state is ModelState.FAILED:
        return f"⚠️ **The model could not be loaded.** {status.message}"
    assert status.info is not None
    waiting = worker.queue_length
    queue_note = f" {plural(waiting, 'mascot')} in the queue." if waiting else ""
    if status.info.is_preview_model:
        return f"**Preview mode: pictures are placeholders.**{queue_note}{PREVIEW_WHY}"
    return f"✅ **{status.info.name}** on {status.info.device}.{queue_note}"


def page_notice() -> gr.Textbox:
    """A hidden box whose text is shown as a warning. gr.Warning reaches the page only from a queued event, and the
    page's load events stay outside the queue (they must not wait behind the GPU, nor meet "the queue is full"): they
    write here, and the change, a quick queued event, shows it."""
    notice = gr.Textbox(visible=False, label="page notice")
    notice.change(_show_warning, notice, None, show_progress="hidden", api_visibility="private")
    return notice


def _show_warning(text: str) -> None:
    if text:
        gr.Warning(text)


def _cut_off_handler(services: PageServices) -> Callable[..., Any]:
    def tell_if_cut_off(http_request: gr.Request | None = None) -> Any:
        """Whether a killed server took this browser's mascot down: Gradio reloaded the page when it was back, so
        the page said nothing of it."""
        who = visitor_or_none(services, http_request)
        notice = services.service.cut_off_notice(who) if who is not None else None
        return notice or gr.skip()

    return tell_if_cut_off


def _shared_mascot_handler(
    services: PageServices, gallery: BrowseTab, share: ShareCard, notice: gr.Textbox
) -> Callable[..., Any]:
    """A share link (?mascot=<id>) shows that mascot's card at the top of the page, also to a first-time visitor,
    and opens the Gallery's panel on it (for liking, stickers, reporting)."""

    def open_shared_mascot(http_request: gr.Request | None = None) -> Any:
        query = getattr(http_request, "query_params", None) or {}
        public_id = query.get("mascot")
        if not public_id:
            return gr.skip()
        who = visitor(services, http_request)
        try:
            entry = services.service.open(str(public_id)[:64], who)
        except Refusal:
            return {notice: SHARED_MASCOT_GONE}
        link, picture = services.service.share_link(entry, who), picture_url(who.page_url, entry)
        return {**detail_values(gallery.detail, entry, link, who.page_url), **share_card_values(share, entry, picture)}

    return open_shared_mascot
