"""What can be known of a LoRA adapter from its files alone, without torch: its card, its weights' names and
header, the model it adapts. The app checks every `--lora` with these before it serves (a broken file stops the start
with a sentence), and `adapters` loads what they accepted.

An adapter is a folder holding `pytorch_lora_weights.safetensors` (PEFT keys, as `save_lora_adapter` writes them) and
`lora_card.json` (which model it adapts and how it was made), the layout `lora/train.py` and `lora/convert.py` write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from mascot.settings import adapter_name_of

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


def split_adapter_value(value: str) -> tuple[str, Path]:
    """A `--lora` value, `name=PATH` or `PATH`: the name given ("" for none) and where the adapter is."""
    name, separator, location = value.partition("=")
    if not separator:
        name, location = "", value
    return name, Path(location).expanduser()


def check_adapter_name_characters(name: str) -> None:
    """Adapter names become PEFT module keys: letters, digits, '_' and '-' only."""
    if not _ADAPTER_NAME.match(name):
        raise AdapterError(
            f"Adapter name {name!r} is not usable: use 1-64 letters, digits, '_' or '-' (for example otter-v2)."
        )


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


def read_lora_header(path: Path) -> tuple[list[str], dict[str, str]]:
    """The tensor names and the metadata of a safetensors file, read from its header alone (no tensor is loaded),
    refused with a reason when it is not a safetensors file or not in PEFT's key layout."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as handle:
            keys, metadata = list(handle.keys()), dict(handle.metadata() or {})
    except (OSError, SafetensorError) as error:
        raise AdapterError(f"{str(path)!r} is not a readable safetensors file: {error}.") from error
    check_lora_keys(path, keys)
    return keys, metadata


def check_lora_keys(path: Path, keys: Iterable[str]) -> None:
    """Refuse a file with no tensors, an old attention-processor checkpoint, or keys outside PEFT's LoRA layout."""
    keys = list(keys)
    if not keys:
        raise AdapterError(f"{str(path)!r} holds no tensors: it is not a LoRA adapter.")
    if any("_lora." in key or ".processor." in key for key in keys):
        raise AdapterError(
            f"{str(path)!r} is an old attention-processor LoRA checkpoint: convert it to PEFT with "
            "`python lora/convert.py --input ... --output_dir ...` first."
        )
    unknown = sorted(key for key in keys if not _LORA_KEY.match(key))
    if unknown:
        raise AdapterError(
            f"{str(path)!r} has keys that are not PEFT LoRA weights (module.lora_A.weight / module.lora_B.weight): "
            f"{', '.join(unknown[:5])}{' …' if len(unknown) > 5 else ''}."
        )


def read_card(path: Path) -> AdapterCard | None:
    """The card beside an adapter's weights file `path`, if there is one."""
    card_path = path.parent / CARD_NAME
    return AdapterCard.read(card_path) if card_path.is_file() else None


def read_target(path: Path) -> Target:
    """The target the card names, or, without a card, the one the weights' module names imply."""
    card = read_card(path)
    if card is not None:
        return card.target
    keys, _ = read_lora_header(path)
    return target_of_keys(path, keys)


def target_of_keys(path: Path, keys: Iterable[str]) -> Target:
    """The model a card-less adapter's module names imply."""
    keys = list(keys)
    if all(key.startswith("transformer_blocks.") for key in keys):
        return "prior"
    if all(key.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for key in keys):
        return "decoder"
    raise AdapterError(
        f"{str(path)!r} has no {CARD_NAME} beside it and its keys name neither the decoder nor the prior."
    )


def read_lora_metadata(path: Path) -> dict[str, Any] | None:
    """The LoraConfig (rank, alpha, modules) the file carries, as save_lora_adapter writes it, if it has one."""
    _, metadata = read_lora_header(path)
    return lora_config_of(path, metadata)


def lora_config_of(path: Path, metadata: dict[str, str]) -> dict[str, Any] | None:
    """The LoraConfig in a safetensors header's metadata (read_lora_header), refused when it is damaged."""
    text = metadata.get(LORA_METADATA_KEY)
    try:
        config = json.loads(text) if text else None
    except json.JSONDecodeError as error:
        raise AdapterError(f"{str(path)!r} has a damaged LoRA config in its header: {error}.") from error
    if config is not None and not isinstance(config, dict):
        raise AdapterError(f"{str(path)!r} has a damaged LoRA config in its header: it is not a JSON object.")
    return config


def check_adapter_files(values: Iterable[str]) -> None:
    """Everything about the `--lora` values that their files tell, before torch is imported: each adapter is there,
    is a readable PEFT safetensors file with a readable card (if it has one) naming a target, carries a readable LoRA
    config, and no two of one target share a name. What only the model can tell (that the adapter fits it) is checked
    when it loads (`adapters.load_adapter`). Raises AdapterError, a sentence for the operator."""
    named: list[tuple[str, Target]] = []
    for value in values:
        given, location = split_adapter_value(value)
        if given:
            check_adapter_name_characters(given)
        path = weights_file(location)
        card = read_card(path)  # read first, as read_target does
        keys, metadata = read_lora_header(path)  # once: the target without a card, and the LoRA config
        lora_config_of(path, metadata)
        named.append((given or adapter_name_of(value), card.target if card is not None else target_of_keys(path, keys)))
    refuse_names_used_twice(named)


def refuse_names_used_twice(named: Iterable[tuple[str, Target]]) -> None:
    """A name may be used once per target (a decoder and a prior adapter may share one, and are then chosen
    together)."""
    seen: set[tuple[str, Target]] = set()
    for name, target in named:
        if (name, target) in seen:
            raise AdapterError(f"Two {target} adapters are named {name!r}: name one of them with name=PATH.")
        seen.add((name, target))
