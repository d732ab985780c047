"""A picture's recipe: the generation parameters a dropped PNG carries, ours or AUTOMATIC1111's, as form values.

Ours carry a JSON chunk (`mascot`) with every request field; A1111 and the tools that copy it carry a `parameters`
text. Only what this app can use is taken, and only within its ranges; the rest is named so the person knows."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mascot.prompt.request import (
    FLOAT_RANGES,
    INTEGER_RANGES,
    SIZE_MULTIPLE,
    GenerationRequest,
    InvalidRequest,
    to_float,
    to_integer,
)

OUR_CHUNK = "mascot"  # store.imaging.PARAMETERS_KEY: the JSON of the request
A1111_CHUNK = "parameters"  # store.imaging.HUMAN_PARAMETERS_KEY: A1111's text
MAX_TEXT = 20_000  # characters of a chunk we read at all: a recipe is a few hundred; more is not one

# A1111's settings line: `Label: value` pairs, a value JSON-quoted when it holds a comma, colon or newline
# (the pattern is A1111's own `re_param_code`), each pair starting the line or after a comma, as A1111 writes them.
# A1111's pattern alone is tried at every character: a 20 KB line of spaces or letters without a colon took 2 to 4 s
# of CPU, the GIL held throughout, so that every dropped PNG froze the whole server (an outsider's attack).
_SETTING = re.compile(r'(?:^|(?<=,))\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
# A1111 labels, ours among them, and the request field each fills.
_LABELS: dict[str, str] = {
    "Steps": "num_inference_steps",
    "CFG scale": "guidance_scale",
    "Seed": "seed",
    "Prior steps": "prior_num_inference_steps",
    "Prior CFG scale": "prior_guidance_scale",
    "Style": "style",
    "Brand": "brand",
    "Logo weight": "logo_weight",
    "Lora": "adapter_name",
    "Lora strength": "lora_scale",
    "Idea": "prompt",
    "Avoid": "negative_prompt",
}
_TEXT_FIELDS = ("prompt", "negative_prompt", "style", "brand", "adapter_name")


@dataclass
class Recipe:
    """Form values read from a picture (request field -> value), and the settings that could not be used."""

    values: dict[str, Any] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    source: str = ""  # "Mascot Generator", "AUTOMATIC1111-style" or "" when the picture carries no recipe


def recipe_from_png_text(chunks: Mapping[str, Any]) -> Recipe:
    """The recipe in a PNG's text chunks (PIL's `image.text`); an empty Recipe when there is none."""
    ours = _text(chunks.get(OUR_CHUNK))
    if ours:
        recipe = _from_ours(ours)
        if recipe.values or recipe.left_out:
            return recipe
    a1111 = _text(chunks.get(A1111_CHUNK))
    return _from_a1111(a1111) if a1111 else Recipe()


def _text(value: Any) -> str:
    return value if isinstance(value, str) and len(value) <= MAX_TEXT else ""


def _from_ours(text: str) -> Recipe:
    try:
        stored = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: 20 KB of "[" nest deeper than Python's JSON reads
        return Recipe()
    if not isinstance(stored, dict):
        return Recipe()
    recipe = Recipe(source="Mascot Generator")
    for name in GenerationRequest.__dataclass_fields__:
        if name in stored and name != "logo":  # a logo id names a file on the server that made it, not here
            _take(recipe, name, stored[name])
    return recipe


def _from_a1111(text: str) -> Recipe:
    lines = text.strip().split("\n")
    settings_line = lines[-1] if len(lines) > 1 and _SETTING.match(lines[-1]) and "Steps:" in lines[-1] else ""
    body = lines[:-1] if settings_line else lines
    prompt_lines = [line for line in body if not line.startswith("Negative prompt:")]
    negative = [line[len("Negative prompt:") :].strip() for line in body if line.startswith("Negative prompt:")]
    recipe = Recipe(source="AUTOMATIC1111-style")
    settings = _settings(settings_line)
    # Ours write the prompt the model saw first and the person's words as Idea: the idea is what the form holds.
    _take(recipe, "prompt", settings.pop("Idea", None) or "\n".join(prompt_lines).strip())
    avoid = settings.pop("Avoid", None) or (negative[0] if negative else "")
    if avoid:
        _take(recipe, "negative_prompt", avoid)
    size = settings.pop("Size", "")
    if size:
        _take_size(recipe, size)
    for label, value in settings.items():
        if label in _LABELS:
            _take(recipe, _LABELS[label], value)
        elif label not in {"Sampler", "Model", "Model hash", "Version"}:
            recipe.left_out.append(label)
    return recipe


def _settings(line: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for label, raw in _SETTING.findall(line):
        try:
            found[label.strip()] = json.loads(raw) if raw.startswith('"') else raw.strip()
        except ValueError:
            found[label.strip()] = raw
    return found


def _take_size(recipe: Recipe, size: str) -> None:
    match = re.fullmatch(r"\s*(\d{1,5})\s*x\s*(\d{1,5})\s*", size)
    if not match:
        recipe.left_out.append("Size")
        return
    for name, value in zip(("width", "height"), match.groups(), strict=True):
        if int(value) % SIZE_MULTIPLE == 0:
            _take(recipe, name, value)
        else:
            recipe.left_out.append(f"Size ({name} {value} is not a multiple of {SIZE_MULTIPLE})")


def _take(recipe: Recipe, name: str, raw: Any) -> None:
    """Keep one value when this app can use it as it is; else name it in `left_out`. Nothing is clamped or rounded."""
    try:
        if name in _TEXT_FIELDS:
            if not isinstance(raw, str):
                raise InvalidRequest(name, "not text")
            value: Any = GenerationRequest.from_user(**{"prompt": "x", name: raw}).__getattribute__(name)
        elif name in INTEGER_RANGES:
            low, high = INTEGER_RANGES[name]
            value = to_integer(raw, name)
            if not low <= value <= high:
                raise InvalidRequest(name, "out of range")
        elif name in FLOAT_RANGES:
            low_f, high_f = FLOAT_RANGES[name]
            value = to_float(raw, name)
            if not low_f <= value <= high_f:
                raise InvalidRequest(name, "out of range")
        else:
            return
    except InvalidRequest:
        recipe.left_out.append(name)
        return
    if value != "" or name != "prompt":
        recipe.values[name] = value
