"""Where a mascot's arithmetic goes (issue 11): the floating-point operations of each model call and of each kind of
layer, counted on the meta device from the full-size architecture (assets/kandinsky-2-2-configs.json) at the app's
default settings. No weights, no GPU: a few seconds on a CPU.

What it decides: lower precision through torchao lowers linear layers only, so their share of the operations bounds
what it can gain; the operations of one mascot and of a run of N people, against the time a goal allows, give the rate
(TFLOP/s) the GPU must sustain to meet it.

    python -m bench.flops                                  # 768², runs of 1 and 8 images
    python -m bench.flops --size 1024 --images 1,4 --json flops.json
"""

from __future__ import annotations

import argparse
import collections
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import downscale_height_and_width
from torch.utils.flop_counter import FlopCounterMode

from bench.full_size import denoising_models
from mascot.prompt.request import GenerationRequest

# Issue 11's goals: one mascot in 0.9 s; 8 people queued served at 1.5 mascots a second.
GOAL_ONE_MASCOT_S = 0.9
GOAL_MASCOTS_PER_S = 1.5
REST = "attention and the rest"  # what no convolution or linear layer computes: attention's own products, mostly


@dataclass(frozen=True)
class CallArithmetic:
    """One call of one model: how many rows it computes and its operations, in all and by kind of layer."""

    model: str
    rows: int  # images per call, doubled under classifier-free guidance
    flops: int
    by_kind: dict[str, int]


@dataclass(frozen=True)
class RunArithmetic:
    """One run of `images` mascots at the app's defaults: its calls and their operations in all."""

    images: int
    size: int
    num_inference_steps: int
    prior_num_inference_steps: int
    unet_step: CallArithmetic
    prior_step: CallArithmetic
    movq_decode: CallArithmetic
    flops: int
    by_kind: dict[str, int]
    goal_s: float  # the time issue 11's goals allow this run

    @property
    def linear_share(self) -> float:
        return self.by_kind.get("linear layers", 0) / self.flops

    @property
    def tflops_per_s_for_goal(self) -> float:
        """The rate the GPU must sustain, over the whole run, to meet the goal."""
        return self.flops / self.goal_s / 1e12


def count_call(model: torch.nn.Module, name: str, rows: int, call: Callable[[], object]) -> CallArithmetic:
    """The operations of `call` (one forward of `model`), split by kind: convolutions by kernel size and linear layers
    from hooks on those modules, the rest from torch's own counter (matrix products and attention)."""
    by_kind: collections.Counter[str] = collections.Counter()

    def on_convolution(module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        assert isinstance(module, torch.nn.Conv2d)
        kernel_h, kernel_w = module.kernel_size
        macs = output.numel() * module.in_channels // module.groups * kernel_h * kernel_w
        by_kind[f"{kernel_h}x{kernel_w} convolutions"] += 2 * macs

    def on_linear(module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        assert isinstance(module, torch.nn.Linear)
        by_kind["linear layers"] += 2 * output.numel() * module.in_features

    hooks = [
        module.register_forward_hook(on_convolution if isinstance(module, torch.nn.Conv2d) else on_linear)
        for module in model.modules()
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear)
    ]
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            call()
    finally:
        for hook in hooks:
            hook.remove()
    total = counter.get_total_flops()
    by_kind[REST] = total - sum(by_kind.values())
    return CallArithmetic(name, rows, total, dict(by_kind))


def unet_inputs(
    config: Any, device: str, dtype: torch.dtype, latent_size: tuple[int, int], rows: int
) -> dict[str, Any]:
    """A decoder step's arguments, as the Kandinsky 2.2 pipeline calls its UNet (the image embedding as its only
    condition), random, for `rows` rows of latents of `latent_size` (height, width)."""
    height, width = latent_size
    return {
        "sample": torch.randn(rows, config["in_channels"], height, width, device=device, dtype=dtype),
        "timestep": torch.full((rows,), 500, device=device, dtype=torch.long),
        "encoder_hidden_states": None,
        "added_cond_kwargs": {"image_embeds": torch.randn(rows, config["encoder_hid_dim"], device=device, dtype=dtype)},
    }


def count_run(images: int, size: int, request: GenerationRequest | None = None) -> RunArithmetic:
    """One run of `images` mascots of `size`² at the request's settings (the app's defaults when None)."""
    settings = request or GenerationRequest(prompt="a mascot", width=size, height=size)
    prior, unet, movq = denoising_models("meta")
    scale_factor = 2 ** (len(movq.config["block_out_channels"]) - 1)
    latent_h, latent_w = downscale_height_and_width(settings.height, settings.width, scale_factor)
    # The pipelines double the rows under classifier-free guidance (the negative and the positive side).
    decoder_rows = images * (2 if settings.guidance_scale > 1 else 1)
    prior_rows = images * (2 if settings.prior_guidance_scale > 1 else 1)
    embedding = prior.config["embedding_dim"]
    tokens = prior.config["num_embeddings"]

    def meta(*shape: int) -> torch.Tensor:
        return torch.zeros(*shape, device="meta", dtype=torch.float16)

    step_inputs = unet_inputs(unet.config, "meta", torch.float16, (latent_h, latent_w), decoder_rows)
    unet_step = count_call(unet, "unet", decoder_rows, lambda: unet(**step_inputs))
    prior_step = count_call(
        prior,
        "prior",
        prior_rows,
        lambda: prior(
            meta(prior_rows, embedding),
            timestep=torch.zeros(prior_rows, device="meta", dtype=torch.long),
            proj_embedding=meta(prior_rows, embedding),
            encoder_hidden_states=meta(prior_rows, tokens, embedding),
            attention_mask=torch.ones(prior_rows, tokens, device="meta", dtype=torch.bool),
        ),
    )
    movq_decode = count_call(
        movq,
        "movq_decode",
        images,
        lambda: movq.decode(meta(images, movq.config["latent_channels"], latent_h, latent_w), force_not_quantize=True),
    )
    calls = [
        (unet_step, settings.num_inference_steps),
        (prior_step, settings.prior_num_inference_steps),
        (movq_decode, 1),
    ]
    by_kind: collections.Counter[str] = collections.Counter()
    for call, times in calls:
        for kind, flops in call.by_kind.items():
            by_kind[kind] += flops * times
    return RunArithmetic(
        images=images,
        size=size,
        num_inference_steps=settings.num_inference_steps,
        prior_num_inference_steps=settings.prior_num_inference_steps,
        unet_step=unet_step,
        prior_step=prior_step,
        movq_decode=movq_decode,
        flops=sum(call.flops * times for call, times in calls),
        by_kind=dict(by_kind),
        goal_s=GOAL_ONE_MASCOT_S if images == 1 else images / GOAL_MASCOTS_PER_S,
    )


def report(run: RunArithmetic) -> str:
    """The run's arithmetic in lines a person reads."""
    lines = [
        f"{run.images} image(s) at {run.size}², {run.num_inference_steps} decoder + {run.prior_num_inference_steps} "
        f"prior steps: {run.flops / 1e12:.1f} TFLOP",
    ]
    for call in (run.unet_step, run.prior_step, run.movq_decode):
        kinds = ", ".join(f"{kind} {flops / call.flops:.1%}" for kind, flops in sorted(call.by_kind.items()))
        lines.append(f"  {call.model} call, {call.rows} row(s): {call.flops / 1e12:.3f} TFLOP ({kinds})")
    kinds = ", ".join(f"{kind} {flops / run.flops:.1%}" for kind, flops in sorted(run.by_kind.items()))
    lines.append(f"  whole run: {kinds}")
    lines.append(
        f"  the goal allows {run.goal_s:.2f} s: {run.tflops_per_s_for_goal:.0f} TFLOP/s sustained; linear layers"
        f" running twice as fast (FP8) would take at most {run.linear_share / 2:.1%} off a compute-bound run"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=768, help="the mascot's side in pixels (default 768)")
    parser.add_argument("--images", default="1,8", help="images per run, comma-separated (default 1,8)")
    parser.add_argument("--json", type=Path, help="also write the counts to this JSON file")
    args = parser.parse_args(argv)
    runs = [count_run(int(images), args.size) for images in args.images.split(",")]
    for run in runs:
        print(report(run))
    if args.json:
        rows = [
            {**asdict(run), "linear_share": run.linear_share, "tflops_per_s_for_goal": run.tflops_per_s_for_goal}
            for run in runs
        ]
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
