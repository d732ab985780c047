"""More like this, in the Create form: "Based on <mascot>", what it costs, and a way to remove it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from mascot.ui.common import plain, plural


@dataclass(frozen=True)
class BasedOn:
    """The mascot the next generations start from. It travels as the request's `logo` (the one picture a request
    mixes in), by its share id ("mascot:<id>": the app reads its picture when the job runs, if this browser may still
    see it, and copies it nowhere), and the page shows it here, not in the logo upload, whose colours note would name
    it a logo."""

    row: gr.Row  # shown while a mascot is the starting point
    note: gr.Markdown  # "Based on “…”", and what Generate will cost
    remove: gr.Button
    picture: gr.Textbox  # hidden: "mascot:<share id>" (equal to the form's `logo` while it applies)


def based_on_row() -> BasedOn:
    """Hidden until More like this is pressed in a mascot's panel."""
    with gr.Row(visible=False, elem_id="based-on", equal_height=True) as row:
        note = gr.Markdown(elem_id="based-on-note")
        remove = gr.Button("✕ Remove", size="sm", scale=0, min_width=110, elem_id="based-on-remove")
    picture = gr.Textbox(visible=False, label="based on")
    return BasedOn(row, note, remove, picture)


def wire_based_on(based_on: BasedOn, logo: gr.Textbox) -> None:
    """Remove takes the mascot out of the request; a logo uploaded or cleared in its place ends it as well."""
    based_on.remove.click(
        lambda: ("", "", gr.Row(visible=False)),
        outputs=[logo, based_on.picture, based_on.row],
        queue=False,
        api_visibility="private",
    )
    logo.change(
        _still_based_on,
        [logo, based_on.picture],
        [based_on.picture, based_on.row],
        queue=False,
        show_progress="hidden",
        api_visibility="private",
    )


def _still_based_on(logo: str | None, picture: str | None) -> tuple[Any, Any]:
    if picture and logo == picture:
        return gr.skip(), gr.skip()
    return "", gr.Row(visible=False)


def based_on_note(idea: str, images: int, left_today: int) -> str:
    """What the row says: which mascot, and what Generate will cost out of today's quota."""
    return (
        f"**Based on** “{plain(idea)}”: Generate makes {plural(images, 'new mascot')} like it, "
        f"{images} of the {plural(left_today, 'mascot')} you have left today."
    )


def based_on_values(based_on: BasedOn, picture_id: str, note: str) -> dict[Any, Any]:
    return {based_on.row: gr.Row(visible=True), based_on.note: note, based_on.picture: picture_id}


def no_based_on_values(based_on: BasedOn) -> dict[Any, Any]:
    return {based_on.row: gr.Row(visible=False), based_on.picture: ""}
