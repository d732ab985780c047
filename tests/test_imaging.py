"""PNG files with embedded parameters, atomic writes, thumbnails (made and saved as WebP)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from mascot.store import imaging

PARAMETERS = {
    "prompt": "a cheerful otter barista, ☕ sticker",
    "negative_prompt": "blurry, text",
    "seed": 4294967295,
    "width": 320,
    "height": 256,
    "num_inference_steps": 2,
    "guidance_scale": 4.5,
    "prior_num_inference_steps": 3,
    "prior_guidance_scale": 1.0,
    "num_images_per_prompt": 1,
    "model_name": "tiny preview model",
}


def small_image(width: int = 320, height: int = 256, colour: tuple[int, int, int] = (200, 80, 40)) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def test_parameters_survive_a_round_trip_through_the_png(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    imaging.save_png(small_image(), path, PARAMETERS)

    assert imaging.read_parameters(path) == PARAMETERS


def test_saved_file_is_a_valid_png_of_the_image_size_and_pixels(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    image = small_image(colour=(1, 2, 3))
    imaging.save_png(image, path, PARAMETERS)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as saved:
        saved.verify()
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert saved.size == (320, 256)
        assert saved.convert("RGB").getpixel((5, 5)) == (1, 2, 3)


def test_other_tools_see_a1111_style_parameters_text(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    imaging.save_png(small_image(), path, PARAMETERS)

    with Image.open(path) as saved:
        text = saved.text["parameters"]
    prompt_line, negative_line, settings_line = text.split("\n")
    assert prompt_line == PARAMETERS["prompt"]
    assert negative_line == "Negative prompt: blurry, text"
    assert settings_line == (
        "Steps: 2, CFG scale: 4.5, Seed: 4294967295, Size: 320x256, Model: tiny preview model, Prior steps: 3, "
        "Prior CFG scale: 1.0"
    )


def test_human_text_leaves_out_an_empty_negative_prompt() -> None:
    text = imaging.human_parameters({**PARAMETERS, "negative_prompt": ""}, (256, 256))

    assert "Negative prompt" not in text
    assert text.splitlines()[0] == PARAMETERS["prompt"]


def test_png_without_our_chunk_reads_as_no_parameters(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    small_image().save(path)

    assert imaging.read_parameters(path) == {}


def test_save_creates_missing_folders_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "2025" / "01" / "out.png"
    imaging.save_png(small_image(), path, PARAMETERS)

    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_save_leaves_the_previous_file_intact_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    imaging.save_png(small_image(colour=(9, 9, 9)), path, PARAMETERS)
    before = path.read_bytes()

    with pytest.raises(OSError, match="CMYK"):
        imaging.save_png(Image.new("CMYK", (64, 64)), path, PARAMETERS)  # PNG has no CMYK: fails mid-write

    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.png"]


def test_replacing_happens_in_one_step_via_os_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(source: str, target: str) -> None:
        calls.append((str(source), str(target)))
        assert not Path(target).exists(), "the final name must not exist before the finished file is moved there"
        real_replace(source, target)

    monkeypatch.setattr(imaging.os, "replace", spy)
    path = tmp_path / "out.png"
    imaging.save_png(small_image(), path, PARAMETERS)

    assert len(calls) == 1
    assert Path(calls[0][0]).parent == tmp_path
    assert calls[0][1] == str(path)


def test_thumbnail_fits_the_longest_side_and_keeps_the_aspect() -> None:
    thumbnail = imaging.make_thumbnail(small_image(1024, 512), max_side=256)

    assert thumbnail.size == (256, 128)


def test_thumbnail_never_enlarges_and_leaves_the_original_alone() -> None:
    original = small_image(100, 50)
    thumbnail = imaging.make_thumbnail(original, max_side=256)

    assert thumbnail.size == (100, 50)
    assert thumbnail is not original


def test_thumbnail_refuses_a_non_positive_size() -> None:
    with pytest.raises(ValueError, match="max_side"):
        imaging.make_thumbnail(small_image(), max_side=0)


def test_saved_thumbnail_is_a_small_webp_written_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "2025" / "01" / "out.thumb.webp"
    returned = imaging.save_thumbnail(small_image(1024, 768, colour=(10, 200, 30)), path, max_side=256)

    assert sorted(p.name for p in path.parent.iterdir()) == ["out.thumb.webp"]
    assert path.stat().st_mode & 0o777 == 0o644
    with Image.open(path) as saved:
        assert (saved.format, saved.size, returned.size) == ("WEBP", (256, 192), (256, 192))
        assert saved.convert("RGB").getpixel((100, 100)) == pytest.approx((10, 200, 30), abs=6)


@pytest.mark.parametrize(("mode", "expected"), [("RGBA", "RGBA"), ("LA", "RGBA"), ("L", "RGB"), ("CMYK", "RGB")])
def test_thumbnail_keeps_transparency_and_turns_other_modes_into_rgb(tmp_path: Path, mode: str, expected: str) -> None:
    path = tmp_path / "out.thumb.webp"
    imaging.save_thumbnail(Image.new(mode, (64, 32)), path)

    with Image.open(path) as saved:
        assert saved.mode == expected


def test_a_transparent_palette_image_keeps_its_transparency_in_the_thumbnail(tmp_path: Path) -> None:
    image = Image.new("P", (64, 64), 0)
    image.info["transparency"] = 0
    path = tmp_path / "out.thumb.webp"

    imaging.save_thumbnail(image, path)

    with Image.open(path) as saved:
        assert saved.mode == "RGBA" and saved.getpixel((5, 5))[3] == 0


def test_a_transparent_sticker_cuts_the_plain_background_but_keeps_holes_inside_the_mascot():
    from PIL import ImageDraw

    from mascot.store.imaging import transparent_sticker

    picture = Image.new("RGB", (512, 512), (248, 248, 246))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((128, 128, 384, 384), fill=(230, 120, 30))  # the mascot
    draw.ellipse((208, 208, 304, 304), fill=(248, 248, 246))  # a white eye, the background's colour
    sticker = transparent_sticker(picture)
    assert sticker.mode == "RGBA"
    assert 256 < sticker.width < 300 and 256 < sticker.height < 300  # cropped to the mascot plus a margin
    assert sticker.getpixel((0, 0))[3] == 0  # the background is gone
    center = (sticker.width // 2, sticker.height // 2)
    assert sticker.getpixel(center) == (248, 248, 246, 255)  # the eye stays
    assert sticker.getpixel((center[0], 40))[3] == 255  # the body stays


def test_a_picture_that_is_all_background_comes_back_whole():
    from mascot.store.imaging import transparent_sticker

    sticker = transparent_sticker(Image.new("RGB", (64, 64), "white"))
    assert sticker.size == (64, 64)


# What the store embeds for a styled mascot with a LoRA: the model's prompt differs from the person's idea.
STYLED = {
    "prompt": "an otter barista",
    "negative_prompt": "",
    "model_prompt": "an otter barista, sticker, die-cut, white border, navy blue and orange colour palette",
    "model_negative_prompt": "blurry, low quality",
    "seed": 7,
    "width": 512,
    "height": 512,
    "num_inference_steps": 10,
    "guidance_scale": 4.0,
    "prior_num_inference_steps": 5,
    "prior_guidance_scale": 1.0,
    "num_images_per_prompt": 1,
    "style": "Sticker",
    "brand": "Colours of my logo",
    "logo": "a" * 64,
    "logo_weight": 0.3,
    "adapter_name": "otter",
    "lora_scale": 0.8,
    "sampler": "DDPMScheduler",
    "model_name": "Kandinsky 2.2, prior: kandinsky-community/x, decoder: /models/dec: v2",
}


def a1111_settings(line: str) -> dict[str, str]:
    """AUTOMATIC1111's own reading of a settings line (its `re_param_code`, quoted values unquoted as it does)."""
    found = {}
    for key, value in re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', line):
        found[key] = json.loads(value) if value.startswith('"') else value
    return found


def test_a_maintained_a1111_reader_reads_our_png_field_by_field(tmp_path: Path) -> None:
    from sd_parsers import ParserManager

    path = tmp_path / "styled.png"
    imaging.save_png(small_image(512, 512), path, STYLED)
    with Image.open(path) as saved:
        info = ParserManager().parse(saved)

    assert info is not None, "sd-parsers found no A1111 parameters (it needs a Sampler field)"
    (sampler,) = info.samplers
    assert sampler.name == "DDPMScheduler"
    assert [prompt.value for prompt in sampler.prompts] == [STYLED["model_prompt"]]
    assert [prompt.value for prompt in sampler.negative_prompts] == [STYLED["model_negative_prompt"]]
    assert sampler.parameters["seed"] == "7"
    assert sampler.parameters["steps"] == "10"
    assert sampler.parameters["cfg_scale"] == "4.0"


def test_values_with_commas_and_colons_are_quoted_as_a1111_quotes_them(tmp_path: Path) -> None:
    path = tmp_path / "styled.png"
    imaging.save_png(small_image(512, 512), path, STYLED)
    with Image.open(path) as saved:
        settings_line = saved.text["parameters"].split("\n")[-1]

    settings = a1111_settings(settings_line)
    assert settings["Model"] == STYLED["model_name"]  # whole, commas and colons included
    assert settings["Idea"] == "an otter barista"  # the person's own words, beside the prompt the model saw
    assert settings["Style"] == "Sticker" and settings["Brand"] == "Colours of my logo"
    assert settings["Lora"] == "otter" and settings["Lora strength"] == "0.8"
    assert settings["Logo weight"] == "0.3"
    assert settings["Sampler"] == "DDPMScheduler" and settings["Size"] == "512x512"


def test_a_cropped_sticker_keeps_the_generation_size_not_its_crop(tmp_path: Path) -> None:
    path = tmp_path / "sticker.png"
    imaging.save_png(small_image(300, 210), path, STYLED)  # a sticker is cut out of the 512x512 mascot
    with Image.open(path) as saved:
        assert "Size: 512x512" in saved.text["parameters"]


def test_a_png_with_only_a_prompt_gets_a_text_too(tmp_path: Path) -> None:
    path = tmp_path / "bare.png"
    imaging.save_png(small_image(), path, {"prompt": "a bare fox"})
    with Image.open(path) as saved:
        assert saved.text["parameters"] == "a bare fox\nSize: 320x256"
