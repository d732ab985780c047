"""The daily quota and the one job in flight per browser, kept in the database so that every replica agrees."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import peewee

from mascot.schema import Tables, ensure_browser

# A claim is normally released within minutes; one this old belongs to a process that died, and may be taken over.
# A claim whose process stopped refreshing it (it crashed, or was restarted mid-job) frees itself this soon: the
# running app refreshes its claims every CLAIM_REFRESH_EVERY, so a long queue never makes a live claim stale.
JOB_STALE_AFTER = timedelta(minutes=3)
CLAIM_REFRESH_EVERY = timedelta(seconds=45)

ClaimOutcome = Literal["claimed", "job_in_flight", "over_quota"]


@dataclass(frozen=True)
class QuotaStatus:
    """Today's count for one browser: images saved, images its job in flight may add, what is left, when it resets.

    A day is a UTC calendar day; `resets_at` is the next 00:00 UTC, timezone-aware.
    """

    used: int
    limit: int
    in_flight: int
    remaining: int
    resets_at: datetime


@dataclass(frozen=True)
class ClaimResult:
    """The answer to "may this browser start a job of N images now?"; `claim_id` releases exactly this claim."""

    claimed: bool
    reason: ClaimOutcome
    quota: QuotaStatus
    claim_id: str | None = None

    @property
    def message(self) -> str:
        """Why a claim was refused, as a sentence for the person who asked ("" when it was granted)."""
        if self.reason == "job_in_flight":
            return "Your previous mascot is still being made: wait for it (or cancel it) before starting another."
        if self.reason == "over_quota":
            return over_quota_message(self.quota)
        return ""


def over_quota_message(quota: QuotaStatus) -> str:
    """What a person reads when a request would take them past today's quota."""
    when = f"at 00:00 UTC ({quota.resets_at:%Y-%m-%d})"
    if quota.remaining == 0:
        return f"You have made your {quota.limit} mascots for today. The quota resets {when}."
    return f"You have {quota.remaining} of {quota.limit} mascots left today: ask for fewer, or come back {when}."


def utc_day(now: datetime) -> date:
    """The UTC calendar day of `now` (naive times are UTC, as the database keeps them)."""
    return now.date()


def next_reset(now: datetime) -> datetime:
    """The next 00:00 UTC after `now`, timezone-aware."""
    return datetime.combine(utc_day(now) + timedelta(days=1), time(0), tzinfo=UTC)


class QuotaBook:
    """Reads and changes the quota columns of the browser table. Every `now` is naive UTC, passed in explicitly."""

    def __init__(self, database: peewee.Database, tables: Tables) -> None:
        self.database = database
        self.tables = tables

    def status(
        self, owner_hash: str, limit: int, now: datetime, stale_after: timedelta = JOB_STALE_AFTER
    ) -> QuotaStatus:
        """This browser's quota at `now`; a browser never seen has used nothing."""
        browser = self.tables.browser
        row = (
            browser
            .select(browser.quota_day, browser.quota_used, browser.job_started_at, browser.job_images)
            .where(browser.owner_hash == owner_hash)
            .tuples()
            .first()
        )  # fmt: skip
        if row is None:
            return _status(0, 0, limit, now)
        quota_day, quota_used, job_started_at, job_images = row
        used = quota_used if quota_day == utc_day(now) else 0
        live_job = job_started_at is not None and job_started_at >= now - stale_after
        return _status(used, job_images if live_job else 0, limit, now)

    def claim(
        self, owner_hash: str, images: int, limit: int, now: datetime, stale_after: timedelta = JOB_STALE_AFTER
    ) -> ClaimResult:
        """Claim the browser's one job slot for `images` images, in one conditional UPDATE; see ClaimResult."""
        browser = self.tables.browser
        claim_id = secrets.token_hex(16)
        with self.database.atomic():
            ensure_browser(self.tables, owner_hash, now)
            claimed = (
                browser
                .update(job_started_at=now, job_images=images, job_claim=claim_id)
                .where(browser.owner_hash == owner_hash)
                .where(browser.job_started_at.is_null() | (browser.job_started_at < now - stale_after))
                .where(self._used_on(utc_day(now)) + images <= limit)
                .execute()
            )  # fmt: skip
        quota = self.status(owner_hash, limit, now, stale_after)
        if claimed:
            return ClaimResult(claimed=True, reason="claimed", quota=quota, claim_id=claim_id)
        reason: ClaimOutcome = "job_in_flight" if quota.in_flight else "over_quota"
        return ClaimResult(claimed=False, reason=reason, quota=quota)

    def refresh(self, claim_ids: Sequence[str], now: datetime) -> int:
        """Mark these claims alive at `now`; returns how many were still held."""
        if not claim_ids:
            return 0
        browser = self.tables.browser
        query = (
            browser
            .update(job_started_at=now)
            .where(browser.job_claim.in_(list(claim_ids)))
        )  # fmt: skip
        with self.database.atomic():
            return query.execute()

    def release(self, owner_hash: str, claim_id: str | None = None) -> bool:
        """Free the browser's job slot (only `claim_id`'s claim, when given); True when a claim was freed."""
        browser = self.tables.browser
        query = (
            browser
            .update(job_started_at=None, job_images=0, job_claim=None)
            .where(browser.owner_hash == owner_hash)
            .where(browser.job_started_at.is_null(False))
        )  # fmt: skip
        if claim_id is not None:
            query = query.where(browser.job_claim == claim_id)
        with self.database.atomic():
            return query.execute() > 0

    def count_saved(self, browser_id: int, images: int, now: datetime) -> None:
        """Add saved images to today's count; call inside the transaction that saves them."""
        browser, today = self.tables.browser, utc_day(now)
        (
            browser
            .update(quota_used=self._used_on(today) + images, quota_day=today)
            .where(browser.id == browser_id)
            .execute()
        )  # fmt: skip

    def _used_on(self, day: date) -> peewee.Case:
        """SQL for "images saved on `day`": the stored count when it is that day's, else 0 (a new day began)."""
        browser = self.tables.browser
        return peewee.Case(None, [(browser.quota_day == day, browser.quota_used)], 0)


def _status(used: int, in_flight: int, limit: int, now: datetime) -> QuotaStatus:
    remaining = max(0, limit - used - in_flight)
    return QuotaStatus(used=used, limit=limit, in_flight=in_flight, remaining=remaining, resets_at=next_reset(now))
