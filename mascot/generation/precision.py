"""Lower precision for the decoder's UNet and the prior's transformer (MASCOT_LOWER_PRECISION), through torchao.

- `fp8`: weights and activations of the linear layers in float8 (e4m3, scales per tensor, the activations' computed
  on each call), on GPUs with FP8 tensor cores (compute capability 8.9 or newer: Ada, Hopper and later): faster matrix
  products, half the linear weights' memory.
- `int8`: the linear layers' weights in int8 (one scale per output channel), activations unchanged, on any device:
  half the linear weights' memory.

Both change the pictures a little (docs/performance.md reports by how much), so both are off by default.
Convolutions, norms, the MoVQ and the image encoder keep the model's precision, and so do LoRA adapters' own layers:
an adapter's strength still changes only its own small layers, never the lowered weights.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mascot.settings import LOWER_PRECISIONS

FP8_COMPUTE_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0) and later
ALIGNMENT = 16  # float8 and int8 matrix kernels need both sides of a weight to be a multiple of 16
FP8_BLOCK_SIDE = 128  # torchao's float8 block scaling: 128x128 blocks of a weight


class PrecisionUnsupported(RuntimeError):
    """This device or this installation cannot run the precision asked for; the message says why, for the log."""


@dataclass(frozen=True)
class LoweredModels:
    """What lowering did: the precision, how many linear layers it lowered and how long it took."""

    precision: str
    layers: int
    seconds: float


def unsupported_reason(precision: str, device: str) -> str | None:
    """Why `precision` cannot run on `device` here (a sentence), or None when it can."""
    if precision not in LOWER_PRECISIONS:
        return f"{precision!r} is not a lower precision this app knows (it knows {', '.join(LOWER_PRECISIONS)})."
    if importlib.util.find_spec("torchao") is None:
        return "Lower precision needs the torchao package (pip install torchao==0.18.0)."
    if precision != "fp8":
        return None
    if not device.startswith("cuda"):
        return "FP8 needs an NVIDIA GPU with FP8 tensor cores (compute capability 8.9 or newer), not the CPU."
    try:
        capability = torch.cuda.get_device_capability(torch.device(device))
    except (RuntimeError, AssertionError) as error:  # no driver, or a GPU lent per call (ZeroGPU) not yet attached
        return f"FP8 needs a GPU whose compute capability can be read here ({error})."
    if capability < FP8_COMPUTE_CAPABILITY:
        major, minor = capability
        return f"FP8 needs compute capability 8.9 or newer (Ada, Hopper); this GPU has {major}.{minor}."
    return None


def lowerable(module: torch.nn.Module, name: str) -> bool:
    """A linear layer of the base model whose shape the low-precision kernels take. A LoRA adapter's own layers
    (PEFT's `lora_A`/`lora_B`) stay as they are: they are small, and their strength is set per run."""
    return (
        isinstance(module, torch.nn.Linear)
        and "lora_" not in name
        and module.in_features % ALIGNMENT == 0
        and module.out_features % ALIGNMENT == 0
    )


def fp8_lowerable(module: torch.nn.Module, name: str) -> bool:
    """`lowerable`, less the square 128x128 layers: torchao 0.18 reads a per-tensor float8 weight of exactly 128x128
    as one scaled in 128x128 blocks (its block size is its shape) and asserts at its first call. The full-size models
    have no such layer; the tiny one has twelve, which keep their precision."""
    return lowerable(module, name) and not module.in_features == module.out_features == FP8_BLOCK_SIDE


def lower_precision(models: Sequence[torch.nn.Module], precision: str, device: str) -> LoweredModels:
    """Lower the linear layers of `models` in place; raises PrecisionUnsupported (nothing changed) when this device
    or installation cannot run `precision`."""
    reason = unsupported_reason(precision, device)
    if reason is not None:
        raise PrecisionUnsupported(reason)
    # torchao only here: importing it costs time and, without its CUDA kernels, logs warnings nobody asked for.
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8WeightOnlyConfig,
        quantize_,
    )

    fits = fp8_lowerable if precision == "fp8" else lowerable
    started = time.perf_counter()
    # Per-tensor scales for fp8 (its default): its row-wise kernels write bfloat16 only, and the model runs in float16.
    # set_inductor_config=False: torchao would otherwise turn on inductor's coordinate-descent tuning for the whole
    # process, which lengthens every compile (the MoVQ's too) that the app warms in the background.
    config = (
        Float8DynamicActivationFloat8WeightConfig(set_inductor_config=False)
        if precision == "fp8"
        else Int8WeightOnlyConfig(set_inductor_config=False)
    )
    layers = 0
    for model in models:
        layers += sum(fits(module, name) for name, module in model.named_modules())
        quantize_(model, config, filter_fn=fits)
    return LoweredModels(precision, layers, round(time.perf_counter() - started, 3))
