"""Migrations: idempotent, each applied once, and version 1 databases (the walking skeleton's) brought to the latest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest
from PIL import Image

from mascot.store import imaging, migrations
from mascot.store.migrations import MIGRATIONS, Migration
from mascot.store.schema import Tables, open_database
from mascot.store.store import PUBLIC_ID_PATTERN, MascotStore
from tests.support.store import POSTGRES_URL, OpenStore, fresh_postgres_schema, owner, save

VERSION_1_CREATED_AT = "2025-06-01 12:00:00"


def define_version_1_tables(db: peewee.Database) -> list[type[peewee.Model]]:
    """The schema exactly as version 1 shipped it (commit ea1d12d), parents first; schema_version first of all."""

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

        class Meta:
            table_name = "browser"

    class Generation(BaseModel):
        browser = peewee.ForeignKeyField(Browser, backref="generations", on_delete="CASCADE", index=False)
        prompt = peewee.TextField()
        negative_prompt = peewee.TextField(default="")
        seed = peewee.BigIntegerField()
        width = peewee.IntegerField()
        height = peewee.IntegerField()
        num_inference_steps = peewee.IntegerField()
        guidance_scale = peewee.FloatField()
        prior_num_inference_steps = peewee.IntegerField()
        prior_guidance_scale = peewee.FloatField()
        num_images_per_prompt = peewee.IntegerField()
        prompt_cut = peewee.TextField(default="")
        negative_prompt_cut = peewee.TextField(default="")
        model_name = peewee.TextField()
        prior_seconds = peewee.FloatField()
        decoder_seconds = peewee.FloatField()
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "generation"
            indexes = ((("browser", "created_at", "id"), False),)

    class MascotImage(BaseModel):
        generation = peewee.ForeignKeyField(Generation, backref="images", on_delete="CASCADE", index=False)
        position = peewee.IntegerField()
        seed = peewee.BigIntegerField()
        path = peewee.CharField(max_length=255, unique=True)
        width = peewee.IntegerField()
        height = peewee.IntegerField()
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "mascot_image"
            indexes = ((("generation", "position"), True),)

    return [SchemaVersion, Browser, Generation, MascotImage]


def create_version_1_database(url: str, images_dir: Path, paths: list[str], *, write_files: list[bool]) -> None:
    """A version 1 database with one browser, one generation and an image row per path (file written or not)."""
    db = open_database(url)
    schema_version, browser, generation, image = define_version_1_tables(db)
    db.create_tables([schema_version, browser, generation, image])
    schema_version.create(version=1, description="browsers, generations and their images", applied_at="2025-06-01")
    alice = browser.create(
        owner_hash=owner("alice"), created_at=VERSION_1_CREATED_AT, last_seen_at=VERSION_1_CREATED_AT
    )
    made = generation.create(
        browser=alice, prompt="an otter from version 1", negative_prompt="blurry", seed=40, width=320, height=256,
        num_inference_steps=2, guidance_scale=4.0, prior_num_inference_steps=3, prior_guidance_scale=1.0,
        num_images_per_prompt=len(paths), model_name="tiny preview model", prior_seconds=0.1, decoder_seconds=0.2,
        created_at=VERSION_1_CREATED_AT,
    )  # fmt: skip
    for position, (path, write) in enumerate(zip(paths, write_files, strict=True)):
        image.create(
            generation=made, position=position, seed=40 + position, path=path, width=320, height=256,
            created_at=VERSION_1_CREATED_AT,
        )  # fmt: skip
        if write:
            imaging.save_png(Image.new("RGB", (320, 256), (200, 90, 30)), images_dir / path, {"seed": 40 + position})
    db.close()


def describe_schema(db: peewee.Database) -> dict[str, dict[str, object]]:
    """Every table's columns (type, null, primary key, default), indexes and foreign keys, comparable across two DBs."""
    schema = (
        db.execute_sql("SELECT current_schema()").fetchone()[0] if isinstance(db, peewee.PostgresqlDatabase) else None
    )
    described: dict[str, dict[str, object]] = {}
    for table in sorted(db.get_tables(schema=schema)):
        described[table] = {
            "columns": {
                column.name: (column.data_type.lower(), column.null, column.primary_key, column.default)
                for column in db.get_columns(table, schema=schema)
            },
            "indexes": {
                (index.name, tuple(index.columns), index.unique) for index in db.get_indexes(table, schema=schema)
            },
            "foreign_keys": {
                (key.column, key.dest_table, key.dest_column) for key in db.get_foreign_keys(table, schema=schema)
            },
        }
    return described


@pytest.fixture
def other_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty database on the same backend as `database_url`."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'db' / 'other.db'}"
    else:
        assert POSTGRES_URL
        yield from fresh_postgres_schema(POSTGRES_URL)


def version_1_paths() -> list[str]:
    return ["2025/06/" + "a" * 32 + ".png", "2025/06/" + "b" * 32 + ".png"]


def test_a_version_1_database_is_brought_to_the_latest_version_and_keeps_its_mascots(
    database_url: str, images_dir: Path, open_store: OpenStore
) -> None:
    kept, lost = version_1_paths()
    create_version_1_database(database_url, images_dir, [kept, lost], write_files=[True, False])

    mascots = open_store()

    assert mascots.schema_version == MIGRATIONS[-1].version == 10
    [entry] = mascots.history(owner("alice"))  # the row whose file was lost is marked and left out
    assert (entry.request.adapter_name, entry.request.lora_scale) == (
        "",
        1.0,
    )  # made before adapters: none, at the default
    assert (entry.request.style, entry.request.brand) == ("", "")  # made before presets: the words as written
    assert (entry.request.logo, entry.request.logo_weight) == ("", 0.3)  # made before logo mixing: none
    assert (entry.request.prompt, entry.seed, entry.path) == (
        "an otter from version 1",
        40,
        images_dir.resolve() / kept,
    )
    assert PUBLIC_ID_PATTERN.fullmatch(entry.public_id)
    assert (entry.is_public, entry.like_count, entry.liked_by_viewer, entry.is_owner) == (True, 0, False, True)
    assert entry.thumbnail_path == images_dir.resolve() / kept.replace(".png", ".thumb.webp")
    with Image.open(entry.thumbnail_path) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (256, 205))
    lost_row = mascots.tables.image.get(mascots.tables.image.path == lost)
    assert lost_row.file_missing and PUBLIC_ID_PATTERN.fullmatch(lost_row.public_id)
    assert lost_row.public_id != entry.public_id
    assert [item.public_id for item in mascots.gallery(None).items] == [entry.public_id]
    assert mascots.toggle_like(owner("bob"), entry.public_id).like_count == 1
    assert mascots.quota(owner("alice"), 10).used == 0  # version 1 kept no count; it starts today
    network = "ab" * 32  # a network's keyed hash, as clients.AddressKeys makes them
    claim = mascots.claim_job(owner("alice"), 1, 10, address_hash=network, address_limit=50)
    assert claim.claimed
    save(mascots, owner("alice"), "made after the upgrade", address_hash=network)
    assert mascots.release_job(owner("alice"), claim.claim_id)
    assert mascots.count_history(owner("alice")) == 2
    assert mascots.address_quota(network, 50).used == 1
    assert mascots.history(owner("alice"))[1].moderation == ""  # made before moderation: as its owner set it
    assert mascots.report_mascot(owner("bob"), entry.public_id, "spam", reports_to_hide=1).outcome == "reported"
    assert (
        mascots.report_mascot(owner("carol"), entry.public_id, address_hash=network, reports_to_hide=1).refused is False
    )
    assert mascots.gallery(None).total == 1  # the version 1 mascot left the gallery; the new one is there
    [made_after] = mascots.history(owner("alice"))[:1]
    likes = [mascots.toggle_like(owner(f"liker {n}"), made_after.public_id, address_hash=network) for n in range(4)]
    assert [state.like_count for state in likes if state] == [1, 2, 3, 3]  # version 9: three a network


def test_a_migrated_database_has_the_same_schema_as_a_fresh_one(
    database_url: str, other_database_url: str, images_dir: Path, tmp_path: Path
) -> None:
    create_version_1_database(database_url, images_dir, version_1_paths(), write_files=[True, True])
    migrated = MascotStore(database_url, images_dir)
    fresh = MascotStore(other_database_url, tmp_path / "fresh-images")
    try:
        described = describe_schema(migrated.database)
        assert described == describe_schema(fresh.database)
        assert "mascot_like" in described
        assert "address_quota" in described  # version 6: each network's count, and the network of a job in flight
        assert ("browser_job_address_hash", ("job_address_hash",), False) in described["browser"]["indexes"]
        # version 7: reports, one per browser per image, and the gallery's indexes with the moderation state
        assert ("report_image_id_browser_id", ("image_id", "browser_id"), True) in described["mascot_report"]["indexes"]
        assert {"address_hash", "reason"} <= set(described["mascot_report"]["columns"])
        image_indexes = {name: columns for name, columns, _unique in described["mascot_image"]["indexes"]}
        assert image_indexes["mascotimage_gallery_top"] == (
            "is_public", "file_missing", "moderation", "like_count", "created_at", "id"
        )  # fmt: skip
        assert "mascotimage_is_public_file_missing_created_at_id" not in image_indexes
        # version 8: a browser's likes, latest first ("Liked by me")
        like_indexes = {name: columns for name, columns, _unique in described["mascot_like"]["indexes"]}
        assert like_indexes["like_browser_id_created_at_id"] == ("browser_id", "created_at", "id")
        # version 9: each like's network, and the image's likes per network (which replaced the image alone)
        assert "address_hash" in described["mascot_like"]["columns"]
        assert like_indexes["like_image_id_address_hash"] == ("image_id", "address_hash")
        assert "like_image_id" not in like_indexes
        # version 10: device links and the token hashes that stand for another browser, each found by its hash
        assert ("browserkey_token_hash", ("token_hash",), True) in described["browser_key"]["indexes"]
        assert ("devicelink_code_hash", ("code_hash",), True) in described["device_link"]["indexes"]
        assert ("browser_id", "browser", "id") in described["browser_key"]["foreign_keys"]
    finally:
        migrated.close()
        fresh.close()


def test_a_version_9_database_gains_device_links_and_keeps_working(
    database_url: str, other_database_url: str, images_dir: Path, tmp_path: Path, open_store: OpenStore
) -> None:
    version_9 = open_store()
    save(version_9, owner("alice"), "an otter from version 9")
    version_9.database.execute_sql("DROP TABLE device_link")
    version_9.database.execute_sql("DROP TABLE browser_key")
    version_9.tables.schema_version.delete().where(version_9.tables.schema_version.version == 10).execute()
    assert version_9.schema_version == 9
    version_9.close()

    mascots = open_store()
    fresh = MascotStore(other_database_url, tmp_path / "fresh-images")
    try:
        assert mascots.schema_version == 10
        assert describe_schema(mascots.database) == describe_schema(fresh.database)
    finally:
        fresh.close()
    made = mascots.make_device_link(owner("alice"))
    assert mascots.redeem_device_link(owner("phone"), made.code).outcome == "joined"
    assert [entry.request.prompt for entry in mascots.history(mascots.resolve_owner(owner("phone")))] == [
        "an otter from version 9"
    ]


def test_migrating_twice_changes_nothing(database_url: str, images_dir: Path, open_store: OpenStore) -> None:
    create_version_1_database(database_url, images_dir, version_1_paths(), write_files=[True, True])
    first = open_store()
    before = [(entry.public_id, entry.thumbnail_path) for entry in first.history(owner("alice"))]
    first.close()

    again = open_store()

    assert [(entry.public_id, entry.thumbnail_path) for entry in again.history(owner("alice"))] == before
    assert again.tables.schema_version.select().count() == len(MIGRATIONS)


def test_migrations_are_idempotent(open_store: OpenStore) -> None:
    mascots = open_store()
    save(mascots, owner("alice"))
    latest = migrations.MIGRATIONS[-1].version

    assert mascots.schema_version == latest
    assert migrations.migrate(mascots.database, mascots.tables) == []
    mascots.close()
    reopened = open_store()

    assert reopened.schema_version == latest
    assert reopened.tables.schema_version.select().count() == len(migrations.MIGRATIONS)
    assert reopened.count_history(owner("alice")) == 1


def test_a_new_migration_runs_exactly_once_on_an_existing_database(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(open_store(), owner("alice"))
    runs: list[int] = []

    def add_a_table(db: peewee.Database, tables: Tables) -> None:
        runs.append(1)
        db.execute_sql("CREATE TABLE migration_probe (id INTEGER PRIMARY KEY)")

    probe = migrations.MIGRATIONS[-1].version + 1
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, Migration(probe, "a probe", add_a_table)])
    upgraded = open_store()
    again = open_store()

    assert runs == [1]
    assert (upgraded.schema_version, again.schema_version) == (probe, probe)
    assert again.database.execute_sql("SELECT COUNT(*) FROM migration_probe").fetchone()[0] == 0
    assert again.count_history(owner("alice")) == 1


def test_a_fresh_database_gets_todays_schema_and_skips_old_steps(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(db: peewee.Database, tables: Tables) -> None:
        raise AssertionError("a fresh database already has the current schema")

    later = migrations.MIGRATIONS[-1].version + 1
    monkeypatch.setattr(
        migrations, "MIGRATIONS", [*migrations.MIGRATIONS, Migration(later, "in the models", must_not_run)]
    )
    mascots = open_store()

    assert mascots.schema_version == later
    save(mascots, owner("alice"))
