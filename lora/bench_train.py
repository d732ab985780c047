"""Measure decoder LoRA training: step time and peak GPU memory of the full-size Kandinsky 2.2 UNet (1,253 M
parameters, random weights from the real config) at 512² and 768², with and without gradient checkpointing.

It runs what lora/train.py runs on the GPU during training (train.py encodes the data once and keeps the frozen
encoders on the CPU): the frozen UNet in fp16, a PEFT LoRA in fp32 on its attention projections, the same loss, AdamW,
autocast and a gradient scaler. On a CUDA machine (about 5 minutes on one H100; no weights are downloaded):

    python lora/bench_train.py

Other sizes, batch or rank: `python lora/bench_train.py --resolutions 512 768 1024 --train_batch_size 2 --rank 8`.
On a CPU, the tiny model checks that the script itself works (the test suite runs this):

    python lora/bench_train.py --tiny --resolutions 64 --steps 3 --warmup_steps 1

Without a GPU, `--estimate` adds up the memory of the same step from exact tensor sizes instead (lora/memory.py: fake
tensors, no compute, well under a minute and about 0.5 GB of RAM on a CPU): the frozen weights, the LoRA with its
gradients and AdamW state, and what autograd saves for the backward pass. It is a lower bound, not a measurement:

    python lora/bench_train.py --estimate
    python lora/bench_train.py --estimate --resolutions 512 --train_batch_size 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python lora/bench_train.py` from anywhere

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel  # not `from diffusers`: see [tool.mypy]
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from lora.memory import GIB, MemoryEstimate, estimate_training_memory
from lora.objectives import add_lora, decoder_loss
from mascot.generation.tiny import DECODER_SCHEDULER_CONFIG, UNET_ARCHITECTURE, build_decoder_pipeline

# kandinsky-community/kandinsky-2-2-decoder's unet/config.json: the shared architecture plus the real sizes.
FULL_SIZE_UNET: dict[str, Any] = {
    **UNET_ARCHITECTURE,
    "block_out_channels": (384, 768, 1152, 1536),
    "layers_per_block": 3,
    "attention_head_dim": 64,
    "cross_attention_dim": 768,
    "encoder_hid_dim": 1280,
    "addition_embed_type_num_heads": 64,
    "sample_size": 64,
}
FULL_SIZE_PARAMETERS = 1_253_057_288


@dataclass(frozen=True)
class Measurement:
    """One configuration's figures; memory is None on a CPU."""

    resolution: int
    gradient_checkpointing: bool
    step_ms: float
    peak_allocated_gib: float | None
    peak_reserved_gib: float | None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(
        description="Step time and peak memory of decoder LoRA training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny offline UNet (for a CPU), not the full size")
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="no training: estimate the memory of one step from tensor sizes (fake tensors, runs on a CPU)",
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=None, help="default: 512 768 (tiny: 64 128)")
    parser.add_argument("--train_batch_size", type=int, default=1, help="images per step")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--warmup_steps", type=int, default=5, help="untimed steps first")
    parser.add_argument(
        "--gradient_checkpointing", choices=("off", "on", "both"), default="both", help="which settings to measure"
    )
    parser.add_argument(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        default=None,
        help="default: fp16 on CUDA and for --estimate, else no",
    )
    args = parser.parse_args(argv)
    args.resolutions = args.resolutions or ([64, 128] if args.tiny else [512, 768])
    if any(resolution % 64 for resolution in args.resolutions):
        parser.error("--resolutions must be multiples of 64.")
    return args


def unet_config(tiny: bool) -> dict[str, Any]:
    """The tiny UNet's config (from the model the tests use), or the full-size one."""
    return dict(build_decoder_pipeline().unet.config) if tiny else FULL_SIZE_UNET


def build_unet(tiny: bool, device: torch.device, dtype: torch.dtype) -> UNet2DConditionModel:
    """The tiny UNet, or the full-size one with random weights (made on the device: no 5 GB detour through RAM)."""
    if tiny:
        unet = build_decoder_pipeline().unet
    else:
        with device:
            unet = UNet2DConditionModel(**FULL_SIZE_UNET)
    return unet.to(device, dtype)


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """The autocast dtype of a mixed-precision setting (None: full precision)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)


def measure(
    unet: UNet2DConditionModel, args: argparse.Namespace, resolution: int, checkpointing: bool, device: torch.device
) -> Measurement:
    """Warm up, then time `args.steps` training steps at one resolution; peak memory counts the weights too."""
    if checkpointing:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    parameters = [parameter for parameter in unet.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    amp_dtype = autocast_dtype(args.mixed_precision)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    scheduler = DDPMScheduler.from_config(DECODER_SCHEDULER_CONFIG)
    side = resolution // 8
    latents = torch.randn(args.train_batch_size, 4, side, side, device=device, dtype=unet.dtype)
    image_embeds = torch.randn(args.train_batch_size, unet.config["encoder_hid_dim"], device=device, dtype=unet.dtype)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = decoder_loss(unet, scheduler, latents, image_embeds, generator)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup_steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return Measurement(resolution, checkpointing, 1000 * statistics.median(times), *peak_memory(device))


def peak_memory(device: torch.device) -> tuple[float | None, float | None]:
    """Peak allocated and reserved GiB since the last reset (None, None on a CPU)."""
    if device.type != "cuda":
        return None, None
    return torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30


def report(args: argparse.Namespace, device: torch.device, unet: UNet2DConditionModel, rows: list[Measurement]) -> str:
    """The results as a small table, with what was measured on what."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    size = sum(parameter.numel() for parameter in unet.parameters() if not parameter.requires_grad)
    lora = sum(parameter.numel() for parameter in unet.parameters() if parameter.requires_grad)
    model = "tiny" if args.tiny else "full size"
    lines = [
        f"Decoder LoRA training on {where}: UNet {size / 1e6:,.1f} M frozen parameters ({model}, "
        f"{args.mixed_precision}), LoRA rank {args.rank} = {lora / 1e6:.2f} M trainable, "
        f"batch {args.train_batch_size}, median of {args.steps} steps after {args.warmup_steps} warm-up",
        "resolution | gradient checkpointing | step ms | peak allocated GiB | peak reserved GiB",
    ]
    for row in rows:
        allocated = "n/a" if row.peak_allocated_gib is None else f"{row.peak_allocated_gib:.2f}"
        reserved = "n/a" if row.peak_reserved_gib is None else f"{row.peak_reserved_gib:.2f}"
        checkpointing = "on" if row.gradient_checkpointing else "off"
        lines.append(f"{row.resolution}² | {checkpointing} | {row.step_ms:.1f} | {allocated} | {reserved}")
    return "\n".join(lines)


def estimate_report(args: argparse.Namespace, rows: list[MemoryEstimate]) -> str:
    """The estimates as a small table, headed as what they are."""
    lines = [
        "ESTIMATE from tensor sizes on a CPU (fake tensors, no compute), not measured on a GPU.",
        "Lower bound: excludes the allocator's fragmentation, cuDNN/attention workspaces and transient buffers during "
        "backward.",
        f"Decoder LoRA training, {'tiny' if args.tiny else 'full-size'} UNet, {args.mixed_precision} "
        f"(frozen weights in it, LoRA in fp32, CUDA autocast's dtypes), LoRA rank {args.rank}, "
        f"batch {args.train_batch_size}",
        "resolution | gradient checkpointing | weights GiB | LoRA+optimizer GiB | saved activations GiB | total GiB",
    ]
    for row in rows:
        checkpointing = "on" if row.gradient_checkpointing else "off"
        sizes = (row.weight_bytes, row.lora_bytes, row.saved_bytes, row.total_bytes)
        lines.append(f"{row.resolution}² | {checkpointing} | " + " | ".join(f"{size / GIB:.3f}" for size in sizes))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Measurement] | list[MemoryEstimate]:
    """Build the UNet with a LoRA, measure (or with --estimate, estimate) each resolution and checkpointing setting,
    print the table."""
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.mixed_precision is None:
        args.mixed_precision = "fp16" if device.type == "cuda" or args.estimate else "no"
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.gradient_checkpointing]
    if args.estimate:
        estimates = estimate_training_memory(
            unet_config(args.tiny),
            args.resolutions,
            args.train_batch_size,
            args.rank,
            settings,
            autocast_dtype(args.mixed_precision),
        )
        print(estimate_report(args, estimates))
        return estimates
    torch.manual_seed(0)
    unet = build_unet(args.tiny, device, autocast_dtype(args.mixed_precision) or torch.float32)
    add_lora(unet, "decoder", args.rank, float(args.rank))
    unet.train()
    rows = [
        measure(unet, args, resolution, checkpointing, device)
        for resolution in args.resolutions
        for checkpointing in settings
    ]
    print(report(args, device, unet, rows))
    return rows


if __name__ == "__main__":
    main()
