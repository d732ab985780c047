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
    "prior_num_inference_steps": (2, 100),  # the prior's UnCLIPScheduler divides by steps - 1
    "num_images_per_prompt": (1, 4),
}
FLOAT_RANGES: dict[str, tuple[float, float]] = {
    "guidance_scale": (1.0, 20.0),
    "prior_guidance_scale": (1.0, 20.0),
    "lora_scale": (0.0, 2.0),
    "logo_weight": (0.0, 1.0),
}
# An uploaded logo's id (the sha256 of the stored image) with the grant the app's upload handed out with it
# (mascot.prompt.logos.LogoGrants; a brand's logo has none), or a mascot to start from ("More like this"):
# BASED_ON_PREFIX and its share id, whose picture the app loads when the job runs, if the asking browser may still
# see it. "" is none.
BASED_ON_PREFIX = "mascot:"
LOGO_ID = re.compile(r"^(|[0-9a-f]{64}(\.[A-Za-z0-9_-]{43})?|mascot:[A-Za-z0-9_-]{12})$")
# A LoRA adapter's name, as `--lora name=PATH` gives it (PEFT keys modules by it); "" is the base model.
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_-]{0,64}$")
# A style or brand preset's name (assets/presets.json); "" is none. Which names exist is the presets' business.
PRESET_NAME = re.compile(r"^[\w ,&'-]{0,64}$")


# What each parameter is called on the page: refusals shown to people use these words, the API keeps its names.
PARAMETER_LABELS: dict[str, str] = {
    "prompt": "Your idea",
    "negative_prompt": "Avoid",
    "seed": "Seed",
    "width": "Width",
    "height": "Height",
    "num_inference_steps": "Steps",
    "guidance_scale": "Guidance",
    "prior_num_inference_steps": "Idea steps",
    "prior_guidance_scale": "Idea guidance",
    "num_images_per_prompt": "Number of mascots",
    "style": "Style",
    "brand": "Brand colours",
    "logo": "Logo",
    "logo_weight": "Logo influence",
    "adapter_name": "Look",
    "lora_scale": "Look strength",
}


@dataclass(frozen=True)
class Problem:
    """One unusable parameter: `template` names it as `{name}`, filled with the API name or the page's label."""

    parameter: str
    template: str

    @property
    def message(self) -> str:
        """The sentence for API clients, naming the parameter as the API does."""
        return self.template.format(name=self.parameter)

    @property
    def for_people(self) -> str:
        """The sentence for the page, naming the parameter as the page labels it."""
        label = PARAMETER_LABELS.get(self.parameter, self.parameter)
        return self.template.format(name=label)


class InvalidRequest(ValueError):
    """Parameters a person or a client sent are unusable; each message is a sentence meant for them.

    `parameter` and `message` are the first problem's; `problems` holds every one, so a form can mark them all."""

    def __init__(self, parameter: str, message: str, *, problems: tuple[Problem, ...] = ()) -> None:
        self.problems = problems or (Problem(parameter, _escape_braces(message)),)
        super().__init__(message)
        self.parameter = parameter
        self.message = message

    @classmethod
    def of(cls, problems: list[Problem]) -> InvalidRequest:
        """One refusal carrying every problem found."""
        first = problems[0]
        return cls(first.parameter, " ".join(problem.message for problem in problems), problems=tuple(problems))

    @property
    def for_people(self) -> str:
        """Every problem in the page's words, one sentence each."""
        return " ".join(problem.for_people for problem in self.problems)


def _escape_braces(text: str) -> str:
    """A finished sentence as a template that formats back to itself."""
    return text.replace("{", "{{").replace("}", "}}")


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
    logo: str = ""  # an uploaded logo's id or "mascot:<share id>", mixed into the look with logo_weight ("" = none)
    logo_weight: float = 0.3  # 0 = the words alone, 1 = the logo alone
    adapter_name: str = ""  # the LoRA adapter to use ("" = none); which ones exist is the loaded model's business
    lora_scale: float = 1.0

    @classmethod
    def from_user(cls, **raw: Any) -> GenerationRequest:
        """Validate raw values (strings, floats, None from a form or an API call) into a request.

        Raises InvalidRequest carrying every problem found, not only the first, so a form can mark them all."""
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidRequest.of([Problem(name, "Unknown parameter '{name}'.") for name in unknown])
        defaults = cls(prompt="x")
        problems: list[Problem] = []
        values: dict[str, Any] = {}
        cleaners: dict[str, Any] = {
            "prompt": lambda value: clean_prompt(value, "prompt", required=True),
            "negative_prompt": lambda value: clean_prompt(value, "negative_prompt", required=False),
            "adapter_name": clean_adapter_name,
            "style": lambda value: clean_preset_name(value, "style"),
            "logo": clean_logo_id,
            "brand": lambda value: clean_preset_name(value, "brand"),
        }
        for name, clean in cleaners.items():
            _collect(problems, values, name, lambda clean=clean, name=name: clean(raw.get(name)))
        for name, (low, high) in INTEGER_RANGES.items():
            _collect(
                problems, values, name, lambda name=name, low=low, high=high: _integer(raw, defaults, name, low, high)
            )
        for name, (low_f, high_f) in FLOAT_RANGES.items():
            _collect(
                problems, values, name, lambda name=name, low=low_f, high=high_f: _float(raw, defaults, name, low, high)
            )
        for name in ("width", "height"):
            if name in values and values[name] % SIZE_MULTIPLE:
                problems.append(
                    Problem(name, f"{{name}} must be a multiple of {SIZE_MULTIPLE} pixels (got {values[name]}).")
                )
        if problems:
            order = list(cls.__dataclass_fields__)  # the form's order, so the first marked field is the topmost
            raise InvalidRequest.of(sorted(problems, key=lambda problem: order.index(problem.parameter)))
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The request as plain values: what is stored and embedded in the PNG."""
        return asdict(self)


def _collect(problems: list[Problem], values: dict[str, Any], name: str, check: Any) -> None:
    """Run one parameter's check: keep its value, or note its problems and go on to the next parameter."""
    try:
        values[name] = check()
    except InvalidRequest as error:
        problems.extend(error.problems)


def _integer(raw: dict[str, Any], defaults: GenerationRequest, name: str, low: int, high: int) -> int:
    given = raw.get(name)
    value = getattr(defaults, name) if given is None else to_integer(given, name)
    return check_range(value, name, low, high)


def _float(raw: dict[str, Any], defaults: GenerationRequest, name: str, low: float, high: float) -> float:
    given = raw.get(name)
    value = getattr(defaults, name) if given is None else to_float(given, name)
    return check_range(value, name, low, high)


def visible_text(text: str) -> str:
    """The text without control and format characters (zero-width spaces, joiners, BOM, direction marks)."""
    return "".join(
        character
        for character in text
        if unicodedata.category(character) not in {"Cc", "Cf", "Cs", "Co", "Cn"} or character in "\n\t"
    )


def refuse(name: str, template: str) -> InvalidRequest:
    """A refusal of one parameter; `template` names it as `{name}` (other braces doubled)."""
    problem = Problem(name, template)
    return InvalidRequest(name, problem.message, problems=(problem,))


def clean_prompt(raw: Any, name: str, *, required: bool) -> str:
    """Strip invisible characters and outer whitespace; refuse what has no visible character or is too long."""
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise refuse(name, "{name} must be text.")
    text = " ".join(visible_text(raw).split())
    if required and not text:
        raise refuse(name, "Describe your mascot: {name} is empty.")
    if len(text) > MAX_PROMPT_CHARACTERS:
        raise refuse(
            name,
            f"{{name}} is {len(text):,} characters long; the limit is {MAX_PROMPT_CHARACTERS:,}. "
            "Shorten it and try again.",
        )
    return text


def clean_adapter_name(raw: Any) -> str:
    """An adapter name, or "" for none; refuse anything that could not name one."""
    text = "" if raw is None else raw
    if not isinstance(text, str) or not ADAPTER_NAME.match(text.strip()):
        raise refuse("adapter_name", "{name} must be the name of a loaded LoRA adapter, or empty.")
    return text.strip()


def clean_logo_id(raw: Any) -> str:
    """A logo id from the upload, a mascot to start from ("mascot:<share id>"), or "" for none; never a path or
    anything else a client makes up."""
    text = "" if raw is None else raw
    if not isinstance(text, str) or not LOGO_ID.match(text.strip()):
        raise refuse("logo", "{name} must be the id the logo upload returned, mascot:<share id>, or empty.")
    return text.strip()


def based_on_mascot(logo: str) -> str | None:
    """The share id of the mascot a request starts from (its `logo` is "mascot:<share id>"); None otherwise."""
    return logo.removeprefix(BASED_ON_PREFIX) if logo.startswith(BASED_ON_PREFIX) else None


def clean_preset_name(raw: Any, name: str) -> str:
    """A preset's name, or "" for none; refuse what could not name one."""
    text = "" if raw is None else raw
    if not isinstance(text, str) or not PRESET_NAME.match(text.strip()):
        raise refuse(name, "{name} must be the name of one of the app's presets, or empty.")
    return text.strip()


def to_integer(raw: Any, name: str) -> int:
    """A whole number from an int, an integral float or a numeric string; refuse anything else by name."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    number = to_float(raw, name)
    if not number.is_integer():
        raise refuse(name, f"{{name}} must be a whole number (got {_quoted(raw)}).")
    return int(number)


def to_float(raw: Any, name: str) -> float:
    """A finite number from an int, a float or a numeric string; refuse booleans, NaN, infinity and giants by name."""
    if isinstance(raw, bool):
        raise refuse(name, f"{{name}} must be a number, not {raw!r}.")
    try:
        number = float(raw.strip() if isinstance(raw, str) else raw)
    except OverflowError:  # an integer such as 10**400 is too large for any float
        raise refuse(name, "{name} must be a number of a sensible size.") from None
    except (TypeError, ValueError):
        raise refuse(name, f"{{name}} must be a number (got {_quoted(raw)}).") from None
    if not math.isfinite(number):
        raise refuse(name, f"{{name}} must be a finite number (got {_quoted(raw)}).")
    return number


def check_range(value: Number, name: str, low: Number, high: Number) -> Number:
    """Refuse a value outside [low, high] with a message that names the parameter and the range."""
    if not low <= value <= high:
        raise refuse(name, f"{{name}} must be between {_show(low)} and {_show(high)} (got {_show(value)}).")
    return value


def _quoted(raw: Any) -> str:
    """A short, brace-safe echo of what was sent (a list, a long string or a huge number stays readable)."""
    text = repr(raw) if isinstance(raw, str) else type(raw).__name__ if not isinstance(raw, int | float) else str(raw)
    if len(text) > 40:
        text = text[:37] + "..."
    return text.replace("{", "{{").replace("}", "}}")


def _show(number: float) -> str:
    """A number as a person writes it: 4294967295, not 4.29497e+09; 4.5, not 4.500000; a giant shortened."""
    if abs(number) > 10**15:  # an int of any size, or a float up to 1.8e308 (whose int has 309 digits)
        return "a number far too large"
    return str(int(number)) if float(number).is_integer() else f"{number:g}"
