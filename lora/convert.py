"""Convert a LoRA saved by diffusers' old attention processors (the seed's checkpoint-2500) into a PEFT adapter that
today's diffusers loads (`load_lora_adapter`), with the same effect.

    python lora/convert.py --input seed/checkpoint-2500 --output_dir loras/seed-decoder \
        --verify_with kandinsky-community/kandinsky-2-2-decoder

--input is the checkpoint folder or its weights file: pytorch_lora_weights.safetensors or .bin (what
`unet.save_attn_procs` wrote), or model.safetensors / pytorch_model.bin (what `accelerator.save_state` wrote for the
old scripts' AttnProcsLayers). Keys look like `down_blocks.1.attentions.0.processor.to_q_lora.down.weight`.

The old LoRAAttnAddedKVProcessor computed `W x + scale * up(down(x))` for to_q, to_k, to_v, to_out[0], add_k_proj and
add_v_proj. PEFT computes `W x + scale * (lora_alpha / r) * lora_B(lora_A(x))`, so `down` becomes `lora_A`, `up`
becomes `lora_B` and lora_alpha = r (a scale of 1 means what it meant before). Then: `python app.py --lora seed=DIR`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python lora/convert.py` from anywhere

import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from mascot.generation.adapter_files import BASE_MODELS, WEIGHT_NAME, AdapterCard, AdapterError, Target
from mascot.generation.adapters import AdapterSpec, load_adapter

LEGACY_FILES = (
    "pytorch_lora_weights.safetensors",
    "pytorch_lora_weights.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
LEGACY_KEY = re.compile(
    r"^(?:unet\.)?(?P<module>.+)\.processor\."
    r"(?P<projection>to_q|to_k|to_v|to_out|add_k_proj|add_v_proj)_lora\.(?P<part>down|up)\.weight$"
)
# Where the old processors sat: the decoder UNet's attention blocks, the prior's transformer blocks.
MODULE_PATTERNS: dict[Target, re.Pattern[str]] = {
    "decoder": re.compile(r"^(?:(?:down|up)_blocks\.\d+\.attentions\.\d+|mid_block\.attentions\.\d+)$"),
    "prior": re.compile(r"^transformer_blocks\.\d+\.attn1$"),
}
PEFT_MODULE = {"to_out": "to_out.0"}  # the old to_out_lora adapted to_out[0], the output Linear


class ConversionError(ValueError):
    """The input is not an old attention-processor LoRA this converter understands; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    """The converter's flags."""
    parser = argparse.ArgumentParser(
        description="Convert an old attention-processor LoRA checkpoint to a PEFT adapter (safetensors + card).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--input", type=Path, required=True, help="checkpoint folder or its weights file")
    parser.add_argument("--output_dir", type=Path, required=True, help="folder for the PEFT adapter and its card")
    parser.add_argument(
        "--base_model", default=None, help="recorded in the card (default: the hub id of the decoder or the prior)"
    )
    parser.add_argument(
        "--verify_with",
        default=None,
        help="a decoder (or prior) pipeline folder or hub id: load the adapter into its model to prove it fits",
    )
    return parser


def find_legacy_file(location: Path) -> Path:
    """The weights file of a checkpoint given as its folder or as the file."""
    if location.is_file():
        return location
    if not location.is_dir():
        raise ConversionError(f"{str(location)!r} does not exist.")
    for name in LEGACY_FILES:
        if (location / name).is_file():
            return location / name
    raise ConversionError(f"{str(location)!r} holds none of {', '.join(LEGACY_FILES)}.")


def read_legacy(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (a .bin is read with weights_only: no code runs)."""
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ConversionError(f"{str(path)!r} is not a state dict of tensors.")
    return state


def convert_state_dict(legacy: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Target]:
    """PEFT tensors (`<module>.<projection>.lora_A/lora_B.weight`) and the target; unknown keys are refused."""
    if not legacy:
        raise ConversionError("The checkpoint holds no tensors.")
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in legacy.items():
        match = LEGACY_KEY.match(key)
        if match is None:
            unknown.append(key)
            continue
        parts.setdefault((match["module"], match["projection"]), {})[match["part"]] = tensor
    if unknown:
        raise ConversionError(
            f"{len(unknown)} key{'s are' if len(unknown) > 1 else ' is'} not an old attention-processor LoRA weight "
            f"(like down_blocks.1.attentions.0.processor.to_q_lora.down.weight): {', '.join(sorted(unknown)[:5])}"
            f"{' …' if len(unknown) > 5 else ''}."
        )
    target = detect_target({module for module, _ in parts})
    converted: dict[str, torch.Tensor] = {}
    for (module, projection), pair in sorted(parts.items()):
        down, up = _checked_pair(module, projection, pair)
        name = f"{module}.{PEFT_MODULE.get(projection, projection)}"
        converted[f"{name}.lora_A.weight"] = down.contiguous()
        converted[f"{name}.lora_B.weight"] = up.contiguous()
    return converted, target


def detect_target(modules: set[str]) -> Target:
    """decoder (UNet attention blocks) or prior (transformer blocks); anything else is refused."""
    for target, pattern in MODULE_PATTERNS.items():
        if all(pattern.match(module) for module in modules):
            return target
    strange = sorted(module for module in modules if not any(p.match(module) for p in MODULE_PATTERNS.values()))
    detail = f"unknown module paths: {', '.join(strange[:5])}" if strange else "it mixes decoder and prior modules"
    raise ConversionError(f"The checkpoint's modules are neither the decoder UNet's nor the prior's ({detail}).")


def _checked_pair(module: str, projection: str, pair: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`down` [rank, in] and `up` [out, rank] of one projection, both present and of one rank."""
    where = f"{module}.processor.{projection}_lora"
    if set(pair) != {"down", "up"}:
        missing = "down" if "down" not in pair else "up"
        raise ConversionError(f"{where} has no {missing}.weight: the checkpoint is incomplete.")
    down, up = pair["down"], pair["up"]
    if down.ndim != 2 or up.ndim != 2 or down.shape[0] != up.shape[1]:
        raise ConversionError(
            f"{where}: down {tuple(down.shape)} and up {tuple(up.shape)} are not a LoRA pair ([r, in] and [out, r])."
        )
    return down, up


def peft_metadata(converted: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The LoraConfig save_lora_adapter would store: the modules by full name, lora_alpha = r for each (scale 1 = the
    old processors' scale 1); a rank that differs from the most common one goes in rank/alpha patterns."""
    ranks = {
        key.removesuffix(".lora_A.weight"): int(value.shape[0]) for key, value in converted.items() if ".lora_A." in key
    }
    rank = Counter(ranks.values()).most_common(1)[0][0]
    others = {module: module_rank for module, module_rank in ranks.items() if module_rank != rank}
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=sorted(ranks),
        rank_pattern={f"^{module}$": value for module, value in others.items()},
        alpha_pattern={f"^{module}$": value for module, value in others.items()},
    )
    values = config.to_dict()
    return {key: sorted(value) if isinstance(value, set) else value for key, value in values.items()}


def checkpoint_step(path: Path) -> int | None:
    """2500 for .../checkpoint-2500/... (the step the old run had reached), else None."""
    for part in (path.name, path.parent.name):
        match = re.fullmatch(r"checkpoint-(\d+)", part)
        if match:
            return int(match.group(1))
    return None


def write_adapter(
    output_dir: Path, converted: dict[str, torch.Tensor], target: Target, source: Path, base_model: str | None
) -> Path:
    """The PEFT safetensors (with its LoraConfig metadata, as save_lora_adapter writes it) and the card."""
    output_dir.mkdir(parents=True, exist_ok=True)
    metadata = peft_metadata(converted)
    path = output_dir / WEIGHT_NAME
    save_file(
        converted,
        path,
        metadata={"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(metadata, indent=2, sort_keys=True)},
    )
    AdapterCard(
        target=target,
        base_model=base_model or BASE_MODELS[target],
        rank=int(metadata["r"]),
        lora_alpha=float(metadata["lora_alpha"]),
        steps=checkpoint_step(source),
        extra={"converted_from": str(source), "converter": "lora/convert.py"},
    ).write(output_dir)
    return path


def verify(path: Path, target: Target, model_location: str) -> None:
    """Load the adapter into the target's model from `model_location` (pipeline or model folder, or hub id) through
    mascot.generation.adapters, which fails if any tensor does not land."""
    from diffusers.models.transformers.prior_transformer import PriorTransformer
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel  # not `from diffusers`: see [tool.mypy]

    model_class = UNet2DConditionModel if target == "decoder" else PriorTransformer
    folder = Path(model_location)
    if folder.is_dir() and (folder / "config.json").is_file():
        model = model_class.from_pretrained(folder)
    else:
        model = model_class.from_pretrained(model_location, subfolder="unet" if target == "decoder" else "prior")
    load_adapter(model, AdapterSpec(name="converted", path=path, target=target))


def main(argv: Sequence[str] | None = None) -> Path:
    """Read, convert, write, optionally verify; returns the adapter's weights file."""
    args = build_parser().parse_args(argv)
    source = find_legacy_file(args.input)
    converted, target = convert_state_dict(read_legacy(source))
    path = write_adapter(args.output_dir, converted, target, source, args.base_model)
    if args.verify_with:
        verify(path, target, args.verify_with)
    modules = len(converted) // 2
    checked = f", checked against {args.verify_with}" if args.verify_with else ""
    print(f"Wrote the {target} adapter {path} ({modules} modules{checked}).")
    return path


if __name__ == "__main__":
    try:
        main()
    except (ConversionError, AdapterError) as error:
        sys.exit(f"convert.py: {error}")
