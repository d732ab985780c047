"""Reading uploaded pictures safely: the size from the header before any pixel, reduced decoding, few at a time.

An 8 KB PNG can say it is 8192x8192 and cost a gigabyte once decoded and converted. So every picture a person sends
(a logo, a PNG dropped to remix) is opened lazily, its header's size checked, a JPEG decoded at reduced size, and
decoded only inside a slot of one process-wide semaphore (decode_slot): memory is bounded by DECODES_AT_ONCE times
the largest picture.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError

# 4096x4096 decodes to 16.7 M pixels: 67 MB as RGBA, the largest mode we convert to. Logos and our own PNGs are
# far smaller; a picture larger than this is refused with its size, before a pixel is read.
MAX_DECODED_PIXELS = 4096 * 4096
# The formats an upload may be, as the refusal says: no other of PIL's decoders is open to outsiders (its EPS reader
# runs Ghostscript on the file where Ghostscript is installed; TIFF, ICO, PCX and the rest are code no one needs here).
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")
DECODES_AT_ONCE = 2  # pictures decoded at the same time, in the whole process: logos and dropped PNGs together
DECODE_WAIT_S = 15.0  # how long a picture waits for a slot before the person is asked to try again
_decode_slots = threading.BoundedSemaphore(DECODES_AT_ONCE)
BUSY = "Many pictures are being read right now: upload yours again in a moment."


class PictureRefused(ValueError):
    """An upload that cannot be read as a picture; the message is a sentence for the person who sent it."""


class NotAPicture(PictureRefused):
    """The file is no picture PIL can read."""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
# Ours have a dozen chunks, an animated PNG two a frame; 10 MB of empty chunks are 870,000 (1.3 s of this CPU).
MAX_PNG_CHUNKS = 10_000
NOT_A_PNG = "That file is not a PNG we can read."


def read_png_text(source: Path) -> dict[str, str]:
    """A PNG's text chunks, wherever they are in the file, read without inflating a pixel: every other chunk's
    bytes are read only for its checksum. PIL's `.text` decodes the pixels to find chunks after them, every frame of
    an animated PNG (600 frames of 4096² fit in 10 MB: 47 s of one decode slot, an outsider's attack). PIL's chunk
    readers are used for the text alone, with their caps on compressed text (a text bomb raises ValueError).
    NotAPicture for a file that is no PNG or whose chunks are broken (each chunk's checksum is checked, as PIL does)."""
    try:
        with source.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if file.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise NotAPicture(NOT_A_PNG)
            chunks = PngImagePlugin.PngStream(file)
            for _ in range(MAX_PNG_CHUNKS):
                kind, position, length = chunks.read()
                if kind == b"IEND":
                    return dict(chunks.im_text)
                if length > size:
                    raise NotAPicture(NOT_A_PNG)  # a length that is no length
                # A text chunk through PIL's reader, which keeps the text; any other's bytes only for its checksum.
                data = chunks.call(kind, position, length) if kind in TEXT_CHUNKS else file.read(length)
                if len(data) < length:
                    raise NotAPicture(NOT_A_PNG)  # a cut file
                chunks.crc(kind, data)
            raise NotAPicture(NOT_A_PNG)  # no end after MAX_PNG_CHUNKS chunks
    except (OSError, SyntaxError, EOFError, struct.error) as error:  # SyntaxError: PIL's "broken PNG file"
        raise NotAPicture(NOT_A_PNG) from error


@contextmanager
def decode_slot() -> Iterator[None]:
    """One of the DECODES_AT_ONCE slots for decoding pixels; refused with a sentence when none frees up in time."""
    if not _decode_slots.acquire(timeout=DECODE_WAIT_S):
        raise PictureRefused(BUSY)
    try:
        yield
    finally:
        _decode_slots.release()


def open_lazily(source: Path | str, what: str) -> Image.Image:
    """The picture with only its header read, if it is one of UPLOAD_FORMATS. PIL's own bomb check (over twice
    Image.MAX_IMAGE_PIXELS) is answered with a sentence too, as is a file that is no picture."""
    try:
        return Image.open(source, formats=UPLOAD_FORMATS)
    except Image.DecompressionBombError:
        raise PictureRefused(too_large_line(what)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise NotAPicture(f"That file is not an image we can read: upload a PNG, JPEG or WebP {what}.") from None


def check_size(image: Image.Image, what: str, max_pixels: int = MAX_DECODED_PIXELS) -> None:
    """Refuse, from the header alone, a picture whose pixels would cost more than `max_pixels` to decode."""
    if image.width * image.height > max_pixels:
        raise PictureRefused(too_large_line(what, image.size))


def decode(image: Image.Image, what: str, fit: int | None = None, max_pixels: int = MAX_DECODED_PIXELS) -> None:
    """Decode the pixels of a lazily opened picture, inside a decode_slot() (so is what is done with them after): a
    JPEG at the smallest scale still at least `fit` pixels a side (PIL's draft reads 1/2, 1/4 or 1/8 of it), and
    nothing larger than `max_pixels`."""
    if fit is not None and image.format == "JPEG":
        image.draft("RGB", (fit, fit))  # the size reported from here on is the reduced one
    check_size(image, what, max_pixels)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise PictureRefused(f"That {what} could not be read completely: upload another copy of it.") from None


def too_large_line(what: str, size: tuple[int, int] | None = None) -> str:
    """The refusal of a picture too large to read, with its size where the header gave it."""
    side = int(MAX_DECODED_PIXELS**0.5)
    given = f"is {size[0]:,} × {size[1]:,} pixels" if size else "is far too large"
    return f"That {what} {given}; the largest we read is {side:,} × {side:,}. Upload a smaller copy."
