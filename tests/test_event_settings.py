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


@pytest.mark.parametrize(
    ("argv", "environ", "named"),
    [
        (["--default-lora", "acme"], {}, ["--default-lora=acme cannot be used", "MASCOT_DEFAULT_LORA", "loaded: none"]),
        (
            ["--lora", "look=/x", "--default-lora", "acme"],
            {},
            ["--default-lora=acme", "--default-lora or MASCOT_DEFAULT_LORA", "(loaded: look)"],
        ),
        ([], {"MASCOT_LORA": "look=/x", "MASCOT_DEFAULT_LORA": "Look"}, ["MASCOT_DEFAULT_LORA=Look"]),
        ([], {"MASCOT_DEFAULT_LORA_STRENGTH": "3"}, ["MASCOT_DEFAULT_LORA_STRENGTH=3", "a number from 0 to 2"]),
        ([], {"MASCOT_DEFAULT_LORA_STRENGTH": "-0.1"}, ["MASCOT_DEFAULT_LORA_STRENGTH=-0.1"]),
        (["--default-lora-strength", "strong"], {}, ["--default-lora-strength=strong", "from 0 to 2"]),
        ([], {"MASCOT_DEFAULT_LORA_STRENGTH": "nan"}, ["MASCOT_DEFAULT_LORA_STRENGTH=nan"]),
        ([], {"MASCOT_ONE_OFFICE": "maybe"}, ["MASCOT_ONE_OFFICE=maybe", "--one-office or MASCOT_ONE_OFFICE"]),
        ([], {"MASCOT_BRANDS_DIR": " "}, ["MASCOT_BRANDS_DIR", "--brands-dir"]),
    ],
)
def test_an_event_setting_that_cannot_be_used_is_refused_with_one_sentence(argv, environ, named) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(argv, environ)
    message = str(refused.value)
    for words in named:
        assert words in message
    assert message.endswith(".") and "\n" not in message


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
