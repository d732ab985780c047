"""A dropped picture's recipe: our PNGs give back their request; A1111 PNGs give what this app can use, no more."""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from mascot.prompt.recipe import MAX_TEXT, recipe_from_png_text
from mascot.prompt.request import GenerationRequest
from mascot.store import imaging

A1111_TEXT = (
    "a cat in a wizard hat, highly detailed\n"
    "Negative prompt: blurry, lowres\n"
    'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x768, Model hash: abc123, Model: "sd, v1:5", '
    "Clip skip: 2, Version: v1.9.0"
)


def png_chunks(path: Path) -> dict:
    with Image.open(path) as picture:
        return dict(picture.text)


def test_our_png_gives_back_the_request_it_was_made_from(tmp_path):
    request = GenerationRequest.from_user(
        prompt="an otter barista", negative_prompt="text", seed=99, width=512, height=640, num_inference_steps=12,
        guidance_scale=5.5, prior_num_inference_steps=6, prior_guidance_scale=2.0, num_images_per_prompt=2,
        style="Sticker", brand="", logo="b" * 64, logo_weight=0.4,
    )  # fmt: skip
    path = tmp_path / "mascot.png"
    parameters = {**request.as_dict(), "model_prompt": "an otter barista, sticker", "sampler": "DDPMScheduler"}
    imaging.save_png(Image.new("RGB", (512, 640)), path, parameters)

    recipe = recipe_from_png_text(png_chunks(path))

    assert recipe.source == "Mascot Generator"
    expected = {name: value for name, value in request.as_dict().items() if name != "logo"}
    assert recipe.values == expected  # the logo id names a file on the server that made it: not taken
    assert recipe.left_out == []


def test_an_a1111_png_gives_its_prompt_and_compatible_settings_and_names_the_rest(tmp_path):
    path = tmp_path / "a1111.png"
    info = imaging.PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_TEXT)
    Image.new("RGB", (512, 768)).save(path, pnginfo=info)

    recipe = recipe_from_png_text(png_chunks(path))

    assert recipe.source == "AUTOMATIC1111-style"
    assert recipe.values == {
        "prompt": "a cat in a wizard hat, highly detailed",
        "negative_prompt": "blurry, lowres",
        "num_inference_steps": 20,
        "guidance_scale": 7.0,
        "seed": 123,
        "width": 512,
        "height": 768,
    }
    assert recipe.left_out == ["Clip skip"]


def test_our_a1111_text_alone_gives_the_persons_idea_not_the_styled_prompt():
    text = (
        "an otter, sticker, die-cut\nNegative prompt: blurry\n"
        'Steps: 10, Sampler: DDPMScheduler, CFG scale: 4.0, Seed: 7, Size: 512x512, Style: Sticker, Idea: "an otter"'
    )
    recipe = recipe_from_png_text({"parameters": text})
    assert recipe.values["prompt"] == "an otter" and recipe.values["style"] == "Sticker"


def test_values_this_app_cannot_use_are_named_never_clamped():
    text = "a fox\nSteps: 500, Sampler: Euler, CFG scale: 30, Seed: 5, Size: 500x2048"
    recipe = recipe_from_png_text({"parameters": text})
    assert recipe.values == {"prompt": "a fox", "seed": 5}
    assert set(recipe.left_out) == {"num_inference_steps", "guidance_scale", "Size (width 500 is not a multiple of 64)",
                                    "height"}  # fmt: skip


def test_hostile_or_foreign_chunks_give_no_recipe_and_no_error():
    for chunks in (
        {},
        {"mascot": "[1, 2]"},
        {"mascot": "{not json"},
        {"mascot": '{"prompt": ["a", "list"], "seed": "1e999"}'},
        {"parameters": "x" * (MAX_TEXT + 1)},
        {"parameters": 12},
        {"mascot": "{}", "parameters": ""},
        {"mascot": "[" * MAX_TEXT},  # nested deeper than Python's JSON reads: RecursionError, a bare "Error" before
        {"mascot": '{"a":' * (MAX_TEXT // 5)},
    ):
        recipe = recipe_from_png_text(chunks)
        assert recipe.values == {} or set(recipe.values) <= {"prompt"}, chunks
    garbage = recipe_from_png_text({"mascot": '{"prompt": ["a"], "seed": "1e999", "width": 10}'})
    assert garbage.values == {} and set(garbage.left_out) == {"prompt", "seed", "width"}


def test_a_hostile_settings_line_is_read_in_linear_time():
    # A1111's pattern, tried at every character of a 20 KB settings line that holds no colon, took 2 to 4 s of CPU
    # with the GIL held: every dropped PNG froze the whole server. Each shape took seconds; now all take milliseconds.
    shapes = ("a", "a ", " ", "a-", "a/")
    started = time.perf_counter()
    for unit in shapes:
        recipe = recipe_from_png_text({"parameters": ("x\nSteps: 2, " + unit * MAX_TEXT)[:MAX_TEXT]})
        assert recipe.values == {"prompt": "x", "num_inference_steps": 2}
    assert time.perf_counter() - started < 1.0  # about 10 s before (2-core machine), about 5 ms after
