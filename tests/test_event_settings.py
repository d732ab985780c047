"""The company-event settings: a default LoRA adapter and its strength, the brands folder, one office."""

from __future__ import annotations

from pathlib import Path

import pytest

from mascot.settings import SettingsError, adapter_name_of, load_settings


def test_the_default_adapter_is_one_of_the_loaded_ones_by_its_name_or_folder(tmp_path: Path) -> None:
    folder = tmp_path / "house look"
    folder.mkdir()
    named = load_settings(["--lora", f"acme={folder}", "--default-lora", "acme"], {})
    assert (named.default_lora, named.default_lora_strength) == ("acme", 1.0)
    by_folder = load_settings([], {"MASCOT_LORA": str(folder), "MASCOT_DEFAULT_LORA": "house_look"})
    assert by_folder.default_lora == "house_look"
    strength = load_settings(
        ["--lora", f"acme={folder}", "--default-lora", "acme", "--default-lora-strength", "0.6"], {}
    )
    assert strength.default_lora_strength == 0.6
    assert load_settings([], {}).default_lora is None


def test_a_brands_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "brands.json"
    a_file.write_text("{}")
    with pytest.raises(SettingsError, match=r"--brands-dir=.*brands folder.*a folder, not a file"):
        load_settings(["--brands-dir", str(a_file)], {})


def test_an_adapter_is_named_as_given_or_after_its_folder(tmp_path: Path) -> None:
    (tmp_path / "otter v2").mkdir()
    assert adapter_name_of("acme=/anywhere") == "acme"
    assert adapter_name_of(str(tmp_path / "otter v2")) == "otter_v2"
    assert adapter_name_of(str(tmp_path / "otter v2" / "pytorch_lora_weights.safetensors")) == "otter_v2"
