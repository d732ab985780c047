"""The operator's house brands (--brands-dir): each a folder holding brand.json and its logo, checked at start.

    brands/
      acme/
        brand.json     {"name": "Acme", "prompt": "red and white colour palette, rocket motif", "logo": "logo.png"}
        logo.png

`logo_weight` (0 to 1) is optional: how much of the logo's look a person gets when they pick the brand. A logo is
checked as an upload is (its header first, the pixel and file limits, one decode slot) and kept in the LogoLibrary,
so choosing a brand mixes its logo in the way an uploaded logo is mixed in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mascot.prompt.logos import LogoLibrary, LogoRefused
from mascot.prompt.presets import LOGO_COLOURS, BrandPreset

BRAND_FILE = "brand.json"
MAX_LOGO_BYTES = 10 * 1024 * 1024  # the upload limit (web.uploads.MAX_UPLOAD_BYTES): a brand's logo is no larger
MAX_NAME_CHARACTERS = 60
MAX_PROMPT_CHARACTERS = 300  # the prompt's 77 tokens are shared with the idea and the style
FIELDS = {"name", "prompt", "logo", "logo_weight"}


class BrandError(ValueError):
    """A brand that cannot be used: the message is one sentence naming its file, for the operator."""


def load_house_brands(folder: Path, logos: LogoLibrary) -> list[BrandPreset]:
    """Every brand in `folder`, in the order of their folders' names, each logo kept in `logos`. Raises BrandError."""
    if not folder.is_dir():
        raise BrandError(f"The brands folder {str(folder)!r} does not exist.")
    brands: list[BrandPreset] = []
    for path in sorted(path / BRAND_FILE for path in folder.iterdir() if path.is_dir()):
        if not path.is_file():
            continue
        brand = load_brand(path, logos)
        if any(other.name == brand.name for other in brands):
            raise BrandError(f"The brand file {str(path)!r} names {brand.name!r}, as another brand does.")
        brands.append(brand)
    if not brands:
        raise BrandError(f"The brands folder {str(folder)!r} holds no brand: add <brand>/{BRAND_FILE} folders.")
    return brands


def load_brand(path: Path, logos: LogoLibrary) -> BrandPreset:
    """One brand.json and its logo, checked; BrandError names the file and what is wrong with it."""
    values = _read(path)
    name = _text(values, "name", path, MAX_NAME_CHARACTERS)
    if name == LOGO_COLOURS:
        raise BrandError(f"The brand file {str(path)!r} names {name!r}, which is the page's own choice.")
    prompt = _text(values, "prompt", path, MAX_PROMPT_CHARACTERS)
    weight = values.get("logo_weight")
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1 or math.isnan(weight)
    ):
        raise BrandError(f"The brand file {str(path)!r} has logo_weight {weight!r}: use a number from 0 to 1.")
    logo_id = _logo(values.get("logo"), path, logos)
    return BrandPreset(name, prompt, logo=logo_id, logo_weight=None if weight is None else float(weight))


def _read(path: Path) -> dict[str, Any]:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BrandError(f"The brand file {str(path)!r} cannot be read as JSON: {error}.") from None
    if not isinstance(values, dict):
        raise BrandError(f"The brand file {str(path)!r} must hold one JSON object with a name, a prompt and a logo.")
    unknown = sorted(set(values) - FIELDS - {"_about"})
    if unknown:
        raise BrandError(f"The brand file {str(path)!r} has fields this app does not know: {', '.join(unknown)}.")
    return values


def _text(values: dict[str, Any], key: str, path: Path, longest: int) -> str:
    text = values.get(key)
    if not isinstance(text, str) or not text.strip() or len(text) > longest or not text.isprintable():
        raise BrandError(f"The brand file {str(path)!r} needs a {key}: some text of at most {longest} characters.")
    return text.strip()


def _logo(name: object, path: Path, logos: LogoLibrary) -> str:
    """The logo's id in the LogoLibrary ("" without one): a file beside brand.json, checked as an upload is."""
    if name is None:
        return ""
    folder = path.parent.resolve()
    logo_path = (folder / name).resolve() if isinstance(name, str) and name.strip() else folder
    if not logo_path.is_relative_to(folder) or not logo_path.is_file():
        raise BrandError(f"The brand file {str(path)!r} names logo {name!r}: it must be a file in its own folder.")
    if logo_path.stat().st_size > MAX_LOGO_BYTES:
        raise BrandError(f"The logo of the brand file {str(path)!r} is over {MAX_LOGO_BYTES // 2**20} MB.")
    try:
        return logos.save(logo_path)
    except LogoRefused as error:
        raise BrandError(f"The logo of the brand file {str(path)!r} cannot be used: {error}") from None
