"""The daily quotas (per browser, per network) and the one job in flight per browser, kept in the database."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import peewee

from mascot.store.schema import AddressQuotaRow, BrowserRow, Tables, ensure_browser

# A claim is normally released within minutes; one this old belongs to a process that died, and may be taken over.
# A claim whose process stopped refreshing it (it crashed, or was restarted mid-job) frees itself this soon: the
# running app refreshes its claims every CLAIM_REFRESH_EVERY, so a long queue never makes a live claim stale.
JOB_STALE_AFTER = timedelta(minutes=3)
CLAIM_REFRESH_EVERY = timedelta(seconds=45)
# A claim id is this replica's tag (REPLICA_TAG_CHARS hex characters of a hash of its id) and a random part, in the
# 32 characters of the job_claim column: a restarted replica frees the claims with its tag at once (its jobs died
# with it), while another replica's live claims on the same database keep theirs.
REPLICA_TAG_CHARS = 8

ClaimOutcome = Literal["claimed", "job_in_flight", "over_quota", "over_address_quota"]


@dataclass(frozen=True)
class QuotaStatus:
    """Today's count for one browser (or one network): images saved, images its jobs in flight may add, what is left,
    when it resets.

    A day is a UTC calendar day; `resets_at` is the next 00:00 UTC, timezone-aware.
    """

    used: int
    limit: int
    in_flight: int
    remaining: int
    resets_at: datetime
    measured_at: datetime | None = field(default=None, compare=False)  # when counted: the reset is said from then


@dataclass(frozen=True)
class ClaimResult:
    """The answer to "may this browser start a job of N images now?"; `claim_id` releases exactly this claim."""

    claimed: bool
    reason: ClaimOutcome
    quota: QuotaStatus
    claim_id: str | None = None
    address_quota: QuotaStatus | None = None  # the network's, when the claim named one with a cap

    @property
    def message(self) -> str:
        """Why a claim was refused, as a sentence for the person who asked ("" when it was granted)."""
        if self.reason == "job_in_flight":
            return "Your previous mascot is still being made: wait for it (or cancel it) before starting another."
        if self.reason == "over_quota":
            return over_quota_message(self.quota)
        if self.reason == "over_address_quota" and self.address_quota is not None:
            return over_address_quota_message(self.address_quota)
        return ""


def reset_words(quota: QuotaStatus) -> str:
    """When the quota resets, for a person anywhere: how long from now (their own clock agrees), then the UTC time."""
    utc = f"00:00 UTC on {quota.resets_at:%Y-%m-%d}"
    if quota.measured_at is None:
        return f"at {utc}"
    return f"in {time_until(quota.resets_at, quota.measured_at)} ({utc})"


def time_until(moment: datetime, now: datetime) -> str:
    """'5 h 12 min' from now to moment, at least a minute."""
    minutes = max(1, int((moment - now).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def over_quota_message(quota: QuotaStatus) -> str:
    """What a person reads when a request would take them past today's quota."""
    when = reset_words(quota)
    if quota.remaining == 0:
        return f"You have made your {quota.limit} mascots for today. The quota resets {when}."
    return f"You have {quota.remaining} of {quota.limit} mascots left today: ask for fewer, or come back {when}."


def over_address_quota_message(quota: QuotaStatus) -> str:
    """What a person reads when a request would take their network (everyone behind their address) past its quota."""
    when = reset_words(quota)
    shared = "everyone on your internet connection shares them"
    if quota.remaining == 0:
        return f"Your network has made its {quota.limit} mascots for today ({shared}). The quota resets {when}."
    return (
        f"Your network has {quota.remaining} of its {quota.limit} mascots left today ({shared}): "
        f"ask for fewer, or come back {when}."
    )


def utc_day(now: datetime) -> date:
    """The UTC calendar day of `now` (naive times are UTC, as the database keeps them)."""
    return now.date()


def next_reset(now: datetime) -> datetime:
    """The next 00:00 UTC after `now`, timezone-aware."""
    return datetime.combine(utc_day(now) + timedelta(days=1), time(0), tzinfo=UTC)


class QuotaBook:
    """Reads and changes the quota columns of the browser table and the network counts of the address_quota table.

    Every `now` is naive UTC, passed in explicitly. A network is named by its keyed hash (clients.AddressKeys).
    """

    def __init__(self, database: peewee.Database, tables: Tables, replica_id: str = "") -> None:
        self.database = database
        self.tables = tables
        self.replica_tag = replica_tag(replica_id)

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

    def address_status(
        self, address_hash: str, limit: int, now: datetime, stale_after: timedelta = JOB_STALE_AFTER
    ) -> QuotaStatus:
        """This network's quota at `now`: what all its browsers saved today and have in flight; unseen: nothing."""
        address = self.tables.address
        used = (
            address
            .select(used_on(address, utc_day(now)))
            .where(address.address_hash == address_hash)
            .scalar()
        )  # fmt: skip
        in_flight = self._address_in_flight(address_hash, now, stale_after).scalar()
        return _status(int(used or 0), int(in_flight or 0), limit, now)

    def claim(
        self,
        owner_hash: str,
        images: int,
        limit: int,
        now: datetime,
        stale_after: timedelta = JOB_STALE_AFTER,
        *,
        address_hash: str | None = None,
        address_limit: int = 0,
    ) -> ClaimResult:
        """Claim the browser's one job slot for `images` images, in one conditional UPDATE; see ClaimResult.

        With `address_hash` the images also count toward that network's quota, capped at `address_limit` (0: no cap).
        """
        browser = self.tables.browser
        claim_id = self.replica_tag + secrets.token_hex(16 - REPLICA_TAG_CHARS // 2)
        capped_network = address_hash if address_limit > 0 else None
        with self.database.atomic():
            ensure_browser(self.tables, owner_hash, now)
            query = (
                browser
                .update(job_started_at=now, job_images=images, job_claim=claim_id, job_address_hash=address_hash)
                .where(browser.owner_hash == owner_hash)
                .where(browser.job_started_at.is_null() | (browser.job_started_at < now - stale_after))
                .where(used_on(browser, utc_day(now)) + images <= limit)
            )  # fmt: skip
            if capped_network is not None:
                self._open_address_day(capped_network, now)  # first: the lock, so the count below is the latest
                query = query.where(self._address_count(capped_network, now, stale_after) + images <= address_limit)
            claimed = query.execute()
        quota = self.status(owner_hash, limit, now, stale_after)
        address_quota = None
        if capped_network is not None:
            address_quota = self.address_status(capped_network, address_limit, now, stale_after)
        if claimed:
            return ClaimResult(
                claimed=True, reason="claimed", quota=quota, claim_id=claim_id, address_quota=address_quota
            )
        reason = _refusal(quota, address_quota, images)
        return ClaimResult(claimed=False, reason=reason, quota=quota, address_quota=address_quota)

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
            .update(job_started_at=None, job_images=0, job_claim=None, job_address_hash=None)
            .where(browser.owner_hash == owner_hash)
            .where(browser.job_started_at.is_null(False))
        )  # fmt: skip
        if claim_id is not None:
            query = query.where(browser.job_claim == claim_id)
        with self.database.atomic():
            return query.execute() > 0

    def release_replica(self) -> list[str]:
        """Free every claim this replica holds in the database: at start (claims its previous run left when it was
        killed) and at the end of a shutdown. Returns the owner hashes whose claims were freed."""
        browser = self.tables.browser
        mine = browser.job_claim.startswith(self.replica_tag)
        with self.database.atomic():
            owners = [row.owner_hash for row in browser.select(browser.owner_hash).where(mine)]
            browser.update(job_started_at=None, job_images=0, job_claim=None, job_address_hash=None).where(
                mine
            ).execute()
        return owners

    def count_saved(self, browser_id: int, images: int, now: datetime) -> None:
        """Add saved images to today's count; call inside the transaction that saves them."""
        browser, today = self.tables.browser, utc_day(now)
        (
            browser
            .update(quota_used=used_on(browser, today) + images, quota_day=today)
            .where(browser.id == browser_id)
            .execute()
        )  # fmt: skip

    def count_saved_for_address(self, address_hash: str, images: int, now: datetime) -> None:
        """Add saved images to the network's count for today; call inside the transaction that saves them."""
        address = self.tables.address
        self._open_address_day(address_hash, now)
        (
            address
            .update(quota_used=address.quota_used + images)
            .where(address.address_hash == address_hash)
            .execute()
        )  # fmt: skip

    def _open_address_day(self, address_hash: str, now: datetime) -> None:
        """Make the network's row count today (created at 0, or set back to 0 on a new day).

        An upsert that always updates: on PostgreSQL it holds the row's lock until the transaction ends, so two
        browsers of one network claim in turn and each sees the other's claim (SQLite's write transactions already
        take turns: see schema.open_database).
        """
        address, today = self.tables.address, utc_day(now)
        (
            address
            .insert(address_hash=address_hash, quota_day=today, quota_used=0)
            .on_conflict(
                conflict_target=[address.address_hash],
                update={address.quota_used: used_on(address, today), address.quota_day: today},
            )
            .execute()
        )  # fmt: skip

    def _address_in_flight(self, address_hash: str, now: datetime, stale_after: timedelta) -> peewee.Select:
        """SQL for the images the network's live claims may add (a stale claim holds nothing, as for a browser)."""
        browser = self.tables.browser
        return (
            browser
            .select(peewee.fn.COALESCE(peewee.fn.SUM(browser.job_images), 0))
            .where(browser.job_address_hash == address_hash)
            .where(browser.job_started_at >= now - stale_after)
        )  # fmt: skip

    def _address_count(self, address_hash: str, now: datetime, stale_after: timedelta) -> peewee.Expression:
        """SQL for the network's images today: saved by any of its browsers, plus those in flight."""
        address = self.tables.address
        saved = (
            address
            .select(used_on(address, utc_day(now)))
            .where(address.address_hash == address_hash)
        )  # fmt: skip
        return peewee.fn.COALESCE(saved, 0) + self._address_in_flight(address_hash, now, stale_after)


def replica_tag(replica_id: str) -> str:
    """The prefix of every claim id of the replica named `replica_id` (hex: no LIKE wildcard in it)."""
    return hashlib.sha256(replica_id.encode()).hexdigest()[:REPLICA_TAG_CHARS]


def used_on(table: type[BrowserRow | AddressQuotaRow], day: date) -> peewee.Case:
    """SQL for "images saved on `day`" of a browser or network row: its count when that is the day's, else 0."""
    return peewee.Case(None, [(table.quota_day == day, table.quota_used)], 0)


def _refusal(quota: QuotaStatus, address_quota: QuotaStatus | None, images: int) -> ClaimOutcome:
    """Why a claim was refused: the browser's own reasons first, the network's only when they do not apply."""
    if quota.in_flight:
        return "job_in_flight"
    if address_quota is None or images > quota.remaining:
        return "over_quota"
    return "over_address_quota"


def _status(used: int, in_flight: int, limit: int, now: datetime) -> QuotaStatus:
    remaining = max(0, limit - used - in_flight)
    return QuotaStatus(
        used=used,
        limit=limit,
        in_flight=in_flight,
        remaining=remaining,
        resets_at=next_reset(now),
        measured_at=now.replace(tzinfo=now.tzinfo or UTC),
    )
