"""Every validation rule of GenerationRequest, each refusal naming its parameter."""

import math

import pytest

from mascot.prompt.request import MAX_SEED, GenerationRequest, InvalidRequest


def refusal(**raw) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        GenerationRequest.from_user(**raw)
    return caught.value


def test_defaults_are_the_pages_defaults():
    request = GenerationRequest.from_user(prompt="an otter")
    assert (request.width, request.height) == (768, 768)
    assert request.num_inference_steps == 50
    assert request.guidance_scale == 4.0
    assert request.prior_num_inference_steps == 25
    assert request.prior_guidance_scale == 1.0
    assert request.num_images_per_prompt == 1


def test_raw_form_values_are_converted():
    request = GenerationRequest.from_user(
        prompt="  an   otter  ", seed="42", width=512.0, height="640", guidance_scale="7.5", num_images_per_prompt=4
    )
    assert request.prompt == "an otter"
    assert (request.seed, request.width, request.height) == (42, 512, 640)
    assert request.guidance_scale == 7.5
    assert isinstance(request.width, int)


def test_none_means_the_default():
    assert GenerationRequest.from_user(prompt="x", seed=None, negative_prompt=None).seed == 0


@pytest.mark.parametrize("prompt", ["", "   ", "\u200b\u200d\ufeff", "\x00\x07", None, "\u2060 \u200e"])
def test_prompt_without_visible_characters_is_refused(prompt):
    error = refusal(prompt=prompt)
    assert error.parameter == "prompt"
    assert "prompt is empty" in error.message


def test_invisible_characters_are_removed_from_prompts():
    assert GenerationRequest.from_user(prompt="ot\u200bter\x00").prompt == "otter"


def test_prompt_over_1000_characters_is_refused_and_1000_accepted():
    assert len(GenerationRequest.from_user(prompt="a" * 1000).prompt) == 1000
    error = refusal(prompt="a" * 1001)
    assert error.parameter == "prompt"
    assert "1,001" in error.message and "1,000" in error.message


def test_negative_prompt_over_1000_characters_is_refused():
    assert refusal(prompt="x", negative_prompt="b" * 1001).parameter == "negative_prompt"


def test_prompt_must_be_text():
    assert refusal(prompt=["a", "list"]).parameter == "prompt"
    assert refusal(prompt="x", negative_prompt=12).parameter == "negative_prompt"


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("seed", 0, MAX_SEED),
        ("num_inference_steps", 1, 150),
        ("prior_num_inference_steps", 2, 100),
        ("num_images_per_prompt", 1, 4),
        ("guidance_scale", 1.0, 20.0),
        ("prior_guidance_scale", 1.0, 20.0),
        ("lora_scale", 0.0, 2.0),
        ("logo_weight", 0.0, 1.0),
    ],
)
def test_numbers_outside_their_range_are_refused_by_name(name, low, high):
    assert getattr(GenerationRequest.from_user(prompt="x", **{name: low}), name) == low
    assert getattr(GenerationRequest.from_user(prompt="x", **{name: high}), name) == high
    below = low - 1 if isinstance(low, int) else low - 0.01
    above = high + 1 if isinstance(high, int) else high + 0.01
    for value in (below, above):
        error = refusal(prompt="x", **{name: value})
        assert error.parameter == name
        assert name in error.message and "between" in error.message


@pytest.mark.parametrize("name", ["width", "height"])
def test_sizes_must_be_multiples_of_64_between_256_and_1024(name):
    assert getattr(GenerationRequest.from_user(prompt="x", **{name: 256}), name) == 256
    assert getattr(GenerationRequest.from_user(prompt="x", **{name: 1024}), name) == 1024
    for value in (192, 1088):
        assert refusal(prompt="x", **{name: value}).parameter == name
    error = refusal(prompt="x", **{name: 300})
    assert error.parameter == name and "multiple of 64" in error.message


@pytest.mark.parametrize("name", ["seed", "width", "num_inference_steps", "num_images_per_prompt"])
def test_whole_number_parameters_refuse_fractions_instead_of_rounding(name):
    error = refusal(prompt="x", **{name: 2.5})
    assert error.parameter == name and "whole number" in error.message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf"])
def test_nan_and_infinity_are_refused(value):
    error = refusal(prompt="x", guidance_scale=value)
    assert error.parameter == "guidance_scale" and "finite" in error.message


@pytest.mark.parametrize("value", ["abc", "", [1], {"a": 1}, True, False])
def test_non_numbers_are_refused_by_name(value):
    assert refusal(prompt="x", num_inference_steps=value).parameter == "num_inference_steps"


def test_large_seed_is_exact_and_message_is_readable():
    assert GenerationRequest.from_user(prompt="x", seed=MAX_SEED).seed == 4294967295
    assert "4294967295" in refusal(prompt="x", seed=MAX_SEED + 1).message


def test_unknown_parameters_are_refused():
    assert refusal(prompt="x", strength=0.5).parameter == "strength"


def test_as_dict_uses_diffusers_names():
    values = GenerationRequest.from_user(prompt="x").as_dict()
    assert set(values) == {
        "prompt",
        "negative_prompt",
        "seed",
        "width",
        "height",
        "num_inference_steps",
        "guidance_scale",
        "prior_num_inference_steps",
        "prior_guidance_scale",
        "num_images_per_prompt",
        "style",
        "brand",
        "logo",
        "logo_weight",
        "adapter_name",
        "lora_scale",
    }


def test_adapter_name_is_empty_for_none_or_a_plain_name():
    assert GenerationRequest.from_user(prompt="x").adapter_name == ""
    assert GenerationRequest.from_user(prompt="x", adapter_name=" otter-v2 ").adapter_name == "otter-v2"
    for bad in ("../etc/passwd", "a b", "x" * 65, 12, ["otter"]):
        assert refusal(prompt="x", adapter_name=bad).parameter == "adapter_name"


@pytest.mark.parametrize("name", ["style", "brand"])
def test_preset_names_are_empty_for_none_or_a_plain_name(name):
    assert getattr(GenerationRequest.from_user(prompt="x"), name) == ""
    assert getattr(GenerationRequest.from_user(prompt="x", **{name: " Gold and black "}), name) == "Gold and black"
    for bad in ("<script>", "x" * 65, 3, ["Sticker"]):
        assert refusal(prompt="x", **{name: bad}).parameter == name


def test_a_logo_is_an_id_the_upload_handed_out_never_a_path():
    logo_id = "ab" * 32
    assert GenerationRequest.from_user(prompt="x", logo=logo_id).logo == logo_id
    assert GenerationRequest.from_user(prompt="x").logo == ""
    for bad in ("/etc/passwd", "../images/logos/x.png", "AB" * 32, "ab" * 31, 7):
        assert refusal(prompt="x", logo=bad).parameter == "logo"


def test_every_invalid_field_is_reported_at_once():
    error = refusal(prompt="", width=300, num_inference_steps=500, guidance_scale="lots")
    assert [problem.parameter for problem in error.problems] == [
        "prompt",
        "width",
        "num_inference_steps",
        "guidance_scale",
    ]
    assert error.parameter == "prompt"  # the first, for callers that mark one field
    for name in ("prompt", "width", "num_inference_steps", "guidance_scale"):
        assert name in error.message


def test_refusals_for_people_use_the_pages_words_not_api_names():
    error = refusal(prompt="x", num_images_per_prompt=9, prior_guidance_scale=0)
    assert "Number of mascots must be between 1 and 4 (got 9)." in error.for_people
    assert "Idea guidance must be between 1 and 20 (got 0)." in error.for_people
    assert "num_images_per_prompt" not in error.for_people and "prior_guidance_scale" not in error.for_people
    assert "num_images_per_prompt must be between 1 and 4" in error.message  # the API keeps its names


@pytest.mark.parametrize("name", ["seed", "width", "guidance_scale", "logo_weight", "num_inference_steps"])
@pytest.mark.parametrize("giant", [10**400, -(10**400), "1e400", "9" * 500, 1e308, -1e300])
def test_giant_numbers_are_refused_by_name_in_a_short_sentence(name, giant):
    error = refusal(prompt="x", **{name: giant})
    assert error.parameter == name
    assert len(error.message) < 160


@pytest.mark.parametrize(
    "value", [["a", "list"], {"a": 1}, b"bytes", "{name}", "12 steps", "0x10", object(), [], True, False]
)
def test_wrong_types_are_refused_by_name_never_with_python_text(value):
    error = refusal(prompt="x", num_inference_steps=value)
    assert error.parameter == "num_inference_steps"
    assert "Traceback" not in error.message and "object at 0x" not in error.message
    assert error.message.startswith("num_inference_steps must be")


def test_a_braces_prompt_is_kept_verbatim_and_refusals_with_braces_format_safely():
    assert GenerationRequest.from_user(prompt="{name} the {0} otter").prompt == "{name} the {0} otter"
    error = refusal(prompt="x", seed="{x}")
    assert "'{x}'" in error.message and "'{x}'" in error.for_people


def test_one_prior_step_is_refused_because_the_prior_scheduler_cannot_run_it():
    from diffusers import UnCLIPScheduler

    with pytest.raises(ZeroDivisionError):  # why the range starts at 2: diffusers' UnCLIPScheduler divides by steps - 1
        UnCLIPScheduler().set_timesteps(1)
    UnCLIPScheduler().set_timesteps(2)
    assert refusal(prompt="x", prior_num_inference_steps=1).parameter == "prior_num_inference_steps"
    assert GenerationRequest.from_user(prompt="x", prior_num_inference_steps=2).prior_num_inference_steps == 2
