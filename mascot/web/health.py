"""The health check a load balancer or a Space's monitor asks: is the model loaded, does the database answer and
can it write, is this replica still admitting work (not shutting down), and, when asked to wait for it, is its
compiled code ready?"""

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
    *,
    ready_when_compiled: bool = False,
) -> tuple[int, dict[str, Any]]:
    """HTTP 200 when this replica can make mascots (model ready, database answering and writing, not shutting down),
    else 503, with the details. `database` is "ok", "error" (no answer) or "cannot write" (a full disk, a read-only
    file or a lock: reads work, saves do not). `compiled` is each size bucket's compiled code: "compiling", "ready"
    or "eager" (it failed: that size stays eager); null when nothing is compiled.

    503 while the model loads: a load balancer then sends generations to replicas that can run them at once, and
    the page (served all along) still says why here. 503 while shutting down, so that it sends no more. With
    `ready_when_compiled` (MASCOT_READY_WHEN_COMPILED), also 503 while a bucket is still compiling or loading: each
    stage loaded here holds up the generations that come meanwhile, so a balancer that polls this check lets only
    warm replicas serve (the eager path would serve meanwhile, slower).
    """
    status = worker.status
    database = _database_state(ask_database)
    if database == "ok" and check_writable is not None and _database_state(check_writable) != "ok":
        database = "cannot write"
    stopping = worker.is_stopping
    progress = worker.compile_progress
    report: dict[str, Any] = {
        "status": status.state.value,
        "message": status.message,
        "model": status.info.name if status.info else None,
        "preview_model": status.info.is_preview_model if status.info else None,
        "queue_length": worker.queue_length,
        "database": database,
        "shutting_down": stopping,
        "compiled": dict(progress.buckets) if progress is not None else None,
    }
    warming = ready_when_compiled and progress is not None and progress.compiling
    healthy = status.state is ModelState.READY and database == "ok" and not stopping and not warming
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
    *,
    ready_when_compiled: bool = False,
) -> Callable[[Request], Any]:
    """The Starlette endpoint for HEALTH_PATH."""

    # A plain function: Starlette runs it in its thread pool, so the database query never blocks the event loop.
    def healthz(request: Request) -> JSONResponse:
        code, report = health_report(worker, ask_database, check_writable, ready_when_compiled=ready_when_compiled)
        return JSONResponse(report, status_code=code, headers={"Cache-Control": "no-store"})

    return healthz
