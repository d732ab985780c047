"""The Create tab: the form (diffusers' parameters, named for people), Generate, Cancel, progress and the quota."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from mascot.prompt.presets import LOGO_COLOURS
from mascot.prompt.request import MAX_SEED, PARAMETER_LABELS, GenerationRequest, InvalidRequest, based_on_mascot
from mascot.service import Refusal, Visitor
from mascot.ui.based_on import BasedOn, based_on_note, based_on_row, wire_based_on
from mascot.ui.common import (
    DEFAULTS,
    PageServices,
    WholeNumber,
    answers_in_sentences,
    plain,
    range_info,
    refused,
    visitor,
    visitor_or_none,
)
from mascot.ui.house import HouseChoices, build_house_choices, wire_house_choices
from mascot.ui.logo_panel import logo_fields
from mascot.ui.pictures import PreviewGallery
from mascot.ui.progress import progress_message, relay_job
from mascot.web.images import image_url
from mascot.web.page_url import DEFAULT_PAGE_URL

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
CUSTOM_SIZE = "Custom (see Advanced)"
NO_ADAPTER = ("None (base model)", "")
IDEA_STAND_IN = "<your idea>"
ENTER_WORKS = "Press Enter or Generate."
# Page fields that cannot show a message of their own (hidden): their problems are shown on the idea box.
SHOWN_ON = {"logo": "prompt"}
NOT_STARTED = "Not started: "


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
    speed_note: gr.Markdown  # says when the form starts at quick settings (a slow model)
    logo_image: gr.Image  # the upload; its id goes into generation_inputs["logo"]
    logo_panel: gr.Accordion
    more_options: gr.Accordion
    model_prompt: gr.Textbox  # in Advanced: the prompts after the presets, as the worker will send them
    based_on: BasedOn  # More like this: the mascot the next generations start from (ui/based_on.py)
    house: HouseChoices  # the house look and brand pictures (ui/house.py)


def label(name: str) -> str:
    """A field's label on the page: the words its refusals use too (request.PARAMETER_LABELS)."""
    return PARAMETER_LABELS[name]


def example_idea(examples: Sequence[str]) -> Callable[[object], str]:
    """The handler of a click on an example idea: the chosen idea, for the idea box."""

    def pick(index: object) -> str:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(examples):
            raise gr.Error("Pick one of the example ideas shown under the idea box.", print_exception=False)
        return examples[index]

    return pick


def build_create_tab(services: PageServices) -> CreateForm:
    """Lay out the tab (inside a `gr.Tab`) and wire its events: the idea and Generate first, then the style, then
    the progress and results, in view while one waits; every other setting folded under More options."""
    with gr.Row(elem_id="idea-row", equal_height=True):
        prompt = gr.Textbox(
            label=label("prompt"),
            placeholder="a cheerful otter barista holding a coffee cup",
            info=ENTER_WORKS,
            max_lines=4,
            autofocus=True,
            scale=5,
            elem_id="idea",
        )
        generate_button = gr.Button("Generate", variant="primary", elem_id="generate", scale=1, min_width=110)
        cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel", scale=1, min_width=90, visible=False)
    if services.examples:
        # Our own chips rather than gr.Examples: its event indexes the list with whatever number the request carries,
        # so a forged one got a bare "Error"; this handler checks it and answers in a sentence.
        ideas = gr.Dataset(
            components=[prompt],
            samples=[[example] for example in services.examples],
            type="index",
            label="Need an idea?",
            elem_id="idea-examples",
        )
        ideas.click(example_idea(services.examples), ideas, prompt, queue=False, api_visibility="private")
    style = _style_choices(services)
    house = build_house_choices(services)  # the event's look and brands, in view beside the styles
    with gr.Row(elem_id="form-notes"):
        speed_note = gr.Markdown(elem_id="speed-note")
        quota_note = gr.Markdown(label="Quota", elem_id="quota-note")  # label: the API's name
    status = gr.Markdown(label="Status", elem_id="generation-status")  # label: the API's name for it
    # What a dropped PNG restored: in view, since the picture can be dropped anywhere on the form (assets/page.js).
    recipe_note = gr.Markdown(elem_id="recipe-note")
    # Previews go to the browser as data: URLs, the saved mascots by their checking routes: Gradio caches neither.
    gallery = PreviewGallery(
        label="Your mascots",
        format="png",
        columns=4,
        height=340,  # one row of four on a desktop, two of two on a phone (style.css), all in view
        object_fit="contain",
        # No "download all" (a page of thumbnails) and no Share ("Must be on Spaces"): each mascot's one download is
        # the panel's Download PNG, under its one file name.
        buttons=["fullscreen"],
        elem_id="result-gallery",
    )
    with gr.Accordion("More options", open=False, elem_id="more-options") as more_options:
        recipe_file = _recipe_file()
        generation_inputs, randomize_seed, size, model_prompt = _form_fields(services, prompt, style)
        logo_panel, logo_image = logo_fields(services, generation_inputs)
    # "Based on <mascot>" (More like this) stays in view under the idea, not folded away.
    based_on = based_on_row()
    wire_based_on(based_on, built_as(generation_inputs, "logo", gr.Textbox))
    form = CreateForm(
        generation_inputs,
        randomize_seed,
        size,
        generate_button,
        cancel_button,
        gallery,
        status,
        quota_note,
        speed_note,
        logo_image,
        logo_panel,
        more_options,
        model_prompt,
        based_on,
        house,
    )
    _wire(services, form)
    wire_house_choices(services, house, generation_inputs, logo_image)
    _wire_recipe(services, form, recipe_file, recipe_note)
    return form


def _style_choices(services: PageServices) -> gr.Radio:
    """The styles as one row of one-click choices (a radio group drawn as chips, style.css): keyboard and screen
    readers treat them as the one choice they are."""
    presets = services.service.presets
    return gr.Radio(
        label=label("style"),
        choices=[("None", ""), *((name, name) for name in presets.styles)],
        value=presets.default_style,
        elem_id="style",
        elem_classes=["chips"],
    )


def _recipe_file() -> gr.File:
    """The box a PNG's settings are read from; a PNG dropped anywhere on the form lands here too (page.js)."""
    return gr.File(
        label="Remix a picture: drop a PNG made here (or by AUTOMATIC1111) anywhere on this page to restore its "
        "settings",
        file_types=[".png"],
        type="filepath",
        height=150,  # the drop area, its icon and "Click to Upload" whole under the label
        elem_id="recipe-file",
    )


def _form_fields(
    services: PageServices, prompt: gr.Textbox, style: gr.Radio
) -> tuple[dict[str, gr.components.Component], gr.Checkbox, gr.Dropdown, gr.Textbox]:
    presets = services.service.presets
    negative_prompt = gr.Textbox(
        value=DEFAULTS.negative_prompt,
        label=label("negative_prompt"),
        placeholder="text, watermark, blurry",
        max_lines=2,
        elem_id="negative-prompt",
    )
    with gr.Row(elem_id="size-row"):  # stacked on phones (style.css): the size names need the width
        size = gr.Dropdown(
            label="Size",
            choices=[*SIZE_PRESETS, CUSTOM_SIZE],
            value=dimensions_to_size(DEFAULTS.width, DEFAULTS.height),
            elem_id="size",
        )
        num_images_per_prompt = WholeNumber(
            label=label("num_images_per_prompt"),
            value=DEFAULTS.num_images_per_prompt,
            info=range_info("num_images_per_prompt"),
            elem_id="num-images",
        )
    with gr.Row():
        seed = WholeNumber(
            label=label("seed"),
            value=DEFAULTS.seed,
            info=f"0 to {MAX_SEED}: the same seed remakes the same mascot",
            elem_id="seed",
        )
        randomize_seed = gr.Checkbox(
            label="New random seed each time",
            value=True,
            # Remix unticks it (its seed remakes that mascot); More like this ticks it (new seeds are the point).
            info="Remix unticks it, so Generate remakes the mascot; tick it again for new ones",
            elem_id="randomize-seed",
        )
    brand = gr.Dropdown(
        label=label("brand"),
        choices=[("None", ""), *((name, name) for name in presets.brands), *logo_colours_choice(services)],
        value=DEFAULTS.brand,
        info="Colours added to your idea",
        elem_id="brand",
    )
    with gr.Accordion("Advanced", open=False, elem_id="advanced"):
        with gr.Row():
            width = WholeNumber(
                label=label("width"), value=DEFAULTS.width, info=range_info("width", "multiple of 64"), elem_id="width"
            )
            height = WholeNumber(
                label=label("height"),
                value=DEFAULTS.height,
                info=range_info("height", "multiple of 64"),
                elem_id="height",
            )
        with gr.Row():
            num_inference_steps = WholeNumber(
                label=label("num_inference_steps"),
                value=DEFAULTS.num_inference_steps,
                info=range_info("num_inference_steps", "fewer is faster"),
                elem_id="steps",
            )
            guidance_scale = gr.Number(
                label=label("guidance_scale"),
                value=DEFAULTS.guidance_scale,
                info=range_info("guidance_scale", "how closely to follow the words"),
                elem_id="guidance",
            )
        with gr.Row():
            prior_num_inference_steps = WholeNumber(
                label=label("prior_num_inference_steps"),
                value=DEFAULTS.prior_num_inference_steps,
                info=range_info("prior_num_inference_steps", "turning the words into a picture idea"),
                elem_id="idea-steps",
            )
            prior_guidance_scale = gr.Number(
                label=label("prior_guidance_scale"),
                value=DEFAULTS.prior_guidance_scale,
                info=range_info("prior_guidance_scale", "1 turns it off"),
                elem_id="idea-guidance",
            )
        # Shown once the model has loaded with LoRA adapters (python app.py --lora NAME=PATH); at once with a house
        # look (--default-lora), which is also the API's default.
        default_lora = services.default_lora
        with gr.Row():
            adapter_name = gr.Dropdown(
                label=label("adapter_name"),
                choices=[NO_ADAPTER, *([(default_lora, default_lora)] if default_lora else [])],
                value=default_lora or DEFAULTS.adapter_name,
                visible=bool(default_lora),
                info="A fine-tuned look, e.g. your brand's mascot",
                elem_id="adapter-name",
            )
            lora_scale = gr.Slider(
                label=label("lora_scale"),
                minimum=0,
                maximum=2,
                step=0.05,
                value=services.default_lora_strength if default_lora else DEFAULTS.lora_scale,
                visible=bool(default_lora),
                info=range_info("lora_scale", "0 is the base model"),
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


BuiltAs = TypeVar("BuiltAs", bound=gr.components.Component)


def built_as(inputs: dict[str, gr.components.Component], name: str, kind: type[BuiltAs]) -> BuiltAs:
    """The form's input `name` as the component class it was built as: Gradio declares each event (input, submit,
    change) on the classes that have it, not on Component."""
    component = inputs[name]
    if not isinstance(component, kind):
        raise TypeError(f"The form's {name!r} input is a {type(component).__name__}, not a {kind.__name__}.")
    return component


def _wire(services: PageServices, form: CreateForm) -> None:
    inputs = form.generation_inputs
    width, height, seed = built_as(inputs, "width", gr.Number), built_as(inputs, "height", gr.Number), inputs["seed"]
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
    # Two steps. First the page's own check, answered at once beside the queue: the reason a click would be refused,
    # written on the status line, where it stays (Gradio takes a validator's message off its field at the page's next
    # update of anything, the queue banner's timer or a preview, seconds later, and the button would seem to do
    # nothing); or, when it would not be, the seed drawn and Cancel shown, so a refused click changes nothing else.
    # Then /generate, which is also the API: its validator checks again (the gate), marks every failing field, in the
    # page's words for the page (the first step says so in a State; API clients keep the parameter names), and it
    # runs the job. A separate queued step for the seed cost a trip through the queue on every click (10-20 ms).
    in_pages_words = gr.State(False)
    page_inputs = {**inputs, "randomize_seed": form.randomize_seed}
    generate_inputs = {**inputs, "in_pages_words": in_pages_words}  # the State last: the API's positions stay
    gr.on(
        [built_as(inputs, "prompt", gr.Textbox).submit, form.generate_button.click],
        fn=_start_generation_handler(services),
        inputs_kwargs=page_inputs,
        outputs=[form.status, seed, form.cancel_button, in_pages_words],
        preprocess=False,  # the same raw values the checks below read
        queue=False,  # a check and a random number: answered at once, never behind the GPU
        api_visibility="private",
        show_progress="hidden",
    ).success(
        fn=_generate_handler(services),
        inputs_kwargs=generate_inputs,
        outputs=[form.gallery, form.status],
        validator=_generation_validator(services, list(generate_inputs)),
        preprocess=False,  # our request class validates raw values and names the parameter; Gradio would clamp
        api_name="generate",
        concurrency_limit=None,  # handlers only relay; the worker owns the GPU and its queue
        show_progress="minimal",
        # One progress bar, over the mascots: on the status line as well it would hide the words it shows.
        show_progress_on=form.gallery,
    ).then(
        fn=_finished_handler(services),
        inputs=[form.based_on.picture, built_as(inputs, "num_images_per_prompt", WholeNumber)],
        outputs=[form.quota_note, form.cancel_button, form.based_on.note],
        queue=False,
        api_name="quota_after_generate",  # keeps the name "quota" free for the public event
        api_visibility="private",
    )
    form.cancel_button.click(_cancel_handler(services), outputs=form.status, queue=False, api_name="cancel")
    shapers: list[gr.Textbox | gr.Dropdown | gr.Radio] = [  # in the order of model_prompt's parameters
        built_as(inputs, "prompt", gr.Textbox),
        built_as(inputs, "negative_prompt", gr.Textbox),
        built_as(inputs, "style", gr.Radio),
        built_as(inputs, "brand", gr.Dropdown),
        built_as(inputs, "logo", gr.Textbox),
    ]
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


def _wire_recipe(services: PageServices, form: CreateForm, recipe_file: gr.File, recipe_note: gr.Markdown) -> None:
    # The box is emptied once read, so the next PNG dropped anywhere on the form finds it ready.
    recipe_outputs = [*form.generation_inputs.values(), form.randomize_seed, form.size, recipe_note, recipe_file]
    recipe_file.upload(
        _recipe_handler(services, form, recipe_note, recipe_file),
        recipe_file,
        recipe_outputs,
        api_visibility="private",
        concurrency_limit=None,  # reads a few text chunks; queued so that a refusal shows its sentence
        show_progress="hidden",
    )


def _recipe_handler(
    services: PageServices, form: CreateForm, recipe_note: gr.Markdown, recipe_file: gr.File
) -> Callable[..., dict[Any, Any]]:
    def remix_picture(upload: Any, http_request: gr.Request | None = None) -> dict[Any, Any]:
        if not upload:
            return {recipe_note: ""}
        try:
            found = services.service.recipe(Path(upload), visitor_or_none(services, http_request))
        except Refusal as error:
            # Said where the drop's answer is read, and the box emptied for the next try; the form is unchanged.
            return {recipe_note: f"⚠️ {error.message}", recipe_file: None}
        values: dict[Any, Any] = {form.generation_inputs[name]: value for name, value in found.values.items()}
        values[recipe_file] = None
        values[form.randomize_seed] = "seed" not in found.values  # its seed remakes the picture, as Remix does
        if "width" in found.values or "height" in found.values:
            width = found.values.get("width", DEFAULTS.width)
            values[form.size] = dimensions_to_size(width, found.values.get("height", DEFAULTS.height))
        values[recipe_note] = found.note
        return values

    return remix_picture


def logo_colours_choice(services: PageServices) -> list[tuple[str, str]]:
    """ "Colours of my logo" among the brand colours, where logos can be uploaded."""
    return [(LOGO_COLOURS, LOGO_COLOURS)] if services.service.logos is not None else []


def _model_prompt_handler(services: PageServices) -> Callable[..., str]:
    def model_prompt(
        prompt: Any, negative_prompt: Any, style: Any, brand: Any, logo: Any, http_request: gr.Request | None = None
    ) -> str:
        uploaded = isinstance(logo, str) and logo and based_on_mascot(logo) is None
        if uploaded and not services.service.may_use_logo(logo, visitor_or_none(services, http_request)):
            logo = ""  # another browser's upload: "Colours of my logo" must not tell its colours
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
        return f"(Generate would refuse this: {error.for_people})"
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
    return secrets.randbelow(MAX_SEED + 1) if randomize_seed is True else seed  # raw: "false" is not a yes


def _start_generation_handler(services: PageServices) -> Callable[..., tuple[Any, Any, Any, bool]]:
    def start_generation(
        seed: Any = None, randomize_seed: Any = False, http_request: gr.Request | None = None, **values: Any
    ) -> tuple[Any, Any, Any, bool]:
        """The page's first step of a click: the status line (why it will be refused, every sentence in people's
        words; or empty, a finished run's line making way for the new run's), the seed to use (drawn when asked) and
        Cancel, both left as they are when it will be refused; and that /generate speaks the page's words."""
        try:  # a check that breaks says so in a sentence, as the validator does (CHECK_FAILED, its cause logged)
            answers_in_sentences(admit)(services, http_request, {**values, "seed": seed})
        except Refusal as error:
            return NOT_STARTED + plain(error.for_people), gr.skip(), gr.skip(), True
        return "", pick_seed(seed, randomize_seed), gr.Button(visible=True), True

    return start_generation


def _generation_validator(services: PageServices, names: list[str]) -> Callable[..., list[dict[str, Any]]]:
    """Refusals that cost nothing run before the job takes a queue slot, every failing field marked at once: in the
    page's words (its labels) when the page's first step asked for them, in the API's parameter names otherwise."""

    @answers_in_sentences
    def validate_generation(
        http_request: gr.Request | None = None, in_pages_words: Any = False, **values: Any
    ) -> list[dict[str, Any]]:
        try:
            admit(services, http_request, values)
        except Refusal as error:
            return field_messages(names, error, for_people=in_pages_words is True)
        return [gr.validate(True, "") for _ in names]

    return validate_generation


def admit(services: PageServices, http_request: gr.Request | None, values: dict[str, Any]) -> None:
    """The service's admission of a generation for the asking browser: raises Refusal when it would be refused."""
    services.service.admit(values, visitor_or_none(services, http_request))


def field_messages(names: list[str], error: Refusal, *, for_people: bool) -> list[dict[str, Any]]:
    """One gr.validate per input: each failing field gets its own sentences; a refusal about no one field (quota,
    a job in flight) goes on the idea box."""
    messages: dict[str, list[str]] = {}
    for problem in error.problems:
        field = SHOWN_ON.get(problem.parameter, problem.parameter)
        messages.setdefault(field, []).append(problem.for_people if for_people else problem.message)
    if not messages:
        messages[SHOWN_ON.get(error.parameter or "prompt", error.parameter or "prompt")] = [
            error.for_people if for_people else error.message
        ]
    return [gr.validate(name not in messages, " ".join(messages.get(name, []))) for name in names]


def adapter_controls(services: PageServices) -> tuple[Any, Any]:
    """The adapter picker and strength slider as the loaded model allows: hidden when it has no adapters."""
    adapters = services.service.adapters()
    if adapters is None:
        return gr.skip(), gr.skip()
    choices = [NO_ADAPTER, *((name, name) for name in adapters)]
    visible = bool(adapters)
    return gr.Dropdown(choices=choices, visible=visible), gr.Slider(visible=visible)


GENERATE_DOC = """Make 1-4 mascots from a prompt; returns the saved PNG files and a status line.

    Args:
        prompt: the idea, in words: what the mascot is ("a cheerful otter holding a wrench").
        negative_prompt: what the mascots should not show ("" for nothing).
        seed: a whole number from 0 to 2**32 - 1; image i is made from seed + i, and the same seed and settings
            make the same mascot again.
        width: the width in pixels, a multiple of 64 from 256 to 1024.
        height: the height in pixels, a multiple of 64 from 256 to 1024.
        num_images_per_prompt: how many mascots to make at once, 1 to 4; each counts against today's quota.
        num_inference_steps: the decoder's denoising steps, 1 to 150 (fewer is faster, 50 is the default).
        guidance_scale: how closely the decoder follows the words, 1 to 20.
        prior_num_inference_steps: the prior's steps turning the words into a picture idea, 2 to 100.
        prior_guidance_scale: the prior's guidance, 1 to 20 (1 turns it off).
        style: a style preset's name, wrapped around the idea: "Sticker", "Kawaii 3D", "Pixel art", ... ("" for the
            idea as written; the page's Style choices are the names).
        brand: a colour preset's name added to the idea: "Ocean blue", "Monochrome", ... ("" for none; "Colours of
            my logo" needs `logo`).
        logo: the id upload_logo returned for an uploaded logo, mixed into the look ("" for none).
        logo_weight: how much of the logo goes into the look, 0 (the words alone) to 1 (the logo alone).
        adapter_name: the LoRA adapter to use ("" for the base model; the model banner names the loaded ones).
        lora_scale: the adapter's strength, 0 to 2.
"""  # Gradio reads it for the API docs and the MCP tool (its Args: describe each parameter)


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
        in_pages_words: Any = False,  # the page's State, for the validator's wording: not a parameter of the API
        http_request: gr.Request | None = None,  # filled in by Gradio
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's documented way to receive progress
    ) -> Iterator[tuple[Any, str]]:
        values = locals()  # the parameters, named as GenerationRequest's fields (the API's keyword names)
        try:
            who = visitor_or_none(services, http_request)
            job = services.service.submit(values, who)
        except Refusal as error:
            raise refused(error) from None
        page = who.page_url if who is not None else DEFAULT_PAGE_URL  # submit refuses a browser without a cookie
        services.service.run_here(job)  # ZeroGPU: this handler runs it, in @spaces.GPU (elsewhere: returns at once)
        yield from relay_job(job, progress, lambda public_id: image_url(page, public_id))

    generate.__doc__ = GENERATE_DOC
    return generate


def follow_own_mascot_on_load(services: PageServices, demo: gr.Blocks, form: CreateForm) -> None:
    """A page opened again (reloaded, or a second tab) while its browser's mascot is queued or being made follows it
    as the click that started it did: the progress, Cancel, then the mascots. Without this the page showed nothing of
    it, and Generate said "wait for it to finish or cancel it" with no Cancel to press."""
    demo.load(
        _follow_handler(services),
        outputs=[form.cancel_button, form.gallery, form.status, form.quota_note],
        concurrency_limit=None,  # it only relays, as /generate does: never waits behind the GPU
        api_visibility="private",
        show_progress="minimal",
        show_progress_on=form.gallery,
    )


def _follow_handler(services: PageServices) -> Callable[..., Iterator[tuple[Any, ...]]]:
    def follow_own_mascot(
        http_request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's documented way to receive progress
    ) -> Iterator[tuple[Any, ...]]:
        who = visitor_or_none(services, http_request)
        if who is None:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        with services.service.following_own_job(who) as job:
            if job is None:
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip()  # nearly every load: nothing under way
                return
            yield gr.Button(visible=True), gr.skip(), progress_message(job.snapshot), gr.skip()
            page = who.page_url
            try:
                for gallery, status in relay_job(job, progress, lambda public_id: image_url(page, public_id)):
                    yield gr.skip(), gallery, status, gr.skip()
            except gr.Error as failed:  # on the status line, where the click's own failure would have been shown
                yield gr.Button(visible=False), gr.skip(), failed.message, services.service.quota_line(who)
                return
        yield gr.Button(visible=False), gr.skip(), gr.skip(), services.service.quota_line(who)

    return follow_own_mascot


def _cancel_handler(services: PageServices) -> Callable[..., str]:
    def cancel(http_request: gr.Request | None = None) -> str:
        """Cancel this browser's queued or running generation."""
        return "Cancelling…" if services.service.cancel(visitor(services, http_request)) else "Nothing to cancel."

    return cancel


def _finished_handler(services: PageServices) -> Callable[..., tuple[str, Any, Any]]:
    def finished(based_on: Any = "", images: Any = 1, http_request: gr.Request | None = None) -> tuple[str, Any, Any]:
        """After a generation (done, cancelled or failed): the quota left, Cancel hidden again, and, while a mascot
        is the starting point, what the next Generate costs out of what is left now."""
        who = visitor(services, http_request)
        note = _based_on_note_now(services, based_on, images, who)
        return services.service.quota_line(who), gr.Button(visible=False), note

    return finished


def _based_on_note_now(services: PageServices, based_on: Any, images: Any, who: Visitor) -> Any:
    share_id = based_on_mascot(based_on) if isinstance(based_on, str) else None
    if share_id is None or not isinstance(images, int | float) or isinstance(images, bool):
        return gr.skip()
    try:
        entry = services.service.open(share_id, who)
    except Refusal:
        return gr.skip()  # private now or deleted: the next Generate says so
    return based_on_note(entry.request.prompt, int(images), services.service.mascots_left_today(who))


def quota_handler(services: PageServices) -> Callable[..., str]:
    def quota(http_request: gr.Request | None = None) -> str:
        """How many mascots this browser may still make today (fewer when its network's quota is nearly spent), and
        when that resets."""
        return services.service.quota_line(visitor(services, http_request))

    return quota
