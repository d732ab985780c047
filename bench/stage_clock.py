"""Where one generation's time goes (issue 11): the time spent inside each model a run calls, beside its wall time.

The compiled path makes one mascot in 0.96 s on the H200 against a goal of 0.9 s, and 50 UNet steps of 15.3 ms alone
would take 0.77 s: whether the rest is the prior, MoVQ's decode or the step loop's own Python decides what to make
faster next. Each model the run calls is timed around each call by forward hooks: CUDA events on a GPU (recorded on
the stream, read once the run has ended, so nothing in the step loop waits for them), the wall clock on the CPU.
The wall time left beyond the models is the step loop's own work: the schedulers' steps, guidance, previews, noise,
and any time the GPU waited for Python to launch the next call.

Runnable without gradio, like the rest of the benchmark.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from mascot.generation.generator import GeneratedImages
from mascot.generation.model import KandinskyGenerator


@dataclass
class Calls:
    """One model's calls during a run: a (start, end) mark for each."""

    marks: list[tuple[Any, Any]] = field(default_factory=list)
    started: list[Any] = field(default_factory=list)  # a call in progress (a model never calls itself: one at most)


class StageClock:
    """Times the calls of the models it watches, by hooks, for as long as `watching` lasts."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.calls: dict[str, Calls] = {}

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _seconds(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end)) / 1000 if self.cuda else float(end - start)

    @contextlib.contextmanager
    def watching(self, modules: dict[str, torch.nn.Module], functions: dict[str, tuple[object, str]]) -> Iterator[None]:
        """Time each of `modules` (hooks) and each attribute `functions[name] = (owner, attribute)` (a callable put in
        its place, such as a compiled function), until the block ends; everything is put back afterwards."""
        handles: list[Any] = []
        restores: list[Callable[[], None]] = []
        try:
            for name, module in modules.items():
                calls = self.calls.setdefault(name, Calls())
                handles.append(module.register_forward_pre_hook(lambda *_, c=calls: c.started.append(self._mark())))
                handles.append(module.register_forward_hook(lambda *_, c=calls: self._end(c)))
            for name, (owner, attribute) in functions.items():
                restores.append(self._wrap(self.calls.setdefault(name, Calls()), owner, attribute))
            yield
        finally:
            for handle in handles:
                handle.remove()
            for restore in restores:
                restore()

    def _end(self, calls: Calls) -> None:
        calls.marks.append((calls.started.pop(), self._mark()))

    def _wrap(self, calls: Calls, owner: object, attribute: str) -> Callable[[], None]:
        """Put a timed stand-in for `owner.attribute` on the instance; the function that puts it back."""
        own = attribute in vars(owner)  # an instance attribute, or a method of its class (shadowed, then uncovered)
        function = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            calls.started.append(self._mark())
            try:
                return function(*args, **kwargs)
            finally:
                self._end(calls)

        setattr(owner, attribute, timed)
        return lambda: setattr(owner, attribute, function) if own else delattr(owner, attribute)

    def report(self, wall_s: float) -> dict[str, Any]:
        """Per model: its calls, their seconds and milliseconds per call; and what is left of `wall_s` beyond them."""
        if self.cuda:
            torch.cuda.synchronize()
        row: dict[str, Any] = {"wall_s": round(wall_s, 3)}
        inside = 0.0
        for name, calls in self.calls.items():
            seconds = sum(self._seconds(start, end) for start, end in calls.marks)
            inside += seconds
            count = len(calls.marks)
            row[name] = {
                "calls": count,
                "s": round(seconds, 3),
                "ms_per_call": round(1000 * seconds / max(count, 1), 2),
            }
        row["outside_the_models_s"] = round(wall_s - inside, 3)
        return row


def models_a_run_calls(
    generator: KandinskyGenerator,
) -> tuple[dict[str, torch.nn.Module], dict[str, tuple[object, str]]]:
    """The models `generator` calls in a run, as StageClock.watching takes them: its compiled stand-ins when it has
    any (every stage of the run must be ready: a stage that is not would run the eager model, unwatched), else its
    eager models. The text encoder is always eager."""
    text_encoder = {"text_encoder": generator.prior.text_encoder}
    compiled = generator.compiled
    if compiled is None:
        eager = {
            "prior": generator.prior.prior,
            "unet": generator.decoder.unet,
            "decode": generator.decoder.movq.decoder,
        }
        return {**text_encoder, **eager}, {}
    if compiled.thread is not None and compiled.thread.is_alive():
        # Hooks on a model while dynamo traces it (a warm-up in this process) would end up inside its graph.
        raise RuntimeError("time the models once the warm-up has ended")
    stand_ins = {"prior": compiled.prior.prior, "unet": compiled.decoder.unet}
    return {**text_encoder, **stand_ins}, {"decode": (compiled, "decode")}


def where_the_time_goes(
    cuda: bool, generator: KandinskyGenerator, run: Callable[[], GeneratedImages]
) -> dict[str, Any]:
    """One call of `run` (a generation by `generator`) with its models timed: StageClock.report's row, with the
    generator's own wall time of its two stages (the prior's ends with a sync, so that its loop's waits are in it)."""
    clock = StageClock(cuda)
    modules, functions = models_a_run_calls(generator)
    with clock.watching(modules, functions):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = run()
        if cuda:
            torch.cuda.synchronize()
        wall_s = time.perf_counter() - started
    stages = {
        "prior_stage_s (text encoder, prior steps)": round(result.prior_seconds, 3),
        "decoder_stage_s (steps, decode, pictures)": round(result.decoder_seconds, 3),
    }
    return {**clock.report(wall_s), **stages}
