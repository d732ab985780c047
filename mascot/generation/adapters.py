"""LoRA adapters for the decoder UNet and the prior: loading them with PEFT (checked), choosing the scale.

What their files alone tell (the card, the weights' names, the target) is read by `adapter_files`, without torch.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from mascot.generation.adapter_files import (
    CARD_NAME,
    AdapterCard,
    AdapterError,
    Target,
    check_adapter_name_characters,
    check_lora_keys,
    read_card,
    read_lora_metadata,
    read_target,
    refuse_names_used_twice,
    split_adapter_value,
    weights_file,
)
from mascot.generation.strengths import strength_tensors
from mascot.settings import adapter_name_of

logger = logging.getLogger(__name__)


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
        name, location = split_adapter_value(value)
        path = weights_file(location)
        if name:
            check_adapter_name(name)
        else:
            name = adapter_name_of(value)  # the settings check --default-lora against the same name
            name = f"{name}_lora" if _is_reserved(name) else name
        return cls(name=name, path=path, target=read_target(path))

    @property
    def card(self) -> AdapterCard | None:
        """The card beside the weights, if there is one."""
        return read_card(self.path)


def parse_adapter_specs(values: Iterable[str]) -> list[AdapterSpec]:
    """Each `--lora` value (`name=PATH` or `PATH`) as a spec; a name may be used once per target (a decoder and a
    prior adapter may share one, and are then chosen together)."""
    specs = [AdapterSpec.parse(value) for value in values]
    refuse_names_used_twice((spec.name, spec.target) for spec in specs)
    return specs


def check_adapter_name(name: str) -> None:
    """Adapter names become PEFT module keys: letters, digits, '_' and '-' only, and not a torch Module attribute."""
    check_adapter_name_characters(name)
    if _is_reserved(name):
        raise AdapterError(
            f"Adapter name {name!r} is not usable: torch modules already have an attribute of that name "
            f"(try {name}_lora)."
        )


def _is_reserved(name: str) -> bool:
    """Names like 'double' or 'eval' clash with torch.nn.Module attributes when PEFT stores the adapter."""
    return hasattr(torch.nn.ModuleDict, name)


def read_lora_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a PEFT LoRA file, refused with a reason when it is empty or not in PEFT's key layout."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as error:
        raise AdapterError(f"{str(path)!r} is not a readable safetensors file: {error}.") from error
    check_lora_keys(path, tensors)
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
    # The adapter's name follows lora_A/lora_B in PEFT's paths; only that part is stripped, as a name such as "0"
    # or "to_q" also appears elsewhere in a path (attentions.0.…to_q).
    markers = {f".{kind}.{spec.name}.": f".{kind}." for kind in ("lora_A", "lora_B")}
    in_model = {
        name.replace(marker, plain): parameter
        for name, parameter in model.named_parameters()
        for marker, plain in markers.items()
        if marker in name
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
