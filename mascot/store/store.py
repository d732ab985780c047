"""The store: what the app asks of the database and the images folder, each query scoped by the asking browser."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path

import peewee
from playhouse.pool import PooledDatabase

from mascot.generation.generator import GeneratedImages, ModelInfo
from mascot.prompt.request import GenerationRequest
from mascot.settings import DATABASE_CONNECTIONS, DEFAULT_RULES, Rules
from mascot.store.connections import lends_connections, lent_connection
from mascot.store.device_links import (
    DeviceBook,
    DeviceLinkCode,
    Disconnection,
    LinkState,
    OpenLink,
    Redemption,
    TooManyLinks,
)
from mascot.store.entries import (
    MAX_PER_PAGE,
    TOP_WINDOW,
    GallerySort,
    MascotEntry,
    MascotPage,
    check_page,
    entry_from_row,
    entry_select,
    listed,
    one_visible,
    page_of,
    shown_to_all,
)
from mascot.store.faults import StoreUnavailable, check_space, check_writable, writes
from mascot.store.files import ImageFiles, StoredImage
from mascot.store.likes import LikeBook, LikeState
from mascot.store.migrations import migrate, schema_version
from mascot.store.moderation import (
    IDEAS_BATCH_SIZE,
    TAKEN_DOWN,
    VISIBLE,
    ModerationBook,
    ReportedMascot,
    ReportResult,
    StoredIdea,
    check_reason,
)
from mascot.store.pictures import PictureFiles, visible_picture
from mascot.store.quota import JOB_STALE_AFTER, ClaimResult, QuotaBook, QuotaStatus
from mascot.store.schema import (
    GenerationRow,
    ImageRow,
    Tables,
    as_stored_time,
    define_tables,
    dict_rows,
    ensure_browser,
    find_browser,
    open_database,
)
from mascot.store.search import MAX_SEARCH_CHARACTERS, matching, search_words
from mascot.store.upkeep import ORPHAN_MIN_AGE_S, FileCheck, FileUpkeep

logger = logging.getLogger(__name__)

# Queries keep peewee's one-clause-per-line layout; "# fmt: skip" stops the formatter from joining the clauses.

OWNER_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
PUBLIC_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{12}")  # secrets.token_urlsafe(9)

__all__ = [
    "MAX_PER_PAGE",
    "MAX_SEARCH_CHARACTERS",
    "ClaimResult",
    "DeviceLinkCode",
    "Disconnection",
    "FileCheck",
    "GallerySort",
    "LikeState",
    "MascotEntry",
    "MascotPage",
    "MascotStore",
    "OpenLink",
    "PictureFiles",
    "QuotaStatus",
    "Redemption",
    "ReportResult",
    "ReportedMascot",
    "SavedGeneration",
    "StoreUnavailable",
    "StoredIdea",
    "TooManyLinks",
]


@dataclass(frozen=True)
class SavedGeneration:
    """A generation as stored: its id, and its images' ids, share ids, absolute paths and thumbnails in seed order."""

    generation_id: int
    image_ids: tuple[int, ...]
    image_paths: tuple[Path, ...]
    public_ids: tuple[str, ...] = ()
    thumbnail_paths: tuple[Path, ...] = ()


@lends_connections  # each public method borrows a pooled connection on PostgreSQL (mascot.store.connections)
class MascotStore:
    """Browsers, their generations, images, likes, reports and quotas. Every query acting for a browser takes its
    owner hash; the operator's (moderation) take only a share id."""

    def __init__(
        self,
        database_url: str,
        images_dir: Path,
        *,
        upkeep: bool = True,
        rules: Rules = DEFAULT_RULES,
        replica_id: str = "",
        database_connections: int = DATABASE_CONNECTIONS,
    ) -> None:
        """Open (and migrate) the database; with `upkeep`, also check the images folder as the app does at start.
        `rules` are the house rules (quotas, likes per network, reports to hide) every query applies; a method's own
        limit argument, where it has one, is for tests and the operator. `replica_id` names this process's job claims
        (settings.replica_id), so that its next start can free them. On PostgreSQL the store opens at most
        `database_connections` connections."""
        self.rules = rules
        self.files = ImageFiles(images_dir)
        self.images_dir = self.files.root
        self.database = open_database(database_url, database_connections)
        self.tables = define_tables(self.database)
        with lent_connection(self.database):
            check_request_columns(self.tables)
            applied = migrate(self.database, self.tables)
        if applied:
            logger.info("Database schema now at version %d (applied %s).", applied[-1], applied)
        self.quotas = QuotaBook(self.database, self.tables, replica_id)
        self.moderation = ModerationBook(self.database, self.tables, self.files)
        self.likes = LikeBook(self.database, self.tables)
        self.upkeep = FileUpkeep(self.database, self.tables, self.files)
        self.devices = DeviceBook(self.database, self.tables, self.likes)
        if upkeep:
            self.check_files()
            self.sweep_orphan_files()

    def close(self) -> None:
        """Close this thread's connection (peewee keeps one per thread on SQLite), and on PostgreSQL the pool's idle
        ones: once no call is running, the server holds none for this store. Safe while other threads use it."""
        self.database.close()
        if isinstance(self.database, PooledDatabase):
            self.database.close_idle()

    @property
    def schema_version(self) -> int:
        """The latest migration applied to this database."""
        return schema_version(self.tables)

    def check_writable(self) -> None:
        """Raise unless a save could be written now (the health check): the database takes a write, and the images
        folder and a SQLite database's folder have room (faults.check_space)."""
        check_writable(self.database, self.tables.schema_version)
        folders = {self.images_dir}
        if isinstance(self.database, peewee.SqliteDatabase) and self.database.database != ":memory:":
            folders.add(Path(self.database.database).parent)
        for folder in folders:
            check_space(folder)

    # ---- saving -----------------------------------------------------------------------------------------------
    @writes
    def save_generation(
        self,
        owner_hash: str,
        request: GenerationRequest,
        result: GeneratedImages,
        model: ModelInfo,
        *,
        now: datetime | None = None,
        is_public: bool = True,
        address_hash: str | None = None,
    ) -> SavedGeneration:
        """Write the images and thumbnails, then their rows and today's quota counts in one transaction.

        On failure the files written are removed, unless the commit itself failed: its rows may have been committed
        all the same (the connection lost while the server's answer was on its way); files no row claims are
        removed by the sweep at the store's next start, once an hour old. The images count against the quota of
        `now`'s UTC day, the browser's and, with `address_hash`, its network's.
        """
        require_owner_hash(owner_hash)
        require_address_hash(address_hash)
        if not result.images or len(result.images) != len(result.seeds):
            raise ValueError(
                f"A generation needs one seed per image (got {len(result.images)} images, {len(result.seeds)} seeds)."
            )
        created_at = as_stored_time(now)
        parameters = [embedded_parameters(request, result, model, seed) for seed in result.seeds]
        stored = self.files.write_images(result.images, parameters, created_at)
        committing = False
        try:
            with self.database.atomic():
                browser_id = ensure_browser(self.tables, owner_hash, created_at)
                generation_id = self._insert_generation(browser_id, request, result, model, created_at)
                rows = self._insert_images(generation_id, result, stored, created_at, is_public)
                self.quotas.count_saved(browser_id, len(rows), created_at)
                if address_hash is not None:
                    self.quotas.count_saved_for_address(address_hash, len(rows), created_at)
                committing = True  # the block's last statement: what fails after it is the commit
        except BaseException:
            if not committing:  # rolled back: no row claims them
                self.files.remove([name for image in stored for name in (image.path, image.thumbnail)])
            raise
        return SavedGeneration(
            generation_id=generation_id,
            image_ids=tuple(row.id for row in rows),
            image_paths=tuple(self.files.absolute(image.path) for image in stored),
            public_ids=tuple(row.public_id for row in rows),
            thumbnail_paths=tuple(self.files.absolute(image.thumbnail) for image in stored),
        )

    # ---- reading ----------------------------------------------------------------------------------------------
    def history(self, owner_hash: str, *, page: int = 1, per_page: int = 24, search: str = "") -> list[MascotEntry]:
        """This browser's images, newest generation first (its images in seed order), one page of them; with a
        `search`, only those whose words match every word of it (see mascot.store.search)."""
        require_owner_hash(owner_hash)
        check_page(page, per_page)
        words = search_words(search)
        owner_id = find_browser(self.tables, owner_hash)
        if owner_id is None:
            return []
        image, generation = self.tables.image, self.tables.generation
        query = (
            entry_select(self.tables, owner_id)
            .where(generation.browser == owner_id)
            .where(image.file_missing == False)  # noqa: E712 - SQL, not Python truthiness
            .order_by(generation.created_at.desc(), generation.id.desc(), image.position)
            .paginate(page, per_page)
        )  # fmt: skip
        return [entry_from_row(row, owner_id, self.files) for row in dict_rows(self._searched(query, words))]

    def count_history(self, owner_hash: str, *, search: str = "") -> int:
        """How many images this browser has (those whose file is missing left out, as `history` leaves them out)
        that match `search`."""
        require_owner_hash(owner_hash)
        words = search_words(search)
        owner_id = find_browser(self.tables, owner_hash)
        if owner_id is None:
            return 0
        image, generation = self.tables.image, self.tables.generation
        query = (
            image
            .select(peewee.fn.COUNT(image.id))
            .join(generation)
            .where(generation.browser == owner_id)
            .where(image.file_missing == False)  # noqa: E712
        )  # fmt: skip
        return self._searched(query, words).scalar()

    def history_page(self, owner_hash: str, *, page: int = 1, per_page: int = 24, search: str = "") -> MascotPage:
        """`history` with its total, for a pager."""
        items = self.history(owner_hash, page=page, per_page=per_page, search=search)
        return page_of(items, self.count_history(owner_hash, search=search), page, per_page)

    def gallery(
        self,
        viewer_owner_hash: str | None,
        *,
        page: int = 1,
        per_page: int = 24,
        sort: GallerySort = "newest",
        search: str = "",
        now: datetime | None = None,
        likes_per_network: int | None = None,
    ) -> MascotPage:
        """Everyone's public mascots, newest first, most liked first or most liked in the week before `now` (ties
        newest first; a week's likes counted at most `likes_per_network` per network, as like_count is), or only
        those the viewer liked, most recently liked first; one page of them; with a `search`, only those whose words
        match every word of it (see mascot.store.search)."""
        viewer_id = self._viewer(viewer_owner_hash)
        check_page(page, per_page)
        likes_per_network = self._rule(likes_per_network, self.rules.likes_per_network)
        words = search_words(search)
        order = self._gallery_order(sort)
        liker_id = viewer_id if sort == "liked" else None
        if sort == "liked" and viewer_id is None:
            return page_of([], 0, page, per_page)  # a browser without a row has liked nothing
        query = (
            entry_select(self.tables, viewer_id)
            .where(listed(self.tables.image))
            .order_by(*order)
            .paginate(page, per_page)
        )  # fmt: skip
        if liker_id is not None:
            # The viewer's like is already LEFT JOINed (entry_select); requiring it makes that an inner join on the
            # like table's (browser, image) index.
            query = query.where(self.tables.like.browser == liker_id)
        if sort == "week":
            image = self.tables.image
            recent = self.likes.recent_counts(as_stored_time(now) - TOP_WINDOW, likes_per_network)
            query = query.join_from(image, recent, peewee.JOIN.LEFT_OUTER, on=(recent.c.image_id == image.id))
            query = query.order_by(peewee.fn.COALESCE(recent.c.recent, 0).desc(), *order)
        items = [entry_from_row(row, viewer_id, self.files) for row in dict_rows(self._searched(query, words))]
        return page_of(items, self._count_listed(words, liker_id), page, per_page)

    def count_gallery(self, *, search: str = "", liked_by: str | None = None) -> int:
        """How many mascots the gallery lists (that match `search`; with `liked_by`, of those that browser liked)."""
        words = search_words(search)
        if liked_by is None:
            return self._count_listed(words, None)
        liker_id = self._viewer(liked_by)
        return 0 if liker_id is None else self._count_listed(words, liker_id)

    def mascot(self, public_id: str, viewer_owner_hash: str | None) -> MascotEntry | None:
        """One mascot by its share id: a public one for anyone, a private or moderated one for its owner only; else
        None."""
        viewer_id = self._viewer(viewer_owner_hash)
        if not is_public_id(public_id):
            return None
        row = one_visible(entry_select(self.tables, viewer_id), self.tables, public_id, viewer_id)
        return None if row is None else entry_from_row(row, viewer_id, self.files)

    def visible_picture(self, public_id: str, token_hash: str | None) -> PictureFiles | None:
        """What the picture routes need, on every request: the mascot's files when the browser with `token_hash` (its
        own, not resolved: the query resolves linked devices) may see it now; else None. One light query."""
        if not is_public_id(public_id):
            return None
        if token_hash is not None:
            require_owner_hash(token_hash)
        return visible_picture(self.tables, self.files, public_id, token_hash)

    def public_mascot(self, public_id: str) -> MascotEntry | None:
        """One mascot by its share id when everyone may see it (public, not taken down by moderation); else None."""
        return self.mascot(public_id, None)

    # ---- changing one's own mascots ---------------------------------------------------------------------------
    @writes
    def set_public(self, owner_hash: str, public_id: str, is_public: bool) -> bool:
        """Show the mascot in the gallery or hide it; False when it is not this browser's (or does not exist), or
        when it would be shown while moderation keeps it out of the gallery (`mascot(...).moderation` says)."""
        require_owner_hash(owner_hash)
        if not is_public_id(public_id):
            return False
        image = self.tables.image
        query = (
            image
            .update(is_public=bool(is_public))
            .where(image.public_id == public_id)
            .where(image.generation.in_(self._generations_of(owner_hash)))
        )  # fmt: skip
        if is_public:
            query = query.where(image.moderation == VISIBLE)  # only the operator's restore brings it back
        with self.database.atomic():
            changed = query.execute()
        return changed > 0

    @writes
    def delete_mascot(self, owner_hash: str, public_id: str) -> bool:
        """Delete the mascot (row, likes, reports, image and thumbnail files; its generation when it was the last
        image).

        False, and nothing changed, when it is not this browser's.
        """
        require_owner_hash(owner_hash)
        if not is_public_id(public_id):
            return False
        owned = self.tables.image.generation.in_(self._generations_of(owner_hash))
        return self._delete_image(self._image_row(public_id).where(owned))

    # ---- likes ------------------------------------------------------------------------------------------------
    @writes
    def toggle_like(
        self,
        owner_hash: str,
        public_id: str,
        *,
        address_hash: str | None = None,
        likes_per_network: int | None = None,
        now: datetime | None = None,
    ) -> LikeState | None:
        """Like the mascot, or take the like back; None when this browser cannot see it (private, gone, unknown).

        The like keeps the liker's network (`address_hash`, clients.AddressKeys; None when unknown), and the mascot's
        like_count counts at most `likes_per_network` likes per network (0: all), likes without one each
        (mascot.store.likes). The like row and the count change in one transaction, so the count stays exact.
        """
        require_owner_hash(owner_hash)
        require_address_hash(address_hash)
        likes_per_network = self._rule(likes_per_network, self.rules.likes_per_network)
        if not is_public_id(public_id):
            return None
        moment = as_stored_time(now)
        with self.database.atomic():
            browser_id = ensure_browser(self.tables, owner_hash, moment)
            found = self._visible_image(public_id, browser_id)
            if found is None:
                return None
            return self.likes.toggle(found[0], browser_id, address_hash, likes_per_network, moment)

    # ---- reports and moderation -------------------------------------------------------------------------------
    @writes
    def report_mascot(
        self,
        owner_hash: str,
        public_id: str,
        reason: str = "",
        *,
        address_hash: str | None = None,
        reports_to_hide: int | None = None,
        now: datetime | None = None,
    ) -> ReportResult:
        """Report a mascot this browser can see and did not make, once; `reason` is a key of REPORT_REASONS or "".

        Once `reports_to_hide` distinct networks (`address_hash`, clients.AddressKeys) reported it, it leaves the
        gallery and its share link for all but its owner until the operator restores it (0: never). A report
        without a network is kept and listed, but never counts toward that.
        """
        require_owner_hash(owner_hash)
        require_address_hash(address_hash)
        check_reason(reason)
        reports_to_hide = self._rule(reports_to_hide, self.rules.reports_to_hide)
        if not is_public_id(public_id):
            return ReportResult("not_found")
        moment = as_stored_time(now)
        with self.database.atomic():
            browser_id = ensure_browser(self.tables, owner_hash, moment)
            found = self._visible_image(public_id, browser_id)
            if found is None:
                return ReportResult("not_found")
            image_id, owner_id = found
            if owner_id == browser_id:
                return ReportResult("own_mascot")
            return self.moderation.report(image_id, browser_id, address_hash, reason, reports_to_hide, moment)

    def reported_mascots(self) -> list[ReportedMascot]:
        """The operator's list: mascots with reports or out of the gallery, most reported first."""
        return self.moderation.reported()

    def hide_mascot(self, public_id: str) -> bool:
        """The operator takes a mascot out of the gallery, reports or not; False when no mascot has this id."""
        return is_public_id(public_id) and self.moderation.hide(public_id)

    def restore_mascot(self, public_id: str) -> bool:
        """The operator shows a mascot as its owner set it again and clears its reports; False for an unknown id."""
        return is_public_id(public_id) and self.moderation.restore(public_id)

    def delete_mascot_as_operator(self, public_id: str) -> str | None:
        """The operator deletes a mascot as its owner's delete does; returns the owner hash of the browser row that
        made it (whose downloads, which hold its picture, go too: mascot.admin), None when no mascot has this id."""
        if not is_public_id(public_id):
            return None
        image, generation, browser = self.tables.image, self.tables.generation, self.tables.browser
        made_by = (
            image
            .select(browser.owner_hash)
            .join(generation)
            .join(browser)
            .where(image.public_id == public_id)
            .scalar()
        )  # fmt: skip
        return made_by if self._delete_image(self._image_row(public_id)) else None

    def stored_ideas(
        self, *, in_gallery: bool, taken_down: bool = True, batch_size: int = IDEAS_BATCH_SIZE
    ) -> Iterator[StoredIdea]:
        """Every mascot the gallery lists (`in_gallery`), or every other one (private, moderated, file missing), with
        its idea, in id order, `batch_size` rows a query; `taken_down=False` leaves out the operator's take-downs."""
        image = self.tables.image
        where = listed(image) if in_gallery else ~listed(image)
        if not taken_down:
            where = where & (image.moderation != TAKEN_DOWN)
        yield from self.moderation.ideas(where, batch_size)  # a generator: it holds its connection while iterated

    # ---- quota and the one job in flight ----------------------------------------------------------------------
    def quota(self, owner_hash: str, limit: int | None = None, now: datetime | None = None) -> QuotaStatus:
        """Today's (UTC) quota of this browser: used, in flight, remaining of `limit` (the rules' daily_quota), and
        when it resets."""
        require_owner_hash(owner_hash)
        limit = self._rule(limit, self.rules.daily_quota)
        return self.quotas.status(owner_hash, limit, as_stored_time(now))

    def address_quota(self, address_hash: str, limit: int | None = None, now: datetime | None = None) -> QuotaStatus:
        """Today's (UTC) quota of this network, shared by all its browsers: used, in flight, remaining of `limit`
        (the rules' address_daily_quota)."""
        require_address_hash(address_hash)
        limit = self._rule(limit, self.rules.address_daily_quota)
        return self.quotas.address_status(address_hash, limit, as_stored_time(now))

    @writes
    def claim_job(
        self,
        owner_hash: str,
        images: int,
        limit: int | None = None,
        now: datetime | None = None,
        *,
        stale_after: timedelta = JOB_STALE_AFTER,
        address_hash: str | None = None,
        address_limit: int | None = None,
    ) -> ClaimResult:
        """Claim this browser's one job slot for `images` images, refused while another job of it is in flight
        (unless that claim is older than `stale_after`) or when today's saved images + `images` exceed `limit` (the
        rules' daily_quota).

        With `address_hash` (clients.AddressKeys), also refused when the network's images today (saved and in
        flight, from any browser) + `images` exceed `address_limit` (the rules' address_daily_quota); 0 counts them
        without a cap. Call `release_job` when the job ends, whatever the outcome, after its images are saved with
        the same hash.
        """
        require_owner_hash(owner_hash)
        require_address_hash(address_hash)
        limit = self._rule(limit, self.rules.daily_quota)
        address_limit = self._rule(address_limit, self.rules.address_daily_quota)
        if images < 1:
            raise ValueError(f"images must be at least 1 (got {images}).")
        return self.quotas.claim(
            owner_hash,
            images,
            limit,
            as_stored_time(now),
            stale_after,
            address_hash=address_hash,
            address_limit=address_limit,
        )

    def refresh_job_claims(self, claim_ids: Sequence[str], now: datetime | None = None) -> int:
        """Keep the claims of jobs still queued or running alive (see quota.JOB_STALE_AFTER)."""
        return self.quotas.refresh(claim_ids, as_stored_time(now))

    @writes
    def release_job(self, owner_hash: str, claim_id: str | None = None) -> bool:
        """Free this browser's job slot (only the claim `claim_id`, when given); True when a claim was freed."""
        require_owner_hash(owner_hash)
        return self.quotas.release(owner_hash, claim_id)

    def release_replica_claims(self) -> list[str]:
        """Free every job claim of this replica (its replica_id): at start, its dead run's; at the end of a drain,
        any left. Returns the owner hashes whose claims were freed."""
        return self.quotas.release_replica()

    # ---- one person, several devices (device_links.py) ---------------------------------------------------------
    def resolve_owner(self, token_hash: str) -> str:
        """The owner hash a browser's token hash stands for: the browser it was linked to, else itself."""
        require_owner_hash(token_hash)
        return self.devices.resolve(token_hash)

    @writes
    def make_device_link(self, token_hash: str, now: datetime | None = None) -> DeviceLinkCode:
        """A one-time code (valid devices.LINK_VALID_FOR) that makes another browser show what this browser (its own
        token hash, not resolved) shows; only its hash is stored. Raises TooManyLinks when devices.MAX_OPEN_LINKS of
        that browser row's codes are still open."""
        require_owner_hash(token_hash)
        return self.devices.make_link(token_hash, as_stored_time(now))

    def other_devices(self, token_hash: str) -> int:
        """How many other browsers show the mascots this browser (its own token hash) shows."""
        require_owner_hash(token_hash)
        return self.devices.other_devices(token_hash)

    @writes
    def disconnect_other_devices(self, token_hash: str, *, now: datetime | None = None) -> Disconnection:
        """Only this browser (its own token hash) shows its mascots from now on; see devices.Disconnection."""
        require_owner_hash(token_hash)
        return self.devices.disconnect_others(token_hash, as_stored_time(now), self.rules.likes_per_network)

    @writes
    def stop_showing_here(self, token_hash: str) -> bool:
        """This browser (its own token hash) no longer stands for the browser it was linked to; False if it was not
        linked."""
        require_owner_hash(token_hash)
        return self.devices.stop_here(token_hash)

    @writes
    def redeem_device_link(
        self,
        token_hash: str,
        code: str,
        *,
        now: datetime | None = None,
        move_mascots: bool = False,
    ) -> Redemption:
        """Make the browser `token_hash` (its own hash, not the one it resolves to) stand for the code's browser.
        Its own mascots, likes and reports move there only with `move_mascots` (the opener's explicit choice: a link
        can come from anyone); else they stay apart and come back when it stops showing the link's mascots. See
        devices.Redemption."""
        require_owner_hash(token_hash)
        if not isinstance(move_mascots, bool):
            raise ValueError(f"move_mascots must be true or false (got {move_mascots!r}).")
        return self.devices.redeem(token_hash, code, as_stored_time(now), self.rules.likes_per_network, move_mascots)

    def peek_device_link(self, token_hash: str, code: str, now: datetime | None = None) -> LinkState:
        """What opening `code` in this browser would do ("open", "already", "invalid"); changes nothing."""
        require_owner_hash(token_hash)
        return self.devices.peek(token_hash, code, as_stored_time(now))

    def own_mascot_count(self, token_hash: str) -> int:
        """How many mascots this browser made in its own row: what opening a link would move if asked to."""
        require_owner_hash(token_hash)
        return self.devices.own_images(token_hash)

    def is_linked_device(self, token_hash: str) -> bool:
        """Whether this browser shows another browser's mascots (it opened a device link)."""
        require_owner_hash(token_hash)
        return self.devices.is_linked(token_hash)

    def open_device_links(self, token_hash: str, now: datetime | None = None) -> list[OpenLink]:
        """The device links of this browser's mascots that still work, oldest first."""
        require_owner_hash(token_hash)
        return self.devices.open_links(token_hash, as_stored_time(now))

    def revoke_device_links(self, token_hash: str) -> int:
        """Every unused device link of this browser's mascots stops working; returns how many."""
        require_owner_hash(token_hash)
        return self.devices.revoke_links(token_hash)

    # ---- the images folder ------------------------------------------------------------------------------------
    def check_files(self) -> FileCheck:
        """Mark rows whose image file is missing (and unmark those whose file is back); make missing thumbnails."""
        return self.upkeep.check_files()

    def sweep_orphan_files(self, *, min_age_s: float = ORPHAN_MIN_AGE_S) -> int:
        """Remove images and thumbnails no row claims that are older than `min_age_s`; returns how many."""
        return self.upkeep.sweep_orphan_files(min_age_s)

    # ---- helpers ----------------------------------------------------------------------------------------------
    @staticmethod
    def _rule(override: int | None, rule: int) -> int:
        """A house rule, or the limit a test or the operator passed instead; checked either way."""
        limit = rule if override is None else override
        check_limit(limit)
        return limit

    def _searched(self, query: peewee.ModelSelect[ImageRow], words: tuple[str, ...]) -> peewee.ModelSelect[ImageRow]:
        """`query` (images joined to their generation) narrowed to the search's `words`; as it was for none."""
        return query.where(matching(self.tables, words)) if words else query

    def _gallery_order(self, sort: GallerySort) -> list[peewee.Ordering]:
        """The ORDER BY of a gallery sort; refuses any other, naming the parameter."""
        image, like = self.tables.image, self.tables.like
        orders = {
            "newest": [image.created_at.desc(), image.id.desc()],
            "top": [image.like_count.desc(), image.created_at.desc(), image.id.desc()],
            "week": [image.created_at.desc(), image.id.desc()],  # after the week's likes: see gallery
            "liked": [like.created_at.desc(), like.id.desc()],
        }
        if sort not in orders:
            raise ValueError(f"sort must be 'newest', 'top', 'week' or 'liked' (got {sort!r}).")
        return orders[sort]

    def _count_listed(self, words: tuple[str, ...], liker_id: int | None) -> int:
        """How many mascots the gallery lists that match `words`; with `liker_id`, only those that browser liked."""
        image, generation, like = self.tables.image, self.tables.generation, self.tables.like
        query = (
            image
            .select(peewee.fn.COUNT(image.id))
            .where(listed(image))
        )  # fmt: skip
        if liker_id is not None:
            query = query.join(like, on=((like.image == image.id) & (like.browser == liker_id)))
        if words:  # only a search needs the words, which live on the generation
            query = query.switch(image).join(generation)
        return self._searched(query, words).scalar()

    def _viewer(self, viewer_owner_hash: str | None) -> int | None:
        """The viewer's browser id; None for an anonymous viewer or one that never wrote anything."""
        if viewer_owner_hash is not None:
            require_owner_hash(viewer_owner_hash)
        return find_browser(self.tables, viewer_owner_hash)

    def _generations_of(self, owner_hash: str) -> peewee.ModelSelect[GenerationRow]:
        generation, browser = self.tables.generation, self.tables.browser
        return (
            generation
            .select(generation.id)
            .join(browser)
            .where(browser.owner_hash == owner_hash)
        )  # fmt: skip

    def _image_row(self, public_id: str) -> peewee.ModelSelect[ImageRow]:
        """What deleting the image needs to know of it; add conditions."""
        image = self.tables.image
        return (
            image
            .select(image.id, image.generation, image.path, image.thumbnail)
            .where(image.public_id == public_id)
        )  # fmt: skip

    def _delete_image(self, image_row: peewee.ModelSelect[ImageRow]) -> bool:
        """Delete the image `image_row` finds: its likes, reports and row (and its generation when it was the last
        image) in one transaction, then its files. False, and nothing changed, when it finds none."""
        image, like, generation = self.tables.image, self.tables.like, self.tables.generation
        with self.database.atomic():
            row = image_row.first()
            if row is None:
                return False
            like.delete().where(like.image == row.id).execute()
            self.moderation.delete_reports(row.id)
            image.delete().where(image.id == row.id).execute()
            if not image.select().where(image.generation == row.generation_id).exists():
                generation.delete().where(generation.id == row.generation_id).execute()
        # After the commit: a crash in between leaves files no row claims, which the next sweep removes.
        self.files.remove([name for name in (row.path, row.thumbnail) if name])
        return True

    def _visible_image(self, public_id: str, browser_id: int) -> tuple[int, int] | None:
        """The image's id and its owner's browser id when this browser may see it: shown to all, or its own; never
        one whose file is missing."""
        image, generation = self.tables.image, self.tables.generation
        return (
            image
            .select(image.id, generation.browser)
            .join(generation)
            .where(image.public_id == public_id)
            .where(image.file_missing == False)  # noqa: E712
            .where(shown_to_all(image) | (generation.browser == browser_id))
            .tuples()
            .first()
        )  # fmt: skip

    def _insert_generation(
        self,
        browser_id: int,
        request: GenerationRequest,
        result: GeneratedImages,
        model: ModelInfo,
        created_at: datetime,
    ) -> int:
        row = self.tables.generation.create(
            browser=browser_id,
            **request.as_dict(),
            prompt_cut=result.prompt.cut,
            negative_prompt_cut=result.negative_prompt.cut,
            model_name=model.name,
            prior_seconds=result.prior_seconds,
            decoder_seconds=result.decoder_seconds,
            created_at=created_at,
        )
        return int(row.id)

    def _insert_images(
        self,
        generation_id: int,
        result: GeneratedImages,
        stored: Sequence[StoredImage],
        created_at: datetime,
        is_public: bool,
    ) -> list[ImageRow]:
        rows = []
        for position, (image, seed, files) in enumerate(zip(result.images, result.seeds, stored, strict=True)):
            rows.append(
                self.tables.image.create(
                    generation=generation_id,
                    position=position,
                    seed=seed,
                    path=files.path,
                    thumbnail=files.thumbnail,
                    public_id=new_public_id(),
                    is_public=is_public,
                    width=image.width,
                    height=image.height,
                    created_at=created_at,
                )
            )
        return rows


def check_request_columns(tables: Tables) -> None:
    """Every GenerationRequest field must have its column (same name): refuse to start rather than drop one."""
    missing = [field.name for field in fields(GenerationRequest) if field.name not in tables.generation._meta.fields]
    if missing:
        raise RuntimeError(f"The generation table has no column for {missing}: add a migration and a model field.")


def require_owner_hash(owner_hash: str) -> None:
    """Refuse anything but the 64 hex digits `identity` derives, so a raw cookie or an id cannot slip in."""
    if not isinstance(owner_hash, str) or not OWNER_HASH_PATTERN.fullmatch(owner_hash):
        raise ValueError("owner_hash must be the sha256 hex digest that BrowserIdentity.owner_hash returns.")


def require_address_hash(address_hash: str | None) -> None:
    """Refuse anything but None or the 64 hex digits `clients.AddressKeys` derives: a raw address is never stored."""
    if address_hash is not None and not (isinstance(address_hash, str) and OWNER_HASH_PATTERN.fullmatch(address_hash)):
        raise ValueError("address_hash must be the hex digest that AddressKeys.address_hash returns, or None.")


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a whole number of images, 0 or more (got {limit!r}).")


def new_public_id() -> str:
    """A share id: 72 random bits, so that share links cannot be guessed or counted through."""
    return secrets.token_urlsafe(9)


def is_public_id(value: object) -> bool:
    """Whether `value` looks like a share id; anything else is answered "not found" without asking the database."""
    return isinstance(value, str) and bool(PUBLIC_ID_PATTERN.fullmatch(value))


def embedded_parameters(
    request: GenerationRequest, result: GeneratedImages, model: ModelInfo, seed: int
) -> dict[str, object]:
    """What one image's PNG carries: the request with this image's own seed (it reproduces alone), and the model."""
    parameters: dict[str, object] = {**request.as_dict(), "seed": seed, "model_name": model.name}
    # What the model was given (the idea wrapped in its style, brand and colours, cut to the tokenizer's limit) and the
    # decoder's scheduler: other tools show these as the prompt and the sampler.
    parameters["model_prompt"] = result.prompt.used
    parameters["model_negative_prompt"] = result.negative_prompt.used
    if model.sampler:
        parameters["sampler"] = model.sampler
    if result.prompt.cut:
        parameters["prompt_cut"] = result.prompt.cut
    if result.negative_prompt.cut:
        parameters["negative_prompt_cut"] = result.negative_prompt.cut
    return parameters
