"""GenerationRequest: every knob of one generation, in diffusers' vocabulary, and its validation.

Every entry point (the page, the API, tests) builds a request through `GenerationRequest.from_user`, so every caller
gets the same refusals, each naming the parameter. This module imports no torch.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

Number = TypeVar("Number", int, float)

MAX_PROMPT_CHARACTERS = 1000
MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 256, 1024, 64
MAX_SEED = 2**32 - 1

# (minimum, maximum) of each numeric parameter, inclusive.
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "seed": (0, MAX_SEED),
    "width": (MIN_SIZE, MAX_SIZE),
    "height": (MIN_SIZE, MAX_SIZE),
    "num_inference_steps": (1, 150),
    "prior_num_inference_steps": (1, 100),
    "num_images_per_prompt": (1, 4),
}
FLOAT_RANGES: dict[str, tuple[float, float]] = {
    "guidance_scale": (1.0, 20.0),
    "prior_guidance_scale": (1.0, 20.0),
    "lora_scale": (0.0, 2.0),
    "logo_weight": (0.0, 1.0),
}
# An uploaded logo's id: the sha256 of the stored image, as the app's upload handed it out; "" is none.
LOGO_ID = re.compile(r"^(|[0-9a-f]{64})$")
# A LoRA adapter's name, as `--lora name=PATH` gives it (PEFT keys modules by it); "" is the base model.
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_-]{0,64}$")
# A style or brand preset's name (assets/presets.json); "" is none. Which names exist is the presets' business.
PRESET_NAME = re.compile(r"^[\w ,&'-]{0,64}$")


class InvalidRequest(ValueError):
    """A parameter a person or a client sent is unusable; the message is a sentence meant for them."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True)
class GenerationRequest:
    """One validated generation. Build it with `from_user`; the defaults are the page's defaults."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    width: int = 768
    height: int = 768
    num_inference_steps: int = 50
    guidance_scale: float = 4.0
    prior_num_inference_steps: int = 25
    prior_guidance_scale: float = 1.0
    num_images_per_prompt: int = 1
    style: str = ""  # a style preset wrapped around the prompt ("" = the prompt as written)
    brand: str = ""  # a brand preset (colours, patterns) added to the prompt
    logo: str = ""  # an uploaded logo's id, mixed into the look with logo_weight ("" = none)
    logo_weight: float = 0.3  # 0 = the words alone, 1 = the logo alone
    adapter_name: str = ""  # the LoRA adapter to use ("" = none); which ones exist is the loaded model's business
    lora_scale: float = 1.0

    @classmethod
    def from_user(cls, **raw: Any) -> GenerationRequest:
        """Validate raw values (strings, floats, None from a form or an API call) into a request."""
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidRequest(unknown[0], f"Unknown parameter '{unknown[0]}'.")
        defaults = cls(prompt="x")
        values: dict[str, Any] = {
            "prompt": clean_prompt(raw.get("prompt"), "prompt", required=True),
            "negative_prompt": clean_prompt(raw.get("negative_prompt"), "negative_prompt", required=False),
            "adapter_name": clean_adapter_name(raw.get("adapter_name")),
            "style": clean_preset_name(raw.get("style"), "style"),
            "logo": clean_logo_id(raw.get("logo")),
            "brand": clean_preset_name(raw.get("brand"), "brand"),
        }
        for name, (low, high) in INTEGER_RANGES.items():
            given = raw.get(name)
            value = getattr(defaults, name) if given is None else to_integer(given, name)
            values[name] = check_range(value, name, low, high)
        for name, (low_f, high_f) in FLOAT_RANGES.items():
            given = raw.get(name)
            value_f = getattr(defaults, name) if given is None else to_float(given, name)
            values[name] = check_range(value_f, name, low_f, high_f)
        for name in ("width", "height"):
            if values[name] % SIZE_MULTIPLE:
                raise InvalidRequest(name, f"{name} must be a multiple of {SIZE_MULTIPLE} pixels (got {values[name]}).")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The request as plain values: what is stored and embedded in the PNG."""
        return asdict(self)


def visible_text(text: str) -> str:
    """The text without control and format characters (zero-width spaces, joiners, BOM, direction marks)."""
    return "".join(
        character
        for character in text
        if unicodedata.category(character) not in {"Cc", "Cf", "Cs", "Co", "Cn"} or character in "\n\t"
    )


def clean_prompt(raw: Any, name: str, *, required: bool) -> str:
    """Strip invisible characters and outer whitespace; refuse what has no visible character or is too long."""
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise InvalidRequest(name, f"{name} must be text.")
    text = " ".join(visible_text(raw).split())
    if required and not text:
        raise InvalidRequest(name, "Describe your mascot: the prompt is empty.")
    if len(text) > MAX_PROMPT_CHARACTERS:
        raise InvalidRequest(
            name,
            f"{name} is {len(text):,} characters long; the limit is {MAX_PROMPT_CHARACTERS:,}. "
            "Shorten it and try again.",
        )
    return text


def clean_adapter_name(raw: Any) -> str:
    """An adapter name, or "" for none; refuse anything that could not name one."""
    text = "" if raw is None else raw
    if not isinstance(text, str) or not ADAPTER_NAME.match(text.strip()):
        raise InvalidRequest("adapter_name", "adapter_name must be the name of a loaded LoRA adapter, or empty.")
    return text.strip()


def clean_logo_id(raw: Any) -> str:
    """A logo id from the upload, or "" for none; never a path or anything else a client makes up."""
    text = "" if raw is None else raw
    if not isinstance(text, str) or not LOGO_ID.match(text.strip()):
        raise InvalidRequest("logo", "logo must be the id the logo upload returned, or empty.")
    return text.strip()


def clean_preset_name(raw: Any, name: str) -> str:
    """A preset's name, or "" for none; refuse what could not name one."""
    text = "" if raw is None else raw
    if not isinstance(text, str) or not PRESET_NAME.match(text.strip()):
        raise InvalidRequest(name, f"{name} must be the name of one of the app's presets, or empty.")
    return text.strip()


def to_integer(raw: Any, name: str) -> int:
    """A whole number from an int, an integral float or a numeric string; refuse anything else by name."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    number = to_float(raw, name)
    if not number.is_integer():
        raise InvalidRequest(name, f"{name} must be a whole number (got {raw!r}).")
    return int(number)


def to_float(raw: Any, name: str) -> float:
    """A finite number from an int, a float or a numeric string; refuse booleans, NaN and infinity by name."""
    if isinstance(raw, bool):
        raise InvalidRequest(name, f"{name} must be a number, not {raw!r}.")
    if isinstance(raw, int):
        return float(raw)
    try:
        number = float(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        raise InvalidRequest(name, f"{name} must be a number (got {str(raw)[:40]!r}).") from None
    if not math.isfinite(number):
        raise InvalidRequest(name, f"{name} must be a finite number (got {raw!r}).")
    return number


def check_range(value: Number, name: str, low: Number, high: Number) -> Number:
    """Refuse a value outside [low, high] with a message that names the parameter and the range."""
    if not low <= value <= high:
        raise InvalidRequest(name, f"{name} must be between {_show(low)} and {_show(high)} (got {_show(value)}).")
    return value


def _show(number: float) -> str:
    """A number as a person writes it: 4294967295, not 4.29497e+09; 4.5, not 4.500000."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"
