"""Image files: PNGs written atomically with their generation parameters embedded, read back, and thumbnails."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from PIL import Image, PngImagePlugin

logger = logging.getLogger(__name__)

# Our machine-readable chunk, and the A1111-style text chunk that other tools (and people) already know how to show.
PARAMETERS_KEY = "mascot"
HUMAN_PARAMETERS_KEY = "parameters"
# Gallery tiles show 4-6 across: 256 px is sharp on a 2x screen and about 10 kB as WebP.
THUMBNAIL_MAX_SIDE = 256
THUMBNAIL_QUALITY = 80

# (label in the human text, key in the parameters): the settings line, in A1111's "Label: value, ..." style.
_SETTINGS_LABELS: tuple[tuple[str, str], ...] = (
    ("Steps", "num_inference_steps"),
    ("CFG scale", "guidance_scale"),
    ("Prior steps", "prior_num_inference_steps"),
    ("Prior CFG scale", "prior_guidance_scale"),
    ("Seed", "seed"),
    ("Size", "size"),
    ("Model", "model_name"),
)


def save_png(image: Image.Image, path: Path, parameters: Mapping[str, object]) -> None:
    """Write `image` as a PNG at `path` with `parameters` embedded; readers never see a half-written file."""
    info = PngImagePlugin.PngInfo()
    # ASCII-only JSON always fits a plain tEXt chunk; the human text may need iTXt, which add_text picks by itself.
    info.add_text(PARAMETERS_KEY, json.dumps(dict(parameters), ensure_ascii=True, sort_keys=True))
    info.add_text(HUMAN_PARAMETERS_KEY, human_parameters(parameters, image.size))
    write_atomically(path, lambda file: image.save(file, format="PNG", pnginfo=info))


def save_thumbnail(image: Image.Image, path: Path, max_side: int = THUMBNAIL_MAX_SIDE) -> Image.Image:
    """Write a small WebP of `image` at `path` (alpha kept) for galleries, atomically; returns the thumbnail."""
    thumbnail = make_thumbnail(image, max_side)
    if thumbnail.mode not in {"RGB", "RGBA"}:
        thumbnail = thumbnail.convert("RGBA" if thumbnail.has_transparency_data else "RGB")
    write_atomically(path, lambda file: thumbnail.save(file, format="WEBP", quality=THUMBNAIL_QUALITY, method=4))
    return thumbnail


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Run `write` on a temporary file beside `path`, flush it to disk, then move it into place in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            # The database row that claims this file is committed right after: the bytes must be on disk first.
            os.fsync(file.fileno())
        # mkstemp makes the file private (0600); an image is meant to be served, so give it a regular file's mode.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_parameters(path: Path) -> dict[str, object]:
    """The parameters `save_png` embedded in the PNG at `path`; an empty dict when it carries none."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(PARAMETERS_KEY)
    if text is None:
        return {}
    parameters = json.loads(text)
    if not isinstance(parameters, dict):
        raise ValueError(f"{path.name}: the '{PARAMETERS_KEY}' chunk is not a JSON object.")
    return parameters


def human_parameters(parameters: Mapping[str, object], size: tuple[int, int]) -> str:
    """A1111-style text: the prompt, then 'Negative prompt: ...', then one 'Label: value, ...' settings line."""
    lines = [str(parameters.get("prompt", ""))]
    negative = parameters.get("negative_prompt")
    if negative:
        lines.append(f"Negative prompt: {negative}")
    values = {**parameters, "size": f"{size[0]}x{size[1]}"}
    lines.append(", ".join(f"{label}: {values[key]}" for label, key in _SETTINGS_LABELS if values.get(key) is not None))
    return "\n".join(lines)


def make_thumbnail(image: Image.Image, max_side: int = THUMBNAIL_MAX_SIDE) -> Image.Image:
    """A copy of `image` scaled down (never up) so that its longer side is at most `max_side` pixels."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1 (got {max_side}).")
    thumbnail = image.copy()
    thumbnail.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return thumbnail
