"""The Create tab: the form (diffusers' parameters, named for people), Generate, Cancel, progress and the quota."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from mascot.prompt.presets import LOGO_COLOURS
from mascot.prompt.request import MAX_SEED, GenerationRequest, InvalidRequest
from mascot.service import Refusal
from mascot.ui.based_on import BasedOn, based_on_row, wire_based_on
from mascot.ui.common import DEFAULTS, PageServices, range_info, refused, visitor, visitor_or_none
from mascot.ui.logo_panel import logo_fields
from mascot.ui.progress import relay_job

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
CUSTOM_SIZE = "Custom (set in Advanced)"
# On a phone the results sit below the whole form: bring them into view when a generation starts, so that the queue
# position, the progress and the previews are seen. Runs in the browser before pick_seed and passes its inputs on.
SHOW_RESULTS_ON_NARROW_SCREENS = """(...inputs) => {
    if (window.matchMedia("(max-width: 768px)").matches) {
        document.getElementById("result-gallery")?.scrollIntoView({behavior: "smooth", block: "start"});
    }
    return inputs;
}"""
NO_ADAPTER = ("None (base model)", "")
IDEA_STAND_IN = "<your idea>"


@dataclass(frozen=True)
class CreateForm:
    """The Create tab's components; `generation_inputs` maps each diffusers parameter name to its input."""

    generation_inputs: dict[str, gr.components.Component]
    randomize_seed: gr.Checkbox
    size: gr.Dropdown
    generate_button: gr.Button
    cancel_button: gr.Button
    gallery: gr.Gallery
    status: gr.Markdown
    quota_note: gr.Markdown
    logo_image: gr.Image  # the upload; its id goes into generation_inputs["logo"]
    logo_panel: gr.Accordion
    model_prompt: gr.Textbox  # in Advanced: the prompts after the presets, as the worker will send them
    based_on: BasedOn  # More like this: the mascot the next generations start from (ui/based_on.py)


def build_create_tab(services: PageServices) -> CreateForm:
    """Lay out the tab (inside a `gr.Tab`) and wire its events."""
    with gr.Row():
        with gr.Column(scale=2):
            generation_inputs, randomize_seed, size, model_prompt = _form_fields(services)
            logo_panel, logo_image = logo_fields(services, generation_inputs)
            based_on = based_on_row()
            wire_based_on(based_on, generation_inputs["logo"])
            with gr.Row():
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
            quota_note = gr.Markdown(elem_id="quota-note")
            if services.examples:
                gr.Examples(
                    examples=[[example] for example in services.examples],
                    inputs=[generation_inputs["prompt"]],
                    label="Need an idea?",
                )
        with gr.Column(scale=3):
            gallery = gr.Gallery(
                label="Your mascots",
                format="png",
                columns=2,
                height=560,
                object_fit="contain",
                elem_id="result-gallery",
            )
            status = gr.Markdown(elem_id="generation-status")
    form = CreateForm(
        generation_inputs,
        randomize_seed,
        size,
        generate_button,
        cancel_button,
        gallery,
        status,
        quota_note,
        logo_image,
        logo_panel,
        model_prompt,
        based_on,
    )
    _wire(services, form)
    return form


def _form_fields(
    services: PageServices,
) -> tuple[dict[str, gr.components.Component], gr.Checkbox, gr.Dropdown, gr.Textbox]:
    prompt = gr.Textbox(
        label="Your idea", placeholder="a cheerful otter barista holding a coffee cup", max_lines=4, autofocus=True
    )
    presets = services.service.presets
    with gr.Row():
        style = gr.Dropdown(
            label="Style",
            choices=[("None (your words only)", ""), *((name, name) for name in presets.styles)],
            value=presets.default_style,
            info="Wrapped around your idea (style)",
            elem_id="style",
        )
        brand = gr.Dropdown(
            label="Brand colours",
            choices=[("None", ""), *((name, name) for name in presets.brands), *logo_colours_choice(services)],
            value=DEFAULTS.brand,
            info="Added to your idea (brand)",
            elem_id="brand",
        )
    negative_prompt = gr.Textbox(
        value=DEFAULTS.negative_prompt, label="Avoid (optional)", placeholder="text, watermark, blurry", max_lines=2
    )
    with gr.Row(elem_id="size-row"):  # stacked on phones (style.css): the size names need the width
        size = gr.Dropdown(label="Size", choices=[*SIZE_PRESETS, CUSTOM_SIZE], value=dimensions_to_size(768, 768))
        num_images_per_prompt = gr.Number(
            label="Images", value=DEFAULTS.num_images_per_prompt, info=range_info("num_images_per_prompt")
        )
    with gr.Row():
        seed = gr.Number(
            label="Seed", value=DEFAULTS.seed, info=f"0 to {MAX_SEED}: the same seed remakes the same mascot"
        )
        randomize_seed = gr.Checkbox(label="New random seed each time", value=True)
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            width = gr.Number(label="Width", value=DEFAULTS.width, info=range_info("width", "multiple of 64"))
            height = gr.Number(label="Height", value=DEFAULTS.height, info=range_info("height", "multiple of 64"))
        with gr.Row():
            num_inference_steps = gr.Number(
                label="Steps", value=DEFAULTS.num_inference_steps, info=range_info("num_inference_steps")
            )
            guidance_scale = gr.Number(
                label="Guidance", value=DEFAULTS.guidance_scale, info=range_info("guidance_scale")
            )
        with gr.Row():
            prior_num_inference_steps = gr.Number(
                label="Prior steps",
                value=DEFAULTS.prior_num_inference_steps,
                info=range_info("prior_num_inference_steps"),
            )
            prior_guidance_scale = gr.Number(
                label="Prior guidance", value=DEFAULTS.prior_guidance_scale, info=range_info("prior_guidance_scale")
            )
        # Shown once the model has loaded with LoRA adapters (python app.py --lora NAME=PATH).
        with gr.Row():
            adapter_name = gr.Dropdown(
                label="Style adapter (LoRA)",
                choices=[NO_ADAPTER],
                value=DEFAULTS.adapter_name,
                visible=False,
                info="A fine-tuned look, e.g. your brand's mascot (adapter_name)",
                elem_id="adapter-name",
            )
            lora_scale = gr.Slider(
                label="Adapter strength",
                minimum=0,
                maximum=2,
                step=0.05,
                value=DEFAULTS.lora_scale,
                visible=False,
                info=range_info("lora_scale") + ": 0 is the base model",
                elem_id="lora-scale",
            )
        model_prompt = gr.Textbox(
            value=model_prompt_text(services, "", DEFAULTS.negative_prompt, presets.default_style, DEFAULTS.brand, ""),
            label="What the model is given",
            info="The idea wrapped in the style, then the brand colours; what to avoid, plus the style's own additions",
            interactive=False,
            lines=3,
            elem_id="model-prompt",
        )
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
        "style": style,
        "brand": brand,
        "adapter_name": adapter_name,
        "lora_scale": lora_scale,
    }
    return generation_inputs, randomize_seed, size, model_prompt


def _wire(services: PageServices, form: CreateForm) -> None:
    inputs = form.generation_inputs
    width, height, seed = inputs["width"], inputs["height"], inputs["seed"]
    form.size.input(
        size_to_dimensions, inputs=form.size, outputs=[width, height], queue=False, api_visibility="private"
    )
    gr.on(
        [width.input, height.input],
        fn=dimensions_to_size,
        inputs=[width, height],
        outputs=form.size,
        queue=False,
        api_visibility="private",
    )
    gr.on(
        [inputs["prompt"].submit, form.generate_button.click],
        fn=pick_seed,
        inputs=[seed, form.randomize_seed],
        outputs=seed,
        js=SHOW_RESULTS_ON_NARROW_SCREENS,
        queue=False,
        api_visibility="private",
    ).then(
        fn=_generate_handler(services),
        inputs_kwargs=inputs,
        outputs=[form.gallery, form.status],
        validator=_generation_validator(services, list(inputs)),
        preprocess=False,  # our request class validates raw values and names the parameter; Gradio would clamp
        api_name="generate",
        concurrency_limit=None,  # handlers only relay; the worker owns the GPU and its queue
        show_progress="minimal",
        # One progress bar, over the mascots: on the status line as well it would hide the words it shows.
        show_progress_on=form.gallery,
    ).then(
        fn=quota_handler(services),
        outputs=form.quota_note,
        queue=False,
        api_name="quota_after_generate",  # keeps the name "quota" free for the public event
        api_visibility="private",
    )
    form.cancel_button.click(_cancel_handler(services), outputs=form.status, queue=False, api_name="cancel")
    shapers = [inputs[name] for name in ("prompt", "negative_prompt", "style", "brand", "logo")]
    gr.on(
        [shaper.change for shaper in shapers],
        fn=_model_prompt_handler(services),
        inputs=shapers,
        outputs=form.model_prompt,
        queue=False,
        api_visibility="private",
        show_progress="hidden",
        trigger_mode="always_last",  # typing: one answer for the latest text, not one per keystroke in a row
    )


def logo_colours_choice(services: PageServices) -> list[tuple[str, str]]:
    """ "Colours of my logo" among the brand colours, where logos can be uploaded."""
    return [(LOGO_COLOURS, LOGO_COLOURS)] if services.service.logos is not None else []


def _model_prompt_handler(services: PageServices) -> Callable[..., str]:
    def model_prompt(prompt: Any, negative_prompt: Any, style: Any, brand: Any, logo: Any) -> str:
        return model_prompt_text(services, prompt, negative_prompt, style, brand, logo)

    return model_prompt


def model_prompt_text(
    services: PageServices, prompt: Any, negative_prompt: Any, style: Any, brand: Any, logo: Any
) -> str:
    """The prompts as the worker will send them (the same `prepare`), the idea standing in while none is typed; a
    sentence instead when the values would be refused (Generate then says why)."""
    typed = prompt if isinstance(prompt, str) and prompt.strip() else IDEA_STAND_IN
    service = services.service
    try:
        request = GenerationRequest.from_user(
            prompt=typed, negative_prompt=negative_prompt, style=style, brand=brand, logo=logo
        )
        service.presets.check_request(request)
        prepared = service.prepare(request)
    except InvalidRequest as error:
        return f"(Generate would refuse this: {error.message})"
    avoid = prepared.negative_prompt or "nothing"
    return f"Prompt: {prepared.prompt}\nAvoid: {avoid}"


def size_to_dimensions(size: str) -> tuple[Any, Any]:
    if size not in SIZE_PRESETS:
        return gr.skip(), gr.skip()
    return SIZE_PRESETS[size]


def dimensions_to_size(width: float | None, height: float | None) -> str:
    """The preset that matches typed dimensions, or Custom."""
    return next((name for name, size in SIZE_PRESETS.items() if size == (width, height)), CUSTOM_SIZE)


def pick_seed(seed: float | None, randomize_seed: bool) -> float | None:
    """Draw a seed and show it before generating, so every mascot can be remade."""
    return secrets.randbelow(MAX_SEED + 1) if randomize_seed else seed


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
        style: Any,
        brand: Any,
        logo: Any,
        logo_weight: Any,
        adapter_name: Any,
        lora_scale: Any,
        http_request: gr.Request | None = None,
    ) -> list[dict[str, Any]]:
        values = locals()  # the parameters, named as GenerationRequest's fields (the API's keyword names)
        try:
            services.service.admit(values, visitor_or_none(services, http_request))
        except Refusal as error:
            return _validation(names, error.parameter or "prompt", error.message)
        return _validation(names, None, "")

    return validate_generation


def adapter_controls(services: PageServices) -> tuple[Any, Any]:
    """The adapter picker and strength slider as the loaded model allows: hidden when it has no adapters."""
    adapters = services.service.adapters()
    if adapters is None:
        return gr.skip(), gr.skip()
    choices = [NO_ADAPTER, *((name, name) for name in adapters)]
    visible = bool(adapters)
    return gr.Dropdown(choices=choices, visible=visible), gr.Slider(visible=visible)


def _validation(names: list[str], failing: str | None, message: str) -> list[dict[str, Any]]:
    return [gr.validate(name != failing, message if name == failing else "") for name in names]


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
        style: Any = DEFAULTS.style,
        brand: Any = DEFAULTS.brand,
        logo: Any = DEFAULTS.logo,
        logo_weight: Any = DEFAULTS.logo_weight,
        adapter_name: Any = DEFAULTS.adapter_name,
        lora_scale: Any = DEFAULTS.lora_scale,
        http_request: gr.Request | None = None,  # filled in by Gradio
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's documented way to receive progress
    ) -> Iterator[tuple[Any, str]]:
        """Make 1-4 mascots from a prompt; returns the saved PNG files and a status line."""
        values = locals()  # the parameters, named as GenerationRequest's fields (the API's keyword names)
        try:
            job = services.service.submit(values, visitor_or_none(services, http_request))
        except Refusal as error:
            raise refused(error) from None
        yield from relay_job(job, progress)

    return generate


def _cancel_handler(services: PageServices) -> Callable[..., str]:
    def cancel(http_request: gr.Request | None = None) -> str:
        """Cancel this browser's queued or running generation."""
        return "Cancelling…" if services.service.cancel(visitor(services, http_request)) else "Nothing to cancel."

    return cancel


def quota_handler(services: PageServices) -> Callable[..., str]:
    def quota(http_request: gr.Request | None = None) -> str:
        """How many mascots this browser may still make today (fewer when its network's quota is nearly spent), and
        when that resets."""
        return services.service.quota_line(visitor(services, http_request))

    return quota
