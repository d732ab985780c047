"""Mix in your logo: the upload (checked and kept by the LogoLibrary) and how much of its look to take."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from mascot.prompt.logos import LogoRefused
from mascot.prompt.palette import spoken_list
from mascot.prompt.presets import LOGO_COLOURS
from mascot.prompt.request import PARAMETER_LABELS
from mascot.service import Refusal
from mascot.ui.common import DEFAULTS, PageServices, range_info, refused, visitor_or_none


def logo_fields(
    services: PageServices, generation_inputs: dict[str, gr.components.Component]
) -> tuple[gr.Accordion, gr.Image]:
    """Mix in your logo: upload (checked and kept by the LogoLibrary), then how much of its look to take."""
    logos_kept = services.service.logos is not None
    with gr.Accordion("Mix in your logo (optional)", open=False, visible=logos_kept) as logo_panel:
        # One above the other: the form's column is narrow, and the slider's info line needs the width.
        logo_image = gr.Image(
            label="Your logo",
            type="filepath",
            sources=["upload", "clipboard"],
            height=180,
            elem_id="logo-image",
        )
        colours_note = gr.Markdown(elem_id="logo-colours")  # the logo's colours, once there is one
        logo_weight = gr.Slider(
            label=PARAMETER_LABELS["logo_weight"],
            minimum=0,
            maximum=1,
            step=0.05,
            value=DEFAULTS.logo_weight,
            info=range_info("logo_weight", "how much of the logo's look to mix in"),
            elem_id="logo-weight",
        )
        logo = gr.Textbox(value=DEFAULTS.logo, visible=False, label="logo")
    generation_inputs["logo"] = logo
    generation_inputs["logo_weight"] = logo_weight
    logo_image.upload(
        _upload_logo_handler(services),
        logo_image,
        logo,
        api_name="upload_logo",  # queued: only then does the page show why a file was refused (see ui/detail.py)
        preprocess=False,  # Gradio's own decoding would answer a bad file with a generic error; ours says why
    ).failure(  # a refused file leaves the box empty, not showing a broken picture as if a logo were loaded
        lambda: (None, ""), None, [logo_image, logo], queue=False, api_visibility="private", show_progress="hidden"
    )
    logo_image.clear(lambda: "", None, logo, queue=False, api_visibility="private")
    # Whichever way the logo changes (upload, clear, Remix), say which colours "Colours of my logo" would add.
    logo.change(_colours_note_handler(services), logo, colours_note, queue=False, api_visibility="private")
    return logo_panel, logo_image


def _colours_note_handler(services: PageServices) -> Callable[..., str]:
    def colours_note(logo_id: Any, http_request: gr.Request | None = None) -> str:
        if services.service.logos is None or not isinstance(logo_id, str) or not logo_id:
            return ""
        if not services.service.may_use_logo(logo_id, visitor_or_none(services, http_request)):
            return ""  # another browser's upload (its id is in its mascots' parameters): its colours are its own
        names = services.service.logos.colour_names(logo_id)
        if not names:
            return ""
        return (
            f"Its colours: {spoken_list(names)}. Pick **{LOGO_COLOURS}** under Brand colours to give your mascot these."
        )

    return colours_note


def _upload_logo_handler(services: PageServices) -> Callable[..., str]:
    def upload_logo(image: Any, http_request: gr.Request | None = None) -> str:
        """Keep an uploaded logo and return its id, for /generate's `logo`."""
        try:
            upload = uploaded_file(image) if image else None
            return services.service.upload_logo(upload, visitor_or_none(services, http_request))
        except LogoRefused as error:  # the payload names no upload (the file itself is the service's to check)
            raise gr.Error(str(error), print_exception=False) from None
        except Refusal as error:
            raise refused(error) from None

    return upload_logo


def uploaded_file(payload: Any) -> Path:
    """The file behind a raw upload payload ({"path": ...}). Without Gradio's preprocessing nothing else checks it,
    so only a file inside Gradio's upload folder is accepted: a client cannot name /etc/passwd or our database."""
    path = payload.get("path") if isinstance(payload, dict) else None
    if isinstance(path, str) and "\x00" not in path:  # a NUL byte: no file's name, and os calls raise on it
        resolved = Path(path).resolve()
        if resolved.is_relative_to(Path(get_upload_folder()).resolve()) and resolved.is_file():
            return resolved
    raise LogoRefused("That upload could not be found: upload your logo again.")
