"""Whose turn it is on the models: a run waits for a stage of loading compiled code and is told so; a stage waits
for every run that is running or waiting; `alone` is a plain hold that tells nobody anything."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest

from mascot.generation.turns import ModelsTurn

PATIENCE_S = 30  # generous: only a broken turn waits this long (the suite may share a busy machine)


def started(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def ended(thread: threading.Thread) -> bool:
    thread.join(PATIENCE_S)
    return not thread.is_alive()


def wait_for(condition: Callable[[], bool]) -> None:
    """Wait until `condition` holds (a thread got somewhere), failing after PATIENCE_S."""
    done = threading.Event()
    for _ in range(PATIENCE_S * 100):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("the condition never held")


def test_a_run_that_comes_during_a_load_stage_is_told_once_then_runs_after_the_stage():
    turn = ModelsTurn()
    stage_started, stage_may_end, ran = threading.Event(), threading.Event(), threading.Event()
    told: list[str] = []

    def stage() -> None:
        with turn.between_runs():
            stage_started.set()
            stage_may_end.wait(PATIENCE_S)

    stage_thread = started(stage)
    assert stage_started.wait(PATIENCE_S)

    def run() -> None:
        with turn.for_run(lambda: told.append("waiting")):
            ran.set()

    run_thread = started(run)
    wait_for(lambda: told == ["waiting"])  # told before it waits ...
    assert not ran.is_set()  # ... and it does wait: the stage still holds the models
    stage_may_end.set()
    assert ended(stage_thread) and ended(run_thread)
    assert ran.is_set() and told == ["waiting"]


def test_a_run_is_not_told_to_wait_when_the_models_are_free_or_held_by_anything_but_a_stage():
    turn = ModelsTurn()
    told: list[str] = []
    with turn.for_run(lambda: told.append("free")):
        pass
    ran = threading.Event()

    def run() -> None:
        with turn.for_run(lambda: told.append("alone")):
            ran.set()

    with turn.alone():
        run_thread = started(run)
        wait_for(lambda: turn._runs_wanted == 1)  # counted in: at, or about to make, its try for the models
        held_back = not ran.is_set()
    assert ended(run_thread)
    assert held_back and ran.is_set()
    assert told == []


@pytest.mark.parametrize("hold", ["wanting_a_run", "alone"])
def test_a_load_stage_waits_while_a_run_runs_or_waits_and_while_the_models_are_held(hold: str):
    """wanting_a_run: a run queued for the models, or running; alone: a short change to the models (the stage finds
    them held and looks again)."""
    turn = ModelsTurn()
    stage_ran = threading.Event()

    def stage() -> None:
        with turn.between_runs():
            stage_ran.set()

    with getattr(turn, hold)():
        stage_thread = started(stage)
        assert not stage_ran.wait(0.2)  # a broken turn would let it in at once
    assert ended(stage_thread) and stage_ran.is_set()


def test_a_stage_that_waited_for_a_run_does_not_start_once_compiling_was_stopped():
    """A shutdown stops compiling while a run is finished: the stage that waited for that run must not start after
    it (a load or compile of seconds to minutes, beside the drain), nor hold the models."""
    from mascot.generation.speed import WarmUpStopped, stoppable

    turn, stopped, entered, outcome = ModelsTurn(), threading.Event(), threading.Event(), []

    @contextlib.contextmanager
    def between_runs() -> Iterator[None]:  # the models' turn, noting that the stage is past the check before it
        entered.set()
        with turn.between_runs():
            yield

    stage = stoppable(between_runs, stopped)

    def warm_up() -> None:
        try:
            with stage():
                outcome.append("ran")
        except WarmUpStopped:
            outcome.append("stopped")

    with turn.wanting_a_run():  # a generation runs: the stage waits for it
        warm_up_thread = started(warm_up)
        assert entered.wait(PATIENCE_S)  # stopped while it waits for the run, not before it asked for the turn
        stopped.set()
    assert ended(warm_up_thread)
    assert outcome == ["stopped"]
    with turn.alone():  # the models are free again
        pass
