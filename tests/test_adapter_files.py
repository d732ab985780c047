"""What the app checks of each --lora adapter's files before it serves, without torch (generation/adapter_files.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from mascot.generation.adapter_files import (
    CARD_NAME,
    LORA_METADATA_KEY,
    WEIGHT_NAME,
    AdapterError,
    check_adapter_files,
    read_target,
)
from tests.support.app_process import ROOT

DECODER_KEYS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight",
)


def adapter_folder(folder: Path, keys=DECODER_KEYS, metadata: dict[str, str] | None = None) -> Path:
    """A folder holding a safetensors file with these keys, as lora/train.py lays one out (without a card)."""
    folder.mkdir(parents=True)
    save_file({key: np.zeros((4, 4), dtype=np.float16) for key in keys}, str(folder / WEIGHT_NAME), metadata)
    return folder


def test_a_good_adapter_passes_and_its_target_comes_from_its_keys_without_torch(tmp_path):
    prior = adapter_folder(tmp_path / "words", keys=("transformer_blocks.0.attn1.to_q.lora_A.weight",))
    look = adapter_folder(tmp_path / "look")
    assert read_target(look / WEIGHT_NAME) == "decoder"
    assert read_target(prior / WEIGHT_NAME) == "prior"
    # In a fresh interpreter: the check imports no torch, so the page does not wait for it.
    script = (
        "import sys; from mascot.generation.adapter_files import check_adapter_files; "
        f"check_adapter_files([{str(look)!r}, 'house={prior}']); print('torch' in sys.modules)"
    )
    checked = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("write", "sentence"),
    [
        (lambda folder: folder.mkdir(), "has no pytorch_lora_weights.safetensors"),
        (lambda folder: adapter_folder(folder, keys=("conv_in.weight",)), "are not PEFT LoRA weights"),
        (
            lambda folder: adapter_folder(folder, keys=("down_blocks.0.attn_lora.processor.weight",)),
            "old attention-processor LoRA checkpoint",
        ),
        (
            lambda folder: adapter_folder(folder, metadata={LORA_METADATA_KEY: "{not json"}),
            "damaged LoRA config in its header",
        ),
        (
            lambda folder: adapter_folder(folder, metadata={LORA_METADATA_KEY: "[1, 2]"}),
            "damaged LoRA config in its header",
        ),
        (
            lambda folder: adapter_folder(
                folder, keys=("up_blocks.0.a.lora_A.weight", "transformer_blocks.0.b.lora_A.weight")
            ),
            "its keys name neither the decoder nor the prior",
        ),
    ],
)
def test_a_broken_adapter_is_refused_with_a_sentence_naming_it(tmp_path, write, sentence):
    folder = tmp_path / "broken"
    write(folder)
    with pytest.raises(AdapterError, match=sentence) as refused:
        check_adapter_files([f"look={folder}"])
    assert str(folder) in str(refused.value)


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    folder = tmp_path / "garbage"
    folder.mkdir()
    (folder / WEIGHT_NAME).write_bytes(b"garbage, not a tensor file")
    with pytest.raises(AdapterError, match="is not a readable safetensors file"):
        check_adapter_files([str(folder)])
    cut = adapter_folder(tmp_path / "cut")
    data = (cut / WEIGHT_NAME).read_bytes()
    (cut / WEIGHT_NAME).write_bytes(data[:-10])  # a copy that stopped short
    with pytest.raises(AdapterError, match="is not a readable safetensors file"):
        check_adapter_files([str(cut)])


def test_a_card_that_cannot_be_read_or_a_name_used_twice_is_refused(tmp_path):
    look = adapter_folder(tmp_path / "look")
    (look / CARD_NAME).write_text(json.dumps({"target": "decoder", "rank": 4}), encoding="utf-8")
    with pytest.raises(AdapterError, match="lacks lora_alpha"):
        check_adapter_files([str(look)])
    (look / CARD_NAME).unlink()
    other = adapter_folder(tmp_path / "other")
    with pytest.raises(AdapterError, match="Two decoder adapters are named 'look'"):
        check_adapter_files([str(look), f"look={other}"])
    with pytest.raises(AdapterError, match="is not usable"):
        check_adapter_files([f"my.look={look}"])
    check_adapter_files([str(look), str(other)])  # two names: both pass
