"""How the page shows a stored picture: by the URL of its checking route (mascot.web.images), never by its file, so
that Gradio keeps no copy in its cache (served there to anyone who has the URL, long after the mascot went private)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import gradio as gr
from gradio import component_meta
from gradio.data_classes import FileData, ImageData

from mascot.store.entries import MascotEntry
from mascot.store.export import file_name
from mascot.web.images import image_url

__all__ = ["LinkedDownload", "LinkedImage", "download", "picture_url"]


@contextlib.contextmanager
def no_interface_files() -> Iterator[None]:
    """Gradio's ComponentMeta writes a .pyi file next to the module of every Component subclass it sees defined (for
    custom component packages); these two subclasses need none, and the source tree may be read-only."""
    write = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *_args: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = write


# Subclasses, not instances with a replaced method: Gradio rebuilds a component from its constructor's arguments when
# an update changes its properties in a session, which would drop a method set on the instance.
with no_interface_files():

    class LinkedImage(gr.Image):
        """gr.Image for a picture given by URL. Gradio's Image would fetch an http URL on the server and cache the
        copy (without the browser's cookie, so our route would refuse a private mascot); this one hands the URL to
        the browser as it is, as gr.Gallery does, and the browser fetches it with its cookie. Other values are shown
        as gr.Image shows them."""

        def get_block_name(self) -> str:
            return "image"  # drawn by gr.Image's own component in the page

        def postprocess(self, value: Any) -> Any:
            if isinstance(value, str) and value.startswith(("http://", "https://")):
                return ImageData(path=value, url=value, orig_name=value.rsplit("/", 1)[-1], mime_type="image/png")
            return super().postprocess(value)

    class LinkedDownload(gr.DownloadButton):
        """gr.DownloadButton for a file given as (URL, download name): the browser fetches the URL with its cookie,
        and Gradio neither fetches nor caches it (see LinkedImage). Other values are offered as gr.DownloadButton
        offers them."""

        def get_block_name(self) -> str:
            return "downloadbutton"

        def postprocess(self, value: Any) -> Any:
            if isinstance(value, tuple):
                url, name = value
                return FileData(path=url, url=url, orig_name=name, mime_type="image/png")
            return super().postprocess(value)


def picture_url(page_url: str, entry: MascotEntry) -> str:
    """The mascot's full picture by its checking route, under the page's address (Visitor.page_url)."""
    return image_url(page_url, entry.public_id)


def download(page_url: str, entry: MascotEntry) -> tuple[str, str]:
    """What LinkedDownload offers for "Download PNG": the same checking route, asking for an attachment, and the one
    download name (store.export.file_name). The route checks on every request that the browser may still see it."""
    return f"{picture_url(page_url, entry)}?download=1", file_name(entry)
