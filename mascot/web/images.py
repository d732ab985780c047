"""The only way a mascot's picture leaves the server: `/images/<share id>.png`, `.thumb.webp` and `.sticker.png`,
checked on every request; a browser's ZIPs at `/downloads/<key>/<name>`, for that browser alone; and the middleware
that answers Gradio's file route for those URLs the same way.

A picture is served while its mascot is public and not taken down, or to its owner (the identity cookie, resolved
through linked devices); every other request gets 404, the same answer as for an id that never existed, so that a
private mascot's id cannot be told from a made-up one (a ZIP is its owner's only: a stranger gets 404 even for one
of public mascots). Gradio never holds a copy: the page's galleries show these
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

from mascot.store.export import file_name
from mascot.store.pictures import PictureFiles
from mascot.web.identity import ASGIApp, Receive, Scope, Send

IMAGE_PREFIX = "/images/"
IMAGE_ROUTE = IMAGE_PREFIX + "{public_id}.png"
THUMBNAIL_ROUTE = IMAGE_PREFIX + "{public_id}.thumb.webp"
STICKER_ROUTE = IMAGE_PREFIX + "{public_id}.sticker.png"
EXPORT_ROUTE = "/downloads/{key}/{name}"
# A share id (store.PUBLIC_ID_PATTERN) and which file of it; or one of a browser's ZIPs.
IMAGE_PATH = re.compile(r"/images/([A-Za-z0-9_-]{12})\.(png|thumb\.webp|sticker\.png)|/downloads/[0-9a-f]{32}/[\w.-]+")
IMAGE_PATH_AT_END = re.compile(f"(?:{IMAGE_PATH.pattern})$")
GRADIO_FILE_PREFIX = "/gradio_api/file="
NOT_FOUND = "No mascot you may see has this id."
NOT_OURS = "This server serves its own mascots' files only."
STICKER_NOT_KEPT = "This sticker is no longer kept: press “Make a transparent sticker” again."
EXPORT_NOT_FOUND = "No ZIP of yours has this address: press “Download all (ZIP)” again."
# Revalidate every time: a picture made private must not be shown from a cache (the browser's or a proxy's).
CACHE_CONTROL = "private, no-cache"
HEADERS = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}

Kind = Literal["image", "thumbnail", "sticker"]
MEDIA_TYPES: dict[Kind, str] = {"image": "image/png", "thumbnail": "image/webp", "sticker": "image/png"}
# The mascot's files by share id when the request's browser may see it now (public, or its own); None otherwise.
VisiblePicture = Callable[[str, Request], PictureFiles | None]
# A mascot's sticker, when one is kept (service.downloads); the route checks the mascot first.
KeptSticker = Callable[[str], Path | None]
# The request's browser's own ZIP by its key and file name; None for anyone else's or none.
OwnExport = Callable[[Request, str, str], Path | None]


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


def sticker_url(root_url: str, public_id: str) -> str:
    """The sticker's URL, as an attachment (it is only ever downloaded)."""
    return root_url.rstrip("/") + STICKER_ROUTE.format(public_id=public_id) + "?download=1"


def export_url(root_url: str, zip_path: Path) -> str:
    """A ZIP's URL from where service.downloads keeps it (`.../<key>/<name>`): only its owner's cookie opens it."""
    return root_url.rstrip("/") + EXPORT_ROUTE.format(key=zip_path.parent.name, name=zip_path.name)


def visible_picture(
    picture: Callable[[str, str | None], PictureFiles | None], token_of: Callable[[Any], str | None]
) -> VisiblePicture:
    """A VisiblePicture from the store's `visible_picture(public_id, token hash)` and the cookie's `token_of`."""

    def lookup(public_id: str, request: Request) -> PictureFiles | None:
        return picture(public_id, token_of(request))

    return lookup


def image_routes(lookup: VisiblePicture, images_dir: Path, sticker: KeptSticker, export: OwnExport) -> list[Route]:
    """The Starlette routes of the full image, the thumbnail, the sticker and a browser's ZIP."""
    methods = ["GET", "HEAD"]
    return [
        # Before the image's route, whose {public_id} would also match "<id>.sticker".
        Route(STICKER_ROUTE, sticker_endpoint(lookup, sticker), methods=methods),
        Route(IMAGE_ROUTE, image_endpoint(lookup, images_dir, "image"), methods=methods),
        Route(THUMBNAIL_ROUTE, image_endpoint(lookup, images_dir, "thumbnail"), methods=methods),
        Route(EXPORT_ROUTE, export_endpoint(export), methods=methods),
    ]


def image_endpoint(lookup: VisiblePicture, images_dir: Path, kind: Kind) -> Callable[[Request], Response]:
    """One route's endpoint: the file when the asking browser may see the mascot now, else 404."""
    images_root = images_dir.resolve()

    # A plain function: Starlette runs it in its thread pool, so the database query never blocks the event loop.
    def serve_image(request: Request) -> Response:
        picture = lookup(str(request.path_params.get("public_id", "")), request)
        path = file_of(picture, kind)
        if picture is None or path is None or not path.is_relative_to(images_root) or not path.is_file():
            return not_found(NOT_FOUND)
        return _file(path, kind, request, picture)

    return serve_image


def sticker_endpoint(lookup: VisiblePicture, sticker: KeptSticker) -> Callable[[Request], Response]:
    """The sticker while the asking browser may see its mascot now (checked first, on every request), else 404."""

    def serve_sticker(request: Request) -> Response:
        picture = lookup(str(request.path_params.get("public_id", "")), request)
        if picture is None:
            return not_found(NOT_FOUND)
        path = sticker(picture.public_id)
        if path is None:
            return not_found(STICKER_NOT_KEPT)
        return _file(path, "sticker", request, picture)

    return serve_sticker


def export_endpoint(export: OwnExport) -> Callable[[Request], Response]:
    """A ZIP to the browser that made it (its cookie, linked devices resolved); 404 to anyone else."""

    def serve_export(request: Request) -> Response:
        name = str(request.path_params.get("name", ""))
        path = export(request, str(request.path_params.get("key", "")), name)
        if path is None:
            return not_found(EXPORT_NOT_FOUND)
        return FileResponse(path, media_type="application/zip", headers=HEADERS, filename=name)

    return serve_export


def _file(path: Path, kind: Kind, request: Request, picture: PictureFiles) -> Response:
    # The one download name (store.export.file_name), as the ZIP names its entries.
    wanted = request.query_params.get("download")
    name = file_name(picture, "sticker" if kind == "sticker" else "") if wanted else None
    return FileResponse(path, media_type=MEDIA_TYPES[kind], headers=HEADERS, filename=name)


def not_found(sentence: str) -> Response:
    return PlainTextResponse(sentence, status_code=404, headers={"Cache-Control": "no-store"})


def file_of(picture: PictureFiles | None, kind: Kind) -> Path | None:
    """The file to send: the image, or its thumbnail (the image itself when it has none)."""
    if picture is None:
        return None
    chosen = picture.path if kind == "image" or picture.thumbnail_path is None else picture.thumbnail_path
    return chosen.resolve()


def named_url(gradio_file_path: str) -> str | None:
    """The http(s) URL a `/gradio_api/file=` request names; None for a file path or another route."""
    if not gradio_file_path.startswith(GRADIO_FILE_PREFIX):
        return None
    named = unquote(gradio_file_path.removeprefix(GRADIO_FILE_PREFIX))
    return named if named.lower().startswith(("http://", "https://")) else None


def image_route_of(url: str) -> str | None:
    """`/images/<id>.<kind>` (or a ZIP's route) when the URL a `/gradio_api/file=` request names (named_url) is one
    of our image URLs, also under a public address with a path (MASCOT_PUBLIC_URL=https://host/mascots/); None
    otherwise."""
    found = IMAGE_PATH_AT_END.search(urlsplit(url).path)
    return found.group(0) if found else None


class ImageFileMiddleware:
    """Pure ASGI: `gradio_client` downloads every file of a result through `/gradio_api/file=<its URL>`, which for
    an http URL would make Gradio fetch it itself, without the browser's cookie. For our image URLs the request goes
    to our own route instead, with the caller's cookie, so the same check applies. Any other URL is refused: Gradio
    would fetch any public site's file for anyone and stream it back, a free proxy under this server's address, and
    nothing on the page needs one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        named = named_url(str(scope.get("path", ""))) if scope["type"] == "http" else None
        if named is None:
            await self.app(scope, receive, send)
            return
        route = image_route_of(named)
        if route is None:
            await PlainTextResponse(NOT_OURS, status_code=404, headers=HEADERS)(scope, receive, send)
            return
        await self.app({**scope, "path": route, "raw_path": route.encode(), "query_string": b""}, receive, send)
