"""Likes: one per browser per mascot, and the fair count the gallery shows and sorts by, a few likes per network.

A browser is a cookie and cookies are free, so a like count of browsers is a count of cleared cookies. Each like keeps
its liker's network (the keyed hash of clients.AddressKeys, as reports and the daily quota do), and a mascot's
`like_count` counts at most `likes_per_network` likes from any one network: a household or an office may hold a few
people, a person with a hundred cookies still counts as a few. The liker's own like toggles as before; only what it
adds to the count changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import peewee

from mascot.store.schema import LikeRow, Tables, lock_image


@dataclass(frozen=True)
class LikeState:
    """A mascot's likes as the viewer now sees them."""

    liked: bool
    like_count: int


class LikeBook:
    """Reads and changes the like table and the like_count column of the image table."""

    def __init__(self, database: peewee.Database, tables: Tables) -> None:
        self.database = database
        self.tables = tables

    def toggle(
        self, image_id: int, browser_id: int, address_hash: str | None, likes_per_network: int, now: datetime
    ) -> LikeState | None:
        """Like the image, or take this browser's like back, and store the image's fair count; None when the image
        was deleted meanwhile.

        Call inside the transaction that found the image visible to this browser.
        """
        # The count is recounted from the like rows rather than nudged by one: removing a counted like may let one
        # over the cap count, and a changed cap applies at the next like. Recounting needs the likes of those before
        # it, so likes of one image take turns (a row lock on PostgreSQL; two at once would each miss the other's).
        if not lock_image(self.database, self.tables, image_id):
            return None
        liked = not self._remove(image_id, browser_id)
        if liked:
            self._add(image_id, browser_id, address_hash, now)
        return LikeState(liked=liked, like_count=self._store_count(image_id, likes_per_network))

    def recount(self, image_id: int, likes_per_network: int) -> int:
        """Store the image's fair count again after its likes changed some other way (device_links' merge); call
        inside that transaction."""
        lock_image(self.database, self.tables, image_id)
        return self._store_count(image_id, likes_per_network)

    def _store_count(self, image_id: int, likes_per_network: int) -> int:
        count = self.fair_count(image_id, likes_per_network)
        image = self.tables.image
        image.update(like_count=count).where(image.id == image_id).execute()
        return count

    def recent_counts(self, since: datetime, likes_per_network: int) -> peewee.Select:
        """A subquery of (image_id, recent): each image's likes made since `since`, counted as fair_count counts
        them; images with none are not in it. The gallery's "Top this week" orders by it."""
        like = self.tables.like
        networks = (
            like
            .select(like.image.alias("image_id"), counted_per_network(like, likes_per_network).alias("counted"))
            .where(like.created_at >= since)
            .group_by(like.image, like.address_hash)
            .alias("recent_networks")
        )  # fmt: skip
        return (
            peewee.Select([networks], [networks.c.image_id, peewee.fn.SUM(networks.c.counted).alias("recent")])
            .group_by(networks.c.image_id)
            .alias("recent_likes")
        )  # fmt: skip

    def fair_count(self, image_id: int, likes_per_network: int) -> int:
        """The image's likes, at most `likes_per_network` from each network (0: all of them). Likes from an unknown
        address (no hash) count one each: they cannot be told apart, and refusing them would break direct local use
        (and every like made before networks were kept)."""
        like = self.tables.like
        groups = (
            like
            .select(counted_per_network(like, likes_per_network).alias("counted"))
            .where(like.image == image_id)
            .group_by(like.address_hash)
            .alias("networks")
        )  # fmt: skip
        total = (
            peewee.Select([groups], [peewee.fn.SUM(groups.c.counted)])
            .bind(self.database)
            .scalar()
        )  # fmt: skip
        return int(total or 0)

    def _remove(self, image_id: int, browser_id: int) -> int:
        like = self.tables.like
        return (
            like
            .delete()
            .where(like.browser == browser_id)
            .where(like.image == image_id)
            .execute()
        )  # fmt: skip

    def _add(self, image_id: int, browser_id: int, address_hash: str | None, now: datetime) -> None:
        """Insert the like; a concurrent request of the same browser that already did leaves it as it is."""
        like = self.tables.like
        (
            like
            .insert(browser=browser_id, image=image_id, address_hash=address_hash, created_at=now)
            .on_conflict_ignore()
            .execute()
        )  # fmt: skip


def counted_per_network(like: type[LikeRow], likes_per_network: int) -> peewee.ColumnBase:
    """For likes grouped by network: how many of the group count. At most `likes_per_network` (0: all); likes from
    an unknown address (no hash) each count."""
    per_network = peewee.fn.COUNT(like.id)
    if not likes_per_network:
        return per_network
    return peewee.Case(
        None,
        (
            (like.address_hash.is_null(), per_network),
            (per_network > likes_per_network, likes_per_network),
        ),
        per_network,
    )
