"""Image files: PNGs written atomically with their generation parameters embedded, read back, and thumbnails."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, PngImagePlugin

logger = logging.getLogger(__name__)

# Our machine-readable chunk, and the A1111-style text chunk that other tools (and people) already know how to show.
PARAMETERS_KEY = "mascot"
HUMAN_PARAMETERS_KEY = "parameters"
# Gallery tiles show 4-6 across: 256 px is sharp on a 2x screen and about 10 kB as WebP.
THUMBNAIL_MAX_SIDE = 256
THUMBNAIL_QUALITY = 80
# Encoding effort, chosen by time per saved mascot (docs/performance.md): zlib level 1 writes a smooth 768² PNG in about
# a third of level 6's time (58 vs 178 ms here) for about 15 % more bytes; WebP method 2 about a third of method 4's
# time at the same size. Both are lossless/same-quality choices: only speed against bytes.
PNG_COMPRESS_LEVEL = 1
THUMBNAIL_METHOD = 2

# (label in the human text, key in the parameters): the settings line, in AUTOMATIC1111's "Label: value, ..." order.
# Readers of A1111 text look for Steps, Sampler, CFG scale and Seed first; the rest are ours, read by label.
_SETTINGS_LABELS: tuple[tuple[str, str], ...] = (
    ("Steps", "num_inference_steps"),
    ("Sampler", "sampler"),
    ("CFG scale", "guidance_scale"),
    ("Seed", "seed"),
    ("Size", "size"),
    ("Model", "model_name"),
    ("Prior steps", "prior_num_inference_steps"),
    ("Prior CFG scale", "prior_guidance_scale"),
    ("Style", "style"),
    ("Brand", "brand"),
    ("Logo weight", "logo_weight"),
    ("Lora", "adapter_name"),
    ("Lora strength", "lora_scale"),
    ("Idea", "prompt"),
    ("Avoid", "negative_prompt"),
)
_LOGO_ONLY = {"logo_weight"}  # shown only when a logo was mixed in
_LORA_ONLY = {"lora_scale"}  # shown only when a LoRA adapter was used


def save_png(image: Image.Image, path: Path, parameters: Mapping[str, object]) -> None:
    """Write `image` as a PNG at `path` with `parameters` embedded; readers never see a half-written file."""
    info = PngImagePlugin.PngInfo()
    # ASCII-only JSON always fits a plain tEXt chunk; the human text may need iTXt, which add_text picks by itself.
    info.add_text(PARAMETERS_KEY, json.dumps(dict(parameters), ensure_ascii=True, sort_keys=True))
    info.add_text(HUMAN_PARAMETERS_KEY, human_parameters(parameters, image.size))
    write_atomically(path, lambda file: image.save(file, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL))


def save_thumbnail(image: Image.Image, path: Path, max_side: int = THUMBNAIL_MAX_SIDE) -> Image.Image:
    """Write a small WebP of `image` at `path` (alpha kept) for galleries, atomically; returns the thumbnail."""
    thumbnail = make_thumbnail(image, max_side)
    if thumbnail.mode not in {"RGB", "RGBA"}:
        thumbnail = thumbnail.convert("RGBA" if thumbnail.has_transparency_data else "RGB")
    write_atomically(
        path, lambda file: thumbnail.save(file, format="WEBP", quality=THUMBNAIL_QUALITY, method=THUMBNAIL_METHOD)
    )
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
    """AUTOMATIC1111-style text: the prompt the model was given, 'Negative prompt: ...', then one settings line.

    The first lines hold what the model saw (the idea wrapped in its style, brand and colours), as A1111 writes the
    prompt it ran; the person's own words follow as `Idea`. Size is the generation's, not the file's (a sticker is
    cropped). Values are quoted as A1111 quotes them, so a value with a comma or a colon reads back whole."""
    model_prompt = parameters.get("model_prompt") or parameters.get("prompt", "")
    lines = [str(model_prompt)]
    negative = parameters.get("model_negative_prompt") or parameters.get("negative_prompt")
    if negative:
        lines.append(f"Negative prompt: {negative}")
    width, height = parameters.get("width"), parameters.get("height")
    values = {**parameters, "size": f"{width}x{height}" if width and height else f"{size[0]}x{size[1]}"}
    if values.get("prompt") == model_prompt:
        values.pop("prompt", None)  # the idea is the prompt itself: no need to say it twice
    if values.get("negative_prompt") == negative:
        values.pop("negative_prompt", None)
    if not values.get("logo"):
        values = {key: value for key, value in values.items() if key not in _LOGO_ONLY}
    if not values.get("adapter_name"):
        values = {key: value for key, value in values.items() if key not in _LORA_ONLY}
    settings = [
        f"{label}: {a1111_quote(str(values[key]))}"
        for label, key in _SETTINGS_LABELS
        if values.get(key) not in (None, "")
    ]
    lines.append(", ".join(settings))
    return "\n".join(lines)


def a1111_quote(text: str) -> str:
    """A settings value as AUTOMATIC1111 writes it: as is, or JSON-quoted when it holds a comma, colon or newline."""
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def make_thumbnail(image: Image.Image, max_side: int = THUMBNAIL_MAX_SIDE) -> Image.Image:
    """A copy of `image` scaled down (never up) so that its longer side is at most `max_side` pixels."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1 (got {max_side}).")
    thumbnail = image.copy()
    thumbnail.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return thumbnail


STICKER_MASK_SIDE = 256  # the flood fill runs at this size (it is pure Python); edges are then cut at full size
STICKER_THRESHOLD = 40  # how far (0-255 per channel) a pixel may be from the background colour and still be background
STICKER_MARGIN = 12


def transparent_sticker(image: Image.Image) -> Image.Image:
    """The mascot cut out of a plain background: what touches the border in the border's colour becomes transparent
    (holes of the same colour inside the mascot, like white eyes, stay), cropped to the mascot with a small margin."""
    rgb = image.convert("RGB")
    pixels = np.asarray(rgb, dtype=np.int16)
    background = np.median(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]), axis=0)
    near_background = np.abs(pixels - background).max(axis=2) <= STICKER_THRESHOLD
    reachable = _reachable_from_border(rgb) >= 128
    alpha = np.where(near_background & reachable, 0, 255).astype(np.uint8)
    mask = Image.fromarray(alpha, mode="L").filter(ImageFilter.GaussianBlur(0.8))  # soften the cut edge
    sticker = rgb.convert("RGBA")
    sticker.putalpha(mask)
    box = mask.point(lambda value: 255 if value > 8 else 0).getbbox()
    if box is None:  # nothing but background: give the picture back rather than an empty file
        return sticker
    left, top, right, bottom = box
    return sticker.crop(
        (
            max(0, left - STICKER_MARGIN),
            max(0, top - STICKER_MARGIN),
            min(sticker.width, right + STICKER_MARGIN),
            min(sticker.height, bottom + STICKER_MARGIN),
        )
    )


def _reachable_from_border(image: Image.Image) -> np.ndarray:
    """255 where the background, flood-filled from the border on a small copy, reaches (scaled back up), else 0."""
    small = image.copy()
    small.thumbnail((STICKER_MASK_SIDE, STICKER_MASK_SIDE))
    marked = small.convert("RGBA")
    width, height = marked.size
    for x in range(0, width, max(1, width // 16)):
        for y in (0, height - 1):
            _fill_background(marked, (x, y))
    for y in range(0, height, max(1, height // 16)):
        for x in (0, width - 1):
            _fill_background(marked, (x, y))
    reached = marked.getchannel("A").point(lambda value: 255 if value == 0 else 0)
    return np.asarray(reached.resize(image.size, Image.Resampling.BILINEAR))


def _fill_background(marked: Image.Image, seed: tuple[int, int]) -> None:
    pixel = marked.getpixel(seed)  # RGBA: a tuple
    if isinstance(pixel, tuple) and pixel[3] != 0:  # alpha 0 marks what a fill already reached
        ImageDraw.floodfill(marked, seed, (0, 0, 0, 0), thresh=STICKER_THRESHOLD)
