"""What the picture routes ask of the database on every request: one mascot's files and download name, when the
asking browser may see it, in one query (not the whole mascot the page shows)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import peewee

from mascot.store.entries import one_visible
from mascot.store.files import ImageFiles
from mascot.store.schema import Tables


@dataclass(frozen=True)
class PictureFiles:
    """A mascot's picture as the routes need it: its files, and its share id and idea for the download name."""

    public_id: str
    prompt: str
    path: Path
    thumbnail_path: Path | None


def visible_picture(tables: Tables, files: ImageFiles, public_id: str, token_hash: str | None) -> PictureFiles | None:
    """The mascot's files when it is public and not taken down, or the browser's own (its device link resolved in the
    same query); None otherwise, and for a mascot whose file is missing."""
    image, generation = tables.image, tables.generation
    browser = _browser_of(tables, token_hash) if token_hash is not None else None
    query = image.select(image.public_id, image.path, image.thumbnail, generation.prompt).join(generation)
    row = one_visible(query, tables, public_id, browser)
    if row is None:
        return None
    thumbnail = files.absolute(row["thumbnail"]) if row["thumbnail"] else None
    return PictureFiles(row["public_id"], row["prompt"], files.absolute(row["path"]), thumbnail)


def _browser_of(tables: Tables, token_hash: str) -> peewee.Node:
    """The browser row a token stands for, as SQL: the one its device link joined it to, else its own (as
    DeviceBook.resolve decides, which costs a query of its own)."""
    key, browser = tables.browser_key, tables.browser
    return peewee.fn.COALESCE(
        key.select(key.browser).where(key.token_hash == token_hash),
        browser.select(browser.id).where(browser.owner_hash == token_hash),
    )
