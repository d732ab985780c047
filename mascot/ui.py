"""build_demo: the Gradio Blocks page and its thin handlers. Imports no torch: it is handed a worker and a store."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gradio as gr

from mascot.generator import GeneratedImages
from mascot.request import FLOAT_RANGES, INTEGER_RANGES, MAX_SEED, GenerationRequest, InvalidRequest
from mascot.worker import FINAL_STATES, GenerationWorker, Job, JobSnapshot, JobState, ModelState, SubmitRefused

log = logging.getLogger(__name__)

# What a person picks; the page turns it into width and height, the API takes width and height as given.
SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "Square 512 × 512": (512, 512),
    "Square 768 × 768": (768, 768),
    "Square 1024 × 1024": (1024, 1024),
    "Portrait 512 × 768": (512, 768),
    "Portrait 576 × 1024": (576, 1024),
    "Landscape 768 × 512": (768, 512),
    "Landscape 1024 × 576": (1024, 576),
}
DEFAULT_SIZE = "Square 768 × 768"
CUSTOM_SIZE = "Custom (set in Advanced)"
HISTORY_PAGE_SIZE = 48
DEFAULTS = GenerationRequest(prompt="")  # the page's and the API's defaults: one source
POLL_SECONDS = 1.0


class HistoryItem(Protocol):
    path: Path
    caption: str


class HistorySource(Protocol):
    def history(self, owner_hash: str, *, page: int = 1, per_page: int = 24) -> Sequence[HistoryItem]: ...


class SavedImages(Protocol):
    image_paths: Sequence[Path]


OwnerOf = Callable[[Any], str | None]


@dataclass(frozen=True)
class PageServices:
    """What the page needs: the GPU worker, the history, and who is asking."""

    worker: GenerationWorker
    history: HistorySource
    owner_of: OwnerOf
    examples: Sequence[str] = ()


def build_demo(services: PageServices) -> gr.Blocks:
    """The whole page. Component variables carry the names of the parameters they feed."""
    with gr.Blocks(title="Mascot Generator") as demo:
        banner = gr.Markdown(model_banner(services.worker), elem_id="model-banner")
        with gr.Tabs():
            with gr.Tab("Create", id="create"), gr.Row():
                generation_inputs, randomize_seed, size, buttons = _create_form(services.examples)
                with gr.Column(scale=3):
                    gallery = gr.Gallery(
                        label="Your mascots", format="png", columns=2, height=560, object_fit="contain"
                    )
                    status = gr.Markdown(elem_id="generation-status")
            with gr.Tab("My mascots", id="history") as history_tab:
                history_gallery = gr.Gallery(
                    label="Made in this browser", columns=4, height=640, format="png", elem_id="history-gallery"
                )
                refresh_history = gr.Button("Refresh", size="sm")
        _wire(services, demo, banner, generation_inputs, randomize_seed, size, buttons, gallery, status)
        gr.on(
            [history_tab.select, refresh_history.click, demo.load],
            fn=_history_handler(services),
            outputs=history_gallery,
            api_name="my_mascots",
            queue=False,
        )
    return demo


def _create_form(examples: Sequence[str]) -> tuple[dict[str, gr.components.Component], gr.Checkbox, gr.Dropdown, Any]:
    with gr.Column(scale=2):
        prompt = gr.Textbox(
            label="Your idea", placeholder="a cheerful otter barista, sticker style", max_lines=4, autofocus=True
        )
        negative_prompt = gr.Textbox(
            value=DEFAULTS.negative_prompt, label="Avoid (optional)", placeholder="text, watermark, blurry", max_lines=2
        )
        with gr.Row():
            size = gr.Dropdown(label="Size", choices=[*SIZE_PRESETS, CUSTOM_SIZE], value=DEFAULT_SIZE)
            num_images_per_prompt = gr.Number(
                label="Images", value=DEFAULTS.num_images_per_prompt, info="1 to 4 (num_images_per_prompt)"
            )
        with gr.Row():
            seed = gr.Number(
                label="Seed", value=DEFAULTS.seed, info=f"0 to {MAX_SEED}: the same seed remakes the same mascot"
            )
            randomize_seed = gr.Checkbox(label="New random seed each time", value=True)
        with gr.Accordion("Advanced", open=False):
            with gr.Row():
                width = gr.Number(label="Width", value=DEFAULTS.width, info=_range_info("width", "multiple of 64"))
                height = gr.Number(label="Height", value=DEFAULTS.height, info=_range_info("height", "multiple of 64"))
            with gr.Row():
                num_inference_steps = gr.Number(
                    label="Steps", value=DEFAULTS.num_inference_steps, info=_range_info("num_inference_steps")
                )
                guidance_scale = gr.Number(
                    label="Guidance", value=DEFAULTS.guidance_scale, info=_range_info("guidance_scale")
                )
            with gr.Row():
                prior_num_inference_steps = gr.Number(
                    label="Prior steps",
                    value=DEFAULTS.prior_num_inference_steps,
                    info=_range_info("prior_num_inference_steps"),
                )
                prior_guidance_scale = gr.Number(
                    label="Prior guidance",
                    value=DEFAULTS.prior_guidance_scale,
                    info=_range_info("prior_guidance_scale"),
                )
        with gr.Row():
            generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
        if examples:
            gr.Examples(examples=[[example] for example in examples], inputs=[prompt], label="Need an idea?")
    generation_inputs: dict[str, gr.components.Component] = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "width": width,
        "height": height,
        "num_images_per_prompt": num_images_per_prompt,
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "prior_num_inference_steps": prior_num_inference_steps,
        "prior_guidance_scale": prior_guidance_scale,
    }
    return generation_inputs, randomize_seed, size, (generate_button, cancel_button)


def _range_info(name: str, extra: str = "") -> str:
    low, high = INTEGER_RANGES.get(name) or FLOAT_RANGES[name]
    suffix = f", {extra}" if extra else ""
    return f"{low:g} to {high:g}{suffix} ({name})"


def _wire(
    services: PageServices,
    demo: gr.Blocks,
    banner: gr.Markdown,
    generation_inputs: dict[str, gr.components.Component],
    randomize_seed: gr.Checkbox,
    size: gr.Dropdown,
    buttons: tuple[gr.Button, gr.Button],
    gallery: gr.Gallery,
    status: gr.Markdown,
) -> None:
    generate_button, cancel_button = buttons
    width, height, seed = generation_inputs["width"], generation_inputs["height"], generation_inputs["seed"]
    size.input(_size_to_dimensions, inputs=size, outputs=[width, height], queue=False, api_visibility="private")
    gr.on(
        [width.input, height.input],
        fn=_dimensions_to_size,
        inputs=[width, height],
        outputs=size,
        queue=False,
        api_visibility="private",
    )
    gr.on(
        [generation_inputs["prompt"].submit, generate_button.click],
        fn=_pick_seed,
        inputs=[seed, randomize_seed],
        outputs=seed,
        queue=False,
        api_visibility="private",
    ).then(
        fn=_generate_handler(services),
        inputs_kwargs=generation_inputs,
        outputs=[gallery, status],
        validator=_generation_validator(services, list(generation_inputs)),
        preprocess=False,  # our request class validates raw values and names the parameter; Gradio would clamp
        api_name="generate",
        concurrency_limit=None,  # handlers only relay; the worker owns the GPU and its queue
        show_progress="minimal",
    )
    cancel_button.click(_cancel_handler(services), outputs=status, queue=False, api_name="cancel")
    timer = gr.Timer(2.0)
    timer.tick(lambda: model_banner(services.worker), outputs=banner, queue=False, api_visibility="private")
    demo.load(lambda: model_banner(services.worker), outputs=banner, queue=False, api_name="model_status")


def _size_to_dimensions(size: str) -> tuple[Any, Any]:
    if size not in SIZE_PRESETS:
        return gr.skip(), gr.skip()
    return SIZE_PRESETS[size]


def _dimensions_to_size(width: float | None, height: float | None) -> str:
    """The preset that matches typed dimensions, or Custom."""
    return next((name for name, size in SIZE_PRESETS.items() if size == (width, height)), CUSTOM_SIZE)


def _pick_seed(seed: float | None, randomize_seed: bool) -> float | None:
    """Draw a seed and show it before generating, so every mascot can be remade."""
    return secrets.randbelow(MAX_SEED + 1) if randomize_seed else seed


def model_banner(worker: GenerationWorker) -> str:
    """One plain paragraph: which model is loaded (or why not yet) and how long the queue is."""
    status = worker.status
    if status.state is ModelState.LOADING:
        return f"⏳ **Loading the model:** {status.message} The page works; Generate opens when it is ready."
    if status.state is ModelState.FAILED:
        return f"⚠️ **The model could not be loaded:** {status.message}"
    assert status.info is not None
    waiting = worker.queue_length
    queue_note = f" {waiting} mascot{'s' if waiting != 1 else ''} in the queue." if waiting else ""
    if status.info.is_preview_model:
        headline = "🧪 **Preview mode: the offline test model is loaded, not Kandinsky 2.2.**"
        return f"{headline} {status.info.reason}{queue_note}"
    return f"✅ **{status.info.name}** on {status.info.device}.{queue_note}"


def _owner(services: PageServices, http_request: gr.Request | None) -> str:
    owner_hash = services.owner_of(http_request)
    if owner_hash is None:
        raise gr.Error("Your browser did not send its identity cookie. Allow cookies for this site and reload.")
    return owner_hash


def _generation_validator(services: PageServices, names: list[str]) -> Callable[..., list[dict[str, Any]]]:
    """Refusals that cost nothing run before the job takes a queue slot; the message lands on the named input."""

    def validate_generation(
        prompt: Any,
        negative_prompt: Any,
        seed: Any,
        width: Any,
        height: Any,
        num_images_per_prompt: Any,
        num_inference_steps: Any,
        guidance_scale: Any,
        prior_num_inference_steps: Any,
        prior_guidance_scale: Any,
        http_request: gr.Request,
    ) -> list[dict[str, Any]]:
        raw = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "seed": seed,
            "width": width,
            "height": height,
            "num_images_per_prompt": num_images_per_prompt,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "prior_num_inference_steps": prior_num_inference_steps,
            "prior_guidance_scale": prior_guidance_scale,
        }
        try:
            GenerationRequest.from_user(**raw)
            owner_hash = services.owner_of(http_request)
            if owner_hash is not None:
                services.worker.check_can_submit(owner_hash)
        except InvalidRequest as error:
            return [
                gr.validate(name != error.parameter, error.message if name == error.parameter else "") for name in names
            ]
        except SubmitRefused as error:
            return [gr.validate(name != "prompt", str(error) if name == "prompt" else "") for name in names]
        return [gr.validate(True, "") for _ in names]

    return validate_generation


def _generate_handler(services: PageServices) -> Callable[..., Iterator[tuple[Any, str]]]:
    def generate(
        prompt: Any,
        negative_prompt: Any = DEFAULTS.negative_prompt,
        seed: Any = DEFAULTS.seed,
        width: Any = DEFAULTS.width,
        height: Any = DEFAULTS.height,
        num_images_per_prompt: Any = DEFAULTS.num_images_per_prompt,
        num_inference_steps: Any = DEFAULTS.num_inference_steps,
        guidance_scale: Any = DEFAULTS.guidance_scale,
        prior_num_inference_steps: Any = DEFAULTS.prior_num_inference_steps,
        prior_guidance_scale: Any = DEFAULTS.prior_guidance_scale,
        http_request: gr.Request | None = None,  # filled in by Gradio
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's documented way to receive progress
    ) -> Iterator[tuple[Any, str]]:
        """Make 1-4 mascots from a prompt; returns the saved PNG files and a status line."""
        try:
            request = GenerationRequest.from_user(
                prompt=prompt,
                negative_prompt=negative_prompt,
                seed=seed,
                width=width,
                height=height,
                num_images_per_prompt=num_images_per_prompt,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                prior_num_inference_steps=prior_num_inference_steps,
                prior_guidance_scale=prior_guidance_scale,
            )
            job = services.worker.submit(request, _owner(services, http_request))
        except (InvalidRequest, SubmitRefused) as error:
            raise gr.Error(str(error), print_exception=False) from None
        yield from relay_job(job, progress)

    return generate


def relay_job(job: Job, progress: gr.Progress) -> Iterator[tuple[Any, str]]:
    """Show a job's queue position, steps and previews until it ends. If the browser leaves, the job goes on."""
    seen_version = -1
    while True:
        snapshot = job.wait_for_change(seen_version, timeout=POLL_SECONDS)
        if snapshot.version == seen_version:
            continue
        seen_version = snapshot.version
        if snapshot.state is JobState.FAILED:
            raise gr.Error(snapshot.error, print_exception=False)
        if snapshot.state in FINAL_STATES:
            yield finished_outputs(snapshot)
            return
        message = progress_message(snapshot)
        if snapshot.state is JobState.RUNNING and snapshot.total:
            progress((snapshot.step, snapshot.total), desc=message)
        else:
            progress(0.0, desc=message)
        yield ([snapshot.preview] if snapshot.preview is not None else gr.skip()), message


def progress_message(snapshot: JobSnapshot) -> str:
    """Where the job is, in words."""
    if snapshot.state is JobState.QUEUED:
        if snapshot.jobs_ahead == 0:
            return "Starting…"
        return f"In the queue: {snapshot.jobs_ahead} mascot{'s' if snapshot.jobs_ahead != 1 else ''} ahead of yours."
    stage = "Imagining the idea (prior)" if snapshot.stage == "prior" else "Drawing (decoder)"
    if not snapshot.total:
        return "Starting…"
    return f"{stage}: step {snapshot.step} of {snapshot.total}."


def finished_outputs(snapshot: JobSnapshot) -> tuple[Any, str]:
    if snapshot.state is JobState.CANCELLED:
        return gr.skip(), snapshot.error or "Cancelled. Nothing was saved and nothing counts against you."
    saved: SavedImages = snapshot.outcome
    paths = [str(path) for path in saved.image_paths]
    return paths, done_message(len(paths), snapshot.generated)


def done_message(count: int, generated: GeneratedImages | None) -> str:
    message = f"Done: {count} mascot{'s' if count != 1 else ''} saved to **My mascots**."
    if generated is not None:
        seeds = ", ".join(str(seed) for seed in generated.seeds)
        message += f" Seed{'s' if len(generated.seeds) != 1 else ''}: {seeds}."
        for label, use in (("prompt", generated.prompt), ("negative prompt", generated.negative_prompt)):
            if use.cut:
                message += f"\n\n✂️ Your {label} was longer than the model reads (77 tokens); this end was left out: "
                message += f"*{use.cut}*"
    return message


def _cancel_handler(services: PageServices) -> Callable[[gr.Request], str]:
    def cancel(http_request: gr.Request) -> str:
        """Cancel this browser's queued or running generation."""
        if services.worker.cancel_for(_owner(services, http_request)):
            return "Cancelling…"
        return "Nothing to cancel."

    return cancel


def _history_handler(services: PageServices) -> Callable[[gr.Request], list[tuple[str, str]]]:
    def my_mascots(http_request: gr.Request) -> list[tuple[str, str]]:
        """Every mascot this browser made, newest first, with its prompt as the caption."""
        entries = services.history.history(_owner(services, http_request), per_page=HISTORY_PAGE_SIZE)
        return [(str(entry.path), entry.caption) for entry in entries]

    return my_mascots
