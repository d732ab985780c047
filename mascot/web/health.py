"""The health check a load balancer or a Space's monitor asks: is the model loaded, does the database answer and
can it write, and is this replica still admitting work (not shutting down)?"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from mascot.generation.worker import GenerationWorker, ModelState

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"


def health_report(
    worker: GenerationWorker,
    ask_database: Callable[[], object],
    check_writable: Callable[[], object] | None = None,
) -> tuple[int, dict[str, Any]]:
    """HTTP 200 when this replica can make mascots (model ready, database answering and writing, not shutting down),
    else 503, with the details. `database` is "ok", "error" (no answer) or "cannot write" (a full disk, a read-only
    file or a lock: reads work, saves do not).

    503 while the model loads: a load balancer then sends generations to replicas that can run them at once, and
    the page (served all along) still says why here. 503 while shutting down, so that it sends no more.
    """
    status = worker.status
    database = _database_state(ask_database)
    if database == "ok" and check_writable is not None and _database_state(check_writable) != "ok":
        database = "cannot write"
    stopping = worker.is_stopping
    report: dict[str, Any] = {
        "status": status.state.value,
        "message": status.message,
        "model": status.info.name if status.info else None,
        "preview_model": status.info.is_preview_model if status.info else None,
        "queue_length": worker.queue_length,
        "database": database,
        "shutting_down": stopping,
    }
    healthy = status.state is ModelState.READY and database == "ok" and not stopping
    return (200 if healthy else 503), report


def _database_state(ask_database: Callable[[], object]) -> str:
    """ "ok" when a cheap query answers; the error goes to the log, never to the caller."""
    try:
        ask_database()
    except Exception:
        log.exception("the health check's database query failed")
        return "error"
    return "ok"


def health_endpoint(
    worker: GenerationWorker,
    ask_database: Callable[[], object],
    check_writable: Callable[[], object] | None = None,
) -> Callable[[Request], Any]:
    """The Starlette endpoint for HEALTH_PATH."""

    # A plain function: Starlette runs it in its thread pool, so the database query never blocks the event loop.
    def healthz(request: Request) -> JSONResponse:
        code, report = health_report(worker, ask_database, check_writable)
        return JSONResponse(report, status_code=code, headers={"Cache-Control": "no-store"})

    return healthz
