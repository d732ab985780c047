"""What the pages show of a mascot: entry and page values, and the one query shape history and gallery share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import peewee

from mascot.prompt.request import GenerationRequest
from mascot.store.files import ImageFiles
from mascot.store.moderation import VISIBLE, moderation_note
from mascot.store.schema import ImageRow, Tables

# "top": most liked ever; "week": most liked in the last TOP_WINDOW; "liked": what the viewer liked, latest first
GallerySort = Literal["newest", "top", "week", "liked"]
TOP_WINDOW = timedelta(days=7)
MAX_PER_PAGE = 200
MAX_PAGE = 1_000_000  # keeps OFFSET a sane number whatever a client sends
CAPTION_CHARACTERS = 60
REQUEST_FIELDS = tuple(field.name for field in fields(GenerationRequest))


@dataclass(frozen=True)
class MascotEntry:
    """One image as a page shows it: its files, the request it was made from, and the viewer's view of it.

    `request` is the generation's request as it was submitted (its seed, its number of images); `seed` is this
    image's own seed, and `remix_request()` reproduces exactly this image.
    """

    image_id: int
    generation_id: int
    public_id: str
    path: Path
    thumbnail_path: Path | None  # None when no thumbnail could be made (a damaged file): show `path`
    request: GenerationRequest
    seed: int  # this image's own seed: the generation's seed + position
    position: int  # 0-based place in its generation
    model_name: str
    prompt_cut: str  # what the text encoder dropped past its token limit
    created_at: datetime  # timezone-aware UTC
    is_public: bool
    like_count: int
    liked_by_viewer: bool
    is_owner: bool  # the viewer made it: may make it private, delete it
    moderation: str = VISIBLE  # out of the gallery when set (see mascot.store.moderation); only its owner sees it then

    @property
    def prompt(self) -> str:
        """The idea: what a download is named after (export.Named, shared with store.PictureFiles)."""
        return self.request.prompt

    @property
    def caption(self) -> str:
        """The idea, shortened for a gallery tile."""
        return caption(self.request.prompt)

    @property
    def moderation_note(self) -> str:
        """What its owner reads about it being out of the gallery; "" when it is not."""
        return moderation_note(self.moderation)

    def remix_request(self) -> GenerationRequest:
        """This image's parameters with its own seed and one image: generating it again reproduces it."""
        return replace(self.request, seed=self.seed, num_images_per_prompt=1)


@dataclass(frozen=True)
class MascotPage:
    """One page of entries, with the total across all pages."""

    items: tuple[MascotEntry, ...]
    total: int
    page: int
    per_page: int
    has_next: bool


def check_page(page: int, per_page: int) -> None:
    """Refuse paging arguments out of range, naming the one that is."""
    if not 1 <= page <= MAX_PAGE:
        raise ValueError(f"page must be between 1 and {MAX_PAGE} (got {page}).")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE} (got {per_page}).")


def page_of(items: Sequence[MascotEntry], total: int, page: int, per_page: int) -> MascotPage:
    return MascotPage(items=tuple(items), total=total, page=page, per_page=per_page, has_next=page * per_page < total)


def listed(image: type[ImageRow]) -> peewee.Expression:
    """What the gallery lists: public images whose file is there and that moderation left alone. Equalities, so the
    gallery indexes apply."""
    return shown_to_all(image) & (image.file_missing == False)  # noqa: E712 - SQL, not Python truthiness


def shown_to_all(image: type[ImageRow]) -> peewee.Expression:
    """Public, and not taken out of the gallery after reports or by the operator: anyone may see it."""
    return (image.is_public == True) & (image.moderation == VISIBLE)  # noqa: E712


def one_visible(
    query: peewee.ModelSelect[ImageRow], tables: Tables, public_id: str, browser: Any
) -> dict[str, Any] | None:
    """The row of `query` for the image `public_id`, its file there, when anyone may see it or it is the `browser`'s
    own (a browser id, or SQL that finds one; None: no browser): the one visibility rule of every single-mascot read."""
    image, generation = tables.image, tables.generation
    visible = shown_to_all(image)
    if browser is not None:
        visible = visible | (generation.browser == browser)
    row: dict[str, Any] | None = (
        query
        .where(image.public_id == public_id)
        .where(image.file_missing == False)  # noqa: E712
        .where(visible)
        .dicts()
        .first()
    )  # fmt: skip
    return row


def entry_select(tables: Tables, viewer_id: int | None) -> peewee.ModelSelect[ImageRow]:
    """Images joined to their generation, with whether `viewer_id` liked each one; add where, order and paging."""
    image, generation, like = tables.image, tables.generation, tables.like
    query = (
        image
        .select(*_entry_columns(tables))
        .join(generation)
    )  # fmt: skip
    if viewer_id is None:
        return query
    # One LEFT JOIN on the like table's (browser, image) unique index: "did this viewer like it" costs no extra query.
    return (
        query
        .select_extend(like.id.alias("viewer_like_id"))
        .switch(image)
        .join(like, peewee.JOIN.LEFT_OUTER, on=((like.image == image.id) & (like.browser == viewer_id)))
    )  # fmt: skip


def _entry_columns(tables: Tables) -> list[peewee.Node]:
    image, generation = tables.image, tables.generation
    # The request's columns under their own names (a new parameter needs no line here); the image's own seed under
    # another, as the generation has a seed too.
    request_columns = [getattr(generation, name).alias(name) for name in REQUEST_FIELDS]
    return [
        image.id.alias("image_id"),
        image.generation.alias("generation_id"),
        image.public_id,
        image.path,
        image.thumbnail,
        image.seed.alias("image_seed"),
        image.position,
        image.is_public,
        image.moderation,
        image.like_count,
        image.created_at,
        generation.browser.alias("owner_id"),
        *request_columns,
        generation.model_name,
        generation.prompt_cut,
    ]


def entry_from_row(row: Mapping[str, Any], viewer_id: int | None, files: ImageFiles) -> MascotEntry:
    """An entry from one row of `entry_select(...).dicts()`, as `viewer_id` sees it."""
    return MascotEntry(
        image_id=row["image_id"],
        generation_id=row["generation_id"],
        public_id=row["public_id"],
        path=files.absolute(row["path"]),
        thumbnail_path=files.absolute(row["thumbnail"]) if row["thumbnail"] else None,
        request=GenerationRequest(**{name: row[name] for name in REQUEST_FIELDS}),
        seed=row["image_seed"],
        position=row["position"],
        model_name=row["model_name"],
        prompt_cut=row["prompt_cut"],
        created_at=row["created_at"].replace(tzinfo=UTC),
        is_public=bool(row["is_public"]),
        like_count=row["like_count"],
        liked_by_viewer=row.get("viewer_like_id") is not None,
        is_owner=viewer_id is not None and row["owner_id"] == viewer_id,
        moderation=row["moderation"],
    )


def caption(prompt: str) -> str:
    """The prompt, shortened for a gallery tile."""
    if len(prompt) <= CAPTION_CHARACTERS:
        return prompt
    return prompt[: CAPTION_CHARACTERS - 1].rstrip() + "…"
