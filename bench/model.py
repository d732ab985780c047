"""Benchmark: our generator against the plain diffusers pipeline, measured in the same run.

    python -m bench.model                   # the tiny offline model on this machine's CPU (a smoke run)
    python -m bench.model --size full       # the full-size Kandinsky 2.2 architecture, random weights, fp16 on CUDA

Random weights time the same as the real ones, so no download is needed. Each case runs `--warmup` times, then
`--runs` times; the report gives median seconds, the ratio ours / plain diffusers, and the peak GPU memory of each.

Three cases per size: one image; four images in one request; four visitors asking for one image each at the same
time, which plain diffusers serves one after the other and the app's queue serves in one shared run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

# From the defining modules, not `from diffusers`: see [tool.mypy] in pyproject.toml.
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline

from bench.full_size import build_full_size, combined_pipeline
from mascot.generation.generator import BatchItem, ModelInfo
from mascot.generation.model import KandinskyGenerator, ZeroEmbedCachingPriorPipeline
from mascot.generation.tiny import build_tiny_model
from mascot.prompt.request import GenerationRequest


@dataclass(frozen=True)
class Case:
    """What is timed: the requests that arrive together (several = several visitors at once)."""

    name: str
    requests: tuple[GenerationRequest, ...]


@dataclass(frozen=True)
class Measurement:
    case: str
    runner: str
    median_s: float
    peak_gib: float | None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.model", description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny", help="the model to time")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case first")
    parser.add_argument("--resolutions", type=int, nargs="+", default=None, help="square sizes (default by --size)")
    parser.add_argument("--num_inference_steps", type=int, default=None, help="decoder steps (default by --size)")
    parser.add_argument("--prior_num_inference_steps", type=int, default=None, help="prior steps (default by --size)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    return parser.parse_args(argv)


VISITOR_PROMPTS = (
    "a cheerful otter barista mascot, sticker style",
    "a friendly robot mascot for a bakery, flat vector",
    "a fox mascot holding a coffee cup, kawaii 3D",
    "a penguin mascot for a ski school, plush toy",
)


def cases(args: argparse.Namespace) -> list[Case]:
    """The UI's defaults on a GPU (50 + 25 steps, with a negative prompt); small and quick on the tiny model."""
    full = args.size == "full"
    sizes = args.resolutions or ([512, 768, 1024] if full else [256, 512])
    steps = args.num_inference_steps or (50 if full else 4)
    prior_steps = args.prior_num_inference_steps or (25 if full else 4)
    result = []
    for size in sizes:

        def request(prompt: str, seed: int, num_images_per_prompt: int = 1, size: int = size) -> GenerationRequest:
            return GenerationRequest.from_user(
                prompt=prompt,
                negative_prompt="text, watermark",
                seed=seed,
                width=size,
                height=size,
                num_inference_steps=steps,
                prior_num_inference_steps=prior_steps,
                guidance_scale=4.0,
                prior_guidance_scale=1.0,
                num_images_per_prompt=num_images_per_prompt,
            )

        label = f"{size}² {steps}+{prior_steps} steps"
        result += [
            Case(f"{label}, 1 image", (request(VISITOR_PROMPTS[0], 7),)),
            Case(f"{label}, 4 images in one request", (request(VISITOR_PROMPTS[0], 7, 4),)),
            Case(
                f"{label}, 4 visitors at once",
                tuple(request(prompt, 7 + index) for index, prompt in enumerate(VISITOR_PROMPTS)),
            ),
        ]
    return result


def build_pipelines(size: str, folder: Path, device: str) -> tuple[KandinskyV22PriorPipeline, KandinskyV22Pipeline]:
    """Both pipelines, saved and loaded back like the app loads them (so both runners start from the same files)."""
    if size == "tiny":
        build_tiny_model(folder)
    else:
        save_full_size(folder)
    dtype = torch.float16 if device == "cuda" else torch.float32
    prior = KandinskyV22PriorPipeline.from_pretrained(folder / "prior", dtype=dtype).to(device)
    decoder = KandinskyV22Pipeline.from_pretrained(folder / "decoder", dtype=dtype).to(device)
    for pipeline in (prior, decoder):
        pipeline.set_progress_bar_config(disable=True)
    return prior, decoder


def save_full_size(folder: Path) -> None:
    """The full-size architecture with random weights (bench.full_size), saved where the app would load it from."""
    prior, decoder = build_full_size()
    prior.save_pretrained(folder / "prior")
    decoder.save_pretrained(folder / "decoder")


def plain_diffusers(prior: KandinskyV22PriorPipeline, decoder: KandinskyV22Pipeline) -> Callable[[Case], None]:
    """What a diffusers user writes: the combined pipeline, one generator."""
    combined = combined_pipeline(prior, decoder)

    def run(case: Case) -> None:
        for request in case.requests:  # one call per visitor, one after the other
            combined(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                width=request.width,
                height=request.height,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale,
                prior_num_inference_steps=request.prior_num_inference_steps,
                prior_guidance_scale=request.prior_guidance_scale,
                num_images_per_prompt=request.num_images_per_prompt,
                generator=torch.Generator("cpu").manual_seed(request.seed),
            )

    return run


def ours(prior: KandinskyV22PriorPipeline, decoder: KandinskyV22Pipeline, device: str) -> Callable[[Case], None]:
    """The app's generator on the same modules: its prior pipeline computes the zero-image embedding once, and
    requests that arrive together share one run, as the worker runs them."""
    info = ModelInfo(name="benchmark", is_preview_model=False, device=device)
    caching_prior = ZeroEmbedCachingPriorPipeline(**prior.components)
    caching_prior.set_progress_bar_config(disable=True)
    generator = KandinskyGenerator(caching_prior, decoder, info, preview_every=0)
    with torch.inference_mode():
        caching_prior.get_zero_embed()  # as KandinskyGenerator.load does once at start

    def run(case: Case) -> None:
        if len(case.requests) == 1:
            generator.generate(case.requests[0])
        else:
            generator.generate_batch([BatchItem(request) for request in case.requests])

    return run


def measure(
    runner: Callable[[Case], None], case: Case, args: argparse.Namespace, device: str
) -> tuple[float, float | None]:
    for _ in range(args.warmup):
        runner(case)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(args.runs):
        started = time.perf_counter()
        runner(case)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return statistics.median(seconds), peak


def report(measurements: list[Measurement], device: str) -> str:
    lines = [f"device: {device}", "| case | plain diffusers (s) | ours (s) | ours / plain | peak GiB plain / ours |"]
    lines.append("|---|---|---|---|---|")
    for case in dict.fromkeys(m.case for m in measurements):
        plain, mine = (next(m for m in measurements if m.case == case and m.runner == r) for r in ("plain", "ours"))
        peaks = f"{plain.peak_gib:.2f} / {mine.peak_gib:.2f}" if plain.peak_gib is not None else "n/a (CPU)"
        ratio = mine.median_s / plain.median_s
        lines.append(f"| {case} | {plain.median_s:.3f} | {mine.median_s:.3f} | {ratio:.2f} | {peaks} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Measurement]:
    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.size == "full" and device != "cuda":
        raise SystemExit("python -m bench.model --size full needs a CUDA GPU; without one, run the tiny model.")
    with tempfile.TemporaryDirectory() as folder:
        prior, decoder = build_pipelines(args.size, Path(folder) / "model", device)
        runners = {"plain": plain_diffusers(prior, decoder), "ours": ours(prior, decoder, device)}
        measurements = []
        for case in cases(args):
            for name, runner in runners.items():
                median_s, peak = measure(runner, case, args, device)
                measurements.append(Measurement(case.name, name, median_s, peak))
    print(report(measurements, device))
    if args.json:
        args.json.write_text(json.dumps([m.__dict__ for m in measurements], indent=2))
    return measurements


if __name__ == "__main__":
    main()
