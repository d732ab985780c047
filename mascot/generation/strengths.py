"""LoRA strengths held in tensors, so that compiled code follows a new adapter or strength without compiling again.

PEFT keeps each adapter's scale (strength x lora_alpha / r) in a Python float and turns adapters on and off with Python
flags. torch.compile specialises on both (a new strength would compile again), and an exported package bakes them in,
so compiled code could only ever serve the base model. Once compiled stand-ins are made for a model
(speed.StagedModels), it is switched to strengths in tensors, for good:
- every loaded adapter stays active, with PEFT's own scale left at 1;
- each adapter's `lora_B` multiplies its output by a 0-d buffer (`STRENGTH`) holding PEFT's scale for the chosen
  strength, and 0 for the adapters not chosen.
A buffer is what compiled code reads afresh on every call: torch.compile takes it as an input (a static one under
CUDA graphs, which read its memory), export lifts it as one, and a package is handed it at load, shared, so filling
it in place is seen by all three. Multiplying by PEFT's scale in the buffer and then by 1 is the same arithmetic as
multiplying by the scale, and adding an adapter's output times 0 adds exactly 0: the outputs are PEFT's bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.lora.layer import LoraLayer

STRENGTH = "mascot_strength"  # the buffer on each adapter's lora_B
_ATTRIBUTE = "_mascot_strength_tensors"  # where a switched model keeps its StrengthTensors


@dataclass
class _Strength:
    """One adapter in one layer: its lora_B (whose buffer its output is multiplied by) and the scale last put there."""

    layer: LoraLayer
    adapter: str
    lora_b: torch.nn.Module
    scale: float | None = None


class StrengthTensors:
    """A model's LoRA strengths, all in buffers: `use` chooses the adapter and strength of the next calls."""

    def __init__(self, strengths: Sequence[_Strength]) -> None:
        self._strengths = list(strengths)

    def use(self, name: str | None, strength: float) -> None:
        """Adapter `name` at `strength` (PEFT's meaning: strength x lora_alpha / r); every other adapter, or every
        adapter when `name` is None, at 0. Only buffers whose value changes are written."""
        for entry in self._strengths:
            scale = _peft_scale(entry.layer, entry.adapter, strength if entry.adapter == name else 0.0)
            if scale != entry.scale:
                # Looked up each time: moving the model (`.to`) puts new tensors in its buffers.
                cast(torch.Tensor, getattr(entry.lora_b, STRENGTH)).fill_(scale)
                entry.scale = scale


def _peft_scale(layer: LoraLayer, adapter: str, strength: float) -> float:
    """PEFT's scale for `adapter` at `strength` (its own formula, rank-stabilised or not, so its rounding), worked
    out on a stand-in: the layer's `scaling` stays 1 throughout, as a compile tracing the model on another thread
    meanwhile would bake a passing value in (and compile again once it saw 1)."""
    stand_in = SimpleNamespace(
        scaling={adapter: 1.0}, use_rslora=layer.use_rslora, lora_alpha=layer.lora_alpha, r=layer.r
    )
    LoraLayer.set_scale(cast(LoraLayer, stand_in), adapter, strength)
    return float(stand_in.scaling[adapter])


def _times_strength(module: torch.nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    """lora_B's forward hook: its output times its strength buffer."""
    del inputs
    return output * cast(torch.Tensor, getattr(module, STRENGTH))


def strength_tensors(model: torch.nn.Module) -> StrengthTensors | None:
    """The model's strengths in tensors if it was switched to them (`hold_strengths_in_tensors`), else None."""
    return cast("StrengthTensors | None", model.__dict__.get(_ATTRIBUTE))


def hold_strengths_in_tensors(model: torch.nn.Module) -> bool:
    """Switch `model`'s LoRA adapters to strengths in tensors (once; every adapter at 0 afterwards). True when its
    adapters' strengths are now tensors or it has no adapters; False, leaving it unchanged, when an adapter is of a
    kind this does not cover (DoRA or another PEFT variant, or a layer other than a linear one): runs with such an
    adapter stay eager."""
    if strength_tensors(model) is not None:
        return True
    adapted = [module for module in model.modules() if isinstance(module, LoraLayer)]
    layers = [module for module in adapted if isinstance(module, LoraLinear)]
    if len(layers) < len(adapted) or any(layer.lora_variant for layer in layers):
        return False
    if not layers:
        return True
    strengths: list[_Strength] = []
    for layer in layers:
        for adapter, lora_b in layer.lora_B.items():
            weight = cast(torch.Tensor, lora_b.weight)
            # Of lora_B's dtype: a conversion in the graph would be a constant a package folds once, at load.
            buffer = torch.zeros((), dtype=weight.dtype, device=weight.device)
            lora_b.register_buffer(STRENGTH, buffer, persistent=False)  # not saved with the adapter's weights
            lora_b.register_forward_hook(_times_strength)
            strengths.append(_Strength(layer, adapter, lora_b))
            layer.scaling[adapter] = 1.0  # the strength is the buffer's from now on
        layer.enable_adapters(True)
        # As PEFT's set_adapters leaves them (requires_grad on): matmul picks its kernel by that, and so its rounding.
        layer.set_adapter(list(layer.lora_A.keys()))
    tensors = StrengthTensors(strengths)
    tensors.use(None, 0.0)
    model.__dict__[_ATTRIBUTE] = tensors  # a plain attribute: not a module, a buffer or a parameter
    return True
