"""Keeping the images folder and the database in step: missing files marked, thumbnails made, orphans swept."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import peewee

from mascot.store.files import ImageFiles
from mascot.store.schema import Tables, tuple_rows

logger = logging.getLogger(__name__)

# A file is written just before the row that claims it; another replica sharing the folder may be in that window.
ORPHAN_MIN_AGE_S = 3600.0
SQL_CHUNK = 500  # ids or paths per IN (...): well under SQLite's and PostgreSQL's parameter limits


@dataclass(frozen=True)
class FileCheck:
    """What a check of the images folder found and did."""

    missing: int  # rows whose image file is gone: marked, hidden from history and gallery
    restored: int  # rows marked missing whose file is back: shown again
    thumbnails_made: int  # rows without a usable thumbnail (older than thumbnails, or the file was lost)


class FileUpkeep:
    """The checks a store runs at start. Safe while other replicas serve: each step tolerates rows and files moving."""

    def __init__(self, database: peewee.Database, tables: Tables, files: ImageFiles) -> None:
        self.database = database
        self.tables = tables
        self.files = files

    def check_files(self) -> FileCheck:
        """Mark rows whose image file is missing (and unmark those whose file is back); make missing thumbnails."""
        image = self.tables.image
        rows = image.select(image.id, image.path, image.thumbnail, image.file_missing).tuples().iterator()
        missing: list[int] = []
        restored: list[int] = []
        thumbnails: dict[int, str] = {}
        for row_id, path, thumbnail, marked in rows:
            present = self.files.exists(path)
            if present == marked:
                (restored if present else missing).append(row_id)
            if present and (thumbnail is None or not self.files.exists(thumbnail)):
                made = self._remake_thumbnail(path)
                if made:
                    thumbnails[row_id] = made
        self._set_file_missing(missing, True)
        self._set_file_missing(restored, False)
        self._set_thumbnails(thumbnails)
        if missing:
            logger.warning(
                "%d images have lost their file: hidden from history and gallery until it is back.", len(missing)
            )
        if restored or thumbnails:
            logger.info("%d image files are back; %d thumbnails made.", len(restored), len(thumbnails))
        return FileCheck(missing=len(missing), restored=len(restored), thumbnails_made=len(thumbnails))

    def sweep_orphan_files(self, min_age_s: float = ORPHAN_MIN_AGE_S) -> int:
        """Remove images and thumbnails no row claims that are older than `min_age_s`; returns how many."""
        oldest_kept = time.time() - min_age_s
        candidates = [path for path, modified in self.files.stored_files() if modified <= oldest_kept]
        claimed = self._claimed(candidates)
        orphans = [path for path in candidates if path not in claimed]
        self.files.remove(orphans)
        if orphans:
            logger.info("Removed %d image files that no database row claims.", len(orphans))
        return len(orphans)

    def _remake_thumbnail(self, path: str) -> str | None:
        try:
            return self.files.remake_thumbnail(path)
        except (OSError, ValueError) as error:  # a damaged file: the page falls back to the full image
            logger.warning("Could not make a thumbnail of %s: %s", path, error)
            return None

    def _set_file_missing(self, row_ids: Sequence[int], missing: bool) -> None:
        image = self.tables.image
        for start in range(0, len(row_ids), SQL_CHUNK):
            with self.database.atomic():
                (
                    image
                    .update(file_missing=missing)
                    .where(image.id.in_(row_ids[start : start + SQL_CHUNK]))
                    .execute()
                )  # fmt: skip

    def _set_thumbnails(self, thumbnails: dict[int, str]) -> None:
        image, items = self.tables.image, list(thumbnails.items())
        for start in range(0, len(items), SQL_CHUNK):
            with self.database.atomic():
                for row_id, thumbnail in items[start : start + SQL_CHUNK]:
                    image.update(thumbnail=thumbnail).where(image.id == row_id).execute()

    def _claimed(self, relative_paths: Sequence[str]) -> set[str]:
        """The paths among `relative_paths` that some row claims, as its image or as its thumbnail."""
        image = self.tables.image
        claimed: set[str] = set()
        for column in (image.path, image.thumbnail):
            for start in range(0, len(relative_paths), SQL_CHUNK):
                rows = tuple_rows(
                    image
                    .select(column)
                    .where(column.in_(relative_paths[start : start + SQL_CHUNK]))
                )  # fmt: skip
                claimed.update(path for (path,) in rows)
        return claimed
