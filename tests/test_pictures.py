"""Uploaded pictures cost bounded memory: the header's size is checked first, few are decoded at once, and uploads
and downloads are limited per browser and per network (mascot.prompt.pictures, mascot.service.limits)."""

from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from mascot.prompt import pictures
from mascot.prompt.logos import KEPT_SIDE, LogoLibrary, LogoRefused
from mascot.service.limits import KeyedLimit, Leases, Limit, RateWindow
from tests.support.bombs import png_bomb


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_8_kb_png_claiming_8192_pixels_a_side_is_refused_from_its_header_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = png_bomb(tmp_path / "bomb.png", 8192, 8192)
    assert bomb.stat().st_size < 10_000

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(LogoRefused) as refused:
        LogoLibrary(tmp_path / "logos").save(bomb)

    assert str(refused.value) == (
        "That logo is 8,192 × 8,192 pixels; the largest we read is 4,096 × 4,096. Upload a smaller copy."
    )


def test_a_20000_pixel_png_is_answered_with_a_sentence_not_pils_decompression_bomb_error(tmp_path: Path) -> None:
    bomb = png_bomb(tmp_path / "bomb.png", 20_000, 20_000)

    with pytest.raises(LogoRefused, match=r"^That logo is far too large; the largest we read is 4,096 × 4,096\."):
        LogoLibrary(tmp_path / "logos").save(bomb)


@pytest.mark.parametrize("image_format", ["GIF", "BMP", "TIFF", "ICO", "PPM", "TGA", "PCX", "SGI", "EPS"])
def test_a_logo_in_a_format_other_than_png_jpeg_or_webp_is_refused_as_the_sentence_says(
    tmp_path: Path, image_format: str
) -> None:
    """Only the three formats the page names reach PIL's decoders: its EPS reader would hand the file to Ghostscript
    where Ghostscript is installed."""
    upload = tmp_path / f"logo.{image_format.lower()}"
    if image_format == "EPS":  # PIL writes EPS through Ghostscript only for reading: a minimal file by hand
        upload.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n")
    else:
        Image.new("RGB", (8, 8), "red").save(upload, format=image_format)
    library = LogoLibrary(tmp_path / "logos")

    with pytest.raises(LogoRefused, match="not an image we can read: upload a PNG, JPEG or WebP logo"):
        library.save(upload)
    for kept_format in ("PNG", "JPEG", "WEBP"):  # the three it names are kept
        kept = tmp_path / f"logo-{kept_format}"
        Image.new("RGB", (8, 8), "red").save(kept, format=kept_format)
        assert library.path(library.save(kept)) is not None


def test_a_large_jpeg_is_decoded_at_reduced_size_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (6000, 4000), "red").save(photo, quality=50)  # 24 M pixels: over the limit at full size
    decoded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spying_load(self: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        decoded.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spying_load)
    library = LogoLibrary(tmp_path / "logos")
    logo = library.path(library.save(photo))

    # PIL's draft: a quarter of each side, the smallest scale whose sides are both at least KEPT_SIDE
    assert decoded[0] == (1500, 1000)
    assert logo is not None and max(Image.open(logo).size) == KEPT_SIDE


def test_no_more_than_two_pictures_are_decoded_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    picture = png_bomb(tmp_path / "big.png", 2048, 2048)
    running, most = 0, 0
    lock = threading.Lock()
    load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # long enough for the other threads to try
        try:
            return load(self)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    library = LogoLibrary(tmp_path / "logos")
    threads = [threading.Thread(target=library.save, args=(picture,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert most == pictures.DECODES_AT_ONCE == 2


def test_a_picture_that_waits_too_long_for_a_decode_slot_is_refused_with_a_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pictures, "DECODE_WAIT_S", 0.05)
    refused = pytest.raises(pictures.PictureRefused, match="Many pictures are being read right now")
    with pictures.decode_slot(), pictures.decode_slot(), refused, pictures.decode_slot():
        pass
    with pictures.decode_slot():  # the slots are free again
        pass


def test_a_rate_window_slides_and_counts_nothing_it_refuses() -> None:
    clock = Ticks()
    window = RateWindow(limit=2, window_s=60, clock=clock)

    assert window.take("a") == 0 and window.take("a") == 0
    assert window.take("a") == 60 and window.take("b") == 0  # another key has its own count
    clock.now += 30
    assert window.wait_s("a") == 30  # the refused take above was not counted
    clock.now += 30
    assert window.take("a") == 0


def test_a_lease_is_ended_by_release_or_after_its_time_to_live() -> None:
    clock = Ticks()
    leases = Leases(limit=1, ttl_s=100, clock=clock)

    assert leases.acquire("a") and not leases.acquire("a")
    leases.release("a")
    assert leases.acquire("a")
    clock.now += 101  # a request dropped from the queue never released it
    assert leases.acquire("a")


def test_a_network_may_do_a_few_browsers_worth_and_no_more() -> None:
    limit = KeyedLimit(Limit(per_window=1, window_s=60, at_once=1, network_factor=2), clock=Ticks())

    assert limit.take("browser 1", "net") == 0 and limit.take("browser 1", "net") > 0
    assert limit.take("browser 2", "net") == 0 and limit.take("browser 3", "net") > 0  # the network's 2 are spent
    assert limit.take("browser 3", "") == 0  # no known network: the browser's own limit only
    assert limit.start("browser 1", "net") is None and limit.start("browser 1", "net") == "browser"
    assert limit.start("browser 2", "net") is None and limit.start("browser 3", "net") == "network"
    limit.finish("browser 1", "net")
    assert limit.start("browser 3", "net") is None


def png_with_chunks(path: Path, *chunks: tuple[bytes, bytes]) -> Path:
    """A 1x1 grey PNG with `chunks` (kind, data) between its pixels and its end."""
    png_bomb(path, 1, 1)
    data = path.read_bytes()
    end = data[-12:]
    path.write_bytes(data[:-12] + b"".join(chunk(kind, body) for kind, body in chunks) + end)
    return path


def chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def test_a_pngs_text_is_read_from_its_chunks_and_a_hostile_file_is_refused_before_much_work(tmp_path: Path) -> None:
    after_the_pixels = png_with_chunks(tmp_path / "text.png", (b"tEXt", b"parameters\0an otter"))
    assert pictures.read_png_text(after_the_pixels) == {"parameters": "an otter"}

    # 20,000 empty chunks (10 MB holds 870,000): refused after MAX_PNG_CHUNKS, not walked to the end.
    many = png_with_chunks(tmp_path / "many.png", *[(b"prVt", b"")] * 20_000)
    cut = tmp_path / "cut.png"
    cut.write_bytes(after_the_pixels.read_bytes()[:-20])
    not_a_png = tmp_path / "text.txt"
    not_a_png.write_text("parameters: an otter")
    for refused in (many, cut, not_a_png):
        with pytest.raises(pictures.NotAPicture):
            pictures.read_png_text(refused)
