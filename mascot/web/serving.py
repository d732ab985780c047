"""Serving until SIGTERM, then draining: stop admitting, tell the queued, finish the running job, free the claims."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from mascot.generation.worker import GenerationWorker

log = logging.getLogger("mascot")
# A drain waits this long at most for the handlers of the jobs it ended to hand their answers on, then this long for
# those answers to leave on the open event streams (once the server closes, Gradio replaces what is left with an
# "unexpected error").
ANSWER_WAIT_S = 10.0
ANSWER_FLUSH_S = 0.5


class HeldClaims(Protocol):
    """The quota claims this replica keeps alive (mascot.service.claims.ClaimKeeper)."""

    def retry_releases(self) -> int: ...

    def stop(self) -> int: ...


def drain(worker: GenerationWorker, claims: HeldClaims, timeout_s: float) -> float:
    """Shut down gracefully: stop admitting, tell the queued, finish or cancel the running job within `timeout_s`,
    free the claims, give the answers time to leave. Returns the seconds it took."""
    started = time.monotonic()
    log.info("shutting down: finishing the running job (at most %.0f s)", timeout_s)
    finished = worker.stop(timeout_s)
    claims.retry_releases()
    freed = claims.stop()
    if not worker.wait_until_answered(ANSWER_WAIT_S):
        log.warning("some browsers were not answered within %.0f s of the drain", ANSWER_WAIT_S)
    time.sleep(ANSWER_FLUSH_S)
    seconds = time.monotonic() - started
    log.info(
        "drained in %.1f s (running job %s; %d claims freed at the end)",
        seconds,
        "finished" if finished else "cancelled",
        freed,
    )
    return seconds


def serve_until_sigterm(launch: Callable[[], None], drain: Callable[[], object], close: Callable[[], None]) -> None:
    """Run `launch` (it blocks while serving) until Ctrl-C, or until SIGTERM: then `drain` once and `close`, which
    ends launch's wait, so the process exits with status 0."""
    draining = False

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        nonlocal draining
        if draining:  # a second SIGTERM during the drain changes nothing: the drain is already bounded
            return
        draining = True
        drain()
        close()

    signal.signal(signal.SIGTERM, on_sigterm)
    launch()
