"""Style and brand presets (assets/presets.json): prompt fragments wrapped around a person's idea before the model.

The store keeps the person's own words and the preset names; only the model sees the composed prompts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mascot.prompt.palette import colour_phrase
from mascot.prompt.request import GenerationRequest, refuse

PRESETS_FILE = Path(__file__).resolve().parents[2] / "assets" / "presets.json"
PLACEHOLDER = "{prompt}"
# The brand choice that takes its colours from the uploaded logo (named by prompt.palette), not from presets.json.
LOGO_COLOURS = "Colours of my logo"
NEEDS_A_LOGO = (
    f"brand {LOGO_COLOURS!r} takes the colours of your logo: upload one under “Mix in your logo”, or pick other "
    "brand colours."
)
LogoColours = Callable[[str], list[str]]  # a kept logo's id -> the names of its main colours


@dataclass(frozen=True)
class StylePreset:
    """A look: `prompt` wraps the idea (at PLACEHOLDER); `negative_prompt` is added to what to avoid."""

    name: str
    prompt: str
    negative_prompt: str = ""


@dataclass(frozen=True)
class BrandPreset:
    """Colours and patterns, appended to the prompt; a house brand (prompt.brands) also brings its logo."""

    name: str
    prompt: str
    logo: str = ""  # the logo's id in the LogoLibrary: the page mixes it in when the brand is chosen
    logo_weight: float | None = None  # how much of the logo the page sets; None: the form's default


@dataclass(frozen=True)
class Presets:
    styles: dict[str, StylePreset]
    brands: dict[str, BrandPreset]
    default_style: str = ""

    @classmethod
    def load(cls, path: Path = PRESETS_FILE) -> Presets:
        """Read and check the presets file: a broken file stops the app at start, not a person's generation."""
        data = json.loads(path.read_text(encoding="utf-8"))
        styles = {item["name"]: StylePreset(**item) for item in data.get("styles", [])}
        brands = {item["name"]: BrandPreset(**item) for item in data.get("brands", [])}
        presets = cls(styles, brands, data.get("default_style", ""))
        presets.check(path)
        return presets

    def with_brands(self, brands: list[BrandPreset]) -> Presets:
        """These presets with the operator's house brands in place of the built-in colour palettes."""
        return dataclasses.replace(self, brands={brand.name: brand for brand in brands})

    def check(self, path: Path) -> None:
        for style in self.styles.values():
            if PLACEHOLDER not in style.prompt:
                raise ValueError(f"{path}: the style {style.name!r} has no {PLACEHOLDER} where the idea goes.")
        if self.default_style and self.default_style not in self.styles:
            raise ValueError(f"{path}: default_style {self.default_style!r} is not one of the styles.")

    def check_request(self, request: GenerationRequest) -> None:
        """Refuse preset names this app does not have, naming the parameter and the choices."""
        if request.brand == LOGO_COLOURS and not request.logo:
            raise refuse("brand", NEEDS_A_LOGO.replace("brand ", "{name} ", 1))
        brands = [*self.brands, LOGO_COLOURS]
        for parameter, name, known in (("style", request.style, list(self.styles)), ("brand", request.brand, brands)):
            if name and name not in known:
                choices = ", ".join(known) or "none"
                raise refuse(parameter, f"{{name}} {name!r} is not one of this app's presets ({choices}).")

    def apply(self, request: GenerationRequest, logo_colours: LogoColours | None = None) -> GenerationRequest:
        """The request as the model should see it: the idea inside its style, the brand's colours after it (for
        LOGO_COLOURS, the named colours of the request's logo, from `logo_colours`)."""
        prompt, negative_prompt = request.prompt, request.negative_prompt
        style = self.styles.get(request.style)
        if style is not None:
            prompt = style.prompt.replace(PLACEHOLDER, prompt)
            negative_prompt = join(negative_prompt, style.negative_prompt)
        brand = self.brands.get(request.brand)
        if brand is not None:
            prompt = join(prompt, brand.prompt)
        elif request.brand == LOGO_COLOURS and request.logo and logo_colours is not None:
            prompt = join(prompt, colour_phrase(logo_colours(request.logo)))
        return dataclasses.replace(request, prompt=prompt, negative_prompt=negative_prompt)

    def describe(self) -> dict[str, Any]:
        return {"styles": list(self.styles), "brands": list(self.brands), "default_style": self.default_style}


def join(*parts: str) -> str:
    return ", ".join(part for part in parts if part)
