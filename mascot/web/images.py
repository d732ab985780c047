"""The only way a mascot's picture leaves the server: `/images/<share id>.png` and `.thumb.webp`, checked on every
request, and the middleware that answers Gradio's file route for those URLs the same way.

A picture is served while its mascot is public and not taken down, or to its owner (the identity cookie, resolved
through linked devices); every other request gets 404, the same answer as for an id that never existed, so that a
private mascot's id cannot be told from a made-up one. Gradio never holds a copy: the page's galleries show these
URLs (an http URL in a gr.Gallery is handed to the browser as it is, not copied into Gradio's cache), and
`gradio_client`, which fetches every file through `/gradio_api/file=<url>`, is answered here with its own cookie.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from mascot.store.entries import MascotEntry
from mascot.store.export import file_name
from mascot.web.identity import ASGIApp, Receive, Scope, Send

IMAGE_PREFIX = "/images/"
IMAGE_ROUTE = IMAGE_PREFIX + "{public_id}.png"
THUMBNAIL_ROUTE = IMAGE_PREFIX + "{public_id}.thumb.webp"
# A share id (store.PUBLIC_ID_PATTERN) and which file of it.
IMAGE_PATH = re.compile(r"/images/([A-Za-z0-9_-]{12})\.(png|thumb\.webp)")
GRADIO_FILE_PREFIX = "/gradio_api/file="
NOT_FOUND = "No mascot you may see has this id."
# Revalidate every time: a picture made private must not be shown from a cache (the browser's or a proxy's).
CACHE_CONTROL = "private, no-cache"

Kind = Literal["image", "thumbnail"]
# The mascot by share id as the request's browser may see it (public, or its own); None otherwise.
VisibleMascot = Callable[[str, Request], MascotEntry | None]


def image_path(public_id: str) -> str:
    """The full image's path under the page's root."""
    return IMAGE_ROUTE.format(public_id=public_id)


def thumbnail_path(public_id: str) -> str:
    return THUMBNAIL_ROUTE.format(public_id=public_id)


def image_url(root_url: str, public_id: str) -> str:
    """The full image's absolute URL (Gradio hands only http URLs to the browser untouched)."""
    return root_url.rstrip("/") + image_path(public_id)


def thumbnail_url(root_url: str, public_id: str) -> str:
    return root_url.rstrip("/") + thumbnail_path(public_id)


def visible_mascot(
    mascot: Callable[[str, str | None], MascotEntry | None], owner_of: Callable[[Any], str | None]
) -> VisibleMascot:
    """A VisibleMascot from the store's `mascot(public_id, viewer)` and the page's `owner_of(request)`."""

    def lookup(public_id: str, request: Request) -> MascotEntry | None:
        return mascot(public_id, owner_of(request))

    return lookup


def image_routes(lookup: VisibleMascot, images_dir: Path) -> list[Route]:
    """The Starlette routes of the full image and the thumbnail."""
    return [
        Route(IMAGE_ROUTE, image_endpoint(lookup, images_dir, "image"), methods=["GET", "HEAD"]),
        Route(THUMBNAIL_ROUTE, image_endpoint(lookup, images_dir, "thumbnail"), methods=["GET", "HEAD"]),
    ]


def image_endpoint(lookup: VisibleMascot, images_dir: Path, kind: Kind) -> Callable[[Request], Response]:
    """One route's endpoint: the file when the asking browser may see the mascot now, else 404."""
    images_root = images_dir.resolve()

    # A plain function: Starlette runs it in its thread pool, so the database query never blocks the event loop.
    def serve_image(request: Request) -> Response:
        public_id = str(request.path_params.get("public_id", ""))
        entry = lookup(public_id, request)
        path = file_of(entry, kind)
        if path is None or not path.is_relative_to(images_root) or not path.is_file():
            return PlainTextResponse(NOT_FOUND, status_code=404, headers={"Cache-Control": "no-store"})
        return FileResponse(
            path,
            media_type="image/png" if kind == "image" else "image/webp",
            headers={"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
            # The one download name (store.export.file_name), as the sticker and the ZIP name it.
            filename=file_name(entry) if entry is not None and request.query_params.get("download") else None,
        )

    return serve_image


def file_of(entry: MascotEntry | None, kind: Kind) -> Path | None:
    """The file to send: the image, or its thumbnail (the image itself when it has none)."""
    if entry is None:
        return None
    chosen = entry.path if kind == "image" or entry.thumbnail_path is None else entry.thumbnail_path
    return chosen.resolve()


def image_route_of(gradio_file_path: str) -> str | None:
    """`/images/<id>.<kind>` when a `/gradio_api/file=` request names one of our image URLs; None otherwise."""
    if not gradio_file_path.startswith(GRADIO_FILE_PREFIX):
        return None
    named = unquote(gradio_file_path.removeprefix(GRADIO_FILE_PREFIX))
    if not named.lower().startswith(("http://", "https://")):
        return None
    path = urlsplit(named).path
    return path if IMAGE_PATH.fullmatch(path) else None


class ImageFileMiddleware:
    """Pure ASGI: `gradio_client` downloads every file of a result through `/gradio_api/file=<its URL>`, which for
    an http URL would make Gradio fetch it itself, without the browser's cookie. For our image URLs the request goes
    to our own route instead, with the caller's cookie, so the same check applies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = image_route_of(str(scope.get("path", ""))) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        await self.app({**scope, "path": route, "raw_path": route.encode(), "query_string": b""}, receive, send)
