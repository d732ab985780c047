"""Uploaded logos: checked, flattened, shrunk and kept once each under images/logos/<sha256>.png."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import re
import tempfile
from collections.abc import Collection
from pathlib import Path

from PIL import Image

from mascot.prompt.palette import logo_colours
from mascot.prompt.pictures import PictureRefused, decode, decode_slot, open_lazily

KEPT_SIDE = 512  # the image encoder sees 224 px: more is only disk
# A logo as a browser holds it: its id, then (LogoGrants) a signature that binds it to that browser.
GRANTED_LOGO = re.compile(r"^([0-9a-f]{64})(?:\.([A-Za-z0-9_-]{43}))?$")
GRANT_CONTEXT = b"mascot-logo-grant-v1:"  # mixed into each signature: a MAC made for another purpose never verifies


class LogoRefused(PictureRefused):
    """An upload that is not a usable logo; the message is a sentence for the person who sent it."""


class LogoLibrary:
    """The logos folder: ids are the sha256 of the stored PNG, so the same logo is kept once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, upload: Image.Image | str | Path) -> str:
        """Check and keep a logo; return its id. Transparency becomes white: the image encoder sees RGB."""
        image = flatten(open_upload(upload))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        logo_id = hashlib.sha256(data).hexdigest()
        path = self.folder / f"{logo_id}.png"
        if not path.exists():
            write_atomically(path, data)
        return logo_id

    def path(self, logo: str) -> Path | None:
        """The file of a logo (its id, granted or not), or None for one that is malformed or not kept here."""
        logo_id = stored_logo_id(logo)
        if logo_id is None:
            return None
        path = self.folder / f"{logo_id}.png"
        return path if path.is_file() else None

    def open(self, logo_id: str) -> Image.Image:
        path = self.path(logo_id)
        if path is None:
            raise LogoRefused("That logo is no longer here: upload it again.")
        with Image.open(path) as image:
            return image.convert("RGB")

    def colour_names(self, logo_id: str) -> list[str]:
        """The names of a kept logo's main colours (mascot.prompt.palette); none for a logo no longer here, whose job
        fails on its own when the logo is loaded."""
        path = self.path(logo_id)
        if path is None:
            return []
        with Image.open(path) as image:
            return logo_colours(image)


def stored_logo_id(logo: str) -> str | None:
    """The id of the file a logo names (its grant's signature left off); None when it names none."""
    found = GRANTED_LOGO.match(logo)
    return found.group(1) if found else None


class LogoGrants:
    """Who may use which logo. An upload is handed back as `<id>.<signature>`, the signature an HMAC of the id and the
    uploading browser's owner hash, so the id that a public mascot's parameters or a remix show uses the logo for
    nobody else: people's uploads are not public. The brands' logos (the operator's, shown to everyone) need none."""

    def __init__(self, secret: bytes, public_ids: Collection[str] = ()) -> None:
        if not secret:
            raise ValueError("The logo grants' secret is empty.")
        self._secret = secret
        self.public_ids = frozenset(public_ids)

    def grant(self, logo_id: str, owner_hash: str) -> str:
        """The logo as `owner_hash`'s browser holds it."""
        return f"{logo_id}.{self._sign(logo_id, owner_hash)}"

    def allows(self, logo: str, owner_hash: str) -> bool:
        """Whether `owner_hash`'s browser may use `logo`: a brand's, or granted to it."""
        found = GRANTED_LOGO.match(logo)
        if found is None:
            return False
        logo_id, signature = found.groups()
        if signature is None:
            return logo_id in self.public_ids
        return hmac.compare_digest(signature, self._sign(logo_id, owner_hash))

    def _sign(self, logo_id: str, owner_hash: str) -> str:
        message = GRANT_CONTEXT + f"{owner_hash}:{logo_id}".encode("ascii")
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def open_upload(upload: Image.Image | str | Path) -> Image.Image:
    """The uploaded picture at most KEPT_SIDE a side (flatten makes it RGB); refused with a sentence when it is not a
    picture or is too large to decode (mascot.prompt.pictures checks its header first and bounds the decodes at
    once)."""
    try:
        if isinstance(upload, Image.Image):
            return _shrunk(upload)
        with open_lazily(upload, "logo") as image:
            return _shrunk(image)
    except PictureRefused as error:
        raise LogoRefused(str(error)) from None


def _shrunk(image: Image.Image) -> Image.Image:
    """Decoded and shrunk inside one decode slot: the full-size pixels exist only there."""
    with decode_slot():
        decode(image, "logo", fit=KEPT_SIDE)
        # Converted before shrinking ("1" and "P" would shrink nearest-neighbour and lose their edges), to the
        # smallest mode that keeps the picture: a 1-bit logo as L takes a quarter of RGBA's memory.
        shrunk = image.convert(_working_mode(image))
        shrunk.thumbnail((KEPT_SIDE, KEPT_SIDE))
        return shrunk


def _working_mode(image: Image.Image) -> str:
    """RGBA where there is transparency, L for black and white or grey, RGB for the rest."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return "RGBA"
    return "L" if image.mode in ("1", "L") else "RGB"


def flatten(image: Image.Image) -> Image.Image:
    """RGB on white: transparent logos keep their shape instead of turning black."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, "white")
    return Image.alpha_composite(background, rgba).convert("RGB")


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
