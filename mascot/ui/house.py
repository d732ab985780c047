"""The company's own choices beside the styles: its look (a LoRA on by default) and its brands, shown as pictures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from mascot.prompt.presets import BrandPreset
from mascot.ui.common import DEFAULTS, PageServices
from mascot.web.brand_logos import brand_logo_url

NO_BRAND_WORDS = "No brand: pick one above to add its colours and logo."


@dataclass(frozen=True)
class HouseChoices:
    """The house look's switch and sentence, and the brand pictures with their sentence (None where not set)."""

    use_look: gr.Checkbox | None
    look_note: gr.Markdown | None
    brand_pictures: gr.Gallery | None
    brand_note: gr.Markdown | None
    no_brand: gr.Button | None


def house_brands(services: PageServices) -> list[BrandPreset]:
    """The operator's brands that come with a logo (--brands-dir): the picture choices."""
    return [brand for brand in services.service.presets.brands.values() if brand.logo]


def build_house_choices(services: PageServices) -> HouseChoices:
    """Under the styles, in view: the house look (with --default-lora) and the brand pictures (with --brands-dir)."""
    use_look = look_note = brand_pictures = brand_note = no_brand = None
    if services.default_lora:
        with gr.Row(elem_id="house-look", equal_height=True):
            use_look = gr.Checkbox(
                label=f"Use the house look “{services.default_lora}”",
                value=True,
                info="A look fine-tuned for this event, on for every mascot; untick it for the plain model",
                elem_id="use-house-look",
                scale=1,
            )
            look_note = gr.Markdown(
                look_sentence(services.default_lora, services.default_lora_strength, services.default_lora),
                elem_id="look-note",
            )
    if house_brands(services):
        brand_pictures = gr.Gallery(
            label="Brand: pick one to add its colours and logo",
            columns=6,
            height="auto",
            allow_preview=False,  # a click picks the brand; it does not open a large view
            object_fit="contain",
            buttons=[],
            elem_id="brand-pictures",
            elem_classes="brand-pictures",
        )
        with gr.Row(elem_id="brand-row", equal_height=True):
            brand_note = gr.Markdown(NO_BRAND_WORDS, elem_id="brand-note")
            no_brand = gr.Button("No brand", size="sm", elem_id="no-brand", scale=0, min_width=110)
    return HouseChoices(use_look, look_note, brand_pictures, brand_note, no_brand)


def look_sentence(adapter_name: Any, lora_scale: Any, default_lora: str | None) -> str:
    """Which look the next mascots get, in plain words."""
    if not isinstance(adapter_name, str) or not adapter_name:
        off = f" (the house look “{default_lora}” is off)" if default_lora else ""
        return f"🎨 **Look:** the plain model{off}."
    which = f"the house look “{adapter_name}”" if adapter_name == default_lora else f"the look “{adapter_name}”"
    try:
        strength = float(lora_scale)
    except (TypeError, ValueError):
        return f"🎨 **Look:** {which}."
    if strength == 0:
        return f"🎨 **Look:** {which} at strength 0, which is the plain model."
    return f"🎨 **Look:** {which} at strength {strength:g} (More options › Advanced changes it)."


def brand_sentence(brand: Any, brands: dict[str, BrandPreset]) -> str:
    """Which brand the next mascots get, in plain words."""
    chosen = brands.get(brand) if isinstance(brand, str) else None
    if chosen is None:
        return NO_BRAND_WORDS if not brand else f"🏷️ **Brand:** {brand}."
    logo = " and its logo" if chosen.logo else ""
    return f"🏷️ **Brand:** {chosen.name}: its colours{logo} are added (More options › Mix in your logo: how much)."


def wire_house_choices(
    services: PageServices, house: HouseChoices, inputs: dict[str, gr.components.Component], logo_image: gr.Image
) -> None:
    """The switch sets the adapter; a picture sets the brand and its logo; each sentence follows the form."""
    adapter_name, lora_scale, brand = inputs["adapter_name"], inputs["lora_scale"], inputs["brand"]
    logo, logo_weight = inputs["logo"], inputs["logo_weight"]
    # Gradio declares `change` on the classes that have it, not on Component (create.built_as says the same).
    assert isinstance(adapter_name, gr.Dropdown) and isinstance(lora_scale, gr.Slider)
    assert isinstance(brand, gr.Dropdown)
    default_lora = services.default_lora
    if house.use_look is not None and house.look_note is not None:
        house.use_look.input(
            lambda on: default_lora if on else "", house.use_look, adapter_name, queue=False, api_visibility="private"
        )
        gr.on(
            [adapter_name.change, lora_scale.change],
            lambda name, scale: (look_sentence(name, scale, default_lora), name == default_lora),
            [adapter_name, lora_scale],
            [house.look_note, house.use_look],
            queue=False,
            api_visibility="private",
            show_progress="hidden",
        )
    if house.brand_pictures is not None and house.brand_note is not None and house.no_brand is not None:
        brands = house_brands(services)
        house.brand_pictures.select(
            _pick_brand_handler(services, brands),
            None,
            [brand, logo, logo_weight, logo_image],
            queue=False,
            api_visibility="private",
        )
        house.no_brand.click(
            _no_brand_handler(brands), logo, [brand, logo, logo_image], queue=False, api_visibility="private"
        )
        presets = services.service.presets
        brand.change(
            lambda name: brand_sentence(name, presets.brands),
            brand,
            house.brand_note,
            queue=False,
            api_visibility="private",
            show_progress="hidden",
        )


def _pick_brand_handler(services: PageServices, brands: list[BrandPreset]) -> Callable[..., tuple[Any, ...]]:
    def pick_brand(picked: gr.SelectData) -> tuple[Any, ...]:
        if not isinstance(picked.index, int) or not 0 <= picked.index < len(brands):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        chosen = brands[picked.index]
        logos = services.service.logos
        path = logos.path(chosen.logo) if logos is not None else None
        weight = DEFAULTS.logo_weight if chosen.logo_weight is None else chosen.logo_weight
        return chosen.name, chosen.logo, weight, str(path) if path is not None else gr.skip()

    return pick_brand


def _no_brand_handler(brands: list[BrandPreset]) -> Callable[[Any], tuple[Any, ...]]:
    brand_logos = {brand.logo for brand in brands}

    def no_brand(logo: Any) -> tuple[Any, ...]:
        if logo in brand_logos:  # the brand's logo goes with it; a person's own upload stays
            return "", "", None
        return "", gr.skip(), gr.skip()

    return no_brand


def brand_pictures_handler(services: PageServices) -> Callable[..., list[tuple[str, str]]]:
    """The brand pictures at the page's own address (Gradio hands http URLs to the browser untouched)."""

    def brand_pictures(http_request: gr.Request | None = None) -> list[tuple[str, str]]:
        page_url = services.public_address.root_url(http_request)
        return [(brand_logo_url(page_url, brand.logo), brand.name) for brand in house_brands(services)]

    return brand_pictures
