"""The house brands' logos (--brands-dir), public by design: `/brand-logos/<logo id>.png`, for those ids only."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

BRAND_LOGO_ROUTE = "/brand-logos/{logo_id}.png"
# A day: a brand's logo changes only with the brands folder, and its id is its content's hash.
CACHE_CONTROL = "public, max-age=86400"


def brand_logo_url(root_url: str, logo_id: str) -> str:
    """A brand logo's absolute URL under the page's root."""
    return root_url.rstrip("/") + BRAND_LOGO_ROUTE.format(logo_id=logo_id)


def brand_logo_route(logo_ids: Collection[str], path_of: Callable[[str], Path | None]) -> Route:
    """The route that serves the logos of `logo_ids` (checked when the brands were loaded) and answers 404 for any
    other name: the logos folder also holds people's uploads, which are not public."""
    served = frozenset(logo_ids)

    def serve_brand_logo(request: Request) -> Response:
        logo_id = str(request.path_params.get("logo_id", ""))
        path = path_of(logo_id) if logo_id in served else None
        if path is None:
            return PlainTextResponse("No brand has this logo.", status_code=404)
        return FileResponse(
            path, media_type="image/png", headers={"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
        )

    return Route(BRAND_LOGO_ROUTE, serve_brand_logo, methods=["GET", "HEAD"])
