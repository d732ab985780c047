"""The tiny offline Kandinsky 2.2: real classes, generated tokenizer, deterministic, atomic builds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDPMScheduler,
    KandinskyV22Pipeline,
    KandinskyV22PriorPipeline,
    PriorTransformer,
    UnCLIPScheduler,
    UNet2DConditionModel,
    VQModel,
)
from safetensors.torch import load_file
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from mascot.generation import tiny
from mascot.prompt.request import GenerationRequest


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_tiny_model_loads_with_plain_diffusers_from_pretrained(tiny_model_dir):
    prior = KandinskyV22PriorPipeline.from_pretrained(tiny_model_dir / "prior")
    decoder = KandinskyV22Pipeline.from_pretrained(tiny_model_dir / "decoder")

    assert isinstance(prior.prior, PriorTransformer)
    assert isinstance(prior.text_encoder, CLIPTextModelWithProjection)
    assert isinstance(prior.image_encoder, CLIPVisionModelWithProjection)
    assert isinstance(prior.scheduler, UnCLIPScheduler)
    assert torch.equal(prior.prior.clip_std, torch.ones_like(prior.prior.clip_std))
    assert isinstance(decoder.unet, UNet2DConditionModel)
    assert decoder.unet.config.addition_embed_type == "image"
    assert decoder.unet.config.encoder_hid_dim_type == "image_proj"
    assert isinstance(decoder.movq, VQModel)
    assert decoder.movq.config.norm_type == "spatial"
    assert decoder.movq_scale_factor == 8  # 4 levels: latents are image/8, as in the real model
    assert isinstance(decoder.scheduler, DDPMScheduler)
    assert decoder.scheduler.config.steps_offset == 1


def test_tokenizer_puts_its_special_tokens_last(tiny_model_dir):
    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir / "prior" / "tokenizer")
    vocab = json.loads((tiny_model_dir / "prior" / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))

    assert tokenizer.eos_token_id == len(tokenizer) - 1 == vocab["<|endoftext|>"]
    assert tokenizer.bos_token_id == len(tokenizer) - 2 == vocab["<|startoftext|>"]
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.model_max_length == 77
    assert list(vocab)[:512] == [*tiny.byte_characters(), *(c + "</w>" for c in tiny.byte_characters())]
    assert len(vocab) - 2 - 512 >= 300  # a few hundred merges
    tokens = tokenizer.tokenize("A cheerful Otter barista!")
    assert tokens == ["a</w>", "cheerful</w>", "otter</w>", "barista</w>", "!</w>"]
    ids = tokenizer("an otter", padding="max_length", max_length=77).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[3] == tokenizer.eos_token_id and len(ids) == 77


def test_text_encoder_pools_at_the_end_of_text(tiny_model_dir):
    prior = KandinskyV22PriorPipeline.from_pretrained(tiny_model_dir / "prior")
    config = prior.text_encoder.config
    assert config.vocab_size == len(prior.tokenizer)
    assert config.eos_token_id == prior.tokenizer.eos_token_id
    with torch.inference_mode():
        embeds = [
            prior.text_encoder(prior.tokenizer(text, return_tensors="pt").input_ids).text_embeds
            for text in ("a cheerful otter", "a grumpy robot")
        ]
    assert not torch.allclose(embeds[0], embeds[1])


def test_generated_tokenizer_files_are_deterministic(tiny_model_dir, tmp_path):
    assert tiny.learn_merges(tiny.WORDS.split(), 50) == tiny.learn_merges(list(reversed(tiny.WORDS.split())), 50)
    tiny.write_tokenizer_files(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        saved = (tiny_model_dir / "prior" / "tokenizer" / name).read_bytes()
        assert (tmp_path / name).read_bytes() == saved
    assert (tmp_path / "merges.txt").read_text().splitlines()[0] == "#version: 0.2"


def test_building_twice_gives_the_same_weights(tiny_model_dir, tmp_path):
    again = tiny.build_tiny_model(tmp_path / "again")
    for part in ("decoder/unet/diffusion_pytorch_model.safetensors", "prior/prior/diffusion_pytorch_model.safetensors"):
        first, second = load_file(tiny_model_dir / part), load_file(again / part)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first)


def test_tiny_model_is_small(tiny_model_dir):
    assert folder_size(tiny_model_dir) < 16 * 2**20


def test_ensure_builds_once_and_rebuilds_an_incomplete_model(tmp_path):
    folder = tiny.ensure_tiny_model(tmp_path)
    assert folder == tmp_path / tiny.TINY_MODEL_FOLDER and tiny.is_complete(folder)
    marker = folder / "marker"
    marker.write_text("kept")

    assert tiny.ensure_tiny_model(tmp_path) == folder
    assert marker.exists()  # complete: not rebuilt

    (folder / "decoder" / "model_index.json").unlink()
    tiny.ensure_tiny_model(tmp_path)
    assert tiny.is_complete(folder) and not marker.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == [tiny.TINY_MODEL_FOLDER]


def test_a_failed_build_leaves_no_folder_behind(tmp_path, monkeypatch):
    def broken() -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny, "build_decoder_pipeline", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny.build_tiny_model(tmp_path / tiny.TINY_MODEL_FOLDER)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("negative_prompt", ["", "blurry"])
@pytest.mark.slow
def test_our_generator_matches_the_plain_diffusers_pipelines(tiny_model_dir, tiny_generator, negative_prompt):
    request = GenerationRequest.from_user(
        prompt="a cheerful otter barista",
        negative_prompt=negative_prompt,
        seed=11,
        width=256,
        height=256,
        num_inference_steps=2,
        prior_num_inference_steps=2,
        guidance_scale=4,
        prior_guidance_scale=2,
    )
    ours = tiny_generator.generate(request).images[0]

    prior = KandinskyV22PriorPipeline.from_pretrained(tiny_model_dir / "prior")
    decoder = KandinskyV22Pipeline.from_pretrained(tiny_model_dir / "decoder")
    generator = torch.Generator().manual_seed(11)
    embeds = prior(
        "a cheerful otter barista",
        negative_prompt=negative_prompt or None,
        num_inference_steps=2,
        guidance_scale=2,
        generator=generator,
    )
    plain = decoder(
        image_embeds=embeds.image_embeds,
        negative_image_embeds=embeds.negative_image_embeds,
        width=256,
        height=256,
        num_inference_steps=2,
        guidance_scale=4,
        generator=generator,
    ).images[0]
    assert np.abs(np.asarray(ours, dtype=int) - np.asarray(plain, dtype=int)).max() <= 1
