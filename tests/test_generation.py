"""Generating with the real tiny pipeline: seeds, sizes, negative prompt, batches, truncation, progress and cancel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from mascot.generation.generator import GenerationCancelled, StepUpdate
from mascot.generation.model import (
    PREVIEW_MAX_LATENT_SIDE,
    KandinskyGenerator,
    latents_to_pil_images,
    mix_embeddings,
    truncate_prompt,
)
from mascot.prompt.request import MAX_SEED, GenerationRequest


def small_request(**overrides) -> GenerationRequest:
    values = {
        "prompt": "a cheerful otter barista",
        "seed": 7,
        "width": 256,
        "height": 256,
        "num_inference_steps": 2,
        "prior_num_inference_steps": 2,
    }
    return GenerationRequest.from_user(**{**values, **overrides})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def max_difference(first: Image.Image, second: Image.Image) -> int:
    return int(np.abs(pixels(first) - pixels(second)).max())


@pytest.mark.slow
def test_same_seed_gives_identical_pixels_and_another_seed_differs(tiny_generator):
    first = tiny_generator.generate(small_request(seed=3)).images[0]
    again = tiny_generator.generate(small_request(seed=3)).images[0]
    other = tiny_generator.generate(small_request(seed=4)).images[0]

    assert np.array_equal(pixels(first), pixels(again))
    assert max_difference(first, other) > 10
    assert pixels(first).std() > 5  # a picture, not a flat colour


@pytest.mark.parametrize(
    ("width", "height"), [(256, 256), (256, 384), (384, 256)], ids=["square", "portrait", "landscape"]
)
@pytest.mark.slow
def test_images_have_exactly_the_requested_width_and_height(tiny_generator, width, height):
    result = tiny_generator.generate(small_request(width=width, height=height))

    image = result.images[0]
    assert image.size == (width, height)
    assert image.mode == "RGB"
    assert (image.height > image.width) == (height > width)


@pytest.mark.slow
def test_the_negative_prompt_changes_the_result(tiny_generator):
    plain = tiny_generator.generate(small_request()).images[0]
    negative = tiny_generator.generate(small_request(negative_prompt="blurry, watermark")).images[0]

    assert max_difference(plain, negative) > 10


@pytest.mark.parametrize("guidance_scale", [4.0, 1.0], ids=["guided", "guidance_off"])
@pytest.mark.slow
def test_image_i_of_a_batch_matches_seed_plus_i_alone(tiny_generator, guidance_scale):
    common = {"negative_prompt": "blurry", "guidance_scale": guidance_scale, "prior_guidance_scale": 2}
    batch = tiny_generator.generate(small_request(seed=20, num_images_per_prompt=3, **common))

    assert batch.seeds == [20, 21, 22]
    assert len(batch.images) == 3
    assert max_difference(batch.images[0], batch.images[1]) > 10
    for index, image in enumerate(batch.images):
        alone = tiny_generator.generate(small_request(seed=20 + index, **common)).images[0]
        assert max_difference(image, alone) <= 1  # within 1/255: batched and single runs are not bit-identical


@pytest.mark.slow
def test_guidance_scale_one_works_for_two_images(tiny_generator):
    result = tiny_generator.generate(small_request(guidance_scale=1, num_images_per_prompt=2))

    assert [image.size for image in result.images] == [(256, 256), (256, 256)]
    assert max_difference(result.images[0], result.images[1]) > 10


@pytest.mark.slow
def test_seeds_past_the_largest_wrap_to_zero(tiny_generator):
    result = tiny_generator.generate(small_request(seed=MAX_SEED, num_images_per_prompt=2))
    zero = tiny_generator.generate(small_request(seed=0)).images[0]

    assert result.seeds == [MAX_SEED, 0]
    assert max_difference(result.images[1], zero) <= 1


@pytest.mark.slow
def test_a_long_prompt_reports_exactly_what_was_cut(tiny_generator):
    kept = " ".join(["otter"] * 75)  # 75 one-token words + BOS + EOS fill the 77 tokens
    long_prompt = f"{kept} wearing a tiny hat"

    result = tiny_generator.generate(small_request(prompt=long_prompt, negative_prompt=f"{kept} blurry"))

    assert result.prompt.used == kept
    assert result.prompt.cut == "wearing a tiny hat"
    assert result.negative_prompt.used == kept
    assert result.negative_prompt.cut == "blurry"
    # The pipeline encoded exactly the used part: the same image as asking for it alone.
    alone = tiny_generator.generate(small_request(prompt=kept, negative_prompt=kept)).images[0]
    assert np.array_equal(pixels(result.images[0]), pixels(alone))


@pytest.mark.slow
def test_a_short_prompt_cuts_nothing(tiny_generator):
    result = tiny_generator.generate(small_request(prompt="a cheerful Otter", negative_prompt="blurry"))

    assert (result.prompt.used, result.prompt.cut) == ("a cheerful Otter", "")
    assert (result.negative_prompt.used, result.negative_prompt.cut) == ("blurry", "")


def test_truncation_never_splits_a_word(tiny_generator):
    tokenizer = tiny_generator.prior.tokenizer
    prompt = " ".join(["otter"] * 73) + " Zyxwvutsrqponm, Otter!"  # the long word spans token 74 onwards

    use = truncate_prompt(tokenizer, prompt)

    assert use.used == " ".join(["otter"] * 73)
    assert use.cut == "Zyxwvutsrqponm, Otter!"
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    used_ids = tokenizer(use.used, add_special_tokens=False).input_ids
    assert used_ids + tokenizer(use.cut, add_special_tokens=False).input_ids == ids
    assert len(used_ids) + 2 <= tokenizer.model_max_length


def test_a_first_word_longer_than_the_limit_is_cut_inside_it(tiny_generator):
    tokenizer = tiny_generator.prior.tokenizer
    prompt = "q" * 300 + " otter"  # one 300-token word: no whole word fits

    use = truncate_prompt(tokenizer, prompt)

    assert (use.used, use.cut) == ("q" * 75, "q" * 225 + " otter")
    assert len(tokenizer(use.used).input_ids) == tokenizer.model_max_length


@pytest.mark.slow
def test_on_step_reports_both_stages_in_order(tiny_generator):
    updates: list[StepUpdate] = []
    result = tiny_generator.generate(small_request(num_images_per_prompt=2, num_inference_steps=3), updates.append)

    prior = [(update.step, update.total) for update in updates if update.stage == "prior"]
    decoder = [(update.step, update.total) for update in updates if update.stage == "decoder"]
    assert prior == [(1, 2), (2, 2)]  # one prior run makes both images' embeddings
    assert decoder == [(1, 3), (2, 3), (3, 3)]
    assert [update.stage for update in updates] == ["prior"] * 2 + ["decoder"] * 3
    assert result.prior_seconds > 0 and result.decoder_seconds > 0


@pytest.mark.slow
def test_a_preview_of_the_first_image_arrives_every_few_steps(tiny_generator):
    previewing = KandinskyGenerator(tiny_generator.prior, tiny_generator.decoder, tiny_generator.info, preview_every=2)
    updates: list[StepUpdate] = []
    previewing.generate(small_request(width=320, num_inference_steps=4, num_images_per_prompt=2), updates.append)

    previews = {update.step: update.preview for update in updates if update.stage == "decoder"}
    # Every 2 steps, except the last: the finished images follow at once.
    assert [step for step, preview in previews.items() if preview is not None] == [2]
    assert previews[2].size == (320, 256) and previews[2].mode == "RGB"
    assert all(update.preview is None for update in updates if update.stage == "prior")
    alone: list[StepUpdate] = []
    previewing.generate(small_request(width=320, num_inference_steps=4), alone.append)
    assert max_difference(previews[2], next(update.preview for update in alone if update.preview)) <= 1


@pytest.mark.parametrize("stage", ["prior", "decoder"])
@pytest.mark.slow
def test_cancelling_from_on_step_stops_and_the_next_generation_works(tiny_generator, stage):
    seen: list[StepUpdate] = []

    def cancel(update: StepUpdate) -> None:
        seen.append(update)
        if update.stage == stage:
            raise GenerationCancelled

    with pytest.raises(GenerationCancelled):
        tiny_generator.generate(small_request(num_images_per_prompt=2), cancel)

    assert seen[-1].stage == stage and seen[-1].step == 1  # it stopped at the first step of that stage
    after = tiny_generator.generate(small_request(seed=9)).images[0]
    reference = tiny_generator.generate(small_request(seed=9)).images[0]
    assert np.array_equal(pixels(after), pixels(reference))


@pytest.mark.slow
def test_the_zero_image_embedding_is_not_recomputed(tiny_generator):
    calls: list[int] = []
    hook = tiny_generator.prior.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        tiny_generator.generate(small_request(num_images_per_prompt=2))
        tiny_generator.generate(small_request(seed=8))
    finally:
        hook.remove()
    assert calls == []


@pytest.mark.slow
def test_previews_of_large_images_are_decoded_small_and_keep_the_aspect_ratio(tiny_generator):
    latents = torch.randn(2, 4, 128, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        previews = latents_to_pil_images(tiny_generator.decoder, latents, PREVIEW_MAX_LATENT_SIDE)
        full = latents_to_pil_images(tiny_generator.decoder, latents)
    assert [image.size for image in full] == [(768, 1024)] * 2
    assert [image.size for image in previews] == [(288, 384)] * 2


@pytest.mark.slow
def test_a_logo_moves_every_images_embedding_toward_the_logos_and_weight_zero_changes_nothing(tiny_generator):
    logo = Image.new("RGB", (120, 80), (220, 40, 40))
    request = small_request(num_images_per_prompt=2, logo="ab" * 32)
    without = tiny_generator.generate(request)
    at_zero = tiny_generator.generate(dataclasses.replace(request, logo_weight=0.0), logo=logo)
    at_half = tiny_generator.generate(dataclasses.replace(request, logo_weight=0.5), logo=logo)
    assert all(max_difference(a, b) == 0 for a, b in zip(without.images, at_zero.images, strict=True))
    assert all(max_difference(a, b) > 5 for a, b in zip(without.images, at_half.images, strict=True))


def test_the_mix_is_the_weighted_sum_of_the_embeddings():
    images, logo = torch.randn(3, 8), torch.randn(1, 8)
    torch.testing.assert_close(mix_embeddings(images, logo, 0.25), 0.75 * images + 0.25 * logo)
    torch.testing.assert_close(mix_embeddings(images, logo, 0.0), images, rtol=0, atol=0)
