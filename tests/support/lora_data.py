"""A LoRA training set (coloured squares with captions) and the flags of a small, fast training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_dataset(folder: Path, count: int = 4, size: int = 80) -> Path:
    """`count` distinct coloured squares with captions, in the metadata.jsonl layout."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    lines = []
    for index in range(count):
        pixels = np.empty((size, size, 3), np.uint8)
        pixels[:] = rng.integers(0, 256, 3)
        pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = rng.integers(0, 256, 3)
        Image.fromarray(pixels).save(folder / f"mascot-{index}.png")
        lines.append(
            json.dumps({"file_name": f"mascot-{index}.png", "text": f"a cheerful otter mascot number {index}"})
        )
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def train_args(model_dir: Path, data: Path, output: Path, target: str, steps: int, *extra: str) -> list[str]:
    """Flags for a small, fast run on the tiny model (64 px, no validation unless asked)."""
    return [
        "--target", target,
        "--pretrained_prior_model_name_or_path", str(model_dir / "prior"),
        "--pretrained_decoder_model_name_or_path", str(model_dir / "decoder"),
        "--train_data_dir", str(data),
        "--output_dir", str(output),
        "--resolution", "64",
        "--train_batch_size", "2",
        "--max_train_steps", str(steps),
        "--checkpointing_steps", "1000",
        "--num_validation_images", "0",
        *extra,
    ]  # fmt: skip
