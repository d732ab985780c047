"""How the page shows a stored picture, a sticker or a ZIP: by the URL of its checking route (mascot.web.images),
never by its file, so that Gradio keeps no copy in its cache (served there to anyone who has the URL, long after the
mascot went private)."""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import gradio as gr
from gradio import component_meta
from gradio.components.gallery import GalleryData, GalleryImage
from gradio.data_classes import FileData, ImageData
from PIL import Image

from mascot.store.entries import MascotEntry
from mascot.store.export import file_name
from mascot.web.images import export_url, image_url, sticker_url

__all__ = [
    "LinkedDownload",
    "LinkedFile",
    "LinkedImage",
    "PreviewGallery",
    "download",
    "picture_url",
    "sticker_download",
    "zip_download",
]


PREVIEW_SIDE = 384  # a preview is for watching the steps: a few kB a message, not a second download


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
            return linked_file(value) if isinstance(value, tuple) else super().postprocess(value)

    class LinkedFile(gr.File):
        """gr.File for a file given as (URL, download name), what an API client gets (see LinkedDownload): the
        client fetches it through /gradio_api/file=<URL>, which mascot.web.images answers with the client's cookie."""

        def get_block_name(self) -> str:
            return "file"

        def postprocess(self, value: Any) -> Any:
            return linked_file(value) if isinstance(value, tuple) else super().postprocess(value)

    class PreviewGallery(gr.Gallery):
        """gr.Gallery that sends pictures held in memory (a running job's previews) inside the event's message as
        data: URLs, so that Gradio writes no file of them into its cache (where anyone with the URL could fetch it);
        URLs and other values are shown as gr.Gallery shows them."""

        _schema: ClassVar[dict[str, Any] | None] = None
        _own_schema: dict[str, Any] | None = None

        def get_block_name(self) -> str:
            return "gallery"

        def api_info(self) -> dict[str, Any]:
            # Gradio builds the output's component anew for every gr.skip() sent to it (each progress message of a
            # job) and asks the new one for its API schema: about 3 ms of pydantic per message on the server's event
            # loop, while the worker's thread waits for the GIL to feed the GPU. The schema is the class's, not the
            # instance's, so it is made once; each instance keeps its own copy, as with Gradio's own per-instance cache.
            if PreviewGallery._schema is None:
                PreviewGallery._schema = super().api_info()
            if self._own_schema is None:
                self._own_schema = copy.deepcopy(PreviewGallery._schema)
            return self._own_schema

        def postprocess(self, value: Any) -> Any:
            if isinstance(value, list) and value and all(isinstance(item, Image.Image) for item in value):
                return GalleryData(root=[GalleryImage(image=inline_image(item)) for item in value])
            return super().postprocess(value)


def inline_image(picture: Image.Image) -> ImageData:
    """A small picture as a data: URL (no path: nothing for Gradio to copy); at most PREVIEW_SIDE a side."""
    small = picture.copy()
    small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, format="WEBP", quality=80)
    url = "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return ImageData(path=None, url=url, mime_type="image/webp")


def linked_file(value: tuple[str, str]) -> FileData:
    """A file the browser fetches by URL itself: `url` in both fields, so Gradio neither fetches nor caches it."""
    url, name = value
    return FileData(path=url, url=url, orig_name=name, mime_type=mimetypes.guess_type(name)[0])


def picture_url(page_url: str, entry: MascotEntry) -> str:
    """The mascot's full picture by its checking route, under the page's address (Visitor.page_url)."""
    return image_url(page_url, entry.public_id)


def download(page_url: str, entry: MascotEntry) -> tuple[str, str]:
    """What LinkedDownload offers for "Download PNG": the same checking route, asking for an attachment, and the one
    download name (store.export.file_name). The route checks on every request that the browser may still see it."""
    return f"{picture_url(page_url, entry)}?download=1", file_name(entry)


def sticker_download(page_url: str, entry: MascotEntry) -> tuple[str, str]:
    """What LinkedDownload and the API's file offer for a sticker: its checking route, and its download name."""
    return sticker_url(page_url, entry.public_id), file_name(entry, "sticker")


def zip_download(page_url: str, zip_path: Path) -> tuple[str, str]:
    """A browser's ZIP by its route (its owner's cookie only), and its name."""
    return export_url(page_url, zip_path), zip_path.name
