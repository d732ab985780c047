"""Link previews: the Open Graph and Twitter tags that chat apps and social sites read from a shared link, and the
image they show. A share link (`/?mascot=<id>`) of a public mascot previews as that mascot, with its idea as title.

Gradio's page ships its own tags ("Gradio", "Click to try out the app!", Gradio's header image): they are replaced.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from mascot.store.entries import MascotEntry
from mascot.web.identity import ASGIApp, Message, Receive, Scope, Send
from mascot.web.page_url import mascot_url
from mascot.web.public_url import PublicAddress

logger = logging.getLogger(__name__)

SITE_NAME = "Mascot Generator"
SITE_DESCRIPTION = "Type an idea, pick a style, maybe mix in your logo: get mascots to download, share and vote on."
# The image a preview shows: one public mascot's PNG, by its share id (never a path the client names).
PREVIEW_IMAGE_ROUTE = "/mascot/{public_id}.png"
MAX_TITLE_CHARACTERS = 90
MAX_DESCRIPTION_CHARACTERS = 200
MAX_PAGE_BYTES = 4 * 1024 * 1024  # Gradio's page is about 220 KB; anything far larger is passed on untouched
# A shared cache may keep the picture but must ask again before each use: once its owner makes the mascot private
# (or it is taken down), the next ask gets 404 and no cache serves it on (a max-age would, until it ran out).
IMAGE_CACHE_CONTROL = "public, no-cache"

# Gradio's own tags: <meta property="og:..."> and <meta name="twitter:...">, written over several lines.
_SOCIAL_META = re.compile(r"""<meta\s[^>]*?\b(?:property|name)\s*=\s*["'](?:og|twitter):[^>]*>\s*""", re.IGNORECASE)
_HEAD_OPEN = re.compile(r"<head(?:\s[^>]*)?>", re.IGNORECASE)

PublicMascot = Callable[[str], MascotEntry | None]


@dataclass(frozen=True)
class LinkPreview:
    """What a shared link shows in a chat app: title, description, the page's address and, maybe, an image."""

    title: str
    description: str
    url: str
    image_url: str | None = None
    image_alt: str = ""
    image_width: int = 0
    image_height: int = 0


def site_preview(root_url: str) -> LinkPreview:
    """The preview of the page itself."""
    return LinkPreview(title=SITE_NAME, description=SITE_DESCRIPTION, url=f"{root_url}/")


def mascot_preview(entry: MascotEntry, root_url: str) -> LinkPreview:
    """The preview of a share link: the mascot's picture, its idea as title."""
    request = entry.request
    return LinkPreview(
        title=shorten(f"{request.prompt} · {SITE_NAME}", MAX_TITLE_CHARACTERS),
        description=shorten(
            f"“{request.prompt}”, a mascot made with {SITE_NAME}. Type your own idea: get mascots to download, share "
            "and vote on.",
            MAX_DESCRIPTION_CHARACTERS,
        ),
        url=mascot_url(root_url, entry.public_id),
        image_url=root_url + PREVIEW_IMAGE_ROUTE.format(public_id=quote(entry.public_id)),
        image_alt=shorten(request.prompt, MAX_DESCRIPTION_CHARACTERS),
        image_width=request.width,
        image_height=request.height,
    )


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut at a word with an ellipsis when longer than `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut + "…"


def preview_tags(preview: LinkPreview) -> str:
    """The <title> and meta tags, every value HTML-escaped (ideas are typed by anyone)."""
    properties = [
        ("og:site_name", SITE_NAME),
        ("og:type", "website"),
        ("og:title", preview.title),
        ("og:description", preview.description),
        ("og:url", preview.url),
    ]
    names = [
        ("twitter:card", "summary_large_image" if preview.image_url else "summary"),
        ("twitter:title", preview.title),
        ("twitter:description", preview.description),
    ]
    if preview.image_url:
        properties += [
            ("og:image", preview.image_url),
            ("og:image:type", "image/png"),
            ("og:image:width", str(preview.image_width)),
            ("og:image:height", str(preview.image_height)),
            ("og:image:alt", preview.image_alt),
        ]
        names += [("twitter:image", preview.image_url), ("twitter:image:alt", preview.image_alt)]
    lines = [f"<title>{html.escape(preview.title)}</title>"]
    lines += [f'<meta property="{key}" content="{html.escape(value)}" />' for key, value in properties]
    lines += [f'<meta name="{key}" content="{html.escape(value)}" />' for key, value in names]
    lines.append(f'<meta name="description" content="{html.escape(preview.description)}" />')
    return "\n".join(lines) + "\n"


def with_preview(page: str, preview: LinkPreview) -> str:
    """The page with Gradio's social tags removed and ours at the top of <head>; unchanged if it has no <head>."""
    head = _HEAD_OPEN.search(page)
    if head is None:
        return page
    start = head.end()
    rest = _SOCIAL_META.sub("", page[start:])
    return page[:start] + "\n" + preview_tags(preview) + rest


class LinkPreviewMiddleware:
    """Pure ASGI: rewrites the page's <head> (GET of the app's root) with the preview of the link that asked."""

    def __init__(self, app: ASGIApp, public_mascot: PublicMascot, address: PublicAddress | None = None) -> None:
        self.app = app
        self.public_mascot = public_mascot
        self.address = address or PublicAddress()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_page_request(scope):
            await self.app(scope, receive, send)
            return
        preview = await run_in_threadpool(self.preview_for, Request(scope))
        await self.app(scope, receive, _rewriting_page(send, preview))

    def preview_for(self, request: Request) -> LinkPreview:
        """The share link's mascot when it is public; else the site itself. A plain function: it reads the store."""
        # Chat apps and social sites cache a preview for everyone: never from X-Forwarded-Host, which anyone can send.
        root_url = self.address.root_url(request, forwarded_host=False)
        public_id = request.query_params.get("mascot", "")[:64]  # read as the page's own share-link handler does
        try:
            entry = self.public_mascot(public_id) if public_id else None
        except Exception:  # the page must open even when the database does not answer: show the site's preview
            logger.exception("Could not look up the shared mascot %r for its link preview.", public_id)
            entry = None
        return site_preview(root_url) if entry is None else mascot_preview(entry, root_url)


def is_page_request(scope: Scope) -> bool:
    """A GET of the page itself: the app's root, with or without its root path."""
    if scope["type"] != "http" or scope.get("method") != "GET":
        return False
    root_path = str(scope.get("root_path") or "").rstrip("/")
    path = str(scope.get("path") or "")
    return path in ("/", "", f"{root_path}/", root_path)


def _rewriting_page(send: Send, preview: LinkPreview) -> Send:
    """`send`, holding back an HTML 200 response until its body is complete, then sending it rewritten."""
    start: Message | None = None
    chunks: list[bytes] = []
    passing_through = False

    async def send_rewritten(message: Message) -> None:
        nonlocal start, passing_through
        if passing_through:
            await send(message)
            return
        if message["type"] == "http.response.start":
            if message.get("status") != 200 or not _is_plain_html(message):
                passing_through = True
                await send(message)
                return
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if sum(map(len, chunks)) > MAX_PAGE_BYTES:
            passing_through = True
            await send(start)
            await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": message.get("more_body")})
            return
        if message.get("more_body"):
            return
        body = with_preview(b"".join(chunks).decode("utf-8"), preview).encode("utf-8")
        headers = [(key, value) for key, value in start.get("headers", []) if key.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode("ascii"))]})
        await send({"type": "http.response.body", "body": body})

    return send_rewritten


def _is_plain_html(start: Message) -> bool:
    """An uncompressed HTML response, the only kind rewritten."""
    headers = {key.lower(): value for key, value in start.get("headers", [])}
    content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
    return content_type.startswith("text/html") and b"content-encoding" not in headers


def preview_image_endpoint(public_mascot: PublicMascot, images_dir: Path) -> Callable[[Request], Response]:
    """The Starlette endpoint for PREVIEW_IMAGE_ROUTE: the PNG of a public mascot, else 404."""
    images_root = images_dir.resolve()

    # A plain function: Starlette runs it in its thread pool, so the database query never blocks the event loop.
    def preview_image(request: Request) -> Response:
        public_id = str(request.path_params.get("public_id", ""))[:64]
        entry = public_mascot(public_id)
        path = entry.path.resolve() if entry is not None else None
        if path is None or not path.is_relative_to(images_root) or not path.is_file():
            return PlainTextResponse("No public mascot has this id.", status_code=404)
        headers = {"Cache-Control": IMAGE_CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, media_type="image/png", headers=headers)

    return preview_image
