"""How the page shows a stored picture: by the URL of its checking route (mascot.web.images), never by its file, so
that Gradio keeps no copy in its cache (served there to anyone who has the URL, long after the mascot went private)."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
from gradio.data_classes import ImageData

from mascot.store.entries import MascotEntry
from mascot.store.export import file_name
from mascot.web.images import image_url

__all__ = ["download_link", "linked_image", "picture_url"]


def linked_image(**options: Any) -> gr.Image:
    """gr.Image for a picture given by URL. Gradio's Image would fetch an http URL on the server and cache the copy
    (without the browser's cookie, so our route would refuse a private mascot); this one hands the URL to the browser
    as it is, as gr.Gallery does, and the browser fetches it with its cookie. Other values are shown as gr.Image
    shows them."""
    image = gr.Image(**options)
    plain = image.postprocess

    def postprocess(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return ImageData(path=value, url=value, orig_name=value.rsplit("/", 1)[-1], mime_type="image/png")
        return plain(value)

    # On the instance, not in a subclass: Gradio writes a .pyi file next to the module of every Component subclass.
    image.postprocess = postprocess  # type: ignore[method-assign]
    return image


def picture_url(page_url: str, entry: MascotEntry) -> str:
    """The mascot's full picture by its checking route, under the page's address (Visitor.page_url)."""
    return image_url(page_url, entry.public_id)


def download_link(page_url: str, entry: MascotEntry) -> str:
    """ "Download PNG" as a link to the same checking route, asking for an attachment under the one download name
    (store.export.file_name): the route checks on every request that the browser may still see it."""
    source = html.escape(f"{picture_url(page_url, entry)}?download=1")
    name = html.escape(file_name(entry))
    return f'<a class="download-link" href="{source}" download="{name}">⬇ Download PNG</a>'
