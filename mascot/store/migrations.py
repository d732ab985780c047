"""The schema's history: an ordered list of migrations and the runner that brings a database to the latest one."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import peewee
from playhouse import migrate as schema_changes

from mascot.store.schema import GALLERY_NEWEST_INDEX, GALLERY_TOP_INDEX, Tables, as_stored_time

logger = logging.getLogger(__name__)

# Any constant works: it only has to be the same in every replica that migrates one PostgreSQL database.
POSTGRES_MIGRATION_LOCK = 0x6D6173636F74


@dataclass(frozen=True)
class Migration:
    """One step of the schema's history; `apply` runs inside the migration transaction."""

    version: int
    description: str
    apply: Callable[[peewee.Database, Tables], None]


def create_current_schema(db: peewee.Database, tables: Tables) -> None:
    """Create every data table as the models define them today."""
    db.create_tables(tables.data_tables)


def add_sharing_likes_thumbnails_and_quota(db: peewee.Database, tables: Tables) -> None:
    """Version 2. Spelled out column by column: today's models would describe a later schema than version 2."""
    migrator = schema_changes.SchemaMigrator.from_database(db)
    _add_public_ids(db, migrator)
    schema_changes.migrate(
        migrator.add_column("mascot_image", "is_public", _not_null(peewee.BooleanField, "TRUE"), allow_not_null=True),
        migrator.add_column("mascot_image", "like_count", _not_null(peewee.IntegerField, "0"), allow_not_null=True),
        migrator.add_column(
            "mascot_image", "file_missing", _not_null(peewee.BooleanField, "FALSE"), allow_not_null=True
        ),
        # Thumbnails of existing images are made by the store at start (MascotStore.check_files), outside this
        # transaction: file work has no place inside the lock every replica waits on.
        migrator.add_column("mascot_image", "thumbnail", peewee.CharField(max_length=255, null=True)),
        _image_index(migrator, ("thumbnail",), unique=True),
        _image_index(migrator, ("is_public", "file_missing", "created_at", "id")),
        _image_index(migrator, ("is_public", "file_missing", "like_count", "created_at", "id")),
        migrator.add_column("browser", "quota_day", peewee.DateField(null=True)),
        migrator.add_column("browser", "quota_used", _not_null(peewee.IntegerField, "0"), allow_not_null=True),
        migrator.add_column("browser", "job_started_at", peewee.DateTimeField(null=True)),
        migrator.add_column("browser", "job_images", _not_null(peewee.IntegerField, "0"), allow_not_null=True),
        migrator.add_column("browser", "job_claim", peewee.CharField(max_length=32, null=True)),
    )
    db.create_tables([_version_2_like_table(db)])


def add_adapter_columns(db: peewee.Database, tables: Tables) -> None:
    """Version 3: generations made before adapters existed used none, at the default scale."""
    migrator = schema_changes.SchemaMigrator.from_database(db)
    schema_changes.migrate(
        migrator.add_column("generation", "adapter_name", _not_null(peewee.TextField, "''"), allow_not_null=True),
        migrator.add_column("generation", "lora_scale", _not_null(peewee.FloatField, "1.0"), allow_not_null=True),
    )


def add_preset_columns(db: peewee.Database, tables: Tables) -> None:
    """Version 4: generations made before presets existed used none."""
    migrator = schema_changes.SchemaMigrator.from_database(db)
    schema_changes.migrate(
        migrator.add_column("generation", "style", _not_null(peewee.TextField, "''"), allow_not_null=True),
        migrator.add_column("generation", "brand", _not_null(peewee.TextField, "''"), allow_not_null=True),
    )


def add_logo_columns(db: peewee.Database, tables: Tables) -> None:
    """Version 5: generations made before logo mixing had none."""
    migrator = schema_changes.SchemaMigrator.from_database(db)
    logo = peewee.CharField(max_length=64, constraints=[peewee.SQL("DEFAULT ''")])
    schema_changes.migrate(
        migrator.add_column("generation", "logo", logo, allow_not_null=True),
        migrator.add_column("generation", "logo_weight", _not_null(peewee.FloatField, "0.3"), allow_not_null=True),
    )


def add_address_quota(db: peewee.Database, tables: Tables) -> None:
    """Version 6: the per-network daily quota. Browsers with a job in flight during the upgrade name no network."""
    migrator = schema_changes.SchemaMigrator.from_database(db)
    schema_changes.migrate(
        # An indexed field: add_column also makes the index, named as peewee names the model's ("browser_<column>").
        migrator.add_column("browser", "job_address_hash", peewee.CharField(max_length=64, null=True, index=True)),
    )
    db.create_tables([_version_6_address_quota_table(db)])


def add_reports_and_moderation(db: peewee.Database, tables: Tables) -> None:
    """Version 7: reports, and a moderation state that takes a mascot out of the gallery. The gallery's indexes gain
    that state, so both orders still walk one index; every existing mascot starts as its owner set it."""
    migrator = schema_changes.SchemaMigrator.from_database(db)
    moderation = peewee.CharField(max_length=16, constraints=[peewee.SQL("DEFAULT ''")])
    gallery = ("is_public", "file_missing", "moderation")
    schema_changes.migrate(
        migrator.add_column("mascot_image", "moderation", moderation, allow_not_null=True),
        migrator.drop_index("mascot_image", "mascotimage_is_public_file_missing_created_at_id"),
        migrator.drop_index("mascot_image", "mascotimage_is_public_file_missing_like_count_created_at_id"),
        migrator.add_index("mascot_image", (*gallery, "created_at", "id"), name=GALLERY_NEWEST_INDEX),
        migrator.add_index("mascot_image", (*gallery, "like_count", "created_at", "id"), name=GALLERY_TOP_INDEX),
        _image_index(migrator, ("moderation",)),
    )
    db.create_tables([_version_7_report_table(db)])


def add_liked_by_me_index(db: peewee.Database, tables: Tables) -> None:
    """Version 8: a browser's likes in the order they were made, for the gallery's "Liked by me"."""
    migrator = schema_changes.SchemaMigrator.from_database(db)
    columns = ("browser_id", "created_at", "id")
    schema_changes.migrate(migrator.add_index("mascot_like", columns, name="like_" + "_".join(columns)))


def add_like_networks(db: peewee.Database, tables: Tables) -> None:
    """Version 9: each like keeps its liker's network, so that a mascot's count takes only a few from each. Likes
    made before name none and count one each, as they did, so every like_count stays what it was. The index on the
    image gains the network: the count reads it alone, and it still serves deleting an image's likes."""
    migrator = schema_changes.SchemaMigrator.from_database(db)
    columns = ("image_id", "address_hash")
    schema_changes.migrate(
        migrator.add_column("mascot_like", "address_hash", peewee.CharField(max_length=64, null=True)),
        migrator.drop_index("mascot_like", "like_image_id"),
        migrator.add_index("mascot_like", columns, name="like_" + "_".join(columns)),
    )


def add_device_links(db: peewee.Database, tables: Tables) -> None:
    """Version 10: "Use my mascots on another device": one-time device links, and the extra token hashes (aliases)
    that let another browser stand for an existing browser row."""
    db.create_tables(_version_10_device_tables(db))


def _not_null(field_class: type[peewee.Field], default_sql: str) -> peewee.Field:
    return field_class(constraints=[peewee.SQL(f"DEFAULT {default_sql}")])


def _image_index(
    migrator: schema_changes.SchemaMigrator, columns: tuple[str, ...], *, unique: bool = False
) -> schema_changes.Operation:
    """An index on mascot_image named as peewee names the model's indexes ("mascotimage_<columns>")."""
    return migrator.add_index("mascot_image", columns, unique=unique, name="mascotimage_" + "_".join(columns))


def _add_public_ids(db: peewee.Database, migrator: schema_changes.SchemaMigrator) -> None:
    """Add mascot_image.public_id: nullable first, one random id per existing row, then NOT NULL and unique."""
    schema_changes.migrate(migrator.add_column("mascot_image", "public_id", peewee.CharField(max_length=16, null=True)))
    ids = [row_id for (row_id,) in db.execute_sql("SELECT id FROM mascot_image WHERE public_id IS NULL").fetchall()]
    for row_id in ids:
        db.execute_sql(
            f"UPDATE mascot_image SET public_id = {db.param} WHERE id = {db.param}", (secrets.token_urlsafe(9), row_id)
        )
    # On SQLite (before 3.53) NOT NULL means rebuilding the table; peewee copies the rows and re-creates its indexes.
    schema_changes.migrate(
        migrator.add_not_null("mascot_image", "public_id"),
        _image_index(migrator, ("public_id",), unique=True),
    )


def _stand_ins(db: peewee.Database) -> tuple[type[peewee.Model], type[peewee.Model]]:
    """Stand-ins on `db` for the browser and mascot_image tables that frozen tables point at (a foreign key needs a
    model; only the table name matters)."""

    class Browser(peewee.Model):
        class Meta:
            database = db
            table_name = "browser"

    class MascotImage(peewee.Model):
        class Meta:
            database = db
            table_name = "mascot_image"

    return Browser, MascotImage


def _version_2_like_table(db: peewee.Database) -> type[peewee.Model]:
    """The like table as version 2 created it."""
    browser_table, image_table = _stand_ins(db)

    class Like(peewee.Model):
        browser = peewee.ForeignKeyField(browser_table, on_delete="CASCADE", index=False)
        image = peewee.ForeignKeyField(image_table, on_delete="CASCADE", index=False)
        created_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "mascot_like"
            indexes = ((("browser", "image"), True), (("image",), False))

    return Like


def _version_6_address_quota_table(db: peewee.Database) -> type[peewee.Model]:
    """The address_quota table as version 6 created it."""

    class AddressQuota(peewee.Model):
        address_hash = peewee.CharField(max_length=64, unique=True)
        quota_day = peewee.DateField(null=True)
        quota_used = _not_null(peewee.IntegerField, "0")

        class Meta:
            database = db
            table_name = "address_quota"

    return AddressQuota


def _version_7_report_table(db: peewee.Database) -> type[peewee.Model]:
    """The mascot_report table as version 7 created it."""
    browser_table, image_table = _stand_ins(db)

    class Report(peewee.Model):
        image = peewee.ForeignKeyField(image_table, on_delete="CASCADE", index=False)
        browser = peewee.ForeignKeyField(browser_table, on_delete="CASCADE", index=False)
        address_hash = peewee.CharField(max_length=64, null=True)
        reason = peewee.CharField(max_length=16, constraints=[peewee.SQL("DEFAULT ''")])
        created_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "mascot_report"
            indexes = ((("image", "browser"), True),)

    return Report


def _version_10_device_tables(db: peewee.Database) -> list[type[peewee.Model]]:
    """The browser_key and device_link tables as version 10 created them."""
    browser_table, _image_table = _stand_ins(db)

    class BrowserKey(peewee.Model):
        token_hash = peewee.CharField(max_length=64, unique=True)
        browser = peewee.ForeignKeyField(browser_table, on_delete="CASCADE")
        created_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "browser_key"

    class DeviceLink(peewee.Model):
        code_hash = peewee.CharField(max_length=64, unique=True)
        browser = peewee.ForeignKeyField(browser_table, on_delete="CASCADE")
        created_at = peewee.DateTimeField()
        expires_at = peewee.DateTimeField()
        used_at = peewee.DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "device_link"

    return [BrowserKey, DeviceLink]


# Ordered; append, never edit. A fresh database gets today's schema at once and is stamped with the latest version
# (Alembic's "create_all, then stamp"), so a later migration only has to bring an existing, older database forward.
MIGRATIONS: list[Migration] = [
    Migration(1, "browsers, generations and their images", create_current_schema),
    Migration(
        2,
        "share ids, privacy, likes, thumbnails, missing files, quota and jobs",
        add_sharing_likes_thumbnails_and_quota,
    ),
    Migration(3, "the LoRA adapter and scale of each generation", add_adapter_columns),
    Migration(4, "the style and brand presets of each generation", add_preset_columns),
    Migration(5, "the logo mixed into each generation, and its weight", add_logo_columns),
    Migration(6, "a daily quota per network, kept under a keyed hash of the address", add_address_quota),
    Migration(7, "reports, and mascots taken out of the gallery after them", add_reports_and_moderation),
    Migration(8, "a browser's likes, latest first, for the gallery's Liked by me", add_liked_by_me_index),
    Migration(9, "the network of each like, so that a mascot's count takes a few likes per network", add_like_networks),
    Migration(10, "one-time links that let another device share a browser's mascots, and aliases", add_device_links),
]


def migrate(db: peewee.Database, tables: Tables, migrations: Sequence[Migration] | None = None) -> list[int]:
    """Bring the database to the latest schema; returns the versions applied now (none when already there)."""
    steps = sorted(MIGRATIONS if migrations is None else migrations, key=lambda step: step.version)
    with db.atomic():
        _lock_for_migration(db)
        db.create_tables([tables.schema_version])
        current = schema_version(tables)
        if current == 0:
            create_current_schema(db, tables)
            applied = steps
        else:
            applied = [step for step in steps if step.version > current]
            for step in applied:
                logger.info("Migrating the database to version %d: %s", step.version, step.description)
                step.apply(db, tables)
        _record_versions(tables, applied)
    return [step.version for step in applied]


def schema_version(tables: Tables) -> int:
    """The latest migration recorded in the database (0 for none)."""
    version = tables.schema_version
    return (
        version
        .select(peewee.fn.MAX(version.version))
        .scalar()
    ) or 0  # fmt: skip


def _lock_for_migration(db: peewee.Database) -> None:
    """Let one process at a time migrate. SQLite's write transactions already begin IMMEDIATE (see open_database).
    On PostgreSQL without a statement limit the operator set (on the role, or in the URL's options), for this
    transaction only: a migration may rewrite a large table, and a process may wait here for another's migration."""
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("SET LOCAL statement_timeout = 0")
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (POSTGRES_MIGRATION_LOCK,))


def _record_versions(tables: Tables, steps: Sequence[Migration]) -> None:
    now = as_stored_time(None)
    for step in steps:
        tables.schema_version.create(version=step.version, description=step.description, applied_at=now)
