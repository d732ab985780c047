"""Helpers for the store's tests: owners, requests and results, old files, a fresh PostgreSQL schema."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from mascot.generation.generator import GeneratedImages, ModelInfo, PromptUse
from mascot.prompt.request import GenerationRequest
from mascot.store.scratch import postgres_schema
from mascot.store.store import MascotStore, SavedGeneration
from mascot.store.upkeep import ORPHAN_MIN_AGE_S

POSTGRES_URL = os.environ.get("MASCOT_TEST_POSTGRES_URL")
BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skipif(not POSTGRES_URL, reason="MASCOT_TEST_POSTGRES_URL is not set")),
]
MODEL = ModelInfo(name="tiny preview model", is_preview_model=True, device="cpu")
OLD = time.time() - 2 * ORPHAN_MIN_AGE_S

OpenStore = Callable[..., MascotStore]


def owner(name: str) -> str:
    """An owner hash as identity makes them: sha256 hex."""
    return hashlib.sha256(name.encode()).hexdigest()


def make_request(
    prompt: str = "a cheerful otter barista", *, seed: int = 7, count: int = 1, style: str = "", brand: str = ""
) -> GenerationRequest:
    return GenerationRequest.from_user(
        prompt=prompt,
        negative_prompt="blurry",
        seed=seed,
        width=320,
        height=256,
        num_inference_steps=2,
        guidance_scale=5.5,
        prior_num_inference_steps=3,
        prior_guidance_scale=1.5,
        num_images_per_prompt=count,
        style=style,
        brand=brand,
    )


def make_result(request: GenerationRequest, *, prompt_cut: str = "") -> GeneratedImages:
    count = request.num_images_per_prompt
    return GeneratedImages(
        images=[Image.new("RGB", (request.width, request.height), (40 * i, 100, 200)) for i in range(count)],
        seeds=[request.seed + i for i in range(count)],
        prompt=PromptUse(used=request.prompt, cut=prompt_cut),
        negative_prompt=PromptUse(used=request.negative_prompt),
        prior_seconds=0.25,
        decoder_seconds=1.5,
    )


def save(
    mascots: MascotStore,
    who: str,
    prompt: str = "a cheerful otter barista",
    *,
    seed: int = 7,
    count: int = 1,
    now: datetime | None = None,
    is_public: bool = True,
    address_hash: str | None = None,
    style: str = "",
    brand: str = "",
) -> SavedGeneration:
    request = make_request(prompt, seed=seed, count=count, style=style, brand=brand)
    return mascots.save_generation(
        who, request, make_result(request), MODEL, now=now, is_public=is_public, address_hash=address_hash
    )


def png_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def all_files(folder: Path) -> list[Path]:
    """Every file under `folder`, whatever its name: images, thumbnails, temporary files."""
    return sorted(path for path in folder.rglob("*") if path.is_file())


def make_old(*paths: Path) -> None:
    """Age files past the sweep's grace period, so that only a claim can save them."""
    for path in paths:
        os.utime(path, (OLD, OLD))


def orphan_path(images_dir: Path, month: str = "2020/01") -> Path:
    path = images_dir / month / f"{uuid.uuid4().hex}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    os.utime(path, (OLD, OLD))
    return path


def fresh_postgres_schema(admin_url: str) -> Iterator[str]:
    """A URL whose connections work in a new, empty schema of the test database; the schema is dropped afterwards."""
    with postgres_schema(admin_url, prefix="mascot_test") as url:
        yield url
