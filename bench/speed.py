"""Benchmark of the fast path against plain diffusers, alternated round by round, at the app's real settings.

    python -m bench.speed --size full --json speed.json    # one H200/H100: full-size Kandinsky 2.2, random fp16 weights
    python -m bench.speed --size tiny                       # CPU dry run on the tiny model (the test suite runs it)

Needs only torch, transformers, diffusers, numpy, pillow, safetensors (no gradio; peewee only for the CPU app-overhead
phase, which is skipped without it). Phases, each alternating plain diffusers and ours round by round so a change in
machine load moves both: one mascot at the app's settings (768², 50 + 25 steps, previews every 5 steps); 8 people
queued through the GenerationWorker (PNG + thumbnail written per mascot, as the app stores them); then, while the
budget lasts, torch.compile warmed in the background (eager requests served meanwhile) and compiled vs plain; the UNet's
step under each convolution setting (bench/convolutions.py: cuDNN's benchmark, channels-last), in the children's compile
time or after the other phases; then, with --lower-precision, one mascot with the linear layers lowered, eager and
compiled; on a CPU, the app's overhead per request through the worker and the store. Reports seconds, peak GPU memory,
the largest pixel difference (fast vs the plain path, compiled vs eager) and compile time, and where one mascot's time
goes, eager and compiled (the time inside the text encoder, the prior, the UNet and MoVQ's decode, and the rest:
stage_clock.py); writes JSON; prints ratios.
`--budget-s` (default 330) skips optional phases when too little time is left.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import importlib
import json
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

# From the defining modules, not `from diffusers`: see [tool.mypy] in pyproject.toml.
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline, downscale_height_and_width
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline
from PIL import Image

from bench.convolutions import time_unet_settings
from bench.full_size import build_full_size, combined_pipeline
from bench.stage_clock import where_the_time_goes
from bench.timing import TimedGenerator
from mascot.generation.adapter_files import BASE_MODELS, TARGET_MODULES, AdapterCard
from mascot.generation.adapters import AdapterSpec, load_adapter, set_adapter_scale
from mascot.generation.generator import BatchItem, GeneratedImages, ModelInfo, StepCallback, StepUpdate
from mascot.generation.model import KandinskyGenerator, ZeroEmbedCachingPriorPipeline
from mascot.generation.precision import PrecisionUnsupported, lower_precision
from mascot.generation.saver import SAVE_THREADS
from mascot.generation.speed import (
    DEFAULT_POOL,
    CompileConfig,
    allocator_segments,
    bucket_name,
    compile_cache_lookups,
    decode_key,
    decoder_key,
    held_unused_for_eager_tensors,
    held_unused_in_all_pools,
    prior_key,
    wait_for_queued_work,
)
from mascot.generation.tiny import build_decoder_pipeline, build_prior_pipeline
from mascot.generation.worker import FINAL_STATES, GenerationWorker, Job, JobState, RunBatch, Submission
from mascot.prompt.request import GenerationRequest
from mascot.settings import LOWER_PRECISIONS, SpeedOptions
from mascot.store import imaging
from mascot.store.files import ImageFiles

COMPILE_ESTIMATE_S = {"full": 200.0, "tiny": 30.0}  # warm-up plus compiled rounds; skipped with less budget left
# What the compiled rounds need after the warm-up: 8 people (plain ~30 s, ours ~5 s), one mascot (~17 s), where the
# time goes (~7 s), on the H200's figures.
COMPILED_ROUNDS_S = {"full": 65.0, "tiny": 10.0}
STOP_S = 15.0  # a warm-up cut at the budget's end ends within a stage (seconds), and its children within 10 s
# --lower-precision's eager rounds (its compiled part needs COMPILE_ESTIMATE_S more).
LOWERED_EAGER_S = {"full": 60.0, "tiny": 5.0}
# The UNet's step under each convolution setting (bench/convolutions.py): a spare UNet built, then its rounds.
CONVOLUTIONS_S = {"full": 40.0, "tiny": 10.0}
CONVOLUTION_STEPS = {"full": 5, "tiny": 1}  # UNet calls per setting and round
HOUSE_LOOK = "look"  # --lora-rank's adapter
PROMPTS = (
    "a cheerful otter barista mascot, sticker style",
    "a friendly robot mascot for a bakery, flat vector",
    "a fox mascot holding a coffee cup, kawaii 3D",
    "a penguin mascot for a ski school, plush toy",
)


@dataclasses.dataclass(frozen=True)
class Scale:
    """The settings of a size: the app's defaults at full size, small and quick on the tiny model."""

    size: int
    steps: int
    prior_steps: int
    preview_every: int


SCALES = {"full": Scale(768, 50, 25, 5), "tiny": Scale(256, 4, 2, 2)}


class Bench:
    """The measurements so far (written to JSON after each phase, so a cut run keeps them) and the clock."""

    def __init__(self, args: argparse.Namespace, device: str) -> None:
        self.args, self.device, self.cuda = args, device, device == "cuda"
        self.started = time.monotonic()
        self.results: dict[str, Any] = {"device": device, "size": args.size, "torch": torch.__version__}
        # Kept for the last phase (--lower-precision's eager rounds): the phases before it see that much less.
        self.reserved_s = LOWERED_EAGER_S[args.size] if args.lower_precision else 0.0

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started) - self.reserved_s

    def left_for_goals(self) -> float:
        """What is left with the time kept for --lower-precision's last phase: the goals' phases come first."""
        return self.left() + self.reserved_s

    def record(self, key: str, value: Any) -> None:
        self.results[key] = value
        print(f"[{time.monotonic() - self.started:6.1f}s] {key}: {json.dumps(value, default=str)}", flush=True)
        if self.args.json:  # whole or not at all: the call's hard limit may end this process mid-write
            partial = self.args.json.with_suffix(".partial")
            partial.write_text(json.dumps(self.results, indent=1, default=str))
            os.replace(partial, self.args.json)

    def sync(self) -> None:
        """Wait for the work queued on this thread's stream, where runs and CUDA graph replays go (the worker's too:
        every thread's default stream is the device's one): a device-wide synchronize is invalid while any stream
        captures a CUDA graph, as a bucket's load stage here does between runs, beside the requests timed meanwhile."""
        wait_for_queued_work(torch.device(self.device))

    def timed(self, run: Callable[[], Any]) -> tuple[float, float | None, Any]:
        """Seconds, peak GiB allocated (CUDA) and the result of one call."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.sync()
        start = time.perf_counter()
        result = run()
        self.sync()
        seconds = time.perf_counter() - start
        peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None
        return seconds, peak, result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SCALES), default="tiny", help="full: random fp16 weights on CUDA")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds per phase, after --warmup rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--people", type=int, default=8, help="people queued at once in the throughput phase")
    parser.add_argument("--people-rounds", type=int, default=2, help="rounds of the throughput phase")
    parser.add_argument("--budget-s", type=float, default=330.0, help="optional phases are skipped past this")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile phase")
    parser.add_argument("--compile-batch-images", default="1,8", help="images per run compiled (buckets), e.g. 1,8")
    parser.add_argument("--compile-processes", type=int, default=2, help="child processes compiling at once")
    parser.add_argument("--compile-in-process", action="store_true", help="compile on a thread here (as before)")
    parser.add_argument("--compile-packages", action="store_true", help="children hand over AOTInductor packages")
    parser.add_argument("--compile-threads", type=int, default=0, help="inductor compile workers (0: half the cores)")
    parser.add_argument("--compile-niceness", type=int, default=10, help="the children's niceness (tests: 0)")
    parser.add_argument("--lower-precision", choices=LOWER_PRECISIONS, help="also time one mascot lowered to this")
    parser.add_argument("--lora-rank", type=int, default=0, help="a random decoder adapter of this rank (a house look)")
    parser.add_argument("--overhead-requests", type=int, default=10, help="requests in the CPU app-overhead phase")
    parser.add_argument("--num_inference_steps", type=int, help="decoder steps (default: the app's 50; tiny 4)")
    parser.add_argument("--json", type=Path, help="write the results here (after every phase)")
    return parser.parse_args(argv)


# ---- models ----------------------------------------------------------------------------------------------------------
def build_pipelines(size: str, device: str) -> tuple[KandinskyV22PriorPipeline, KandinskyV22Pipeline]:
    """Both pipelines in memory: the tiny model, or the full-size architecture with random fp16 weights on CUDA."""
    if size == "tiny":
        with tempfile.TemporaryDirectory() as folder:
            prior, decoder = build_prior_pipeline(Path(folder)), build_decoder_pipeline()
    else:
        prior, decoder = build_full_size()
    for pipeline in (prior, decoder):
        pipeline.set_progress_bar_config(disable=True)
        for module in pipeline.components.values():
            if isinstance(module, torch.nn.Module):
                module.eval()  # as from_pretrained gives them to the app (modules are built in training mode)
    return prior.to(device), decoder.to(device)


def add_house_look(decoder: KandinskyV22Pipeline, rank: int) -> tuple[AdapterSpec, ...]:
    """A LoRA adapter of `rank` with random weights (both halves: a trained adapter's B is not 0) on the projections
    lora/train.py adapts, saved and loaded back through the app's own loader before anything compiles, as the app
    loads its adapters; off until a run picks it. Nothing without `rank`."""
    if not rank:
        return ()
    from peft import LoraConfig

    unet = cast(Any, decoder.unet)
    torch.manual_seed(0)
    targets = list(TARGET_MODULES["decoder"])
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False), HOUSE_LOOK)
    with tempfile.TemporaryDirectory() as folder:
        unet.save_lora_adapter(folder, adapter_name=HOUSE_LOOK)
        unet.delete_adapters(HOUSE_LOOK)
        AdapterCard("decoder", BASE_MODELS["decoder"], rank=rank, lora_alpha=rank).write(Path(folder))
        spec = AdapterSpec.parse(f"{HOUSE_LOOK}={folder}")
        load_adapter(unet, spec)
    return (spec,)


def compile_targets(
    size: str, every: int, precision: str = "", lora_rank: int = 0
) -> tuple[KandinskyV22PriorPipeline, KandinskyV22Pipeline]:
    """In a compile process: the same models as the benchmark's fast generator (what `ours` builds, the image encoder
    parked on a GPU, with the house look of `lora_rank`; lowered to `precision` when given, as lower_precision_phase
    lowers its copies), so the graphs and the cache's keys are those the benchmark then loads."""
    device = "cuda" if size == "full" else "cpu"
    prior, decoder = build_pipelines(size, device)
    generator = ours(prior, decoder, device, SpeedOptions(), every, add_house_look(decoder, lora_rank))
    if precision:
        lower_precision([generator.decoder.unet, generator.prior.prior], precision, device)
    if device == "cuda":
        generator.park_image_encoder()
    return generator.fast_prior, generator.fast_decoder


def request(scale: Scale, prompt: str = PROMPTS[0], seed: int = 7, adapter_name: str = "") -> GenerationRequest:
    """The app's defaults at this scale, with a negative prompt as the style presets add one."""
    return GenerationRequest.from_user(
        adapter_name=adapter_name,
        prompt=prompt,
        negative_prompt="text, watermark, blurry",
        seed=seed,
        width=scale.size,
        height=scale.size,
        num_inference_steps=scale.steps,
        prior_num_inference_steps=scale.prior_steps,
        guidance_scale=4.0,
        prior_guidance_scale=1.0,
    )


def plain_runner(prior: KandinskyV22PriorPipeline, decoder: KandinskyV22Pipeline) -> Callable[[Any], Image.Image]:
    """What a diffusers user writes: the combined pipeline with one CPU generator, previews by MoVQ every few steps
    through the step callback (as the app shows them)."""
    combined = combined_pipeline(prior, decoder)

    def run(item: tuple[GenerationRequest, int]) -> Image.Image:
        req, preview_every = item

        def preview(pipeline: Any, index: int, timestep: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
            if preview_every and (index + 1) % preview_every == 0 and index + 1 < req.num_inference_steps:
                decoded = decoder.movq.decode(tensors["latents"][:1], force_not_quantize=True).sample
                decoder.numpy_to_pil((decoded * 0.5 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy())
            return {}

        return combined(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            width=req.width,
            height=req.height,
            num_inference_steps=req.num_inference_steps,
            guidance_scale=req.guidance_scale,
            prior_num_inference_steps=req.prior_num_inference_steps,
            prior_guidance_scale=req.prior_guidance_scale,
            generator=torch.Generator("cpu").manual_seed(req.seed),
            callback_on_step_end=preview,
        ).images[0]

    return run


def ours(
    prior: KandinskyV22PriorPipeline,
    decoder: KandinskyV22Pipeline,
    device: str,
    speed: SpeedOptions,
    every: int,
    adapters: Sequence[AdapterSpec] = (),
) -> KandinskyGenerator:
    """The app's generator on the same modules, with `adapters` loaded into them already (compiling is started by its
    own phase)."""
    caching = ZeroEmbedCachingPriorPipeline(**prior.components)
    caching.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        caching.get_zero_embed()
    info = ModelInfo(name="benchmark", is_preview_model=False, device=device)
    return KandinskyGenerator(
        caching,
        decoder,
        info,
        preview_every=every,
        adapters=adapters,
        speed=dataclasses.replace(speed, compile=False),
    )


def pixel_difference(first: Image.Image, second: Image.Image) -> dict[str, float]:
    difference = np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16))
    return {"max": int(difference.max()), "mean": round(float(difference.mean()), 3)}


def preview_taker() -> StepCallback:
    """A step callback that takes each preview, as the worker relays them."""
    previews: list[Image.Image] = []

    def take_preview(update: StepUpdate) -> None:
        if update.preview is not None:
            previews.append(update.preview)

    return take_preview


def generate_with_previews(generator: KandinskyGenerator, req: GenerationRequest) -> GeneratedImages:
    """One request with a step callback that takes each preview, as the worker relays them."""
    return generator.generate(req, preview_taker())


# ---- phases ----------------------------------------------------------------------------------------------------------
def alternate(
    bench: Bench,
    runners: dict[str, Callable[[], Any]],
    rounds: int,
    warmup: int,
    setups: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, Any]:
    """Each runner once per round, in turn; medians and peaks of the timed rounds, and each runner's last output.
    `setups[name]`, untimed, puts the shared modules where that runner keeps them (the image encoder on the GPU for
    plain diffusers, on the CPU for ours) before its round."""
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    peaks: dict[str, float | None] = {}
    outputs: dict[str, Any] = {}
    for index in range(warmup + rounds):
        for name, run in runners.items():
            if setups and name in setups:
                setups[name]()  # parking the image encoder also returns its memory to the device
                bench.sync()
            spent, peak, outputs[name] = bench.timed(run)
            if index >= warmup:
                seconds[name].append(spent)
                peaks[name] = max(peaks.get(name) or 0, peak) if peak is not None else None
    summary: dict[str, Any] = {
        name: {"median_s": round(statistics.median(values), 3), "runs_s": [round(v, 3) for v in values]}
        for name, values in seconds.items()
    }
    for name, peak in peaks.items():
        summary[name]["peak_gib"] = peak
    return {"timings": summary, "outputs": outputs}


def encoder_setups(bench: Bench, fast: KandinskyGenerator) -> dict[str, Callable[[], Any]]:
    """Where each runner keeps the shared image encoder: plain diffusers (and ours with every fast part off) on the
    GPU, the fast path on the CPU until a logo needs it."""
    on_gpu: Callable[[], Any] = lambda: fast.prior.image_encoder.to(bench.device)  # noqa: E731
    parked: Callable[[], Any] = fast.park_image_encoder if bench.cuda else (lambda: None)
    return {"plain_diffusers": on_gpu, "ours_all_fast_parts_off": on_gpu, "ours_fast": parked, "ours_worker": parked}


def one_mascot_key(scale: Scale) -> str:
    return f"one_mascot_{scale.size}_{scale.steps}+{scale.prior_steps}_previews_every_{scale.preview_every}"


def one_mascot(bench: Bench, scale: Scale, plain: Callable[[Any], Image.Image], fast: KandinskyGenerator,
               today: KandinskyGenerator) -> None:  # fmt: skip
    """Plain diffusers vs ours (fast) vs ours with every fast part off, one mascot at the app's settings."""
    req = request(scale)
    runners = {
        "plain_diffusers": lambda: plain((req, scale.preview_every)),
        "ours_fast": lambda: generate_with_previews(fast, req).images[0],
        "ours_all_fast_parts_off": lambda: generate_with_previews(today, req).images[0],
    }
    result = alternate(bench, runners, bench.args.runs, bench.args.warmup, encoder_setups(bench, fast))
    timings, outputs = result["timings"], result["outputs"]
    plain_s = timings["plain_diffusers"]["median_s"]
    bench.record(
        one_mascot_key(scale),
        {
            **timings,
            "ratio_plain_over_ours_fast": round(plain_s / timings["ours_fast"]["median_s"], 3),
            "ratio_plain_over_ours_parts_off": round(plain_s / timings["ours_all_fast_parts_off"]["median_s"], 3),
            "pixel_diff_fast_vs_parts_off": pixel_difference(outputs["ours_fast"], outputs["ours_all_fast_parts_off"]),
            "pixel_diff_parts_off_vs_plain_diffusers (generators differ)": pixel_difference(
                outputs["ours_all_fast_parts_off"], outputs["plain_diffusers"]
            ),
        },
    )


CONVOLUTIONS_KEY = "unet_convolution_settings_eager"


def convolution_settings(bench: Bench, scale: Scale, fast: KandinskyGenerator, when: str) -> None:
    """The UNet's step under each convolution setting, eager (bench/convolutions.py), at one mascot's rows and at the
    queued people's, in a generation's turn: no stage of compiled code loads meanwhile, and the settings, which are
    the whole process's, are back as they were before anything else runs. A failure (its spare UNet out of memory
    beside the compile processes, say) is recorded and the call goes on."""
    unet = fast.decoder.unet
    side, _ = downscale_height_and_width(scale.size, scale.size, fast.decoder.movq_scale_factor)
    rows = sorted({2, 2 * bench.args.people})  # two rows per image under guidance

    def measure() -> None:
        with fast.turn.for_run(lambda: None):
            try:
                row = time_unet_settings(unet.config, bench.device, unet.dtype, side, rows,
                                         steps=CONVOLUTION_STEPS[bench.args.size], rounds=bench.args.runs,
                                         synchronize=bench.sync)  # fmt: skip
            finally:
                if bench.cuda:  # the spare UNet and its activations go back (the children compile beside)
                    torch.cuda.empty_cache()
        bench.record(CONVOLUTIONS_KEY, {"measured": when, **row})

    guarded(bench, CONVOLUTIONS_KEY, measure)


def time_the_models(bench: Bench, fast: KandinskyGenerator, req: GenerationRequest, label: str) -> None:
    """Where one mascot's time goes, in one more run: the time inside each model it calls (stage_clock.py)."""
    row = where_the_time_goes(bench.cuda, fast, lambda: generate_with_previews(fast, req))
    bench.record(f"where_the_time_goes_{label}", row)


def time_a_shared_run(bench: Bench, scale: Scale, fast: KandinskyGenerator, out: Path, label: str) -> None:
    """Where an N-people round's time goes (the goal of 8 people at 1.5 mascots/s): one run shared by N one-image
    requests, as the worker batches them, each taking its previews, with its models timed (stage_clock.py); then the
    store's writing of the run's pictures (PNG and thumbnail side by side, ImageFiles as the savers use it), which the
    round's last answer waits for."""
    people = bench.args.people
    items = [BatchItem(request(scale, PROMPTS[k % 4], 100 + k), preview_taker()) for k in range(people)]
    results: list[GeneratedImages | None] = []

    def run() -> GeneratedImages:
        results[:] = fast.generate_batch(items)
        first = results[0]
        assert first is not None  # nothing cancels these requests
        return first  # its prior and decoder seconds are the run's

    row = where_the_time_goes(bench.cuda, fast, run)
    images = [image for result in results if result is not None for image in result.images]
    started = time.perf_counter()
    ImageFiles(out / f"shared-run-{label}").write_images(
        images, [{"prompt": "a person"}] * len(images), datetime.now(UTC)
    )
    row["writing_its_pictures_s (PNG + thumbnail, side by side)"] = round(time.perf_counter() - started, 3)
    bench.record(f"where_a_run_of_{people}_people_goes_{label}", {"images": len(images), **row})


def lowered(bench: Bench, scale: Scale, plain: Callable[[Any], Image.Image], fast: KandinskyGenerator) -> None:
    """lower_precision_phase when the budget has room for it; a failure is recorded and the run goes on."""
    key = f"lower_precision_{bench.args.lower_precision}"
    bench.reserved_s = 0.0
    if bench.left() < LOWERED_EAGER_S[bench.args.size]:
        bench.record(key, {"skipped": f"{bench.left():.0f} s of budget left"})
        return
    # A failure (a torchao that does not match this torch, say) is recorded; the rest of the results stay.
    guarded(bench, key, lambda: lower_precision_phase(bench, scale, plain, fast))


def lower_precision_phase(bench: Bench, scale: Scale, plain: Callable[[Any], Image.Image],
                          fast: KandinskyGenerator) -> None:  # fmt: skip
    """One mascot with the UNet's and the prior's linear layers lowered to --lower-precision, on copies (the other
    phases keep full precision), against plain diffusers and ours at full precision, eager both, alternated; then,
    unless --no-compile, the lowered models compiled as the app compiles them (lowered_compiled) against plain
    diffusers. Pixel differences are against ours at full precision, eager against eager and compiled against
    compiled: the same noise and the same kind of code, so they are the precision's alone. (By now `fast` runs its
    compiled code: on a GPU its pictures differ from eager ones by themselves, and its time is a compiled one.)"""
    precision, req, key = bench.args.lower_precision, request(scale), f"lower_precision_{bench.args.lower_precision}"
    setups = encoder_setups(bench, fast)
    setups["plain_diffusers"]()  # the zero-image embeddings of the new generators are computed with the encoder here
    full = ours(fast.prior, fast.decoder, bench.device, SpeedOptions(), scale.preview_every, fast.adapters)
    allocated = (lambda: torch.cuda.memory_allocated() / 2**30) if bench.cuda else (lambda: 0.0)
    unet, transformer = copy.deepcopy(fast.decoder.unet), copy.deepcopy(fast.prior.prior)
    before = allocated()
    try:
        lowered = lower_precision([unet, transformer], precision, bench.device)
    except PrecisionUnsupported as unsupported:
        bench.record(key, {"skipped": str(unsupported)})
        return
    saved_gib = round(before - allocated(), 2)
    prior = KandinskyV22PriorPipeline(**{**fast.prior.components, "prior": transformer})
    low = ours(prior, KandinskyV22Pipeline(unet=unet, scheduler=fast.decoder.scheduler, movq=fast.decoder.movq),
               bench.device, SpeedOptions(), scale.preview_every, fast.adapters)  # fmt: skip
    runners = {
        "plain_diffusers": lambda: plain((req, scale.preview_every)),
        "ours_fast_eager": lambda: generate_with_previews(full, req).images[0],
        f"ours_{precision}": lambda: generate_with_previews(low, req).images[0],
    }
    setups["ours_fast_eager"] = setups[f"ours_{precision}"] = setups["ours_fast"]
    result = alternate(bench, runners, bench.args.runs, bench.args.warmup, setups)
    timings, outputs = result["timings"], result["outputs"]
    median = {name: timing["median_s"] for name, timing in timings.items()}
    row = {
        **timings,
        "linear_layers_lowered": lowered.layers,
        "lowering_s": lowered.seconds,
        "weights_memory_saved_gib": saved_gib if bench.cuda else None,
        "peaks_include_the_lowered_copies": bench.cuda,
        f"ratio_plain_over_ours_{precision}": round(median["plain_diffusers"] / median[f"ours_{precision}"], 3),
        f"ratio_ours_fast_eager_over_ours_{precision}": round(
            median["ours_fast_eager"] / median[f"ours_{precision}"], 3
        ),
        f"pixel_diff_{precision}_vs_ours_fast_eager": pixel_difference(
            outputs[f"ours_{precision}"], outputs["ours_fast_eager"]
        ),
    }
    bench.record(key, row)
    if bench.args.no_compile:
        return
    if bench.left() > COMPILE_ESTIMATE_S[bench.args.size]:
        lowered_compiled(bench, scale, low, fast, runners, setups, outputs["ours_fast_eager"])
    else:  # said in the results, so that a missing figure is not read as a failure
        bench.record(f"{key}_compiled", {"skipped": f"{bench.left():.0f} s of budget left"})


def lowered_compiled(bench: Bench, scale: Scale, low: KandinskyGenerator, fast: KandinskyGenerator,
                     runners: dict[str, Callable[[], Any]], setups: dict[str, Callable[[], Any]],
                     full_precision_eager: Image.Image) -> None:  # fmt: skip
    """lower_precision_phase's compiled part: the lowered generator compiled as the app compiles it (on a thread here;
    with --compile-packages, AOTInductor packages built in a child process from models it lowers itself, then loaded
    here), then alternated with plain diffusers. Its picture against ours at full precision, compiled (`fast`, when
    its compiled code is ready: the precision's own difference) and eager."""
    args = bench.args
    precision, req = args.lower_precision, request(scale)
    name, key = f"ours_{precision}_compiled", f"lower_precision_{precision}_compiled"
    if args.compile_packages:
        config = CompileConfig(threads=compile_threads(args), mode=None, packages=True)
        targets = importlib.import_module("bench.speed").compile_targets  # by its importable name (compiled_phase)
        build = functools.partial(targets, args.size, scale.preview_every, precision, args.lora_rank)
        low.start_compiling(config, [scale.size], [1], build_in_child=build, niceness=args.compile_niceness)
    else:
        config = CompileConfig(threads=compile_threads(args)) if bench.cuda else CompileConfig("eager")
        low.start_compiling(config, [scale.size], [1])
    try:
        assert low.compiled is not None and low.compiled.thread is not None
        low.compiled.thread.join(max(1.0, bench.left() - COMPILED_ROUNDS_S[bench.args.size]))
        if low.compiled.thread.is_alive():
            bench.record(key, {"skipped": "the warm-up did not finish within the budget"})
            return
        # A compile or a package load that failed (logged above) leaves the size eager: timing it would time eager.
        if not low.compiled.ready(decoder_key(scale.size, scale.size, 1, True)):
            bench.record(key, {"failed": "compiling the lowered models failed; see the log above"})
            return
        both = {"plain_diffusers": runners["plain_diffusers"], name: runners[f"ours_{precision}"]}
        placed = setups | {name: setups["ours_fast"]}
        row, picture = compiled_versus_plain(bench, low, req, both, bench.args.runs, placed)
    finally:
        low.stop_compiling()
    pixels = {f"pixel_diff_{precision}_compiled_vs_ours_fast_eager": pixel_difference(picture, full_precision_eager)}
    if fast.compiled is not None and fast.compiled.ready(decoder_key(scale.size, scale.size, 1, True)):
        setups["ours_fast"]()
        full_precision_compiled = generate_with_previews(fast, req).images[0]
        pixels[f"pixel_diff_{precision}_compiled_vs_ours_compiled"] = pixel_difference(picture, full_precision_compiled)
    how = "packages from a child process" if args.compile_packages else "a thread here"
    bench.record(key, {"how": how, "warm_up_s": low.compiled.seconds, **row, **pixels})


def compiled_versus_plain(bench: Bench, generator: KandinskyGenerator, req: GenerationRequest,
                          runners: dict[str, Callable[[], Any]], rounds: int,
                          setups: dict[str, Callable[[], Any]]) -> tuple[dict[str, Any], Image.Image]:  # fmt: skip
    """A warm compiled generator's first call (it records the CUDA graphs on this thread), then `runners` (plain
    diffusers and the compiled one) alternated: the row's figures and the compiled runner's last picture."""
    first_s = round(bench.timed(lambda: generator.generate(req))[0], 3)
    result = alternate(bench, runners, rounds, 0, setups)
    timings = result["timings"]
    [name] = [runner for runner in runners if runner != "plain_diffusers"]
    ratio = timings["plain_diffusers"]["median_s"] / timings[name]["median_s"]
    row = {"first_compiled_call_s (records CUDA graphs)": first_s, **timings}
    return {**row, f"ratio_plain_over_{name}": round(ratio, 3)}, result["outputs"][name]


def wait_until_ended(job: Job) -> None:
    """Return once `job` has ended (stored, failed or cancelled), woken by its changes as a page is."""
    snapshot = job.snapshot
    while snapshot.state not in FINAL_STATES:
        snapshot = job.wait_for_change(snapshot.version, 5.0)


@dataclass(frozen=True)
class Saved:
    """Where the worker's savers wrote a job's pictures (the benchmark shares none: no share ids)."""

    image_paths: tuple[Path, ...]
    public_ids: tuple[str, ...]


def people_queued(bench: Bench, scale: Scale, plain: Callable[[Any], Image.Image] | None, fast: KandinskyGenerator,
                  out: Path, label: str = "", rounds: int | None = None) -> None:  # fmt: skip
    """N people at once: plain diffusers one after another (saving each PNG + thumbnail on the same thread), and our
    worker (shared runs of up to 8 images, saved on its saver threads by the store's own file writer: PNG and
    thumbnail side by side, a run's jobs side by side), alternated round by round (ours alone when `plain` is None).
    Besides the time until the last person is answered, each round's mean answer time: a person's wait."""
    people = bench.args.people
    answers: dict[str, list[float]] = {"plain_diffusers": [], "ours_worker": []}  # each round's mean answer time
    files = ImageFiles(out / "ours")

    def save(image: Image.Image, name: str) -> Path:
        imaging.save_png(image, out / f"{name}.png", {"prompt": name})
        imaging.save_thumbnail(image, out / f"{name}.thumb.webp")
        return out / f"{name}.png"

    def on_finished(job: Job, result: GeneratedImages, info: ModelInfo) -> Saved:
        stored = files.write_images(result.images, [{"prompt": job.id}] * len(result.images), datetime.now(UTC))
        return Saved(image_paths=tuple(files.absolute(image.path) for image in stored), public_ids=())

    worker = GenerationWorker(lambda on_status: fast, on_finished, max_batch_images=8, save_in_background=True)
    worker.start().wait_until_loaded(60)
    runs: list[int] = []
    run_batch = worker._run_batch  # counted to show that the people really share runs

    def counting(jobs: Sequence[Job], run: RunBatch | None = None) -> None:
        runs.append(len(jobs))
        run_batch(jobs, run)

    worker._run_batch = counting  # type: ignore[method-assign]

    def run_plain() -> None:
        assert plain is not None  # only called when there is a plain runner
        started, answered_s = time.perf_counter(), []
        for k in range(people):
            save(plain((request(scale, PROMPTS[k % 4], 100 + k), scale.preview_every)), f"plain-{k}")
            answered_s.append(time.perf_counter() - started)
        answers["plain_diffusers"].append(statistics.mean(answered_s))

    def run_ours() -> None:
        started = time.perf_counter()
        # Queued together, as people who came while a run was in progress: the worker, which takes what is queued
        # when it wakes, would otherwise start a run with the first one or two while the rest are being submitted
        # (seen on this CPU: runs of 2 and 6, which with buckets of 1 and 8 images would both run eager). The
        # worker's condition is reentrant, so each submit takes it again inside.
        with worker._lock:
            jobs = [
                worker.submit(Submission(request(scale, PROMPTS[k % 4], 100 + k), owner_hash=f"{k + 1:064x}"))
                for k in range(people)
            ]

        def answered(job: Job) -> float:  # seconds until this person's final answer, whoever else is still waiting
            wait_until_ended(job)
            state = job.snapshot.state
            if state is not JobState.DONE:  # a failed run ends fast: its seconds are no throughput
                raise RuntimeError(f"a queued person's job ended {state.value}, not done (the log says why)")
            return time.perf_counter() - started

        with ThreadPoolExecutor(people, thread_name_prefix="person") as waiting:
            answered_s = list(waiting.map(answered, jobs))
        answers["ours_worker"].append(statistics.mean(answered_s))

    try:
        runners = {"plain_diffusers": run_plain, "ours_worker": run_ours} if plain else {"ours_worker": run_ours}
        result = alternate(bench, runners, rounds or bench.args.people_rounds, 0, encoder_setups(bench, fast))
    finally:
        worker.stop(60)
    timings = result["timings"]
    for name in timings:
        timings[name]["mascots_per_s"] = round(people / timings[name]["median_s"], 3)
        timings[name]["mean_answer_s"] = round(statistics.median(answers[name]), 3)
    row: dict[str, Any] = {**timings, "jobs_per_run": runs, "saver_threads": SAVE_THREADS}
    if bench.cuda:
        try:
            row["memory_a_decode_may_use_after_gib"] = memory_a_decode_may_use()
        except Exception as error:  # the allocator's snapshot unlike torch 2.13's: the throughput row stands
            traceback.print_exc()
            row["memory_a_decode_may_use_after_gib"] = {"failed": f"{type(error).__name__}: {error}"}
    if plain:
        row["ratio_ours_over_plain_mascots_per_s"] = round(
            timings["ours_worker"]["mascots_per_s"] / timings["plain_diffusers"]["mascots_per_s"], 3
        )
    bench.record(f"{people}_people_queued{label}", row)


def cuda_graph_pools_gib() -> float:
    """GiB the allocator holds in CUDA graphs' private pools, used or not: memory the compiled path takes beside the
    peak allocated that the rows report (max_memory_allocated counts no graph's pool once its replays end)."""
    segments = allocator_segments(torch.device("cuda", torch.cuda.current_device()))
    held = sum(segment["total_size"] for segment in segments if tuple(segment["segment_pool_id"]) != DEFAULT_POOL)
    return round(held / 2**30, 2)


def memory_a_decode_may_use() -> dict[str, float]:
    """GiB by where they lie once runs ended: the driver's free memory, what the allocator holds unused in the
    default pool (which the decode's check counts, with the driver's), and in all pools (CUDA graphs' too)."""
    gib, device = 2**30, torch.device("cuda", torch.cuda.current_device())
    free, _ = torch.cuda.mem_get_info(device)
    return {
        "driver_free": round(free / gib, 2),
        "held_unused_default_pool": round(held_unused_for_eager_tensors(device) / gib, 2),
        "held_unused_all_pools": round(held_unused_in_all_pools(device) / gib, 2),
    }


def compiled_phase(bench: Bench, scale: Scale, plain: Callable[[Any], Image.Image], fast: KandinskyGenerator,
                   today: KandinskyGenerator, work: Path) -> None:  # fmt: skip
    """torch.compile warmed in the background (in child processes that fill the persistent cache, then loaded here
    between runs; or on a thread here with --compile-in-process). A quiet eager baseline first; then, while it
    compiles, one mascot plain vs ours alternated, 8 people eager, and single eager requests timed one after another;
    then compiled vs plain, 8 people first (the goal not yet measured), then one mascot."""
    args, req = bench.args, request(scale)
    generate_with_previews(fast, req)  # warm-up
    quiet_s, _, result = bench.timed(lambda: generate_with_previews(fast, req))
    eager = result.images[0]
    bench.record("eager_baseline_s", round(quiet_s, 3))
    guarded(bench, "where_the_time_goes_eager", lambda: time_the_models(bench, fast, req, "eager"))
    # Ours eager with the house look, for the compiled look's pixel difference.
    look = generate_with_previews(fast, request(scale, adapter_name=HOUSE_LOOK)).images[0] if args.lora_rank else None
    batch_images, threads = compiled_batch_images(args), compile_threads(args)
    cache = work / "compile-cache"
    if args.compile_packages:  # AOTInductor: inductor on either device
        config = CompileConfig(cache_dir=cache, threads=threads, mode=None, packages=True)
    elif bench.cuda:
        config = CompileConfig(cache_dir=cache, threads=threads)
    else:
        config = CompileConfig("eager", threads=threads)
    # By its importable name: run as `python -m bench.speed`, this module is __main__, which a child cannot import.
    targets = importlib.import_module("bench.speed").compile_targets
    child = functools.partial(targets, args.size, scale.preview_every, "", args.lora_rank)
    build = None if args.compile_in_process else child
    started = time.monotonic()
    fast.start_compiling(config, [scale.size], batch_images, build_in_child=build,
                         processes=args.compile_processes, niceness=args.compile_niceness)  # fmt: skip
    try:
        compiled_rounds(bench, scale, plain, fast, today, work, req, (eager, look), started)
    finally:
        fast.stop_compiling()  # a cut phase must not leave children compiling


def compiled_rounds(bench: Bench, scale: Scale, plain: Callable[[Any], Image.Image], fast: KandinskyGenerator,
                    today: KandinskyGenerator, work: Path, req: GenerationRequest,
                    eager_pictures: tuple[Image.Image, Image.Image | None], started: float) -> None:  # fmt: skip
    """compiled_phase's measurements, while the compile runs and after it (`eager_pictures`: ours eager before the
    compile, without and with the house look)."""
    args, (eager, look) = bench.args, eager_pictures
    assert fast.compiled is not None and fast.compiled.thread is not None
    warming = fast.compiled.thread
    guarded(bench, one_mascot_key(scale), lambda: one_mascot(bench, scale, plain, fast, today))
    if warming.is_alive() and bench.left() > COMPILED_ROUNDS_S[args.size] + 60:
        key = f"{args.people}_people_queued_eager_while_compiling"
        guarded(bench, key, lambda: people_queued(bench, scale, None, fast, work, "_eager_while_compiling", 1))
    # In the children's compile time, which single requests would fill otherwise; not beside a warm-up thread here,
    # whose compiling would see the settings switched.
    spare_s = bench.left() - COMPILED_ROUNDS_S[args.size] - 60
    if fast.compile_children and warming.is_alive() and spare_s > CONVOLUTIONS_S[args.size]:
        convolution_settings(bench, scale, fast, "while the children compiled")
    served = serve_while_warming(bench, fast, req, warming, started)
    # The warm-up may use the time kept for --lower-precision (FP8 takes at most 4.4% off): the goals come first.
    warming.join(max(1.0, bench.left_for_goals() - COMPILED_ROUNDS_S[args.size] - STOP_S))
    cut = warming.is_alive()
    if cut:  # stopped, so that no load stage records CUDA graphs beside what is timed next (the stage running ends)
        fast.stop_compiling(timeout=STOP_S)
    row: dict[str, Any] = {
        "how": f"{len(fast.compile_children)} child process(es)" if fast.compile_children else "a thread here",
        "compile_threads": compile_threads(args),
        "warm_up_s": round(time.monotonic() - started, 1),
        "per_bucket_s (a child's: cold; here: from the cache the children filled)": fast.compiled.seconds,
        "longest_stage_a_run_waited_for_s": fast.compiled.longest_turn_s,
        # What /healthz reports: "ready" per bucket, or "eager" where compiling or loading it failed.
        "buckets": dict(fast.compiled.progress().buckets),
        # Loading a child's bucket should only hit: a miss is a graph compiled here again, inside a turn.
        "compile_cache_lookups_here": getattr(fast.compiled, "cache_lookups", {}),
        # This process's lookups in all, a bucket still loading included: a cut warm-up shows whether it missed.
        "compile_cache_lookups_here_in_all": dict(compile_cache_lookups()),
        "eager_baseline_s (ours_fast, quiet, before compiling)": bench.results.get("eager_baseline_s"),
        **served,
        "children": [
            {"buckets": [bucket_name(b) for b in child.work.buckets], "exit": child.process.poll(), **child.report()}
            for child in fast.compile_children
        ],
    }
    if cut:
        row["cut"] = (
            f"the warm-up was still loading after {STOP_S:.0f} s more: its stage may still run beside the runs timed"
            if warming.is_alive()
            else "the warm-up did not finish within the budget: stopped, and only its ready buckets measured"
        )
    bench.record("compiled", row)
    people, size = args.people, scale.size
    if people in compiled_batch_images(args) and bench.left_for_goals() > COMPILED_ROUNDS_S[args.size] * 0.6:
        compiled_only(bench, fast, size, people, f"{people}_people_queued_compiled",
                      lambda: people_queued(bench, scale, plain, fast, work, label="_compiled", rounds=1))  # fmt: skip
    if bench.left_for_goals() < 10:
        return

    def one_compiled_mascot() -> None:
        setups = encoder_setups(bench, fast)
        row, picture = compiled_versus_plain(bench, fast, req,
                                             {"plain_diffusers": lambda: plain((req, scale.preview_every)),
                                              "ours_compiled": lambda: generate_with_previews(fast, req).images[0]},
                                             args.runs if bench.left_for_goals() > 30 else 1,
                                             {**setups, "ours_compiled": setups["ours_fast"]})  # fmt: skip
        bench.record("compiled_one_mascot", {**row, "pixel_diff_compiled_vs_eager": pixel_difference(picture, eager)})

    compiled_only(bench, fast, size, 1, "compiled_one_mascot", one_compiled_mascot)
    if bench.left() > 10:
        compiled_only(bench, fast, size, 1, "where_the_time_goes_compiled",
                      lambda: time_the_models(bench, fast, req, "compiled"))  # fmt: skip
    if people in compiled_batch_images(args) and bench.left() > 20:
        compiled_only(bench, fast, size, people, f"where_a_run_of_{people}_people_goes_compiled",
                      lambda: time_a_shared_run(bench, scale, fast, work, "compiled"))  # fmt: skip
    if look is not None and bench.left() > 10:
        pictures = (eager, look)
        compiled_only(bench, fast, size, 1, "compiled_one_mascot_house_look",
                      lambda: house_look(bench, scale, plain, fast, encoder_setups(bench, fast), pictures))  # fmt: skip


def compiled_only(bench: Bench, fast: KandinskyGenerator, size: int, images: int, key: str,
                  measure: Callable[[], None]) -> None:  # fmt: skip
    """Run a compiled phase (which records `key`) only when its bucket's compiled code is ready: else its runs would
    be eager under a compiled label. A failure is recorded under `key` and the call goes on to the next phase."""
    assert fast.compiled is not None
    bucket = (size, size, images)
    if not fast.compiled.ready(decoder_key(*bucket, True)):
        state = fast.compiled.progress().buckets.get(bucket_name(bucket), "not planned")
        bench.record(key, {"skipped": f"bucket {bucket_name(bucket)} is {state}, not ready"})
        return
    guarded(bench, key, measure)
    row = bench.results.get(key)
    if isinstance(row, dict) and "failed" not in row:
        # A bucket is ready even where one of its stages failed to compile (that stage runs eager): said beside the
        # figure, which would otherwise time an eager stage under a compiled label.
        compiled = fast.compiled
        stages = {"/".join(map(str, stage)): compiled.ready(stage) for stage in compiled_stage_keys(size, images)}
        row = {**row, "stages_compiled": stages}
        if bench.cuda:
            pools = "cuda_graph_pools_gib (the whole process's, beside each peak_gib)"
            try:
                row[pools] = cuda_graph_pools_gib()
            except Exception as error:  # the allocator's snapshot unlike torch 2.13's: the row stands
                row[pools] = {"failed": f"{type(error).__name__}: {error}"}
        bench.record(key, row)


def compiled_stage_keys(size: int, images: int) -> list[tuple[Any, ...]]:
    """The stages a run of `images` one-image requests at `size`² calls, as request() makes them: its prior unguided
    (prior_guidance_scale 1) with a negative prompt, its decoder guided, and one decode of all."""
    return [prior_key(images, False, True), decoder_key(size, size, images, True), decode_key(size, size, images)]


def guarded(bench: Bench, key: str, measure: Callable[[], None]) -> None:
    """`measure()`, which records `key`; when it raises, the error is recorded under `key` (with the traceback in the
    log) and the call goes on: later phases may still measure."""
    try:
        measure()
    except Exception as error:
        traceback.print_exc()
        bench.record(key, {"failed": f"{type(error).__name__}: {error}"})


def house_look(bench: Bench, scale: Scale, plain: Callable[[Any], Image.Image], fast: KandinskyGenerator,
               setups: dict[str, Callable[[], Any]],
               eager_pictures: tuple[Image.Image, Image.Image]) -> None:  # fmt: skip
    """One mascot with --lora-rank's adapter at strength 1 (a house look): plain diffusers with the adapter on against
    ours compiled, alternated. Both run the same modules, whose adapters hold their strengths in tensors once compiled
    stand-ins exist (generation/strengths.py); the adapter is off again afterwards."""
    req, unet = request(scale, adapter_name=HOUSE_LOOK), fast.decoder.unet
    eager, look = eager_pictures

    def plain_with_look() -> Image.Image:
        set_adapter_scale(unet, HOUSE_LOOK, 1.0)
        return plain((req, scale.preview_every))

    runners = {"plain_diffusers": plain_with_look, "ours_compiled": lambda: generate_with_previews(fast, req).images[0]}
    try:
        row, picture = compiled_versus_plain(bench, fast, req, runners, bench.args.runs if bench.left() > 30 else 1,
                                             {**setups, "ours_compiled": setups["ours_fast"]})  # fmt: skip
    finally:
        set_adapter_scale(unet, None, 0.0)
    bench.record(
        "compiled_one_mascot_house_look",
        {
            **row,
            "lora_rank": bench.args.lora_rank,
            "pixel_diff_compiled_vs_eager": pixel_difference(picture, look),
            "pixel_diff_eager_look_vs_eager_base (the look acts)": pixel_difference(look, eager),
        },
    )


def compiled_batch_images(args: argparse.Namespace) -> list[int]:
    return [int(part) for part in args.compile_batch_images.split(",") if part.strip()]


def compile_threads(args: argparse.Namespace) -> int:
    return int(args.compile_threads or max(1, (os.cpu_count() or 2) // 2))


def serve_while_warming(bench: Bench, fast: KandinskyGenerator, req: GenerationRequest, warming: Any,
                        started: float) -> dict[str, Any]:  # fmt: skip
    """One eager request after another while the warm-up runs: each one's seconds, by what was going on when it
    ended (children compiling, or buckets loading here), and the GPU memory the whole device used (children too)."""
    served: dict[str, list[float]] = {"while_children_compiled": [], "while_loading_here": []}
    device_used = 0.0
    failed: str | None = None
    while warming.is_alive() and bench.left_for_goals() > COMPILED_ROUNDS_S[bench.args.size] + 10:
        try:
            seconds = round(bench.timed(lambda: generate_with_previews(fast, req))[0], 3)
        except Exception as error:  # out of memory beside the children, say: the warm-up's figures still count
            traceback.print_exc()
            failed = f"{type(error).__name__}: {error}"
            break
        compiling = any(child.process.poll() is None for child in fast.compile_children)
        served["while_children_compiled" if compiling else "while_loading_here"].append(seconds)
        if bench.cuda:
            free, total = torch.cuda.mem_get_info()
            device_used = max(device_used, round((total - free) / 2**30, 2))
    return {
        "eager_served_while_warming_s": served,
        "served_median_s": {name: round(statistics.median(v), 3) if v else None for name, v in served.items()},
        "device_memory_used_max_gib (all processes)": device_used if bench.cuda else None,
        "warm_up_ended_at_s": round(time.monotonic() - started, 1) if not warming.is_alive() else None,
        **({"serving_failed": failed} if failed else {}),
    }


def app_overhead(bench: Bench, fast: KandinskyGenerator, store_dir: Path) -> None:
    """The app's time per request outside the model (CPU, tiny model): submit to stored through the worker and the
    real store, minus the generator's own time; with the saver thread and without."""
    try:
        from mascot.store.store import MascotStore
    except ImportError:
        bench.record("app_overhead", {"skipped": "peewee is not installed"})
        return
    small = dataclasses.replace(
        request(SCALES["tiny"]), num_inference_steps=2, prior_num_inference_steps=2, width=256, height=256
    )
    rows = {}
    for background in (False, True):
        store = MascotStore(f"sqlite:///{store_dir / f'overhead-{background}.db'}", store_dir / f"images-{background}")
        rows[f"save_in_background={background}"] = overhead_through_worker(bench, fast, store, small, background)
    bench.record("app_overhead_per_request_ms (worker + store, no HTTP)", rows)


def overhead_through_worker(bench: Bench, generator: KandinskyGenerator, store: Any, req: GenerationRequest,
                            background: bool) -> dict[str, float]:  # fmt: skip
    generate_seconds: list[float] = []
    worker = GenerationWorker(
        lambda on_status: TimedGenerator(generator, generate_seconds),
        lambda job, images, model: store.save_generation(
            job.submission.owner_hash, job.submission.request, images, model
        ),
        save_in_background=background,
    )
    worker.start().wait_until_loaded(30)
    overheads = []
    try:
        for index in range(bench.args.warmup + bench.args.overhead_requests):
            start = time.perf_counter()
            job = worker.submit(Submission(dataclasses.replace(req, seed=index), owner_hash=f"{index + 1:064x}"))
            wait_until_ended(job)
            if index >= bench.args.warmup:
                overheads.append(1000 * (time.perf_counter() - start - generate_seconds[-1]))
    finally:
        worker.stop()
    return {"median_ms": round(statistics.median(overheads), 1), "max_ms": round(max(overheads), 1)}


# ---- main ---------------------------------------------------------------------------------------------------------
def summary(results: dict[str, Any]) -> str:
    """The ratios, one line each, measured in this run."""
    lines = ["==== ratios (plain diffusers measured in the same run, round by round) ===="]
    for key, value in results.items():
        if isinstance(value, dict):
            for name, figure in value.items():
                if name.startswith(("ratio", "pixel_diff", "warm_up", "median")) or "overhead" in key:
                    lines.append(f"{key}: {name} = {figure}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and args.size == "full" else "cpu"
    if args.size == "full" and device != "cuda":
        raise SystemExit("python -m bench.speed --size full needs a CUDA GPU; without one, run --size tiny.")
    bench, scale = Bench(args, device), SCALES[args.size]
    if args.num_inference_steps:
        scale = dataclasses.replace(scale, steps=args.num_inference_steps)
    prior, decoder = build_pipelines(args.size, device)
    looks = add_house_look(decoder, args.lora_rank)
    # Both generators cache the zero-image embedding now, with the image encoder still on the GPU; each round then
    # puts the encoder where its runner keeps it (encoder_setups).
    fast = ours(prior, decoder, device, SpeedOptions(), scale.preview_every, looks)
    today = ours(prior, decoder, device, SpeedOptions.plain(), scale.preview_every, looks)
    plain = plain_runner(prior, decoder)
    gpu = torch.cuda.get_device_name() if bench.cuda else "cpu"
    bench.record("build", {"gpu": gpu, "seconds": round(time.monotonic() - bench.started, 1)})
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        with torch.inference_mode():
            if args.no_compile or bench.left() < COMPILE_ESTIMATE_S[args.size]:
                guarded(bench, one_mascot_key(scale), lambda: one_mascot(bench, scale, plain, fast, today))
                guarded(bench, "where_the_time_goes_eager",
                        lambda: time_the_models(bench, fast, request(scale), "eager"))  # fmt: skip
                guarded(bench, f"{args.people}_people_queued", lambda: people_queued(bench, scale, plain, fast, work))
                guarded(bench, f"where_a_run_of_{args.people}_people_goes_eager",
                        lambda: time_a_shared_run(bench, scale, fast, work, "eager"))  # fmt: skip
                reason = "--no-compile" if args.no_compile else f"{bench.left():.0f} s of budget left"
                bench.record("compiled", {"skipped": reason})
            else:  # the compile runs from the start; every eager figure is measured while it runs
                compiled_phase(bench, scale, plain, fast, today, work)
            if CONVOLUTIONS_KEY not in bench.results:
                if bench.left() > CONVOLUTIONS_S[args.size]:
                    convolution_settings(bench, scale, fast, "after the other phases")
                else:
                    bench.record(CONVOLUTIONS_KEY, {"skipped": f"{bench.left():.0f} s of budget left"})
            # Last: the goals' figures come first in a call cut short, and no lowered copy sits in their peak memory.
            if args.lower_precision:
                lowered(bench, scale, plain, fast)
        if not bench.cuda:
            app_overhead(bench, fast, work)
    bench.record("total_s", round(time.monotonic() - bench.started, 1))
    print(summary(bench.results))
    return bench.results


if __name__ == "__main__":
    main()
