"""A fake Generator for fast tests of the worker and the page: it records requests and can be paused or made to fail.

Every user-facing flow is also tested on the real tiny pipeline; this fake only keeps the UI-layer tests fast.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from PIL import Image

from mascot.generation.generator import (
    BatchItem,
    BucketState,
    CompileProgress,
    GeneratedImages,
    GenerationCancelled,
    ModelInfo,
    PromptUse,
    StepCallback,
    StepUpdate,
)
from mascot.prompt.request import GenerationRequest


class FakeGenerator:
    info = ModelInfo(name="fake generator", is_preview_model=True, device="cpu", reason="Tests use a fake.")

    def __init__(self, steps: int = 3) -> None:
        self.steps = steps
        self.requests: list[GenerationRequest] = []
        self.batches: list[list[GenerationRequest]] = []  # the requests of each shared run, in order
        self.logos: list[Image.Image | None] = []
        self.gate = threading.Event()  # cleared: generation waits after its first step until a test opens it
        self.gate.set()
        self.started = threading.Event()
        self.fail_next: Exception | None = None

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None, logo: Image.Image | None = None
    ) -> GeneratedImages:
        self.requests.append(request)
        self.logos.append(logo)
        self.started.set()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        for step in range(1, self.steps + 1):
            if on_step is not None:
                preview = Image.new("RGB", (8, 8), "gray") if step == 1 else None
                on_step(StepUpdate("decoder", step, self.steps, preview))
            if step == 1:
                self.gate.wait(timeout=30)
        seeds = [request.seed + index for index in range(request.num_images_per_prompt)]
        images = [Image.new("RGB", (request.width, request.height), (seed % 256, 100, 200)) for seed in seeds]
        return GeneratedImages(
            images=images,
            seeds=seeds,
            prompt=PromptUse(request.prompt),
            negative_prompt=PromptUse(request.negative_prompt),
        )

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GeneratedImages | None]:
        self.batches.append([item.request for item in items])
        results: list[GeneratedImages | None] = []
        for item in items:
            try:
                results.append(self.generate(item.request, item.on_step, item.logo))
            except GenerationCancelled:
                results.append(None)
        return results


class CompilingFake(FakeGenerator):
    """A generator compiling in the background (compile processes, a warm-up thread): each bucket's state is set by
    the test (None: compiling off); a stop settles those still compiling as eager, as the real one does."""

    def __init__(self, buckets: dict[str, BucketState] | None) -> None:
        super().__init__()
        self.buckets = buckets
        self.stopped = threading.Event()
        self.stop_calls = 0
        self.waited_s: float | None = None
        self.on_stop: Callable[[], object] = lambda: None  # what a test looks at as the stop comes

    def compile_progress(self) -> CompileProgress | None:
        return CompileProgress(dict(self.buckets)) if self.buckets is not None else None

    def stop_compiling(self, timeout: float = 10.0) -> None:
        self.on_stop()
        self.stop_calls += 1
        self.waited_s = timeout
        self.buckets = {
            name: "eager" if state == "compiling" else state for name, state in (self.buckets or {}).items()
        }
        self.stopped.set()
