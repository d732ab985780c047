"""The database: opening it by URL, the peewee models bound to it, and the browser row other queries hang from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlparse

import peewee
from playhouse.db_url import connect, parse

from mascot.clock import utc_now
from mascot.settings import DATABASE_CONNECTIONS
from mascot.store.pool import RecheckingPool

SQLITE_PRAGMAS = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10_000, "synchronous": "normal"}
GALLERY_NEWEST_INDEX = "mascotimage_gallery_newest"
GALLERY_TOP_INDEX = "mascotimage_gallery_top"
UNICODE_LOWER = "mascot_lower"  # SQLite's own lower() and LIKE fold ASCII letters only (see mascot.store.search)


if TYPE_CHECKING:
    # The checker sees each row class as the peewee model it is; at run time it is a plain mixin, so that it adds no
    # table of its own and only the per-store classes of define_tables are models.
    from peewee import Model as _Row
else:
    _Row = object


# What each table's model has, for the type checker: define_tables' classes derive from these and define the fields
# themselves, so that every store gets classes of its own. A field's type here that disagrees with its definition
# (say `null=True` added in one place only) is a type error; tests/test_schema_rows.py checks that both name the
# same fields.
class SchemaVersionRow(_Row):
    version: peewee.IntegerField[int]
    description: peewee.TextField[str]
    applied_at: peewee.DateTimeField[datetime]


class Row(_Row):
    """A table with peewee's implicit integer primary key."""

    id: peewee.AutoField[int]


class BrowserRow(Row):
    owner_hash: peewee.CharField[str]
    created_at: peewee.DateTimeField[datetime]
    last_seen_at: peewee.DateTimeField[datetime]
    quota_day: peewee.DateField[date | None]
    quota_used: peewee.IntegerField[int]
    job_started_at: peewee.DateTimeField[datetime | None]
    job_images: peewee.IntegerField[int]
    job_claim: peewee.CharField[str | None]
    job_address_hash: peewee.CharField[str | None]


class GenerationRow(Row):
    browser: peewee.ForeignKeyField[BrowserRow]
    prompt: peewee.TextField[str]
    negative_prompt: peewee.TextField[str]
    seed: peewee.BigIntegerField[int]
    width: peewee.IntegerField[int]
    height: peewee.IntegerField[int]
    num_inference_steps: peewee.IntegerField[int]
    guidance_scale: peewee.FloatField[float]
    prior_num_inference_steps: peewee.IntegerField[int]
    prior_guidance_scale: peewee.FloatField[float]
    num_images_per_prompt: peewee.IntegerField[int]
    style: peewee.TextField[str]
    brand: peewee.TextField[str]
    logo: peewee.CharField[str]
    logo_weight: peewee.FloatField[float]
    adapter_name: peewee.TextField[str]
    lora_scale: peewee.FloatField[float]
    prompt_cut: peewee.TextField[str]
    negative_prompt_cut: peewee.TextField[str]
    model_name: peewee.TextField[str]
    prior_seconds: peewee.FloatField[float]
    decoder_seconds: peewee.FloatField[float]
    created_at: peewee.DateTimeField[datetime]


class ImageRow(Row):
    generation: peewee.ForeignKeyField[GenerationRow]
    generation_id: int  # peewee's accessor for the foreign key's raw value
    position: peewee.IntegerField[int]
    seed: peewee.BigIntegerField[int]
    path: peewee.CharField[str]
    width: peewee.IntegerField[int]
    height: peewee.IntegerField[int]
    created_at: peewee.DateTimeField[datetime]
    public_id: peewee.CharField[str]
    is_public: peewee.BooleanField[bool]
    like_count: peewee.IntegerField[int]
    file_missing: peewee.BooleanField[bool]
    thumbnail: peewee.CharField[str | None]
    moderation: peewee.CharField[str]


class LikeRow(Row):
    browser: peewee.ForeignKeyField[BrowserRow]
    image: peewee.ForeignKeyField[ImageRow]
    created_at: peewee.DateTimeField[datetime]
    address_hash: peewee.CharField[str | None]


class AddressQuotaRow(Row):
    address_hash: peewee.CharField[str]
    quota_day: peewee.DateField[date | None]
    quota_used: peewee.IntegerField[int]


class ReportRow(Row):
    image: peewee.ForeignKeyField[ImageRow]
    browser: peewee.ForeignKeyField[BrowserRow]
    address_hash: peewee.CharField[str | None]
    reason: peewee.CharField[str]
    created_at: peewee.DateTimeField[datetime]


class BrowserKeyRow(Row):
    token_hash: peewee.CharField[str]
    browser: peewee.ForeignKeyField[BrowserRow]
    created_at: peewee.DateTimeField[datetime]


class DeviceLinkRow(Row):
    code_hash: peewee.CharField[str]
    browser: peewee.ForeignKeyField[BrowserRow]
    browser_id: int  # peewee's accessor for the foreign key's raw value
    created_at: peewee.DateTimeField[datetime]
    expires_at: peewee.DateTimeField[datetime]
    used_at: peewee.DateTimeField[datetime | None]


@dataclass(frozen=True)
class Tables:
    """One store's model classes. Each store defines its own, bound to its own database, so two never mix."""

    schema_version: type[SchemaVersionRow]
    browser: type[BrowserRow]
    generation: type[GenerationRow]
    image: type[ImageRow]
    like: type[LikeRow]
    address: type[AddressQuotaRow]
    report: type[ReportRow]
    browser_key: type[BrowserKeyRow]
    device_link: type[DeviceLinkRow]

    @property
    def data_tables(self) -> list[type[Row]]:
        """The tables that hold data, parents first (the order to create them in)."""
        return [
            self.browser,
            self.generation,
            self.image,
            self.like,
            self.address,
            self.report,
            self.browser_key,
            self.device_link,
        ]


def database_default(sql: str) -> list[peewee.Node]:
    """A DEFAULT clause, so that a fresh table and one brought forward by `ALTER TABLE ... ADD COLUMN` are alike."""
    return [peewee.SQL(f"DEFAULT {sql}")]


def define_tables(db: peewee.Database) -> Tables:
    """Today's schema, as peewee models bound to `db`. Change it only together with a new migration."""

    class BaseModel(peewee.Model):
        class Meta:
            database = db

    class SchemaVersion(BaseModel, SchemaVersionRow):
        version = peewee.IntegerField(primary_key=True)
        description = peewee.TextField()
        applied_at = peewee.DateTimeField()

        class Meta:
            table_name = "schema_version"

    class Browser(BaseModel, BrowserRow):
        owner_hash = peewee.CharField(max_length=64, unique=True)
        created_at = peewee.DateTimeField()
        last_seen_at = peewee.DateTimeField()
        # The daily quota: images saved on `quota_day` (UTC). Kept as a count, not derived from the images, so that
        # deleting a mascot does not hand its share of the quota back.
        quota_day = peewee.DateField(null=True)
        quota_used = peewee.IntegerField(default=0, constraints=database_default("0"))
        # The one job in flight: claimed by a conditional UPDATE, so replicas sharing the database agree.
        job_started_at = peewee.DateTimeField(null=True)
        job_images = peewee.IntegerField(default=0, constraints=database_default("0"))
        job_claim = peewee.CharField(max_length=32, null=True)
        # The network the job in flight came from (clients.AddressKeys), so its images count toward that network's
        # quota while they are being made; never the address itself.
        job_address_hash = peewee.CharField(max_length=64, null=True, index=True)

        class Meta:
            table_name = "browser"

    class Generation(BaseModel, GenerationRow):
        browser = peewee.ForeignKeyField(Browser, backref="generations", on_delete="CASCADE", index=False)
        prompt = peewee.TextField()
        negative_prompt = peewee.TextField(default="")
        seed = peewee.BigIntegerField()  # up to 2**32 - 1: more than a PostgreSQL integer holds
        width = peewee.IntegerField()
        height = peewee.IntegerField()
        num_inference_steps = peewee.IntegerField()
        guidance_scale = peewee.FloatField()
        prior_num_inference_steps = peewee.IntegerField()
        prior_guidance_scale = peewee.FloatField()
        num_images_per_prompt = peewee.IntegerField()
        style = peewee.TextField(default="", constraints=database_default("''"))
        brand = peewee.TextField(default="", constraints=database_default("''"))
        logo = peewee.CharField(max_length=64, default="", constraints=database_default("''"))
        logo_weight = peewee.FloatField(default=0.3, constraints=database_default("0.3"))
        adapter_name = peewee.TextField(default="", constraints=database_default("''"))
        lora_scale = peewee.FloatField(default=1.0, constraints=database_default("1.0"))
        prompt_cut = peewee.TextField(default="")
        negative_prompt_cut = peewee.TextField(default="")
        model_name = peewee.TextField()
        prior_seconds = peewee.FloatField()
        decoder_seconds = peewee.FloatField()
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "generation"
            # "This browser's newest first": the history query walks this index backwards.
            indexes = ((("browser", "created_at", "id"), False),)

    class MascotImage(BaseModel, ImageRow):
        generation = peewee.ForeignKeyField(Generation, backref="images", on_delete="CASCADE", index=False)
        position = peewee.IntegerField()
        seed = peewee.BigIntegerField()
        path = peewee.CharField(max_length=255, unique=True)  # relative to the images folder, with "/"
        width = peewee.IntegerField()
        height = peewee.IntegerField()
        created_at = peewee.DateTimeField()
        public_id = peewee.CharField(max_length=16, unique=True)  # share links carry this, never the integer id
        is_public = peewee.BooleanField(default=True, constraints=database_default("TRUE"))
        # Its fair count of likes (likes.py): every like, but at most a few per network; kept here for the gallery.
        like_count = peewee.IntegerField(default=0, constraints=database_default("0"))
        file_missing = peewee.BooleanField(default=False, constraints=database_default("FALSE"))
        thumbnail = peewee.CharField(max_length=255, null=True, unique=True)  # None until made (old rows)
        # "" = as its owner set it; else out of the gallery whatever is_public says (moderation.py): kept apart from
        # is_public, so that a restore gives back the owner's own choice.
        moderation = peewee.CharField(max_length=16, default="", constraints=database_default("''"))

        class Meta:
            table_name = "mascot_image"
            indexes = (
                (("generation", "position"), True),
                (("moderation",), False),  # the operator's list: what is hidden
            )

    # The gallery's two orders, newest and most liked; both walk the index backwards. Named, since peewee would
    # shorten the second name with a hash past 64 characters and PostgreSQL cuts names at 63.
    gallery_columns = (MascotImage.is_public, MascotImage.file_missing, MascotImage.moderation)
    MascotImage.add_index(*gallery_columns, MascotImage.created_at, MascotImage.id, name=GALLERY_NEWEST_INDEX)
    MascotImage.add_index(
        *gallery_columns, MascotImage.like_count, MascotImage.created_at, MascotImage.id, name=GALLERY_TOP_INDEX
    )

    class Like(BaseModel, LikeRow):
        browser = peewee.ForeignKeyField(Browser, on_delete="CASCADE", index=False)
        image = peewee.ForeignKeyField(MascotImage, on_delete="CASCADE", index=False)
        created_at = peewee.DateTimeField()
        address_hash = peewee.CharField(max_length=64, null=True)  # the liker's network (clients.AddressKeys), if known

        class Meta:
            table_name = "mascot_like"
            indexes = (
                (("browser", "image"), True),  # one like per browser per image; also "did this viewer like these"
                # The image's likes per network, read by the index alone when they are counted (likes.py); also
                # what deleting an image deletes.
                (("image", "address_hash"), False),
                # "Liked by me", latest like first: without it SQLite walks every listed image and probes this
                # browser's like of each; with it, it reads just this browser's likes, already in order.
                (("browser", "created_at", "id"), False),
            )

    class AddressQuota(BaseModel, AddressQuotaRow):
        # A network's daily quota, shared by every browser on it (new cookies are free; addresses are not). A count,
        # as the browser's is: deleting a mascot hands nothing back. Keyed by the hash, never the address.
        address_hash = peewee.CharField(max_length=64, unique=True)
        quota_day = peewee.DateField(null=True)
        quota_used = peewee.IntegerField(default=0, constraints=database_default("0"))

        class Meta:
            table_name = "address_quota"

    class Report(BaseModel, ReportRow):
        # Reports live until the operator restores or deletes the mascot; a restore clears them (moderation.py).
        image = peewee.ForeignKeyField(MascotImage, on_delete="CASCADE", index=False)
        browser = peewee.ForeignKeyField(Browser, on_delete="CASCADE", index=False)  # who reported it
        address_hash = peewee.CharField(max_length=64, null=True)  # their network (clients.AddressKeys), if known
        reason = peewee.CharField(max_length=16, default="", constraints=database_default("''"))
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "mascot_report"
            # One report per browser per image; also what the threshold counts and what deleting an image deletes.
            indexes = ((("image", "browser"), True),)

    class BrowserKey(BaseModel, BrowserKeyRow):
        # Another browser's token hash that stands for this browser row (device_links.py): a phone that opened a
        # device link. The row's own owner_hash is unique, so a second token needs a row of its own.
        token_hash = peewee.CharField(max_length=64, unique=True)
        browser = peewee.ForeignKeyField(Browser, on_delete="CASCADE")
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "browser_key"

    class DeviceLink(BaseModel, DeviceLinkRow):
        # A one-time code that makes another browser this one (device_links.py); only its sha256 is kept.
        code_hash = peewee.CharField(max_length=64, unique=True)
        browser = peewee.ForeignKeyField(Browser, on_delete="CASCADE")
        created_at = peewee.DateTimeField()
        expires_at = peewee.DateTimeField()
        used_at = peewee.DateTimeField(null=True)

        class Meta:
            table_name = "device_link"

    return Tables(
        schema_version=SchemaVersion,
        browser=Browser,
        generation=Generation,
        image=MascotImage,
        like=Like,
        address=AddressQuota,
        report=Report,
        browser_key=BrowserKey,
        device_link=DeviceLink,
    )


def tuple_rows(query: peewee.BaseQuery) -> Iterable[tuple[Any, ...]]:
    """The rows of `query.tuples()`. peewee's stubs give `.tuples()` the query's own type, whose rows would be models;
    the values' types come from the SQL, which the checker cannot see."""
    return cast("Iterable[tuple[Any, ...]]", query.tuples())


def dict_rows(query: peewee.BaseQuery) -> Iterable[dict[str, Any]]:
    """The rows of `query.dicts()`, by column name (typed as `tuple_rows` is, for the same reason)."""
    return cast("Iterable[dict[str, Any]]", query.dicts())


# A store call takes milliseconds, so one that waited this long for a pooled connection finds the database in trouble.
POOL_WAIT_S = 30.0
# A pooled connection this old is closed instead of lent or kept, so that none outlives a server's or proxy's limits.
POOL_RECYCLE_S = 600
# Without limits, a server that accepts the connection but never answers (overloaded, or behind a proxy whose far
# side is gone) holds a store call's thread for good: a person's click, the health check, the worker's saves. libpq's
# own settings, client-side (a pooler such as PgBouncer never sees them), each given way to by the same one in the
# database URL. Server-side limits (statement_timeout) are the operator's, on the role or in the URL's options: sent
# or set from here they would be refused by poolers, override the role's and PGOPTIONS, or leak to other clients'
# server connections under transaction pooling (docs/deploying.md).
POSTGRES_LIMITS: dict[str, object] = {
    "connect_timeout": 10,  # seconds to connect
    # A peer gone mid-query (its machine down, the network cut) is found in about a minute instead of never.
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def open_database(
    database_url: str, max_connections: int = DATABASE_CONNECTIONS, pool_wait_s: float = POOL_WAIT_S
) -> peewee.Database:
    """A peewee database for `sqlite:///path` (WAL, foreign keys, busy timeout) or `postgresql://...`, the latter
    lending at most `max_connections` connections, a caller waiting up to `pool_wait_s` for one (see
    mascot.store.connections)."""
    scheme = urlparse(database_url).scheme
    if scheme == "sqlite":
        db = connect(database_url, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE")
        # IMMEDIATE: a transaction that reads and then writes would otherwise fail with "database is locked" at
        # once when another connection wrote in between, without waiting for the busy timeout.
        db.register_function(unicode_lower, UNICODE_LOWER, 1, deterministic=True)
        if db.database != ":memory:":
            Path(db.database).parent.mkdir(parents=True, exist_ok=True)
        return db
    if scheme in {"postgresql", "postgres"}:
        if max_connections < 1 or not pool_wait_s > 0:  # peewee's pool would wait forever for a wait of 0
            raise ValueError(f"A pool needs a connection and a wait (got {max_connections} and {pool_wait_s} s).")
        connection = {**POSTGRES_LIMITS, **parse(database_url)}
        return RecheckingPool(
            max_connections=max_connections, stale_timeout=POOL_RECYCLE_S, timeout=pool_wait_s, **connection
        )
    raise ValueError(f"database_url must start with sqlite:/// or postgresql:// (got a '{scheme}:' URL).")


def unicode_lower(text: str | None) -> str | None:
    """Python's lowercasing for SQLite, whose own knows ASCII letters only: a search for "ÖTTER" finds "ötter"."""
    return None if text is None else str(text).lower()


def as_stored_time(moment: datetime | None) -> datetime:
    """`moment` as the database keeps times: naive UTC, which both SQLite and a PostgreSQL `timestamp` column store
    unchanged. None is now (mascot.clock); a naive `moment` is taken to be UTC already."""
    if moment is None:
        moment = utc_now()
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def lock_image(database: peewee.Database, tables: Tables, image_id: int) -> bool:
    """On PostgreSQL, lock the image row until the transaction ends, so that writers which count the image's rows
    (likes, reports) take turns and each counts those before it. SQLite's write transactions already take turns
    (open_database). False when the row is gone: on PostgreSQL a delete that committed while this waited for the
    lock (the transaction had seen the row before it; a like or report of it would fail its foreign key)."""
    if not isinstance(database, peewee.PostgresqlDatabase):
        return True
    image = tables.image
    return image.select(image.id).where(image.id == image_id).for_update().scalar() is not None


def ensure_browser(tables: Tables, owner_hash: str, now: datetime) -> int:
    """The id of this browser's row, created on its first write; marks it seen at `now`."""
    browser = tables.browser
    (
        browser
        .insert(owner_hash=owner_hash, created_at=now, last_seen_at=now)
        .on_conflict(conflict_target=[browser.owner_hash], update={browser.last_seen_at: now})
        .execute()
    )  # fmt: skip
    browser_id = find_browser(tables, owner_hash)
    if browser_id is None:  # cannot happen after the upsert above, within the same transaction
        raise RuntimeError("The browser row vanished right after it was written.")
    return int(browser_id)


def find_browser(tables: Tables, owner_hash: str | None) -> int | None:
    """The id of this browser's row, or None for a browser that never wrote anything (or no browser at all)."""
    if owner_hash is None:
        return None
    browser = tables.browser
    return (
        browser
        .select(browser.id)
        .where(browser.owner_hash == owner_hash)
        .scalar()
    )  # fmt: skip
