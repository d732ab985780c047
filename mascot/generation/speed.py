"""The fast path's parts, each switched by `SpeedOptions`: host-side scheduler steps, device noise, linear previews,
sliced MoVQ decoding, the logo-embedding cache and background compilation."""

from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from diffusers.models.autoencoders.vq_model import VQModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.schedulers.scheduling_unclip import UnCLIPScheduler
from PIL import Image

from mascot.generation.generator import BucketState, CompileProgress, LogoOutOfMemory, ran_out_of_gpu_memory
from mascot.generation.strengths import hold_strengths_in_tensors

logger = logging.getLogger(__name__)


# ---- no GPU syncs in the decoder's step loop ------------------------------------------------------------------------
class HostStepDDPMScheduler(DDPMScheduler):
    """DDPM whose per-step bookkeeping reads timesteps from a host copy.

    The stock `step` looks up the previous timestep with `nonzero()` and indexes host tensors with the device timestep:
    each makes the CPU wait for the GPU, about ten times per step. The pipeline calls `step` once per timestep in
    order, so the step's index is counted here; the arithmetic is the stock one, so outputs are bit-equal.
    """

    _host_timesteps: tuple[int, ...] = ()
    _step_calls: int = 0

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        super().set_timesteps(*args, **kwargs)
        self._host_timesteps = tuple(int(t) for t in self.timesteps.cpu())
        self._step_calls = 0

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if isinstance(timestep, torch.Tensor) and timestep.device.type != "cpu":
            timestep = self._host_timesteps[self._step_calls]
        self._step_calls += 1
        return super().step(model_output, int(timestep), sample, *args, **kwargs)

    def previous_timestep(self, timestep: Any) -> Any:
        if not self._host_timesteps:
            return super().previous_timestep(timestep)
        index = self._host_timesteps.index(int(timestep))
        return -1 if index == len(self._host_timesteps) - 1 else self._host_timesteps[index + 1]


class HostStepUnCLIPScheduler(UnCLIPScheduler):
    """UnCLIP (the prior's scheduler) whose step reads its timesteps from a host copy.

    The stock `step` indexes host tensors by the device timestep and compares it, and the next one the prior pipeline
    passes, with Python numbers: each makes the CPU wait for the GPU, about ten times per prior step, so the GPU idles
    while Python launches the next step. The pipeline passes each timestep in order, with the next one as
    `prev_timestep` (None at the last), so both are taken from the host copy by counting; the arithmetic is the stock
    one, so outputs are bit-equal.
    """

    _host_timesteps: tuple[int, ...] = ()
    _step_calls: int = 0

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        super().set_timesteps(num_inference_steps)  # on the host: nothing to read back from the device
        self._host_timesteps = tuple(int(t) for t in self.timesteps)
        self.timesteps = self.timesteps.to(device)
        self._step_calls = 0

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        index = self._step_calls
        self._step_calls += 1
        if isinstance(timestep, torch.Tensor) and index < len(self._host_timesteps):
            timestep = self._host_timesteps[index]
            if isinstance(kwargs.get("prev_timestep"), torch.Tensor):
                kwargs["prev_timestep"] = self._host_timesteps[index + 1]
        return super().step(model_output, int(timestep), sample, *args, **kwargs)


Scheduler = TypeVar("Scheduler")


def host_step_scheduler(scheduler: Scheduler) -> Scheduler:
    """The same scheduler configuration with host-side step bookkeeping (a subclass of its class): DDPM (the
    decoder's) and UnCLIP (the prior's); other schedulers are kept as they are."""
    config = getattr(scheduler, "config", None)
    if type(scheduler) is DDPMScheduler:
        return cast(Scheduler, HostStepDDPMScheduler.from_config(config))
    if type(scheduler) is UnCLIPScheduler:
        return cast(Scheduler, HostStepUnCLIPScheduler.from_config(config))
    return scheduler


Pipeline = TypeVar("Pipeline", KandinskyV22PriorPipeline, KandinskyV22Pipeline)


def twin(pipeline: Pipeline, **replacing: Any) -> Pipeline:
    """The same pipeline, sharing its models (and the prior's cached zero-image embedding), with `replacing`'s
    components instead of its own and a scheduler and a tokenizer of its own unless replaced: both keep state that
    each call writes (a scheduler its timesteps, a fast tokenizer its padding and truncation), so two threads
    calling one pipeline, or two pipelines sharing either, step or pad by the other's settings; and a pipeline with
    another scheduler leaves the one it was made from, and anyone sharing that, with the stock one."""
    components = {**pipeline.components, **replacing}
    for name in ("scheduler", "tokenizer"):
        if name not in replacing and components.get(name) is not None:
            components[name] = copy.deepcopy(components[name])
    made = type(pipeline)(**components)
    if hasattr(pipeline, "_zero_image_embeds"):  # the prior's zero-image embedding, cached (model.py)
        made._zero_image_embeds = pipeline._zero_image_embeds
    made.set_progress_bar_config(disable=True)
    return made


def wait_for_queued_work(device: torch.device) -> None:
    """Wait for the work this thread queued on `device` (on its current stream, where runs and CUDA graph replays go),
    not for the whole device's: synchronizing a device is invalid while any of its streams captures a CUDA graph, as
    the compile's warm-up on a thread of this process does between runs."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def image_generators(seeds: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One generator per image on `device`, image i seeded with its own seed: each image's noise is drawn where it is
    used (no per-step copy), and image i comes out the same whether it runs alone or in a batch."""
    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]


# ---- previews without MoVQ ------------------------------------------------------------------------------------------
@dataclass
class LinearPreview:
    """A 1x1 latent-to-RGB map (4 channels + bias -> 3): previews cost one tiny matrix product instead of a MoVQ
    decode. Fitted at load on MoVQ decodes of image-like noise, then refined on every finished run's own latents and
    pixels (free pairs), by least squares on running normal equations."""

    channels: int
    gram: torch.Tensor = field(init=False)  # sum of x x^T over latent pixels, x = [latent channels, 1]
    cross: torch.Tensor = field(init=False)  # sum of x y^T, y = RGB in [-1, 1]
    weight: torch.Tensor = field(init=False)  # [channels + 1, 3]
    # The weight where previews are made, copied there when it changes (after a run), not at each preview: a copy from
    # the host makes the CPU wait for the GPU's queued steps, in the middle of the step loop.
    _on_devices: dict[torch.device, torch.Tensor] = field(init=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.channels + 1, self.channels + 1, dtype=torch.float64)
        self.cross = torch.zeros(self.channels + 1, 3, dtype=torch.float64)
        self.weight = torch.zeros(self.channels + 1, 3)

    @classmethod
    def fitted_to(cls, movq: VQModel, scale_factor: int, samples: int = 4, side: int = 16) -> LinearPreview:
        """A map fitted to `movq`'s decodes of `samples` smooth random latents of `side`²."""
        parameter = next(movq.parameters())
        channels = int(movq.config["latent_channels"])
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(samples, channels, side, side, generator=generator)
        # Image latents are smooth: mix in blurred noise so the fit does not only see white noise.
        smooth = torch.nn.functional.interpolate(noise[:, :, ::4, ::4], size=(side, side), mode="bilinear")
        latents = torch.cat([noise, 2 * smooth]).to(parameter.device, parameter.dtype)
        preview = cls(channels)
        with torch.inference_mode():
            pixels = movq.decode(latents, force_not_quantize=True).sample
        preview.observe(latents, pixels, scale_factor)
        return preview

    def observe(self, latents: torch.Tensor, pixels: torch.Tensor, scale_factor: int) -> None:
        """Fold decoded pairs into the fit: `pixels` (in [-1, 1]) pooled to the latents' grid."""
        pooled = torch.nn.functional.avg_pool2d(pixels.float(), scale_factor)[
            ..., : latents.shape[-2], : latents.shape[-1]
        ]
        x = _with_bias(latents.float()).reshape(-1, self.channels + 1).double().cpu()
        y = pooled[:, :, : latents.shape[-2], : latents.shape[-1]].permute(0, 2, 3, 1).reshape(-1, 3).double().cpu()
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            # One overflowed decode (fp16 MoVQ, an extreme strength) would make the running sums NaN for good, and
            # every later preview of everyone's run black until a restart: such a pair teaches nothing.
            return
        with self._lock:
            self.gram += x.T @ x
            self.cross += x.T @ y
            ridge = 1e-6 * torch.eye(self.channels + 1, dtype=torch.float64) * self.gram.diagonal().mean()
            self.weight = torch.linalg.solve(self.gram + ridge, self.cross).float()
            self._on_devices = {device: self.weight.to(device) for device in self._on_devices}

    def rgb(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, h, w] as uint8 RGB images [B, h, w, 3] on the latents' device."""
        with self._lock:
            weight = self._on_devices.get(latents.device)
            if weight is None:  # the first preview on this device
                weight = self._on_devices[latents.device] = self.weight.to(latents.device)
        return pixels_to_bytes(_with_bias(latents.float()) @ weight)


def _with_bias(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h, w, C + 1] with a ones channel last."""
    channels_last = latents.permute(0, 2, 3, 1)
    return torch.cat([channels_last, torch.ones_like(channels_last[..., :1])], dim=-1)


class PreviewStream:
    """Previews handed over without making the CPU wait for the GPU: a preview is copied to pinned memory
    asynchronously and delivered at the first later step whose callback finds the copy done (on a CPU at once)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size  # (width, height) the previews are shown at
        self._pending: tuple[torch.Tensor, Any] | None = None

    def push(self, rgb: torch.Tensor) -> None:
        """Start moving `rgb` (uint8 [B, h, w, 3]) to the host; a preview still in flight is replaced."""
        if rgb.device.type != "cuda":
            self._pending = (rgb, None)
            return
        host = torch.empty(rgb.shape, dtype=rgb.dtype, pin_memory=True)
        host.copy_(rgb, non_blocking=True)  # queued on the stream of rgb's device, which the event must follow
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(rgb.device))
        self._pending = (host, event)

    def pop_ready(self) -> list[Image.Image] | None:
        """The pushed preview as images, once its copy has landed; None while none is ready."""
        if self._pending is None:
            return None
        host, event = self._pending
        if event is not None and not event.query():
            return None
        self._pending = None
        return [Image.fromarray(row).resize(self.size, Image.Resampling.BILINEAR) for row in host.numpy()]


# ---- decoding -------------------------------------------------------------------------------------------------------
MOVQ_DECODE_BYTES_PER_PIXEL = 3 * 1024  # a rough peak of MoVQ's activations per output pixel in fp16 (H100 figures)
DEFAULT_POOL = (0, 0)  # the allocator's id of the pool eager tensors come from; CUDA graphs' pools have others


def decode_chunk_size(count: int, pixels_per_image: int, device: torch.device, setting: int) -> int:
    """How many images to decode per eager MoVQ call: `setting` when set; else all of them unless the free GPU memory
    would not hold their activations, then one at a time (the peak then is one image's)."""
    if setting > 0:
        return setting
    if device.type != "cuda":
        return count
    needed = count * pixels_per_image * MOVQ_DECODE_BYTES_PER_PIXEL
    free, _ = torch.cuda.mem_get_info(device)
    if needed < free:
        return count
    if needed >= free + held_unused_in_all_pools(device):
        return 1  # not even with every pool's unused memory: no need to look closer
    return count if needed < free + held_unused_for_eager_tensors(device) else 1


def held_unused_in_all_pools(device: torch.device) -> int:
    """Bytes torch's allocator holds that no tensor uses, CUDA graphs' pools included: a cheap upper bound of
    `held_unused_for_eager_tensors`."""
    return torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def held_unused_for_eager_tensors(device: torch.device) -> int:
    """Bytes torch's allocator holds that no tensor uses and an eager tensor may take: the step loop's activations,
    just freed, which the driver counts as taken.

    Only the default pool's: CUDA graphs keep private pools, whose unused memory `memory_reserved()` counts too but
    only their own replays may use: counted, a compiled server's check would say images fit an eager decode where
    they do not. The snapshot walks the allocator's blocks on the host (no wait for the GPU), so it is taken only
    when the cheap counts leave the answer open."""
    return sum(
        segment["total_size"] - segment["active_size"]
        for segment in allocator_segments(device)
        if tuple(segment["segment_pool_id"]) == DEFAULT_POOL
    )


def allocator_segments(device: torch.device) -> list[dict[str, Any]]:
    """The segments torch's allocator holds on `device` (its snapshot: each with its pool's id, total and active
    bytes), read on the host without waiting for the GPU."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        segments = torch.cuda.memory_snapshot(include_traces=False)  # an operator's recorded history: not copied
    except TypeError:  # a torch before include_traces
        segments = torch.cuda.memory_snapshot()
    return [segment for segment in segments if segment.get("device", index) == index]


class DecodedSoFar:
    """The pixels a decode has made so far: a retry after running out of GPU memory starts where it stopped."""

    def __init__(self) -> None:
        self.pixels: torch.Tensor | None = None
        self.images = 0


def decode_to_pixels(
    decode: Callable[[torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    chunk: int,
    so_far: DecodedSoFar | None = None,
) -> torch.Tensor:
    """MoVQ's pixels in [-1, 1] for `latents`, `chunk` images per call, from the first image `so_far` lacks.

    Each call's output is copied out before the next call: compiled with CUDA graphs, a call's output lives in the
    graph's own memory, which the next replay overwrites (and torch then refuses to read the earlier output), so
    holding the chunks to join them at the end would break a decode in several chunks."""
    so_far = so_far if so_far is not None else DecodedSoFar()
    step = max(1, chunk)
    for start in range(so_far.images, latents.shape[0], step):
        decoded = decode(latents[start : start + step])
        if so_far.pixels is None:
            so_far.pixels = decoded.new_empty((latents.shape[0], *decoded.shape[1:]))
        so_far.pixels[start : start + step].copy_(decoded)
        so_far.images = start + decoded.shape[0]
    if so_far.pixels is None:
        raise ValueError("no latents to decode")
    return so_far.pixels


def pixels_to_bytes(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] as uint8, where they are: the pipeline's own arithmetic (clamp, float32, scale to 0-255,
    round half to even, cast), so the bytes equal its "pil" images'. Element by element: any layout."""
    return ((pixels * 0.5 + 0.5).clamp(0, 1).float() * 255).round().to(torch.uint8)


def pixels_to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """MoVQ's output [B, 3, H, W] as the decoder pipeline's "pil" images, bit for bit. The bytes are made where the
    pixels are (`pixels_to_bytes`); on a GPU the host then copies uint8 rows (half fp16's bytes) and only wraps them,
    instead of converting and rounding every value itself. For eight 768² images that host work, which the next run
    waits for, went from 61 ms to 4.8 ms (the host's share alone, timed on a 2-core CPU: docs/performance.md, ninth
    round)."""
    rgb = pixels_to_bytes(pixels).permute(0, 2, 3, 1).contiguous().cpu()
    return [Image.fromarray(row) for row in rgb.numpy()]


# ---- logos ----------------------------------------------------------------------------------------------------------
class LogoEmbeddings:
    """Each logo's CLIP image embedding, computed once per distinct picture (keyed by a hash of its pixels), with the
    image encoder brought to the GPU only for the moment it runs when it is kept on the CPU."""

    def __init__(self, prior: KandinskyV22PriorPipeline, device: torch.device, *, cache: bool, limit: int = 64) -> None:
        self.prior = prior
        self.device = device  # where the prior runs: the embedding is handed over there
        self.cache = cache
        self.limit = limit
        self._embeddings: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self.encoder_runs = 0

    def embedding(self, image: Image.Image) -> torch.Tensor:
        """The logo's embedding [1, D] on the prior's device."""
        rgb = image.convert("RGB")
        key = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
        if self.cache and key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        embedding = self._encode(rgb).to(self.device)
        if self.cache:
            self._embeddings[key] = embedding
            while len(self._embeddings) > self.limit:
                self._embeddings.popitem(last=False)
        return embedding

    def _encode(self, rgb: Image.Image) -> torch.Tensor:
        encoder = self.prior.image_encoder
        pixels = self.prior.image_processor(rgb, return_tensors="pt").pixel_values
        parked = encoder.device
        self.encoder_runs += 1
        try:
            if parked != self.device:
                # Kept off the GPU: brought in only while it runs. Inside the `try`: a move that runs out of memory
                # half-way must still go back, or the encoder stays split over two devices (and on the GPU).
                encoder.to(self.device)
            return encoder(pixels.to(device=self.device, dtype=encoder.dtype))["image_embeds"]
        except Exception as error:
            if ran_out_of_gpu_memory(error):
                raise LogoOutOfMemory(f"the image encoder ran out of GPU memory on {self.device}") from error
            raise
        finally:
            if parked != self.device:
                encoder.to(parked)


# ---- compilation ----------------------------------------------------------------------------------------------------
Bucket = tuple[int, int, int]  # (height, width, images per run)
StageKey = tuple[
    Any, ...
]  # ("prior", images, guided, negative) / ("decoder", h, w, images, guided) / ("decode", h, w, n)


@dataclass(frozen=True)
class CompileConfig:
    """How to compile: `backend`/`mode` as torch.compile takes them ("inductor" with CUDA graphs on a GPU; tests use
    "eager" or "aot_eager" to stay fast) and where the persistent cache lives."""

    backend: str = "inductor"
    mode: str | None = "reduce-overhead"  # CUDA graphs: eager Kandinsky is launch-bound
    cache_dir: Path | None = None
    threads: int = 0  # inductor's compile workers; 0: its own default (every core)
    # Hand compiled code from a compile process over as AOTInductor packages, loaded without tracing (packages.py).
    packages: bool = False


RECOMPILE_LIMIT = 64  # compiled versions of each forward (dynamo's default is 8)

Turn = Callable[[], contextlib.AbstractContextManager[object]]  # a stage of a warm-up runs inside one turn


@contextlib.contextmanager
def any_time() -> Iterator[None]:
    """A turn that waits for nothing: the warm-up runs beside whatever else runs."""
    yield


class WarmUpStopped(Exception):
    """Compiling was asked to stop: raised as the next stage of a warm-up would start, so a stop waits for one stage
    (seconds), not for a whole bucket."""


def stoppable(turn: Turn, stopped: threading.Event | None) -> Turn:
    """`turn`, refusing to start a stage once `stopped` is set (WarmUpStopped)."""
    if stopped is None:
        return turn
    set_event = stopped

    @contextlib.contextmanager
    def stage() -> Iterator[object]:
        if set_event.is_set():
            raise WarmUpStopped
        with turn() as value:
            # Again once the turn came: a stop while it waited for a run (a shutdown's drain) starts no stage after it.
            if set_event.is_set():
                raise WarmUpStopped
            yield value

    return stage


class StagedModels:
    """Faster stand-ins for the UNet, the prior and the MoVQ decode, ready stage by stage (a stage key per shape):
    pipelines sharing the loaded ones' components but calling the stand-ins, each with its own scheduler. A run uses
    them only for the stages that are ready, so it never waits for one to be made."""

    decode: Callable[[torch.Tensor], torch.Tensor]
    # Whether a warm stand-in replays a CUDA graph, whose memory is its own pool's, reserved when it was recorded: a
    # warm decode then needs no free memory (loaded AOTInductor packages allocate as eager code does).
    replays_cuda_graphs = False

    def __init__(
        self,
        prior: KandinskyV22PriorPipeline,
        decoder: KandinskyV22Pipeline,
        unet: torch.nn.Module,
        prior_model: torch.nn.Module,
    ) -> None:
        # Compiled code serves runs with a LoRA adapter too when the strengths are tensors: a new adapter or strength
        # then changes no Python value that compiled code specialises on (strengths.py).
        self.serves_adapters = all([hold_strengths_in_tensors(decoder.unet), hold_strengths_in_tensors(prior.prior)])
        # The stand-ins are called as the modules are; the pipelines' stubs want the modules' own classes.
        self.decoder = twin(decoder, unet=cast(UNet2DConditionModel, unet))
        self.prior = twin(prior, prior=prior_model)
        # A warm-up on a thread of its own (compiling here) runs beside generations that use `prior` and `decoder`:
        # it calls the same stand-ins through pipelines whose per-call state is its own.
        self.warming_prior, self.warming_decoder = twin(self.prior), twin(self.decoder)
        self._ready: set[StageKey] = set()
        self._buckets: dict[str, BucketState] = {}  # by bucket_name, in the order they were planned
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}  # per bucket, for the benchmark and the log
        self.longest_turn_s = 0.0  # the longest stage run inside a turn: the most a generation waited for one
        self.thread: threading.Thread | None = None

    def ready(self, key: StageKey) -> bool:
        """Whether this stage at these shapes runs the stand-ins without making anything (no compile, no load)."""
        with self._lock:
            return key in self._ready

    def _mark_ready(self, keys: Sequence[StageKey]) -> None:
        with self._lock:
            self._ready.update(keys)

    def plan(self, buckets: Sequence[Bucket]) -> None:
        """The buckets the warm-up thread will make ready: each is "compiling" until then."""
        with self._lock:
            for bucket in buckets:
                self._buckets.setdefault(bucket_name(bucket), "compiling")

    def settle(self, bucket: Bucket, state: BucketState) -> None:
        """A bucket's outcome: "ready" once its runs use the compiled code, "eager" when they never will."""
        with self._lock:
            self._buckets[bucket_name(bucket)] = state

    def progress(self) -> CompileProgress:
        """Each planned bucket's state. A bucket still "compiling" after the warm-up thread ended (stopped, or a
        failure nothing caught) is "eager": nothing will make it ready, so nobody should wait for it."""
        with self._lock:
            states = dict(self._buckets)
        thread = self.thread
        if thread is not None and thread.ident is not None and not thread.is_alive():  # started, and ended
            states = {name: "eager" if state == "compiling" else state for name, state in states.items()}
        return CompileProgress(states)

    @contextlib.contextmanager
    def _turn(self, turn: Turn) -> Iterator[None]:
        """One stage inside `turn`, timed: the longest is what a generation may have waited for."""
        with turn():
            started = time.perf_counter()
            try:
                yield
            finally:
                self.longest_turn_s = max(self.longest_turn_s, round(time.perf_counter() - started, 2))


class CompiledModels(StagedModels):
    """The UNet, the prior and the MoVQ decode compiled per size bucket, warmed in a background thread while the eager
    path serves: a stage uses its compiled module only for shapes a warm-up has run, so nobody waits on a compile.
    Runs with a LoRA adapter use it too, at any strength, without compiling again (strengths.py)."""

    def __init__(self, prior: KandinskyV22PriorPipeline, decoder: KandinskyV22Pipeline, config: CompileConfig) -> None:
        if config.cache_dir is not None:
            use_compile_cache(config.cache_dir)
        self.config = config  # its compile settings are applied by `warm`, on the thread that compiles
        # Per bucket, the compile caches' hits and misses while it warmed here: after a compile process, a miss means
        # this process compiled that graph again (for the benchmark and the log).
        self.cache_lookups: dict[str, dict[str, int]] = {}
        options: dict[str, Any] = {"backend": config.backend, "fullgraph": True, "dynamic": False}
        if config.backend == "inductor" and config.mode:
            options["mode"] = config.mode
        self.replays_cuda_graphs = options.get("mode") == "reduce-overhead" and decoder.device.type == "cuda"
        self.decode = torch.compile(movq_decoder(decoder.movq), **options)
        # torch.compile gives a module that wraps the one it compiles, called as it is; its stubs say only "a callable".
        unet = cast(torch.nn.Module, torch.compile(decoder.unet, **options))
        super().__init__(prior, decoder, unet, cast(torch.nn.Module, torch.compile(prior.prior, **options)))

    def warm_in_background(self, buckets: Sequence[Bucket], stopped: threading.Event | None = None) -> threading.Thread:
        """Warm each bucket in turn on a daemon thread, until `stopped` is set; a failure leaves that bucket eager and
        is logged."""
        self.thread = threading.Thread(
            target=self.warm, args=(buckets, any_time, stopped), name="compile-warm-up", daemon=True
        )
        self.thread.start()
        return self.thread

    def compile_settings_here(self) -> None:
        """Dynamo's and inductor's settings for the thread that calls this (`warm`, where compiling happens): torch
        2.13 keeps them per thread, and a new thread starts from the defaults.
        Shapes are static per bucket: room for sizes x batch sizes x guidance on and off, past dynamo's default 8
        compiled versions of each forward (the prior alone needs up to 4 per bucket)."""
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, RECOMPILE_LIMIT)
        if self.config.threads > 0 and self.config.backend == "inductor":
            limit_compile_threads(self.config.threads)

    def warm(
        self,
        buckets: Sequence[Bucket],
        turn: Turn = any_time,
        stopped: threading.Event | None = None,
        decode_counts: Mapping[Bucket, Sequence[int]] | None = None,
    ) -> list[Bucket]:
        """Run each bucket's compiled stages once at its shapes (this is where compiling happens), each stage inside
        one `turn`, until `stopped` is set (then between two stages); the buckets that are ready afterwards.
        `decode_counts` limits a bucket's decodes to those a compile process made: one it could not compile would
        be compiled again here, inside a turn that runs wait for, only to fail again."""
        self.compile_settings_here()
        done: list[Bucket] = []
        # Warming beside generations (a thread here, turn `any_time`), no bucket serves before all are warm: on torch
        # 2.11 everything compiled here shares this thread's CUDA graph tree and its memory pool, neither safe for two
        # threads at once, so a run replaying one bucket's graphs while the next bucket warms or records would race
        # in that pool. Warmed in turns (after compile processes), each bucket serves as soon as it is loaded.
        beside_runs = turn is any_time
        stage_turn = stoppable(turn, stopped)
        warm_ones: list[tuple[Bucket, list[StageKey]]] = []
        for bucket in buckets:
            started, looked_up = time.perf_counter(), compile_cache_lookups()
            try:
                with torch.inference_mode():
                    stages = run_bucket(
                        self.warming_prior,
                        self.warming_decoder,
                        self.decode,
                        bucket,
                        lambda: self._turn(stage_turn),
                        (decode_counts or {}).get(bucket),
                    )
                keys = [key for key, _ in stages]
            except WarmUpStopped:
                logger.info("compiling stopped before %s was ready; it stays eager", bucket_name(bucket))
                self.settle(bucket, "eager")
                break
            except Exception:
                logger.exception("compiling for %s failed; that size stays eager", bucket)
                self.settle(bucket, "eager")
                continue
            seconds = time.perf_counter() - started
            lookups = self.cache_lookups[bucket_name(bucket)] = dict(compile_cache_lookups() - looked_up)
            self.seconds[bucket_name(bucket)] = round(seconds, 2)
            if beside_runs:
                warm_ones.append((bucket, keys))
            else:
                self._serve(bucket, keys)
            done.append(bucket)
            logger.info(
                "compiled for %dx%d, %d image(s) per run, in %.1f s (compile cache: %s)",
                *bucket,
                seconds,
                ", ".join(f"{count} {name}" for name, count in sorted(lookups.items())) or "not used",
            )
        for bucket, keys in warm_ones:
            self._serve(bucket, keys)
        return done

    def _serve(self, bucket: Bucket, keys: list[StageKey]) -> None:
        """A warm bucket's stages used by runs from now on."""
        self._mark_ready(keys)
        self.settle(bucket, "ready")


def compile_cache_lookups() -> collections.Counter[str]:
    """How often this process has looked in inductor's FX graph cache and AOT autograd's cache so far, by outcome
    (dynamo's process-wide counters: "fxgraph_cache_hit", "autograd_cache_miss", ...)."""
    from torch._dynamo.utils import counters

    return collections.Counter(
        {
            name: count
            for group in ("inductor", "aot_autograd")
            for name, count in counters[group].items()
            if name.endswith(("cache_hit", "cache_miss", "cache_bypass"))
        }
    )


StageValue = TypeVar("StageValue")


def run_bucket(
    prior: KandinskyV22PriorPipeline,
    decoder: KandinskyV22Pipeline,
    decode: Callable[[torch.Tensor], torch.Tensor],
    bucket: Bucket,
    stage: Callable[[], contextlib.AbstractContextManager[StageValue]],
    decode_counts: Sequence[int] | None = None,
) -> list[tuple[StageKey, StageValue]]:
    """Run each stage of a bucket once at its shapes, each inside one `stage()` (what it yields is kept with the
    stage's key): two steps of the prior (with and without guidance and a negative prompt) and of the guided decoder,
    then a decode of each of `decode_counts` images (default: one image and all). A failing MoVQ decode ends the list
    there (the decode stays eager)."""
    height, width, images = bucket
    stages: list[tuple[StageKey, StageValue]] = []
    output = None
    for guided in (False, True):
        for negative in (False, True):
            with stage() as value:
                output = prior(
                    prompt=["warm-up"] * images,
                    negative_prompt=["warm-up"] * images if negative else None,
                    num_inference_steps=2,
                    guidance_scale=4.0 if guided else 1.0,
                )
            stages.append((prior_key(images, guided, negative), value))
    assert output is not None
    with stage() as value:
        latents = decoder(
            image_embeds=output.image_embeds,
            negative_image_embeds=output.negative_image_embeds,
            height=height,
            width=width,
            num_inference_steps=2,
            guidance_scale=4.0,
            output_type="latent",
        ).images
    stages.append((decoder_key(height, width, images, True), value))
    for count in bucket_decode_counts(bucket) if decode_counts is None else sorted(set(decode_counts)):
        try:  # MoVQ under fullgraph is the least proven: its failure keeps only the decode eager
            with stage() as value:
                # Twice, as the prior and the UNet run two steps: CUDA graph trees run a function's first call as a
                # warm-up and record its graph at the second, which must happen here, not in someone's run.
                for _ in range(2):
                    decode(latents[:count])
        except WarmUpStopped:  # a stop, not a decode that does not compile: the bucket is not ready
            raise
        except Exception:
            logger.exception("compiling the MoVQ decode for %dx%d failed; it stays eager", height, width)
            break
        stages.append((decode_key(height, width, count), value))
    return stages


def bucket_decode_counts(bucket: Bucket) -> list[int]:
    """The decodes a bucket warms: one image (a person's own run) and all of its images (a full shared run)."""
    return sorted({1, bucket[2]})


def prior_key(images: int, guided: bool, negative: bool) -> StageKey:
    return ("prior", images, guided, negative)


def decoder_key(height: int, width: int, images: int, guided: bool) -> StageKey:
    return ("decoder", height, width, images, guided)


def decode_key(height: int, width: int, count: int) -> StageKey:
    return ("decode", height, width, count)


def movq_decoder(movq: VQModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """MoVQ's decode as a plain function of the latents (what gets compiled)."""

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return movq.decode(latents, force_not_quantize=True).sample

    return decode


def use_compile_cache(folder: Path) -> None:
    """Keep inductor's compiled kernels and FX graphs in `folder` (the data folder), so a restart, and this process
    after a compile process filled it, reuse them.

    Inductor reads its folder from TORCHINDUCTOR_CACHE_DIR at each use, and writes its /tmp default there the first
    time anything asks: importing torch._inductor.config does, and diffusers imports it. So the variable is set here,
    not defaulted (a default never took: this process compiled everything again into /tmp, a bucket a child had
    compiled included), and inductor's memos of paths in the old folder are cleared when it changes."""
    folder.mkdir(parents=True, exist_ok=True)
    path = os.path.abspath(folder)  # as inductor writes it
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") != path:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
        from torch._inductor.utils import clear_inductor_caches  # older torch names it so; 2.13 keeps the alias

        clear_inductor_caches()
    # Read when torch._inductor.config is imported, so they reach the compile processes (this one has its defaults:
    # on); an operator's "0" stands.
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def limit_compile_threads(threads: int) -> None:
    """Give inductor's compile workers (Triton and C++ builds) at most `threads` cores, so a compile leaves cores to
    the eager path that serves meanwhile (takes effect before the first compile starts its pool)."""
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = str(threads)
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = threads


def bucket_name(bucket: Bucket) -> str:
    """ "768x768x1": height x width x images per run."""
    return "{}x{}x{}".format(*bucket)


def buckets_for(sizes: Sequence[int], batch_images: Sequence[int]) -> list[Bucket]:
    """Square size buckets x images per run, the fewest images first so the common case is ready soonest."""
    return [(size, size, images) for images in batch_images for size in sizes]
