"""A generator that notes how long each of its runs took, so a benchmark can take the model's own time off a request's
(bench.speed's app-overhead phase, bench.page_overhead)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from PIL import Image

from mascot.generation.generator import (
    BatchItem,
    GeneratedImages,
    GenerationCancelled,
    Generator,
    StepCallback,
)
from mascot.prompt.request import GenerationRequest


class TimedGenerator:
    """The loaded generator, with each run's seconds appended to `seconds` (a run of one request: its generation
    time)."""

    def __init__(self, generator: Generator, seconds: list[float]) -> None:
        self.generator, self.seconds, self.info = generator, seconds, generator.info

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None, logo: Image.Image | None = None
    ) -> GeneratedImages:
        [result] = self.generate_batch([BatchItem(request, on_step, logo)])
        if result is None:
            raise GenerationCancelled
        return result

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GeneratedImages | None]:
        started = time.perf_counter()
        try:
            return self.generator.generate_batch(items)
        finally:
            self.seconds.append(time.perf_counter() - started)
