"""Image files: PNGs written atomically with their generation parameters embedded, read back, and thumbnails."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, PngImagePlugin

logger = logging.getLogger(__name__)

# Our machine-readable chunk, and the A1111-style text chunk that other tools (and people) already know how to show.
PARAMETERS_KEY = "mascot"
HUMAN_PARAMETERS_KEY = "parameters"

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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            image.save(file, format="PNG", pnginfo=info)
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


def make_thumbnail(image: Image.Image, max_side: int = 256) -> Image.Image:
    """A copy of `image` scaled down (never up) so that its longer side is at most `max_side` pixels."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1 (got {max_side}).")
    thumbnail = image.copy()
    thumbnail.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return thumbnail
