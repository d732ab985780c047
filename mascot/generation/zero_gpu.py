"""ZeroGPU (Hugging Face Spaces): each shared run inside a `@spaces.GPU` call made by the request's own handler.

On ZeroGPU hardware a GPU exists only inside a function decorated with `spaces.GPU`, called from a Gradio request
handler; the `spaces` package runs that function in a process forked from the app (the model, loaded at start, is
in its memory) and sends its arguments and its result across by pickling. So the worker's thread cannot run jobs
there: in this mode the handler that submitted a job runs it (GenerationWorker.run_in_handler) through this runner.
Off ZeroGPU, `spaces.GPU` hands the function back unchanged (spaces.zero.decorator: `if not Config.zero_gpu:
return task`), and the run happens in the handler's thread, which is how the tests run it on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mascot.generation.generator import BatchItem, GeneratedImages, Generator
from mascot.generation.worker import LoadGenerator


class ZeroGpuRunner:
    """Runs a shared run's `generate_batch` inside `@spaces.GPU(duration=duration_s)`."""

    def __init__(self, duration_s: int) -> None:
        import spaces  # before torch touches CUDA: it patches torch on ZeroGPU hardware (it is imported lazily)

        self._generator: Generator | None = None
        self._on_gpu = spaces.GPU(duration=duration_s)(self._generate_batch)
        # spaces marks the functions it wrapped for ZeroGPU; unchanged, the run stays in this process.
        self.forks = self._on_gpu is not self._generate_batch and hasattr(self._on_gpu, "zerogpu")

    def loading(self, load: LoadGenerator) -> LoadGenerator:
        """`load` as the worker's thread must run it. On ZeroGPU hardware, spaces emulates CUDA in this process (a
        tensor moved "to cuda" stays in host memory until a @spaces.GPU call moves it) through torch modes that hold
        per thread: spaces enters them on the thread that imports it and on threads of its own, not on the worker's,
        where loading the model to "cuda" would reach the real CUDA this process has none of, and fail."""
        if not self.forks:
            return load

        def load_in_emulation(on_status: Callable[[str], None]) -> Generator:
            from spaces.zero.torch import enter_mode  # importable once spaces runs on ZeroGPU hardware

            enter_mode()  # for this thread, for good: as spaces does for its own threads
            return load(on_status)

        return load_in_emulation

    def __call__(self, generator: Generator, items: Sequence[BatchItem]) -> list[GeneratedImages | None]:
        # The forked process reaches the model through this object (in its copy of our memory), never by pickling.
        self._generator = generator
        return self._on_gpu(self.sendable(items) if self.forks else list(items))

    @staticmethod
    def sendable(items: Sequence[BatchItem]) -> list[BatchItem]:
        """The items without their step callbacks, which could not reach this process from the forked one (and do
        not pickle): on ZeroGPU a run shows no steps or previews and cannot be cancelled once it holds the GPU."""
        return [BatchItem(item.request, None, item.logo) for item in items]

    def _generate_batch(self, items: list[BatchItem]) -> Any:
        assert self._generator is not None
        return self._generator.generate_batch(items)
