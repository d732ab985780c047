"""Shared fixtures: the tiny Kandinsky 2.2, built once per session and loaded through the real loading path."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly built tiny model, at `<data dir>/tiny-kandinsky-2-2` so its parent works as a data folder."""
    from mascot.generation.tiny import TINY_MODEL_FOLDER, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("data") / TINY_MODEL_FOLDER)


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir: Path):
    """KandinskyGenerator on the CPU, loaded from the tiny model folder with `from_pretrained`."""
    from mascot.generation.model import KandinskyGenerator, ModelSource

    source = ModelSource(
        name="tiny test model",
        prior=str(tiny_model_dir / "prior"),
        decoder=str(tiny_model_dir / "decoder"),
        is_preview_model=True,
        reason="Tests run on the tiny model.",
    )
    return KandinskyGenerator.load(source, device="cpu")
