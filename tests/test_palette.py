"""Colours of my logo: the logo's main colours, named, added to the prompt as a brand palette."""

from __future__ import annotations

import functools

import httpx
import pytest
from gradio_client import handle_file
from PIL import Image, ImageDraw

from mascot.prompt.logos import LogoLibrary
from mascot.prompt.palette import colour_name, colour_phrase, logo_colours
from mascot.prompt.presets import LOGO_COLOURS, Presets
from mascot.prompt.request import GenerationRequest, InvalidRequest
from mascot.service import MascotService
from mascot.settings import Rules
from mascot.ui.common import PageServices
from mascot.ui.create import IDEA_STAND_IN, model_prompt_text
from tests.support.raw_gradio import run_outside_queue
from tests.support.site import FAST, make, mine

NAVY, ORANGE = (25, 35, 95), (245, 130, 30)


def navy_and_orange_on_white() -> Image.Image:
    logo = Image.new("RGB", (300, 200), "white")
    draw = ImageDraw.Draw(logo)
    draw.rectangle((40, 40, 160, 160), fill=NAVY)
    draw.ellipse((170, 50, 260, 140), fill=ORANGE)
    return logo


@pytest.mark.parametrize(
    ("rgb", "name"),
    [((255, 0, 0), "red"), ((0, 0, 128), "navy blue"), ((255, 165, 0), "orange"), ((0, 128, 0), "green"),
     ((250, 250, 250), "white"), ((10, 10, 10), "black"), ((255, 192, 203), "pink"), ((64, 224, 208), "turquoise")],
)  # fmt: skip
def test_a_colour_gets_the_name_people_would_give_it(rgb, name):
    assert colour_name(rgb) == name


def test_a_logo_on_white_gives_its_own_colours_commonest_first_not_the_paper():
    assert logo_colours(navy_and_orange_on_white()) == ["navy blue", "orange"]


def test_a_transparent_logo_kept_by_the_app_gives_its_colours(tmp_path):
    logos = LogoLibrary(tmp_path / "logos")
    logo = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(logo).ellipse((30, 30, 170, 170), fill=(210, 25, 35, 255))

    assert logos.colour_names(logos.save(logo)) == ["red"]
    assert logos.colour_names("0" * 64) == []  # a logo no longer here names nothing


def test_a_coloured_badge_keeps_its_ground_and_a_blank_logo_is_white():
    badge = Image.new("RGB", (200, 200), (15, 15, 15))
    ImageDraw.Draw(badge).rectangle((50, 80, 150, 120), fill="white")
    assert logo_colours(badge) == ["black", "white"]
    assert logo_colours(Image.new("RGB", (64, 64), "white")) == ["white"]


def navy_orange_and_white_badge() -> Image.Image:
    """A round badge as a designer exports it: navy disc, a thin #F57C00 ring, white lettering, anti-aliased edges."""
    big = Image.new("RGB", (1024, 1024), "white")
    draw = ImageDraw.Draw(big)
    draw.ellipse((40, 40, 984, 984), fill=(0xF5, 0x7C, 0x00))
    draw.ellipse((100, 100, 924, 924), fill=(0x1B, 0x2A, 0x5C))
    draw.rectangle((250, 380, 774, 644), fill="white")
    return big.resize((256, 256), Image.LANCZOS)  # the smoothing makes navy-orange edge pixels, brownish ones


def test_a_navy_orange_and_white_badge_is_named_so_not_brown():
    assert logo_colours(navy_orange_and_white_badge()) == ["navy blue", "orange", "white"]


def test_at_most_three_colours_and_specks_do_not_count():
    logo = Image.new("RGB", (400, 100), "white")
    draw = ImageDraw.Draw(logo)
    for left, width, colour in ((0, 150, (200, 20, 30)), (150, 110, (30, 90, 220)), (260, 90, (250, 220, 30))):
        draw.rectangle((left, 0, left + width - 1, 99), fill=colour)
    draw.rectangle((350, 0, 399, 99), fill=(30, 150, 60))  # the fourth: over the limit
    draw.rectangle((0, 0, 3, 3), fill=(220, 40, 200))  # a speck

    assert logo_colours(logo) == ["red", "blue", "yellow"]
    assert colour_phrase(["red", "blue", "yellow"]) == "red, blue and yellow colour palette"
    assert colour_phrase(["red"]) == "red colour palette"


def test_the_model_sees_the_logos_colours_and_a_brand_of_logo_colours_needs_a_logo():
    presets = Presets.load()
    request = GenerationRequest.from_user(prompt="a fox", style="", brand=LOGO_COLOURS, logo="a" * 64)
    presets.check_request(request)

    prepared = presets.apply(request, logo_colours=lambda logo_id: ["navy blue", "orange"])

    assert prepared.prompt == "a fox, navy blue and orange colour palette"
    with pytest.raises(InvalidRequest) as refused:
        presets.check_request(GenerationRequest.from_user(prompt="a fox", brand=LOGO_COLOURS))
    assert refused.value.parameter == "brand" and "upload one" in refused.value.message


@pytest.mark.slow
def test_a_person_uploads_a_logo_and_their_mascot_takes_its_colours(site, tmp_path):
    logo_file = tmp_path / "acme.png"
    navy_and_orange_on_white().save(logo_file)
    alice = site.browser()
    logo_id = alice.predict(handle_file(str(logo_file)), api_name="/upload_logo")

    make(alice, "a fox courier", style="", brand=LOGO_COLOURS, logo=logo_id, logo_weight=0.0)

    assert site.fake.requests[-1].prompt == "a fox courier, navy blue and orange colour palette"
    [mascot] = mine(alice)
    assert mascot["prompt"] == "a fox courier"  # the person's words are what is kept
    with pytest.raises(Exception, match="takes the colours of your logo"):
        alice.predict(prompt="a fox", brand=LOGO_COLOURS, **{"seed": 1, **FAST}, api_name="/generate")


def page_services(prepare=None) -> PageServices:
    """Only what the Advanced panel's prompt box reads: the presets and the worker's `prepare`."""
    service = MascotService(store=None, worker=None, rules=Rules(), address_keys=None, downloads=None,
                            presets=Presets.load(), prepare=prepare)  # type: ignore[arg-type]  # fmt: skip
    return PageServices(service=service, token_hash_of=lambda request: None)


def test_the_advanced_panel_shows_the_prompts_the_model_is_given():
    services = page_services(functools.partial(Presets.load().apply, logo_colours=lambda logo: ["navy blue"]))

    assert model_prompt_text(services, "  ", "", "Sticker", "", "").startswith(
        f"Prompt: {IDEA_STAND_IN}, mascot character, die-cut sticker"
    )
    shown = model_prompt_text(services, "a fox", "blurry", "", LOGO_COLOURS, "b" * 64)
    assert shown == "Prompt: a fox, navy blue colour palette\nAvoid: blurry"
    assert model_prompt_text(services, "a fox", "", "", "", "") == "Prompt: a fox\nAvoid: nothing"
    refused = model_prompt_text(services, "a fox", "", "", LOGO_COLOURS, "")
    assert refused.startswith("(Generate would refuse this: Brand colours 'Colours of my logo' takes the colours")


@pytest.mark.slow
def test_what_the_panel_shows_is_what_the_model_is_given(site, tmp_path):
    logo_file = tmp_path / "acme.png"
    navy_and_orange_on_white().save(logo_file)
    alice = site.browser()
    logo_id = alice.predict(handle_file(str(logo_file)), api_name="/upload_logo")
    make(alice, "a fox courier", style="Plush toy", brand=LOGO_COLOURS, logo=logo_id, negative_prompt="scary")

    logos = LogoLibrary(site.tmp_path / "data" / "images" / "logos")
    services = page_services(functools.partial(Presets.load().apply, logo_colours=logos.colour_names))
    given = site.fake.requests[-1]
    shown = model_prompt_text(services, "a fox courier", "scary", "Plush toy", LOGO_COLOURS, logo_id)
    assert shown == f"Prompt: {given.prompt}\nAvoid: {given.negative_prompt}"


def run_predict(site, browser, api_name: str, data: list) -> object:
    """A queue-less event called by hand, with `browser`'s cookie, as a page (or an attacker) sends it."""
    with httpx.Client(base_url=site.url, cookies=browser.cookies, timeout=30) as http:
        response = run_outside_queue(http, browser.config, api_name, data)
    response.raise_for_status()
    return response.json()["data"][0]


@pytest.mark.slow
def test_another_browsers_logo_colours_are_told_to_no_one_else(site, tmp_path):
    """A logo's id is in its mascots' parameters, but an upload is not public: the colour note and the prompt the
    panel shows tell its colours to the browser that uploaded it alone."""
    logo_file = tmp_path / "acme.png"
    navy_and_orange_on_white().save(logo_file)
    alice, bob = site.browser(), site.browser()
    granted = alice.predict(handle_file(str(logo_file)), api_name="/upload_logo")
    logo_id = granted.split(".")[0]  # the id alone, as a mascot's parameters or a guess would give it

    assert "navy blue and orange" in run_predict(site, alice, "colours_note", [granted])
    assert "navy blue and orange" in run_predict(site, alice, "model_prompt", ["a fox", "", "", LOGO_COLOURS, granted])
    for logo in (granted, logo_id):
        assert run_predict(site, bob, "colours_note", [logo]) == ""
        shown = run_predict(site, bob, "model_prompt", ["a fox", "", "", LOGO_COLOURS, logo])
        assert "navy" not in shown and "orange" not in shown
