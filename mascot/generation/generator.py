"""The Generator protocol and the values that cross it: what the worker and the UI know of a model, without torch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from PIL import Image

from mascot.prompt.request import GenerationRequest

# "prior" and "decoder" are a run's two stages of steps. "waiting" comes before them, at step 0 of 0, when a run must
# wait for a stage of loading compiled code to end (mascot.generation.turns): seconds, after which runs are faster.
Stage = Literal["waiting", "prior", "decoder"]
# A size bucket's compiled code: "compiling" (its runs are eager meanwhile), "ready" (its runs use the compiled code)
# or "eager" (compiling it failed or was stopped: its runs stay eager, and nothing is waited for any more).
BucketState = Literal["compiling", "ready", "eager"]


# What torch says, as a plain RuntimeError (AcceleratorError in newer torch), when GPU memory runs out outside its
# own allocator: CUDA itself, or a CUDA library allocating a handle or workspace (a cuBLAS handle is made on a
# thread's first matrix product; cuDNN 9 names its failure DEVICE_ALLOCATION_FAILED, older cuDNN ALLOC_FAILED). CUDA's
# "out of memory" may also come from pinned host memory running out (the previews' copies), rarely: it is counted too.
GPU_ALLOCATION_FAILURES = (
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
)


class LogoOutOfMemory(RuntimeError):
    """The image encoder ran out of GPU memory reading a logo. It needs its own size whatever the run's, so it
    teaches nothing about how many images a run may share, and "try fewer images" would not help its person."""


def ran_out_of_gpu_memory(error: BaseException) -> bool:
    """torch's out-of-memory error, known by its name (this module imports no torch), or a failure to allocate GPU
    memory that torch reports as another error."""
    return (
        isinstance(error, LogoOutOfMemory)
        or type(error).__name__ == "OutOfMemoryError"
        or any(failure in str(error) for failure in GPU_ALLOCATION_FAILURES)
    )


class GenerationCancelled(Exception):
    """Raised from a step callback to stop a generation; the pipeline stays usable."""


@dataclass(frozen=True)
class StepUpdate:
    """One denoising step done: which stage, how far, and now and then a rough preview of the first image."""

    stage: Stage
    step: int
    total: int
    preview: Image.Image | None = None


@dataclass(frozen=True)
class PromptUse:
    """What the text encoder really saw of a prompt: `used` was encoded, `cut` was dropped past its token limit."""

    used: str
    cut: str = ""


@dataclass(frozen=True)
class GeneratedImages:
    """The result of one request: image i was made from seed `seeds[i]` (= request.seed + i)."""

    images: list[Image.Image]
    seeds: list[int]
    prompt: PromptUse
    negative_prompt: PromptUse
    prior_seconds: float = 0.0
    decoder_seconds: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded, said for people: shown in the page's banner and stored with every mascot."""

    name: str
    is_preview_model: bool
    device: str
    reason: str = ""
    adapters: tuple[str, ...] = ()  # the LoRA adapters a request may name in `adapter_name`
    sampler: str = ""  # the decoder's scheduler (e.g. "DDPMScheduler"), written into each PNG as A1111's Sampler


StepCallback = Callable[[StepUpdate], None]


@dataclass(frozen=True)
class BatchItem:
    """One request's part in a shared run: the request, where its progress goes, and the logo `request.logo` names."""

    request: GenerationRequest
    on_step: StepCallback | None = None
    logo: Image.Image | None = None


BatchKey = tuple[int, int, int, float, str, float]


def batch_key(request: GenerationRequest) -> BatchKey:
    """Requests with equal keys may share one decoder run: the same size, steps, guidance and LoRA adapter.

    Prompts, seeds, negative prompts, logos and the prior's settings may all differ: each image keeps its own.
    """
    adapter_scale = request.lora_scale if request.adapter_name else 0.0
    return (
        request.width,
        request.height,
        request.num_inference_steps,
        request.guidance_scale,
        request.adapter_name,
        adapter_scale,
    )


class Generator(Protocol):
    """Anything that turns a request into images. The real one is `mascot.generation.model.KandinskyGenerator`."""

    info: ModelInfo

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None, logo: Image.Image | None = None
    ) -> GeneratedImages:
        """Run the request (`logo` is the image `request.logo` names); `on_step` may raise GenerationCancelled."""
        ...

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GeneratedImages | None]:
        """Run requests with one `batch_key` together; item i's result is `None` when its `on_step` cancelled it.

        Cancelling one item does not stop the others. Any other failure raises and concerns every item.
        """
        ...


@dataclass(frozen=True)
class CompileProgress:
    """How far the compiled code is, per size bucket ("768x768x1": height x width x images per run)."""

    buckets: dict[str, BucketState]

    @property
    def compiling(self) -> bool:
        """Whether a bucket is still being compiled or loaded (the health check may wait for it)."""
        return "compiling" in self.buckets.values()


@runtime_checkable
class Compiling(Protocol):
    """A generator that compiles its models in the background (the real one, on a GPU): it says how far it is."""

    def compile_progress(self) -> CompileProgress | None:
        """Each bucket's state; None when nothing is compiled (compiling is off)."""
        ...

    def stop_compiling(self, timeout: float = 10.0) -> None:
        """End the compile processes and the warm-up thread (a shutdown: each would hold a copy of the model)."""
        ...
