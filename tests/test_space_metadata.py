"""The Hugging Face Space's metadata (README front matter): what the Hub reads to build and describe the Space."""

from __future__ import annotations

from pathlib import Path

import yaml

from mascot.generation.sources import DECODER_HUB_ID, PRIOR_HUB_ID

ROOT = Path(__file__).resolve().parents[1]


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "the README must open with the Space's YAML front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_the_space_preloads_and_names_the_checkpoints_the_app_loads():
    metadata = front_matter()
    assert metadata["models"] == [PRIOR_HUB_ID, DECODER_HUB_ID]
    assert metadata["preload_from_hub"] == [PRIOR_HUB_ID, DECODER_HUB_ID]


def test_the_space_describes_itself_and_waits_long_enough_for_the_model():
    metadata = front_matter()
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py"
    assert 0 < len(metadata["short_description"]) <= 60  # the Hub refuses longer ones
    assert metadata["license"] and metadata["tags"]
    value, unit = int(metadata["startup_duration_timeout"][:-1]), metadata["startup_duration_timeout"][-1]
    assert value * {"m": 1, "h": 60}[unit] >= 30


def test_the_spaces_gradio_version_is_the_pinned_one():
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line)
    assert front_matter()["sdk_version"] == pins["gradio"]
