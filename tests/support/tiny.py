"""The tiny Kandinsky 2.2 loaded afresh from its folder (conftest's tiny_model_dir builds it once a session), for
tests that change the models they load: LoRA adapters, lower precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mascot.generation.model import KandinskyGenerator
from mascot.generation.sources import ModelSource


def load_tiny(tiny_model_dir: Path, **options: Any) -> KandinskyGenerator:
    """A new generator on the CPU from the tiny model's folders, through `from_pretrained`; `options` (adapters,
    speed) go to KandinskyGenerator.load."""
    source = ModelSource("tiny", str(tiny_model_dir / "prior"), str(tiny_model_dir / "decoder"), True)
    return KandinskyGenerator.load(source, device="cpu", **options)
