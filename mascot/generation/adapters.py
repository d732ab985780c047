"""LoRA adapters for the decoder UNet and the prior: their cards, loading them with PEFT (checked), choosing the scale.

An adapter is a folder holding `pytorch_lora_weights.safetensors` (PEFT keys, as `save_lora_adapter` writes them) and
`lora_card.json` (which model it adapts and how it was made), the layout `lora/train.py` and `lora/convert.py` write.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

import torch

from mascot.generation.strengths import strength_tensors
from mascot.settings import adapter_name_of

logger = logging.getLogger(__name__)

Target = Literal["decoder", "prior"]
TARGETS: tuple[Target, ...] = ("decoder", "prior")
WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' name for a LoRA saved with save_lora_adapter
CARD_NAME = "lora_card.json"
BASE_MODELS: dict[Target, str] = {
    "decoder": "kandinsky-community/kandinsky-2-2-decoder",
    "prior": "kandinsky-community/kandinsky-2-2-prior",
}
# Attention projections each target's LoRA adapts (module-name suffixes, as PEFT matches them).
TARGET_MODULES: dict[Target, tuple[str, ...]] = {
    "decoder": ("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj"),
    "prior": ("to_q", "to_k", "to_v", "to_out.0"),
}
# PEFT keeps adapters in ModuleDicts keyed by name: a dot would be read as a path.
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LORA_METADATA_KEY = "lora_adapter_metadata"  # where save_lora_adapter keeps the LoraConfig in the safetensors header
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")


class AdapterError(ValueError):
    """An adapter cannot be used: the message is a sentence naming the file and what to do about it."""


@dataclass(frozen=True)
class AdapterCard:
    """The small JSON file beside the weights: what the adapter adapts and how it was made."""

    target: Target
    base_model: str
    rank: int
    lora_alpha: float
    steps: int | None = None
    resolution: int | None = None
    train_images: int | None = None
    learning_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        """Write `folder/lora_card.json` (the extra fields sit at the top level beside the others)."""
        values = asdict(self)
        values.update(values.pop("extra"))
        path = Path(folder) / CARD_NAME
        path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> AdapterCard:
        """The card at `path`; fields it does not know go to `extra`."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise AdapterError(f"The adapter card {str(path)!r} cannot be read: {error}.") from error
        known = {item.name for item in fields(cls)} - {"extra"}
        missing = {"target", "rank", "lora_alpha"} - set(values)
        if missing:
            raise AdapterError(f"The adapter card {str(path)!r} lacks {', '.join(sorted(missing))}.")
        if values["target"] not in TARGETS:
            raise AdapterError(
                f"The adapter card {str(path)!r} names target {values['target']!r}: use decoder or prior."
            )
        values.setdefault("base_model", BASE_MODELS[values["target"]])
        extra = {key: value for key, value in values.items() if key not in known}
        return cls(**{key: value for key, value in values.items() if key in known}, extra=extra)


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter to load: its name in the app, its weights file, and the model it adapts."""

    name: str
    path: Path
    target: Target

    @classmethod
    def parse(cls, value: str) -> AdapterSpec:
        """`name=PATH` or `PATH` (a folder holding the weights and card, or the weights file); the name defaults to
        the folder's name, and the target comes from the card (or, without one, from the weights' module names)."""
        name, separator, location = value.partition("=")
        if not separator:
            name, location = "", value
        path = weights_file(Path(location).expanduser())
        if name:
            check_adapter_name(name)
        else:
            name = adapter_name_of(value)  # the settings check --default-lora against the same name
            name = f"{name}_lora" if _is_reserved(name) else name
        return cls(name=name, path=path, target=read_target(path))

    @property
    def card(self) -> AdapterCard | None:
        """The card beside the weights, if there is one."""
        card_path = self.path.parent / CARD_NAME
        return AdapterCard.read(card_path) if card_path.is_file() else None


def parse_adapter_specs(values: Iterable[str]) -> list[AdapterSpec]:
    """Each `--lora` value (`name=PATH` or `PATH`) as a spec; a name may be used once per target (a decoder and a
    prior adapter may share one, and are then chosen together)."""
    specs = [AdapterSpec.parse(value) for value in values]
    seen: set[tuple[str, Target]] = set()
    for spec in specs:
        if (spec.name, spec.target) in seen:
            raise AdapterError(f"Two {spec.target} adapters are named {spec.name!r}: name one of them with name=PATH.")
        seen.add((spec.name, spec.target))
    return specs


def check_adapter_name(name: str) -> None:
    """Adapter names become PEFT module keys: letters, digits, '_' and '-' only, and not a torch Module attribute."""
    if not _ADAPTER_NAME.match(name):
        raise AdapterError(
            f"Adapter name {name!r} is not usable: use 1-64 letters, digits, '_' or '-' (for example otter-v2)."
        )
    if _is_reserved(name):
        raise AdapterError(
            f"Adapter name {name!r} is not usable: torch modules already have an attribute of that name "
            f"(try {name}_lora)."
        )


def _is_reserved(name: str) -> bool:
    """Names like 'double' or 'eval' clash with torch.nn.Module attributes when PEFT stores the adapter."""
    return hasattr(torch.nn.ModuleDict, name)


def weights_file(location: Path) -> Path:
    """The safetensors file of an adapter given as its folder or as the file itself."""
    path = location / WEIGHT_NAME if location.is_dir() else location
    if not path.is_file():
        where = f"the folder {str(location)!r} has no {WEIGHT_NAME}" if location.is_dir() else f"{str(path)!r}"
        raise AdapterError(f"No LoRA adapter found: {where} does not exist.")
    if path.suffix != ".safetensors":
        raise AdapterError(
            f"{str(path)!r} is not a .safetensors file: adapters are loaded from PEFT safetensors "
            "(convert an old checkpoint with lora/convert.py)."
        )
    return path


def read_target(path: Path) -> Target:
    """The target the card names, or, without a card, the one the weights' module names imply."""
    card_path = path.parent / CARD_NAME
    if card_path.is_file():
        return AdapterCard.read(card_path).target
    keys = read_lora_tensors(path).keys()
    if all(key.startswith("transformer_blocks.") for key in keys):
        return "prior"
    if all(key.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for key in keys):
        return "decoder"
    raise AdapterError(
        f"{str(path)!r} has no {CARD_NAME} beside it and its keys name neither the decoder nor the prior."
    )


def read_lora_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a PEFT LoRA file, refused with a reason when it is empty or not in PEFT's key layout."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as error:
        raise AdapterError(f"{str(path)!r} is not a readable safetensors file: {error}.") from error
    if not tensors:
        raise AdapterError(f"{str(path)!r} holds no tensors: it is not a LoRA adapter.")
    if any("_lora." in key or ".processor." in key for key in tensors):
        raise AdapterError(
            f"{str(path)!r} is an old attention-processor LoRA checkpoint: convert it to PEFT with "
            "`python lora/convert.py --input ... --output_dir ...` first."
        )
    unknown = sorted(key for key in tensors if not _LORA_KEY.match(key))
    if unknown:
        raise AdapterError(
            f"{str(path)!r} has keys that are not PEFT LoRA weights (module.lora_A.weight / module.lora_B.weight): "
            f"{', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}."
        )
    return tensors


def loaded_adapters(model: torch.nn.Module) -> list[str]:
    """Names of the LoRA adapters loaded into `model`."""
    return list(getattr(model, "peft_config", {}) or {})


def load_adapter(model: torch.nn.Module, spec: AdapterSpec) -> None:
    """Load `spec` into `model` (the decoder's UNet2DConditionModel or the prior's PriorTransformer) under its name,
    then check that every saved tensor really sits in the model; a load that loads nothing or only part raises.

    The adapter is left inactive: choose it with `set_adapter_scale`.
    """
    check_target(model, spec)
    check_adapter_name(spec.name)
    if strength_tensors(model) is not None:
        # Its layers would have no strength buffer, and PEFT would leave it on at its own scale.
        raise AdapterError(
            f"{str(spec.path)!r} cannot be loaded after compiling started: load every adapter when the app starts."
        )
    if spec.name in loaded_adapters(model):
        raise AdapterError(f"An adapter named {spec.name!r} is already loaded: give {str(spec.path)!r} another name.")
    saved = read_lora_tensors(spec.path)
    load_lora = cast(Any, model).load_lora_adapter
    metadata = read_lora_metadata(spec.path) or metadata_from_card(spec, saved)
    try:
        # prefix=None: the default ("transformer") filters out every key of a bare UNet and loads nothing, silently.
        # The tensors go in as a dict because diffusers ignores `metadata` when it reads a file itself.
        with warnings.catch_warnings():
            # PEFT warns about "multiple adapters" on every adapter after the first: several are what we want.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            load_lora(dict(saved), prefix=None, adapter_name=spec.name, metadata=metadata)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        _forget(model, spec.name)
        raise AdapterError(f"The LoRA adapter {str(spec.path)!r} does not fit this {spec.target}: {error}") from error
    try:
        verify_loaded(model, spec, saved)
    except AdapterError:
        _forget(model, spec.name)
        raise
    set_adapter_scale(model, None, 0.0)
    logger.info("Loaded the %s LoRA adapter %r from %s (%d tensors)", spec.target, spec.name, spec.path, len(saved))


def read_lora_metadata(path: Path) -> dict[str, Any] | None:
    """The LoraConfig (rank, alpha, modules) the file carries, as save_lora_adapter writes it, if it has one."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        text = (handle.metadata() or {}).get(LORA_METADATA_KEY)
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError as error:
        raise AdapterError(f"{str(path)!r} has a damaged LoRA config in its header: {error}.") from error


def metadata_from_card(spec: AdapterSpec, saved: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """A LoraConfig for a file without one, from its card: without it diffusers would assume lora_alpha = rank."""
    card = spec.card
    if card is None:
        return None
    ranks = {key.removesuffix(".lora_A.weight"): int(value.shape[0]) for key, value in saved.items() if "lora_A" in key}
    return {
        "r": card.rank,
        "lora_alpha": card.lora_alpha,
        "target_modules": sorted(ranks),
        "rank_pattern": {f"^{module}$": rank for module, rank in ranks.items() if rank != card.rank},
    }


def check_target(model: torch.nn.Module, spec: AdapterSpec) -> None:
    """Refuse a decoder adapter for the prior and the other way round."""
    from diffusers.models.transformers.prior_transformer import PriorTransformer
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel  # not `from diffusers`: see [tool.mypy]

    expected = UNet2DConditionModel if spec.target == "decoder" else PriorTransformer
    if not isinstance(model, expected):
        raise AdapterError(
            f"The LoRA adapter {str(spec.path)!r} is for the {spec.target} ({expected.__name__}), "
            f"not for a {type(model).__name__}."
        )


def verify_loaded(model: torch.nn.Module, spec: AdapterSpec, saved: dict[str, torch.Tensor]) -> None:
    """Every saved tensor is in the model under the adapter's name with the saved values, and nothing else is."""
    if spec.name not in loaded_adapters(model):
        raise AdapterError(
            f"Loading {str(spec.path)!r} loaded nothing: no adapter {spec.name!r} appeared in the model."
        )
    marker = f".{spec.name}."
    in_model = {
        name.replace(marker, "."): parameter
        for name, parameter in model.named_parameters()
        if marker in name and (".lora_A." in name or ".lora_B." in name)
    }
    missing = sorted(set(saved) - set(in_model))
    if missing:
        raise AdapterError(
            f"Loading {str(spec.path)!r} left {len(missing)} of its {len(saved)} tensors out of the model "
            f"(the module names do not match this {spec.target}), e.g. {missing[0]}."
        )
    if len(in_model) != len(saved):
        raise AdapterError(
            f"Loading {str(spec.path)!r} made {len(in_model)} LoRA tensors in the model for {len(saved)} saved ones."
        )
    for key, tensor in saved.items():
        parameter = in_model[key].detach()
        if not torch.equal(parameter, tensor.to(parameter.device, parameter.dtype)):
            raise AdapterError(f"Loading {str(spec.path)!r} did not put the saved values of {key} into the model.")
    check_scaling(model, spec)


def check_scaling(model: torch.nn.Module, spec: AdapterSpec) -> None:
    """The loaded rank and alpha (PEFT scales by alpha / rank) are the card's: else scale 1 would not mean "as
    trained"."""
    card = spec.card
    config = cast(Any, model).peft_config[spec.name]
    if card is not None and (config.r, float(config.lora_alpha)) != (card.rank, float(card.lora_alpha)):
        raise AdapterError(
            f"{str(spec.path)!r} loaded with rank {config.r} and lora_alpha {config.lora_alpha}, but its card says "
            f"rank {card.rank} and lora_alpha {card.lora_alpha}: the file and {CARD_NAME} do not belong together."
        )


def _forget(model: torch.nn.Module, name: str) -> None:
    """Remove a half-loaded adapter, so that a failed load leaves the model as it was."""
    if name in loaded_adapters(model):
        cast(Any, model).delete_adapters(name)


def set_adapter_scale(model: torch.nn.Module, name: str | None, scale: float) -> None:
    """Use only adapter `name` at `scale` in `model`; `None` or a scale of 0 turns every adapter off, which gives the
    base model's output exactly (PEFT then skips the LoRA branch; with strengths in tensors, strengths.py, each
    adapter adds its output times 0)."""
    loaded = loaded_adapters(model)
    off = name is None or scale == 0
    if not off and name not in loaded:
        listed = ", ".join(repr(item) for item in loaded) or "none"
        raise AdapterError(f"No adapter named {name!r} is loaded into the {type(model).__name__} (loaded: {listed}).")
    tensors = strength_tensors(model)
    if tensors is not None:  # compiled code runs this model: no Python flags to flip, no floats to specialise on
        tensors.use(None if off else name, scale)
        return
    if off:
        if loaded:
            cast(Any, model).disable_adapters()
        return
    peft_model = cast(Any, model)
    peft_model.enable_adapters()
    peft_model.set_adapters([name], [float(scale)])
