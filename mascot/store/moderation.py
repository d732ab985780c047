"""Reports and moderation: one report per browser, hiding after reports from enough networks, the operator's tools."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import peewee

from mascot.store.files import ImageFiles
from mascot.store.schema import Tables, lock_image, tuple_rows

logger = logging.getLogger(__name__)

# What a person may say about a mascot; the key is stored and is the API's `reason`. "" says nothing.
REPORT_REASONS: dict[str, str] = {
    "offensive": "Offensive or hateful",
    "sexual": "Sexual content",
    "violence": "Violence",
    "spam": "Spam or other",
}
NO_REASON = ""

# mascot_image.moderation: "" leaves the mascot as its owner set it; the others keep it out of the gallery and its
# share link for everyone but its owner, whatever is_public says.
VISIBLE = ""
HIDDEN_AFTER_REPORTS = "reported"  # reports from enough networks; waits for the operator
TAKEN_DOWN = "taken_down"  # the operator's decision
HIDDEN_STATES = (HIDDEN_AFTER_REPORTS, TAKEN_DOWN)
NOTES = {
    HIDDEN_AFTER_REPORTS: "Hidden from the gallery after reports; the operator will review it.",
    TAKEN_DOWN: "Taken down from the gallery by the operator; only you can see it.",
}

# Rows one query of `ideas` reads: enough to keep round trips few, few enough that 100k mascots never sit in memory.
IDEAS_BATCH_SIZE = 500

ReportOutcome = Literal["reported", "already_reported", "own_mascot", "not_found"]


def moderation_note(state: str) -> str:
    """What the owner reads about their mascot's state ("" for a mascot as they set it)."""
    return NOTES.get(state, "")


def check_reason(reason: object) -> None:
    """Refuse a reason that is not one of REPORT_REASONS (or "" for none), naming the ones there are; what was sent
    is echoed only when it is short text (a client may send a list, or a megabyte)."""
    if isinstance(reason, str) and (reason == NO_REASON or reason in REPORT_REASONS):
        return
    known = ", ".join(repr(key) for key in REPORT_REASONS)
    got = f" (got {reason!r})" if isinstance(reason, str) and len(reason) <= 40 else ""
    raise ValueError(f"reason must be one of {known}, or '' for none{got}.")


@dataclass(frozen=True)
class ReportResult:
    """The answer to a report; `message` is the sentence for the person who sent it."""

    outcome: ReportOutcome

    @property
    def refused(self) -> bool:
        return self.outcome in ("own_mascot", "not_found")

    @property
    def message(self) -> str:
        # The reporter is never told whether the mascot left the gallery: that would show how many reports it takes.
        return {
            "reported": "Thank you for the report: the operator will look at this mascot.",
            "already_reported": "You reported this mascot already.",
            "own_mascot": "This is your own mascot: make it private or delete it instead of reporting it.",
            "not_found": "This mascot is private or was deleted.",
        }[self.outcome]


@dataclass(frozen=True)
class ReportedMascot:
    """One line of the operator's list: a mascot with reports, or one taken out of the gallery."""

    public_id: str
    reports: int
    reasons: dict[str, int]  # reason key ("" for none given) -> reports
    networks: int  # distinct networks among the reports: what the threshold counts
    moderation: str
    prompt: str
    path: Path
    created_at: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class StoredIdea:
    """A stored mascot and the idea it was made from, for checking ideas against the blocked-words file."""

    image_id: int
    public_id: str
    prompt: str  # the person's own words; the style and brand presets are the operator's and not part of it
    is_public: bool
    moderation: str
    file_missing: bool
    path: Path


class ModerationBook:
    """Reads and changes the report table and the moderation column of the image table."""

    def __init__(self, database: peewee.Database, tables: Tables, files: ImageFiles) -> None:
        self.database = database
        self.tables = tables
        self.files = files

    def report(
        self,
        image_id: int,
        browser_id: int,
        address_hash: str | None,
        reason: str,
        reports_to_hide: int,
        now: datetime,
    ) -> ReportResult:
        """Keep one report of this browser; hide the image once `reports_to_hide` networks reported it (0: never).

        Call inside the transaction that found the image visible to this browser and not its own.
        """
        report = self.tables.report
        if not self._lock_image(image_id):
            return ReportResult("not_found")  # deleted meanwhile
        added = (
            report
            .insert(image=image_id, browser=browser_id, address_hash=address_hash, reason=reason, created_at=now)
            .on_conflict_ignore()
            .as_rowcount()
            .execute()
        )  # fmt: skip
        if not added:
            return ReportResult("already_reported")
        networks = self.networks_reporting(image_id)
        if reports_to_hide and networks >= reports_to_hide:
            self._hide_after_reports(image_id, networks)
        return ReportResult("reported")

    def networks_reporting(self, image_id: int) -> int:
        """How many networks reported the image. Reports from an unknown address (no hash) do not count: anyone can
        send many of those with new cookies."""
        report = self.tables.report
        return (
            report
            .select(peewee.fn.COUNT(report.address_hash.distinct()))
            .where(report.image == image_id)
            .scalar()
        ) or 0  # fmt: skip

    def hide(self, public_id: str) -> bool:
        """Take the mascot out of the gallery now, reports or not; False when no mascot has this id."""
        image = self.tables.image
        with self.database.atomic():
            return (
                image
                .update(moderation=TAKEN_DOWN)
                .where(image.public_id == public_id)
                .execute()
            ) > 0  # fmt: skip

    def restore(self, public_id: str) -> bool:
        """Show the mascot as its owner set it again and clear its reports; False when no mascot has this id."""
        image = self.tables.image
        with self.database.atomic():
            # The image row first: its lock makes a report sent meanwhile wait, then count from a clean slate.
            restored = (
                image
                .update(moderation=VISIBLE)
                .where(image.public_id == public_id)
                .execute()
            )  # fmt: skip
            if not restored:
                return False
            image_id = image.select(image.id).where(image.public_id == public_id).scalar()
            self.delete_reports(image_id)
        return True

    def delete_reports(self, image_id: int) -> None:
        """Delete the image's reports; call inside the transaction that deletes or restores it."""
        report = self.tables.report
        report.delete().where(report.image == image_id).execute()

    def reported(self) -> list[ReportedMascot]:
        """Every mascot with reports or out of the gallery: most reported first, then newest first."""
        counts = self._report_counts()
        reasons = self._reason_counts()
        image, generation, report = self.tables.image, self.tables.generation, self.tables.report
        rows = tuple_rows(
            image
            .select(image.id, image.public_id, image.moderation, image.path, image.created_at, generation.prompt)
            .join(generation)
            .where(image.id.in_(report.select(report.image)) | image.moderation.in_(HIDDEN_STATES))
        )  # fmt: skip
        listed = [
            ReportedMascot(
                public_id=public_id,
                reports=counts.get(image_id, (0, 0))[0],
                reasons=reasons.get(image_id, {}),
                networks=counts.get(image_id, (0, 0))[1],
                moderation=moderation,
                prompt=prompt,
                path=self.files.absolute(path),
                created_at=created_at.replace(tzinfo=UTC),
            )
            for image_id, public_id, moderation, path, created_at, prompt in rows
        ]
        return sorted(listed, key=lambda item: (-item.reports, -item.created_at.timestamp(), item.public_id))

    def ideas(self, where: peewee.Expression, batch_size: int = IDEAS_BATCH_SIZE) -> Iterator[StoredIdea]:
        """The images `where` selects with their ideas, in id order, read `batch_size` rows a query. Keyset paging
        (id > the last one seen) rather than OFFSET: each query costs the same however far along, and an image the
        caller changes or deletes between batches neither shifts the rest nor is read twice."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be 1 or more (got {batch_size}).")
        after = 0
        while True:
            batch = self._ideas_after(where, after, batch_size)
            yield from batch
            if len(batch) < batch_size:
                return
            after = batch[-1].image_id

    def _ideas_after(self, where: peewee.Expression, after: int, limit: int) -> list[StoredIdea]:
        image, generation = self.tables.image, self.tables.generation
        rows = tuple_rows(
            image
            .select(
                image.id, image.public_id, generation.prompt, image.is_public, image.moderation, image.file_missing,
                image.path,
            )
            .join(generation)
            .where(where)
            .where(image.id > after)
            .order_by(image.id)
            .limit(limit)
        )  # fmt: skip
        # A list, not the cursor: the caller may write (hide) between batches, with nothing left open.
        return [
            StoredIdea(image_id, public_id, prompt, bool(public), moderation, bool(missing), self.files.absolute(path))
            for image_id, public_id, prompt, public, moderation, missing, path in rows
        ]

    def _report_counts(self) -> dict[int, tuple[int, int]]:
        """Reports and distinct networks per reported image."""
        report = self.tables.report
        query = tuple_rows(
            report
            .select(report.image, peewee.fn.COUNT(report.id), peewee.fn.COUNT(report.address_hash.distinct()))
            .group_by(report.image)
        )  # fmt: skip
        return {image_id: (reports, networks) for image_id, reports, networks in query}

    def _reason_counts(self) -> dict[int, dict[str, int]]:
        report = self.tables.report
        query = tuple_rows(
            report
            .select(report.image, report.reason, peewee.fn.COUNT(report.id))
            .group_by(report.image, report.reason)
            .order_by(report.image, peewee.fn.COUNT(report.id).desc(), report.reason)
        )  # fmt: skip
        reasons: dict[int, dict[str, int]] = {}
        for image_id, reason, count in query:
            reasons.setdefault(image_id, {})[reason] = count
        return reasons

    def _lock_image(self, image_id: int) -> bool:
        """On PostgreSQL, reports of one image take turns, so that each counts the networks of those before it (two
        at once would each miss the other's). SQLite's write transactions already take turns (schema.open_database).
        False when the image was deleted meanwhile."""
        return lock_image(self.database, self.tables, image_id)

    def _hide_after_reports(self, image_id: int, networks: int) -> None:
        image = self.tables.image
        hidden = (
            image
            .update(moderation=HIDDEN_AFTER_REPORTS)
            .where(image.id == image_id)
            .where(image.moderation == VISIBLE)  # the operator's take-down stays what it is
            .execute()
        )  # fmt: skip
        if hidden:
            logger.warning(
                "Mascot %s is out of the gallery after reports from %d networks; `python -m mascot.admin list`.",
                image.get_by_id(image_id).public_id,
                networks,
            )


def describe_reasons(reasons: dict[str, int]) -> str:
    """'offensive 2, no reason 1' for the operator."""
    return ", ".join(f"{reason or 'no reason'} {count}" for reason, count in reasons.items()) or "no reports"


def reason_choices() -> list[tuple[str, str]]:
    """The reasons as a dropdown offers them: (label, key), "no reason" first."""
    return [("No reason given", NO_REASON), *((label, key) for key, label in REPORT_REASONS.items())]
