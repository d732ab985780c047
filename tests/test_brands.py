"""The operator's house brands (--brands-dir): checked at start, shown as pictures, each bringing its words and logo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app import start_app
from mascot.prompt.brands import BrandError, load_house_brands
from mascot.prompt.logos import LogoLibrary
from mascot.ui.house import brand_sentence, look_sentence
from tests.support.bombs import png_bomb
from tests.support.site import make, serve

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "brands.example"
BEAR = "Mascot Generator"


def brand_folder(root: Path, slug: str, with_logo: bool = True, **values: object) -> Path:
    folder = root / slug
    folder.mkdir(parents=True)
    if with_logo:
        Image.new("RGB", (64, 40), "navy").save(folder / "logo.png")
    fields = {
        "name": slug.title(),
        "prompt": f"{slug} colours",
        **({"logo": "logo.png"} if with_logo else {}),
        **values,
    }
    (folder / "brand.json").write_text(json.dumps(fields), encoding="utf-8")
    return folder / "brand.json"


def test_the_example_brand_is_read_with_its_logo_kept_as_an_upload_would_be(tmp_path: Path) -> None:
    logos = LogoLibrary(tmp_path / "logos")

    [bear] = load_house_brands(EXAMPLE, logos)

    assert (bear.name, bear.prompt, bear.logo_weight) == (
        BEAR,
        "warm orange and cream colour palette, friendly bear motif",
        0.3,
    )
    kept = logos.path(bear.logo)
    assert kept is not None
    with Image.open(kept) as image:
        assert image.mode == "RGB"  # flattened on white, as an uploaded logo is


def test_brands_are_read_in_their_folders_order_and_a_brand_needs_no_logo(tmp_path: Path) -> None:
    brand_folder(tmp_path / "brands", "zeta")
    brand_folder(tmp_path / "brands", "alpha", with_logo=False)
    (tmp_path / "brands" / "notes").mkdir()  # a folder without brand.json is not a brand

    brands = load_house_brands(tmp_path / "brands", LogoLibrary(tmp_path / "logos"))

    assert [(brand.name, bool(brand.logo)) for brand in brands] == [("Alpha", False), ("Zeta", True)]


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"name": ""}, "needs a name"),
        ({"prompt": 5}, "needs a prompt"),
        ({"prompt": "x" * 301}, "at most 300 characters"),
        ({"logo": "../../elsewhere.png"}, "must be a file in its own folder"),  # it exists, outside
        ({"logo": "missing.png"}, "must be a file in its own folder"),
        ({"logo_weight": 2}, "logo_weight 2: use a number from 0 to 1"),
        ({"logo_weight": "strong"}, "use a number from 0 to 1"),
        ({"colour": "red"}, "fields this app does not know: colour"),
        ({"name": "Colours of my logo"}, "the page's own choice"),
    ],
)
def test_a_bad_brand_file_is_refused_with_a_sentence_naming_it(tmp_path: Path, values: dict, words: str) -> None:
    (tmp_path / "elsewhere.png").write_bytes((EXAMPLE / "mascot-generator" / "logo.png").read_bytes())
    path = brand_folder(tmp_path / "brands", "acme", **values)

    with pytest.raises(BrandError) as refused:
        load_house_brands(tmp_path / "brands", LogoLibrary(tmp_path / "logos"))

    message = str(refused.value)
    assert f"The brand file {str(path)!r}" in message or f"of the brand file {str(path)!r}" in message
    assert words in message and "\n" not in message


def test_a_logo_that_is_no_picture_or_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    path = brand_folder(tmp_path / "text", "acme")
    (path.parent / "logo.png").write_text("not a picture")
    with pytest.raises(BrandError, match=r"The logo of the brand file .* cannot be used"):
        load_house_brands(tmp_path / "text", LogoLibrary(tmp_path / "logos"))

    path = brand_folder(tmp_path / "bomb", "acme")
    png_bomb(path.parent / "logo.png", 20000, 20000)
    with pytest.raises(BrandError, match=r"The logo of the brand file .* cannot be used"):
        load_house_brands(tmp_path / "bomb", LogoLibrary(tmp_path / "logos"))


def test_two_brands_with_one_name_and_an_empty_folder_are_refused(tmp_path: Path) -> None:
    brand_folder(tmp_path / "twice", "acme")
    brand_folder(tmp_path / "twice", "acme-2", name="Acme")
    with pytest.raises(BrandError, match="names 'Acme', as another brand does"):
        load_house_brands(tmp_path / "twice", LogoLibrary(tmp_path / "logos"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BrandError, match="holds no brand"):
        load_house_brands(tmp_path / "empty", LogoLibrary(tmp_path / "logos"))


def test_a_bad_brand_file_stops_the_app_with_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = brand_folder(tmp_path / "brands", "acme", logo_weight=7)
    monkeypatch.setenv("MASCOT_SECRET", "x" * 40)

    with pytest.raises(SystemExit) as stopped:
        start_app(["--data-dir", str(tmp_path / "data"), "--brands-dir", str(tmp_path / "brands")])

    assert str(stopped.value) == (
        f"Mascot Generator did not start. The brand file {str(path)!r} has logo_weight 7: use a number from 0 to 1."
    )


@pytest.fixture
def branded(tmp_path, monkeypatch):
    brands = tmp_path / "brands"
    shutil.copytree(EXAMPLE, brands)
    yield from serve(tmp_path, monkeypatch, ["--brands-dir", str(brands)])


def test_the_house_brands_replace_the_palettes_and_bring_their_words_and_logo(branded) -> None:
    service = branded.app.services.service
    [bear] = service.presets.brands.values()
    assert list(service.presets.brands) == [BEAR]  # the built-in palettes give way to the operator's brands

    make(branded.browser(), "an otter", brand=BEAR, logo=bear.logo, logo_weight=0.3)

    request = branded.fake.requests[-1]
    assert request.prompt.endswith("warm orange and cream colour palette, friendly bear motif")
    assert request.logo == bear.logo and request.logo_weight == 0.3
    assert branded.fake.logos[-1] is not None  # the brand's logo was mixed in as an uploaded one is
    assert "its colours and its logo are added" in brand_sentence(BEAR, service.presets.brands)


def test_a_brand_logo_is_served_and_nothing_else_of_the_logos_folder(branded) -> None:
    service = branded.app.services.service
    [bear] = service.presets.brands.values()
    upload = branded.tmp_path / "upload.png"
    Image.new("RGB", (30, 30), "red").save(upload)
    private_logo = service.logos.save(upload)  # someone's upload, kept in the same folder

    logo = httpx.get(f"{branded.url}brand-logos/{bear.logo}.png")
    assert (logo.status_code, logo.headers["content-type"]) == (200, "image/png")
    assert logo.content == service.logos.path(bear.logo).read_bytes()
    assert httpx.get(f"{branded.url}brand-logos/{private_logo}.png").status_code == 404
    assert httpx.get(f"{branded.url}brand-logos/..%2F..%2Fmascots.db.png").status_code == 404


def test_the_look_is_said_in_plain_words() -> None:
    assert look_sentence("acme", 0.8, "acme") == (
        "🎨 **Look:** the house look “acme” at strength 0.8 (More options › Advanced changes it)."
    )
    assert look_sentence("", 0.8, "acme") == "🎨 **Look:** the plain model (the house look “acme” is off)."
    assert (
        look_sentence("acme", 0, "acme")
        == "🎨 **Look:** the house look “acme” at strength 0, which is the plain model."
    )
    assert look_sentence("other", 1, "acme").startswith("🎨 **Look:** the look “other” at strength 1")
