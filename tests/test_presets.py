"""Style and brand presets: the shipped file is sound, and the model sees the idea wrapped in its style."""

import json

import pytest

from mascot.prompt.presets import PRESETS_FILE, Presets
from mascot.prompt.request import GenerationRequest, InvalidRequest


@pytest.fixture(scope="module")
def presets() -> Presets:
    return Presets.load()


def test_the_shipped_presets_have_styles_brands_and_a_default_style(presets):
    assert {"Sticker", "Kawaii 3D", "Flat vector", "Plush toy"} <= set(presets.styles)
    assert len(presets.brands) >= 4
    assert presets.default_style in presets.styles


def test_a_style_wraps_the_idea_and_adds_what_to_avoid(presets):
    request = GenerationRequest.from_user(prompt="an otter barista", negative_prompt="sunglasses", style="Sticker")
    model_request = presets.apply(request)
    assert model_request.prompt.startswith("an otter barista, mascot character, die-cut sticker")
    assert model_request.negative_prompt.startswith("sunglasses, photo, realistic")
    assert (model_request.seed, model_request.width, model_request.style) == (request.seed, request.width, "Sticker")


def test_a_brand_adds_its_colours_after_the_idea(presets):
    model_request = presets.apply(GenerationRequest.from_user(prompt="a fox", brand="Ocean blue"))
    assert model_request.prompt == "a fox, navy and sky blue colour palette, white accents"
    assert model_request.negative_prompt == ""


def test_no_preset_leaves_the_words_as_written(presets):
    request = GenerationRequest.from_user(prompt="a fox", negative_prompt="text")
    assert presets.apply(request) == request


@pytest.mark.parametrize(("parameter", "value"), [("style", "Baroque"), ("brand", "Neon Tokyo")])
def test_an_unknown_preset_is_refused_naming_the_choices(presets, parameter, value):
    with pytest.raises(InvalidRequest) as caught:
        presets.check_request(GenerationRequest.from_user(prompt="a fox", **{parameter: value}))
    assert caught.value.parameter == parameter
    assert value in caught.value.message
    assert ("Sticker" if parameter == "style" else "Ocean blue") in caught.value.message


def test_a_style_without_a_place_for_the_idea_stops_the_app_at_start(tmp_path):
    data = json.loads(PRESETS_FILE.read_text())
    data["styles"][0]["prompt"] = "a sticker"
    broken = tmp_path / "presets.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="has no \\{prompt\\}"):
        Presets.load(broken)
