"""Serving until SIGTERM or Ctrl-C, then draining: stop admitting, tell the queued, finish the running job, free the
claims."""

from __future__ import annotations

import logging
import os
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
    finished = worker.stop(timeout_s, end_compiling=True)
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


def serve_until_stopped(launch: Callable[[], None], drain: Callable[[], object], close: Callable[[], None]) -> None:
    """Run `launch` (it blocks while serving) until SIGTERM or Ctrl-C (SIGINT): then `drain` once and `close`, which
    ends launch's wait, so the process exits with status 0. A second Ctrl-C during the drain stops at once (status
    130), as a person pressing it twice means; a second SIGTERM changes nothing, the drain being bounded already.
    Before, Ctrl-C went to Gradio, which closed the server under the running job: the queued were told nothing and
    the process aborted in the model's threads (a resilience walkthrough)."""
    draining = False

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal draining
        if draining:
            if signum == signal.SIGINT:
                log.warning("Ctrl-C again: stopping now, without waiting for the running job")
                os._exit(130)
            return
        draining = True
        if signum == signal.SIGINT:
            log.info("Ctrl-C: finishing the running job first (press Ctrl-C again to stop at once)")
        drain()
        close()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    launch()
