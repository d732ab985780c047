"""lora/convert.py: the seed's old attention-processor LoRA checkpoints become PEFT adapters with the same effect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lora import convert
from mascot.generation.adapter_files import CARD_NAME, WEIGHT_NAME
from mascot.generation.adapters import AdapterSpec, load_adapter, set_adapter_scale

PROJECTIONS = {  # old processor attribute -> the Linear it adapted
    "to_q": "to_q",
    "to_k": "to_k",
    "to_v": "to_v",
    "to_out": "to_out.0",
    "add_k_proj": "add_k_proj",
    "add_v_proj": "add_v_proj",
}
RANK = 4


def base_unet(tiny_model_dir: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny_model_dir / "decoder" / "unet")


def legacy_checkpoint(unet) -> dict[str, torch.Tensor]:
    """What the old LoRAAttnAddedKVProcessor saved for every attention block: known random down/up pairs."""
    generator = torch.Generator().manual_seed(2500)
    state = {}
    for processor in unet.attn_processors:  # e.g. down_blocks.1.attentions.0.processor
        attention = unet.get_submodule(processor.removesuffix(".processor"))
        for old, linear_name in PROJECTIONS.items():
            linear = attention.get_submodule(linear_name)
            state[f"{processor}.{old}_lora.down.weight"] = 0.1 * torch.randn(
                RANK, linear.in_features, generator=generator
            )
            state[f"{processor}.{old}_lora.up.weight"] = 0.1 * torch.randn(
                linear.out_features, RANK, generator=generator
            )
    return state


def with_deltas_merged(unet, legacy: dict[str, torch.Tensor]):
    """The UNet the old processors computed at scale 1: W + up @ down in every adapted Linear, done by hand."""
    with torch.no_grad():
        for key, down in legacy.items():
            if not key.endswith(".down.weight"):
                continue
            processor, old = key.removesuffix("_lora.down.weight").rsplit(".", 1)
            up = legacy[key.replace(".down.weight", ".up.weight")]
            module = f"{processor.removesuffix('.processor')}.{PROJECTIONS[old]}"
            unet.get_submodule(module).weight += up @ down
    return unet


def unet_output(unet) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=generator)
    image_embeds = torch.randn(2, unet.config.encoder_hid_dim, generator=generator)
    with torch.no_grad():
        return unet(sample, 500, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": image_embeds}).sample


@pytest.mark.parametrize("file_name", ["pytorch_lora_weights.bin", "pytorch_lora_weights.safetensors"])
@pytest.mark.slow
def test_a_converted_checkpoint_gives_the_unet_exactly_the_old_deltas(tiny_model_dir, tmp_path, file_name):
    legacy = legacy_checkpoint(base_unet(tiny_model_dir))
    checkpoint = tmp_path / "checkpoint-2500"
    checkpoint.mkdir()
    if file_name.endswith(".bin"):
        torch.save(legacy, checkpoint / file_name)
    else:
        save_file(legacy, checkpoint / file_name)
    output = tmp_path / "seed-decoder"

    path = convert.main(
        ["--input", str(checkpoint), "--output_dir", str(output), "--verify_with", str(tiny_model_dir / "decoder")]
    )

    assert path == output / WEIGHT_NAME
    unet = base_unet(tiny_model_dir)
    load_adapter(unet, AdapterSpec.parse(f"seed={output}"))
    set_adapter_scale(unet, "seed", 1.0)
    expected = unet_output(with_deltas_merged(base_unet(tiny_model_dir), legacy))
    torch.testing.assert_close(unet_output(unet), expected, rtol=1e-4, atol=1e-5)
    assert (unet_output(unet) - unet_output(base_unet(tiny_model_dir))).abs().max() > 1e-2  # the deltas matter
    # Module by module: the adapted Linear adds exactly up @ down.
    module = unet.get_submodule("up_blocks.1.attentions.1.to_out.0")
    down = legacy["up_blocks.1.attentions.1.processor.to_out_lora.down.weight"]
    up = legacy["up_blocks.1.attentions.1.processor.to_out_lora.up.weight"]
    x = torch.randn(3, module.in_features)
    with torch.no_grad():
        torch.testing.assert_close(module(x) - module.base_layer(x), x @ (up @ down).T, rtol=1e-4, atol=1e-5)

    card = json.loads((output / CARD_NAME).read_text())
    assert (card["target"], card["rank"], card["lora_alpha"], card["steps"]) == ("decoder", RANK, RANK, 2500)
    assert card["base_model"] == "kandinsky-community/kandinsky-2-2-decoder"


def test_keys_it_does_not_recognise_are_refused_by_name(tiny_model_dir, tmp_path):
    legacy = legacy_checkpoint(base_unet(tiny_model_dir))
    legacy["text_encoder.layers.0.lora.weight"] = torch.zeros(2, 2)
    save_file(legacy, tmp_path / "pytorch_lora_weights.safetensors")

    with pytest.raises(
        convert.ConversionError, match=r"1 key is not an old attention-processor LoRA weight .*text_encoder"
    ):
        convert.main(["--input", str(tmp_path), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_half_pair_is_refused(tiny_model_dir, tmp_path):
    legacy = legacy_checkpoint(base_unet(tiny_model_dir))
    del legacy["mid_block.attentions.0.processor.add_v_proj_lora.up.weight"]
    with pytest.raises(
        convert.ConversionError, match=r"mid_block.attentions.0.processor.add_v_proj_lora has no up.weight"
    ):
        convert.convert_state_dict(legacy)


def test_a_folder_without_a_checkpoint_file_is_refused(tmp_path):
    with pytest.raises(convert.ConversionError, match=r"holds none of pytorch_lora_weights.safetensors"):
        convert.find_legacy_file(tmp_path)
