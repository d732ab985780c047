"""The database: opening it by URL, the peewee models bound to it, and the browser row other queries hang from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import peewee
from playhouse.db_url import connect

from mascot.clock import utc_now

SQLITE_PRAGMAS = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10_000, "synchronous": "normal"}
PUBLIC_ID_CHARACTERS = 12  # secrets.token_urlsafe(9): 72 random bits, URL-safe, no padding
GALLERY_NEWEST_INDEX = "mascotimage_gallery_newest"
GALLERY_TOP_INDEX = "mascotimage_gallery_top"
UNICODE_LOWER = "mascot_lower"  # SQLite's own lower() and LIKE fold ASCII letters only (see mascot.store.search)


@dataclass(frozen=True)
class Tables:
    """One store's model classes. Each store defines its own, bound to its own database, so two never mix."""

    schema_version: type[peewee.Model]
    browser: type[peewee.Model]
    generation: type[peewee.Model]
    image: type[peewee.Model]
    like: type[peewee.Model]
    address: type[peewee.Model]
    report: type[peewee.Model]
    browser_key: type[peewee.Model]
    device_link: type[peewee.Model]

    @property
    def data_tables(self) -> list[type[peewee.Model]]:
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


def database_default(sql: str) -> list[peewee.SQL]:
    """A DEFAULT clause, so that a fresh table and one brought forward by `ALTER TABLE ... ADD COLUMN` are alike."""
    return [peewee.SQL(f"DEFAULT {sql}")]


def define_tables(db: peewee.Database) -> Tables:
    """Today's schema, as peewee models bound to `db`. Change it only together with a new migration."""

    class BaseModel(peewee.Model):
        class Meta:
            database = db

    class SchemaVersion(BaseModel):
        version = peewee.IntegerField(primary_key=True)
        description = peewee.TextField()
        applied_at = peewee.DateTimeField()

        class Meta:
            table_name = "schema_version"

    class Browser(BaseModel):
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

    class Generation(BaseModel):
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

    class MascotImage(BaseModel):
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

    class Like(BaseModel):
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

    class AddressQuota(BaseModel):
        # A network's daily quota, shared by every browser on it (new cookies are free; addresses are not). A count,
        # as the browser's is: deleting a mascot hands nothing back. Keyed by the hash, never the address.
        address_hash = peewee.CharField(max_length=64, unique=True)
        quota_day = peewee.DateField(null=True)
        quota_used = peewee.IntegerField(default=0, constraints=database_default("0"))

        class Meta:
            table_name = "address_quota"

    class Report(BaseModel):
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

    class BrowserKey(BaseModel):
        # Another browser's token hash that stands for this browser row (device_links.py): a phone that opened a
        # device link. The row's own owner_hash is unique, so a second token needs a row of its own.
        token_hash = peewee.CharField(max_length=64, unique=True)
        browser = peewee.ForeignKeyField(Browser, on_delete="CASCADE")
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "browser_key"

    class DeviceLink(BaseModel):
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


def open_database(database_url: str) -> peewee.Database:
    """A peewee database for `sqlite:///path` (WAL, foreign keys, busy timeout) or `postgresql://...`."""
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
        return connect(database_url)
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


def lock_image(database: peewee.Database, tables: Tables, image_id: int) -> None:
    """On PostgreSQL, lock the image row until the transaction ends, so that writers which count the image's rows
    (likes, reports) take turns and each counts those before it. SQLite's write transactions already take turns
    (open_database)."""
    if isinstance(database, peewee.PostgresqlDatabase):
        image = tables.image
        image.select(image.id).where(image.id == image_id).for_update().scalar()


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
