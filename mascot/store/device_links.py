"""Use my mascots on another device: one-time device links, the browser keys (aliases) that opening one creates, and,
only when the opener asks for it, merging the opening browser's own mascots into the linked browser.

A browser is the sha256 of its cookie's token (mascot.web.identity). A browser key lets a second token hash stand for
an existing browser row; every action asks for "the owner" through `MascotStore.resolve_owner` (the service does),
which turns a token hash into the owner hash of the row it stands for (one indexed query, no cache: replicas share the
database). A device link is a bearer credential: only the sha256 of its code is stored, it expires after
LINK_VALID_FOR and works once.

A link can be sent by anyone, so opening one never hands the link's maker what the opener made before unless the
opener chooses to move it: by default the opener's own browser row stays as it was, out of sight while the browser
is linked, and comes back when it stops showing the other device's mascots (`stop_here`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import peewee

from mascot.store.likes import LikeBook
from mascot.store.quota import JOB_STALE_AFTER, used_on, utc_day
from mascot.store.schema import Tables, ensure_browser, find_browser, tuple_rows

CODE_BYTES = 24  # secrets.token_urlsafe(24): 192 random bits in 32 URL-safe characters
CODE_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
LINK_VALID_FOR = timedelta(minutes=15)
MAX_OPEN_LINKS = 5  # unexpired, unused links per browser

RedeemOutcome = Literal["joined", "already", "invalid", "job_in_flight", "retry"]
DisconnectOutcome = Literal["disconnected", "none", "job_in_flight"]
LinkState = Literal["open", "already", "invalid"]


class TooManyLinks(Exception):
    """The browser has MAX_OPEN_LINKS links that are still open."""


@dataclass(frozen=True)
class DeviceLinkCode:
    """A new link's code (shown once, to the browser that made it, never stored) and when it stops working."""

    code: str
    expires_at: datetime


@dataclass(frozen=True)
class Redemption:
    """What opening a device link did.

    "joined": this browser now stands for the link's browser; `moved_images` of its own mascots moved along (only
    when the opener chose to move them), `kept_images` stayed in its own row, out of sight until it stops showing the
    link's mascots, and `left_others` says it used to stand for another browser (which keeps its mascots and its other
    devices).
    "already": it already was that browser; nothing changed. "invalid": unknown, expired or used code.
    "job_in_flight": this browser's own mascot is being made; nothing changed. "retry": a concurrent change won;
    nothing changed and the code still works.
    """

    outcome: RedeemOutcome
    moved_images: int = 0
    left_others: bool = False
    kept_images: int = 0


@dataclass(frozen=True)
class Disconnection:
    """What "Disconnect the other devices" did: "disconnected" (`devices` browsers no longer show these mascots and
    `revoked_links` unused links stopped working), "none" (no other browser did and no link was open), "job_in_flight"
    (a mascot is being made for them; nothing changed)."""

    outcome: DisconnectOutcome
    devices: int = 0
    revoked_links: int = 0


@dataclass(frozen=True)
class OpenLink:
    """A device link that still works: when it was made and until when it works (its code is not kept)."""

    created_at: datetime
    expires_at: datetime


def new_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


def code_hash(code: str) -> str:
    """What the database keeps of a code."""
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def is_code(value: object) -> bool:
    """Whether `value` has a code's shape; anything else is answered "invalid" without asking the database."""
    return isinstance(value, str) and bool(CODE_PATTERN.fullmatch(value))


class DeviceBook:
    """Reads and changes the browser_key and device_link tables, and merges one browser row into another."""

    def __init__(self, database: peewee.Database, tables: Tables, likes: LikeBook) -> None:
        self.database = database
        self.tables = tables
        self.likes = likes

    def resolve(self, token_hash: str) -> str:
        """The owner hash `token_hash` stands for: its browser key's browser, else itself."""
        key, browser = self.tables.browser_key, self.tables.browser
        owner_hash = (
            key
            .select(browser.owner_hash)
            .join(browser)
            .where(key.token_hash == token_hash)
            .scalar()
        )  # fmt: skip
        return owner_hash or token_hash

    def other_devices(self, token_hash: str) -> int:
        """How many other browsers show the same mascots as this one: the browser row's keys, less this browser's
        own, plus the row's first browser when this one is not it. (Both come to the number of keys.) The first
        browser counts even while it shows another's mascots: it kept these apart, and takes them back when it stops
        showing those (stop_here)."""
        row = self._row_of(token_hash)
        if row is None:
            return 0
        key = self.tables.browser_key
        return key.select().where(key.browser == row).count()

    def disconnect_others(self, token_hash: str, now: datetime, likes_per_network: int) -> Disconnection:
        """Only this browser shows its mascots from now on. The keys of the others go; when this browser is itself
        a key, the browser row becomes its own (its owner hash is this token's), so the browser that first made the
        mascots stops showing them too."""
        key, browser = self.tables.browser_key, self.tables.browser
        with self.database.atomic():
            linked_row = key.select(key.browser).where(key.token_hash == token_hash).scalar()
            own_row = find_browser(self.tables, token_hash)
            if linked_row is None:
                if own_row is None:
                    return Disconnection("none")
                # A link made earlier would let a disconnected device (or whoever saw the link) straight back in.
                revoked = self._revoke_open_links(own_row)
                removed = key.delete().where(key.browser == own_row).execute()
                return Disconnection("disconnected", removed, revoked) if removed or revoked else Disconnection("none")
            # The row changes hands: a job being made for it would be saved under the owner hash it had, to a new,
            # unseen row. Wait for it, as opening a link does.
            if self._job_in_flight(linked_row, now):
                return Disconnection("job_in_flight")
            revoked = self._revoke_open_links(linked_row)
            # Its own row, kept apart when it opened the link (or written in a race with opening it): this browser
            # keeps both, and the other devices lose both.
            if own_row is not None:
                self._merge(own_row, linked_row, now, likes_per_network)
            others = key.delete().where(key.browser == linked_row).where(key.token_hash != token_hash).execute()
            key.delete().where(key.token_hash == token_hash).execute()
            browser.update(owner_hash=token_hash).where(browser.id == linked_row).execute()
            return Disconnection("disconnected", others + 1, revoked)

    def open_links(self, token_hash: str, now: datetime) -> list[OpenLink]:
        """The links this browser's mascots have that still work (made here or on a linked device), oldest first."""
        row = self._row_of(token_hash)
        if row is None:
            return []
        link = self.tables.device_link
        rows = tuple_rows(
            link
            .select(link.created_at, link.expires_at)
            .where(link.browser == row)
            .where(link.used_at.is_null())
            .where(link.expires_at > now)
            .order_by(link.created_at, link.id)
        )  # fmt: skip
        return [OpenLink(created_at, expires_at) for created_at, expires_at in rows]

    def revoke_links(self, token_hash: str) -> int:
        """Every unused link of this browser's mascots stops working; returns how many there were."""
        row = self._row_of(token_hash)
        return 0 if row is None else self._revoke_open_links(row)

    def _revoke_open_links(self, browser_id: int) -> int:
        """Delete the browser row's unused links (an expired one too: it is only clutter)."""
        link = self.tables.device_link
        return link.delete().where(link.browser == browser_id).where(link.used_at.is_null()).execute()

    def stop_here(self, token_hash: str) -> bool:
        """This browser stops showing the mascots of the browser it was linked to and is a new browser again; False
        when it was not linked (it is the browser that made them first, or shows nobody else's)."""
        key = self.tables.browser_key
        return key.delete().where(key.token_hash == token_hash).execute() > 0

    def _row_of(self, token_hash: str) -> int | None:
        """The browser row this token stands for: its key's, else its own; None for a browser that never wrote."""
        key = self.tables.browser_key
        linked = key.select(key.browser).where(key.token_hash == token_hash).scalar()
        return linked if linked is not None else find_browser(self.tables, token_hash)

    def make_link(self, token_hash: str, now: datetime) -> DeviceLinkCode:
        """A new one-time code for the browser row `token_hash` stands for (resolved here, once: an owner hash
        resolved again would follow that row's own token to wherever it is linked now); TooManyLinks when
        MAX_OPEN_LINKS are still open."""
        link = self.tables.device_link
        code = new_code()
        expires_at = now + LINK_VALID_FOR
        with self.database.atomic():
            # The upsert locks the browser row on PostgreSQL, so two requests count its open links in turn.
            browser_id = ensure_browser(self.tables, self.resolve(token_hash), now)
            link.delete().where(link.expires_at <= now).execute()  # spent or not, an expired code is only clutter
            open_links = (
                link
                .select()
                .where(link.browser == browser_id)
                .where(link.used_at.is_null())
                .count()
            )  # fmt: skip
            if open_links >= MAX_OPEN_LINKS:
                raise TooManyLinks
            link.insert(code_hash=code_hash(code), browser=browser_id, created_at=now, expires_at=expires_at).execute()
        return DeviceLinkCode(code, expires_at)

    def redeem(
        self, token_hash: str, code: str, now: datetime, likes_per_network: int, move_mascots: bool = False
    ) -> Redemption:
        """Make the browser `token_hash` stand for the code's browser, in one transaction. Its own mascots, likes and
        reports move over only with `move_mascots`; else they stay in its own row. Today's quota count always adds
        up, so that opening a link hands out no extra quota."""
        if not is_code(code):
            return Redemption("invalid")
        try:
            with self.database.atomic():
                return self._redeem(token_hash, code_hash(code), now, likes_per_network, move_mascots)
        except peewee.IntegrityError:  # another redemption by this browser inserted its key first
            return Redemption("retry")

    def _redeem(
        self, token_hash: str, hashed: str, now: datetime, likes_per_network: int, move_mascots: bool
    ) -> Redemption:
        link_table, key = self.tables.device_link, self.tables.browser_key
        link = (
            link_table
            .select(link_table.id, link_table.browser, link_table.used_at, link_table.expires_at)
            .where(link_table.code_hash == hashed)
            .first()
        )  # fmt: skip
        if link is None:
            return Redemption("invalid")
        target = link.browser_id
        aliased = key.select(key.browser).where(key.token_hash == token_hash).scalar()
        own = None if aliased is not None else find_browser(self.tables, token_hash)
        if target in (aliased, own):
            return Redemption("already")  # also a reload of a link already used here: nothing to do
        if link.used_at is not None or link.expires_at <= now:
            return Redemption("invalid")
        if own is not None and self._job_in_flight(own, now):
            return Redemption("job_in_flight")  # its images would be saved to a row that no longer exists
        if aliased is not None and self._job_in_flight(aliased, now):
            # Maybe this browser's own: claimed on the row it stands for, which it would no longer show (a device
            # of that row may have claimed it too: one mascot's wait either way).
            return Redemption("job_in_flight")
        if not self._spend(link.id, now):
            return Redemption("invalid")  # a concurrent redemption spent it first
        moved = kept = 0
        if own is not None and move_mascots:
            moved = self._merge(own, target, now, likes_per_network)
        elif own is not None:
            kept = self.own_images(token_hash)
            self._add_quota(own, target, now)
            # A link it made before would now join another device to a row this browser no longer shows.
            self._revoke_open_links(own)
        if aliased is not None:
            key.update(browser=target).where(key.token_hash == token_hash).execute()
        else:
            key.insert(token_hash=token_hash, browser=target, created_at=now).execute()
        return Redemption("joined", moved_images=moved, left_others=aliased is not None, kept_images=kept)

    def peek(self, token_hash: str, code: str, now: datetime) -> LinkState:
        """What opening the code would do, without doing it: "open" (it would join its browser), "already" (this
        browser already shows that browser's mascots) or "invalid" (unknown, expired or used)."""
        if not is_code(code):
            return "invalid"
        link = self.tables.device_link
        row = (
            link
            .select(link.browser, link.used_at, link.expires_at)
            .where(link.code_hash == code_hash(code))
            .first()
        )  # fmt: skip
        if row is None:
            return "invalid"
        if row.browser_id == self._row_of(token_hash):
            return "already"
        return "open" if row.used_at is None and row.expires_at > now else "invalid"

    def own_images(self, token_hash: str) -> int:
        """How many mascots the browser made in its own row (not those of a browser it is linked to)."""
        row = find_browser(self.tables, token_hash)
        if row is None:
            return 0
        generation, image = self.tables.generation, self.tables.image
        return (
            image
            .select()
            .join(generation)
            .where(generation.browser == row)
            .count()
        )  # fmt: skip

    def is_linked(self, token_hash: str) -> bool:
        """Whether this browser stands for another browser's row."""
        key = self.tables.browser_key
        return key.select().where(key.token_hash == token_hash).exists()

    def _job_in_flight(self, browser_id: int, now: datetime) -> bool:
        """Whether the browser holds a live job claim; on PostgreSQL also locks its row until the transaction ends,
        so a claim cannot slip in before the merge."""
        browser = self.tables.browser
        query = browser.select(browser.job_started_at).where(browser.id == browser_id)
        if isinstance(self.database, peewee.PostgresqlDatabase):
            query = query.for_update()
        started = query.scalar()
        return started is not None and started >= now - JOB_STALE_AFTER

    def _spend(self, link_id: int, now: datetime) -> bool:
        """Mark the link used, only if it still is unused and unexpired: of two redemptions at once, one wins."""
        link = self.tables.device_link
        spent = (
            link
            .update(used_at=now)
            .where(link.id == link_id)
            .where(link.used_at.is_null())
            .where(link.expires_at > now)
            .execute()
        )  # fmt: skip
        return spent == 1

    def _merge(self, source: int, target: int, now: datetime, likes_per_network: int) -> int:
        """Move everything of browser row `source` to `target`, then delete it; returns how many images moved."""
        tables = self.tables
        generation, image = tables.generation, tables.image
        moved = (
            image
            .select()
            .join(generation)
            .where(generation.browser == source)
            .count()
        )  # fmt: skip
        generation.update(browser=target).where(generation.browser == source).execute()
        self._move_likes(source, target, likes_per_network)
        self._move_reports(source, target)
        key = tables.browser_key
        key.update(browser=target).where(key.browser == source).execute()  # its other devices come along
        self._add_quota(source, target, now)
        tables.browser.delete().where(tables.browser.id == source).execute()  # its unused links go with it
        return moved

    def _move_likes(self, source: int, target: int, likes_per_network: int) -> None:
        """One like per browser per image: where both liked an image, the source's like goes and the image's fair
        count is taken again."""
        like = self.tables.like
        liked_by_target = like.select(like.image).where(like.browser == target)
        doubled = [
            image_id
            for (image_id,) in tuple_rows(
                like
                .select(like.image)
                .where(like.browser == source)
                .where(like.image.in_(liked_by_target))
            )
        ]  # fmt: skip
        if doubled:
            like.delete().where(like.browser == source).where(like.image.in_(doubled)).execute()
        like.update(browser=target).where(like.browser == source).execute()
        for image_id in doubled:
            self.likes.recount(image_id, likes_per_network)

    def _move_reports(self, source: int, target: int) -> None:
        """One report per browser per image, and never of one's own mascot: drop the source's reports that the
        target also made, and the reports either made of a mascot that is now the target's."""
        report, generation, image = self.tables.report, self.tables.generation, self.tables.image
        reported_by_target = report.select(report.image).where(report.browser == target)
        report.delete().where(report.browser == source).where(report.image.in_(reported_by_target)).execute()
        report.update(browser=target).where(report.browser == source).execute()
        owned = (
            image
            .select(image.id)
            .join(generation)
            .where(generation.browser == target)
        )  # fmt: skip
        report.delete().where(report.browser == target).where(report.image.in_(owned)).execute()

    def _add_quota(self, source: int, target: int, now: datetime) -> None:
        """Today's images of both count for the target, so that joining hands out no extra quota."""
        browser, today = self.tables.browser, utc_day(now)
        used = (
            browser
            .select(peewee.fn.SUM(used_on(browser, today)))
            .where(browser.id.in_([source, target]))
            .scalar()
        )  # fmt: skip
        if used:
            browser.update(quota_used=int(used), quota_day=today).where(browser.id == target).execute()
