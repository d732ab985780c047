"""The training data: an image folder with `metadata.jsonl` (`file_name`, `text`), checked with errors to act on.

The layout is the Hugging Face "imagefolder" one the seed app used:

    mascots/
      metadata.jsonl      {"file_name": "otter.png", "text": "a cheerful otter barista, sticker"}  (one line per image)
      otter.png
      ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

METADATA_FILE = "metadata.jsonl"
MIN_IMAGES = 4
EXAMPLE_LINE = '{"file_name": "otter.png", "text": "a cheerful otter barista, sticker"}'


class DatasetError(ValueError):
    """The training data cannot be trained on; the message says what is wrong and where."""


@dataclass(frozen=True)
class Example:
    """One training image and its caption, as metadata.jsonl lists them (`line` is 1-based, for messages)."""

    path: Path
    text: str
    line: int


def load_examples(
    folder: Path, *, caption_column: str = "text", need_captions: bool, min_images: int = MIN_IMAGES
) -> list[Example]:
    """Every example metadata.jsonl lists, each image opened once to prove it is readable."""
    metadata = _metadata_file(Path(folder))
    examples = [_example(metadata.parent, line, row, caption_column) for line, row in _rows(metadata)]
    if need_captions:
        _check_captions(examples, caption_column)
    if len(examples) < min_images:
        raise DatasetError(
            f"{metadata} lists {len(examples)} image{'s' if len(examples) != 1 else ''}; "
            f"LoRA training needs at least {min_images}."
        )
    return examples


def _metadata_file(folder: Path) -> Path:
    """The folder's metadata.jsonl, or an error saying which of the two is missing."""
    if not folder.is_dir():
        raise DatasetError(f"The training data folder {str(folder)!r} does not exist.")
    metadata = folder / METADATA_FILE
    if not metadata.is_file():
        raise DatasetError(
            f"The training data folder {str(folder)!r} has no {METADATA_FILE}: add one line per image, like "
            f"{EXAMPLE_LINE}"
        )
    return metadata


def _rows(metadata: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of metadata.jsonl."""
    rows = []
    for number, text in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{metadata} line {number} is not valid JSON ({error.msg}).") from error
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) or not row["file_name"]:
            raise DatasetError(f'{metadata} line {number} has no "file_name"; each line looks like {EXAMPLE_LINE}')
        rows.append((number, row))
    return rows


def _example(folder: Path, line: int, row: dict[str, Any], caption_column: str) -> Example:
    """The row's image, checked to exist inside the folder and to decode."""
    path = folder / row["file_name"]
    where = f"{METADATA_FILE} line {line} lists {row['file_name']!r}"
    if not path.resolve().is_relative_to(folder.resolve()):
        raise DatasetError(f"{where}, which is outside {str(folder)!r}.")
    if not path.is_file():
        raise DatasetError(f"{where}, which is not in {str(folder)!r}.")
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DatasetError(f"{where}, which is not a readable image ({error}).") from error
    text = row.get(caption_column)
    return Example(path=path, text=text.strip() if isinstance(text, str) else "", line=line)


def _check_captions(examples: list[Example], caption_column: str) -> None:
    """A prior run learns text -> look: every image needs a caption."""
    empty = [example for example in examples if not example.text]
    if empty:
        lines = ", ".join(str(example.line) for example in empty[:10]) + (" …" if len(empty) > 10 else "")
        raise DatasetError(
            f"{len(empty)} image{'s have' if len(empty) != 1 else ' has'} an empty or missing {caption_column!r} "
            f"in {METADATA_FILE} (line {lines}): a prior run learns from the captions, so every image needs one."
        )


def load_rgb(path: Path) -> Image.Image:
    """The image upright (EXIF orientation applied) in RGB; transparency is composited on white, as mascots are."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode in ("RGBA", "LA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


def decoder_pixels(image: Image.Image, resolution: int) -> torch.Tensor:
    """The image scaled and centre-cropped to resolution², as a [3, H, W] tensor in [-1, 1] (MoVQ's input)."""
    fitted = ImageOps.fit(image, (resolution, resolution), Image.Resampling.BICUBIC)
    array = np.asarray(fitted, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
