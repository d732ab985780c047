"""The picture a request mixes in (its `logo`): an uploaded logo, or a mascot to start from ("More like this"),
which is read from the images folder when the job runs, only while the asking browser may still see it."""

from __future__ import annotations

from PIL import Image

from mascot.prompt.logos import KEPT_SIDE, LogoLibrary, LogoRefused
from mascot.prompt.request import based_on_mascot
from mascot.service import sentences
from mascot.store.store import MascotStore


class StartingPictures:
    """Opens a request's picture for the worker (`open(logo, owner_hash)`), checking a mascot's visibility then, not
    when More like this was pressed: a mascot made private or deleted in between is not used. Nothing is copied: the
    picture stays where only the checking routes serve it (the logos folder's pictures are shown on the page)."""

    def __init__(self, store: MascotStore, logos: LogoLibrary) -> None:
        self.store = store
        self.logos = logos

    def check(self, logo: str, owner_hash: str) -> None:
        """Raise LogoRefused, with the sentence, when `logo` names nothing this browser may use now."""
        share_id = based_on_mascot(logo)
        if share_id is None:
            if self.logos.path(logo) is None:
                raise LogoRefused(sentences.LOGO_GONE)
        elif self.store.mascot(share_id, owner_hash) is None:
            raise LogoRefused(sentences.BASED_ON_GONE)

    def open(self, logo: str, owner_hash: str) -> Image.Image:
        """The picture, RGB, at most KEPT_SIDE a side (the image encoder sees 224 px); raises LogoRefused."""
        share_id = based_on_mascot(logo)
        if share_id is None:
            return self.logos.open(logo)
        entry = self.store.mascot(share_id, owner_hash)
        if entry is None:
            raise LogoRefused(sentences.BASED_ON_GONE)
        with Image.open(entry.path) as stored:
            picture = stored.convert("RGB")
        picture.thumbnail((KEPT_SIDE, KEPT_SIDE))
        return picture
