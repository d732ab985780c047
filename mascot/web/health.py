"""The health check a load balancer or a Space's monitor asks: is the model loaded and does the database answer?"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from mascot.generation.worker import GenerationWorker, ModelState

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"


def health_report(worker: GenerationWorker, ask_database: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    """HTTP 200 when this replica can make mascots (model ready, database answering), else 503, with the details.

    503 while the model loads: a load balancer then sends generations to replicas that can run them at once, and
    the page (served all along) still says why here.
    """
    status = worker.status
    database = _database_state(ask_database)
    report: dict[str, Any] = {
        "status": status.state.value,
        "message": status.message,
        "model": status.info.name if status.info else None,
        "preview_model": status.info.is_preview_model if status.info else None,
        "queue_length": worker.queue_length,
        "database": database,
    }
    healthy = status.state is ModelState.READY and database == "ok"
    return (200 if healthy else 503), report


def _database_state(ask_database: Callable[[], object]) -> str:
    """ "ok" when a cheap query answers; the error goes to the log, never to the caller."""
    try:
        ask_database()
    except Exception:
        log.exception("the health check's database query failed")
        return "error"
    return "ok"


def health_endpoint(worker: GenerationWorker, ask_database: Callable[[], object]) -> Callable[[Request], Any]:
    """The Starlette endpoint for HEALTH_PATH."""

    # A plain function: Starlette runs it in its thread pool, so the database query never blocks the event loop.
    def healthz(request: Request) -> JSONResponse:
        code, report = health_report(worker, ask_database)
        return JSONResponse(report, status_code=code, headers={"Cache-Control": "no-store"})

    return healthz
