"""The store: peewee models, migrations and queries for browsers, their generations and the image files on disk."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import peewee
from playhouse.db_url import connect

from mascot import imaging
from mascot.generator import GeneratedImages, ModelInfo
from mascot.request import GenerationRequest

logger = logging.getLogger(__name__)

# Queries keep peewee's one-clause-per-line layout; "# fmt: skip" stops the formatter from joining the clauses.

OWNER_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
# The only files the store ever writes, relative to the images folder; the sweep touches nothing else.
IMAGE_PATH_PATTERN = re.compile(r"[0-9]{4}/[0-9]{2}/[0-9a-f]{32}\.png")
MAX_PER_PAGE = 200
CAPTION_CHARACTERS = 60
# A file is written just before the row that claims it; another replica sharing the folder may be in that window.
ORPHAN_MIN_AGE_S = 3600.0
SWEEP_QUERY_CHUNK = 500
# Any constant works: it only has to be the same in every replica that migrates one PostgreSQL database.
POSTGRES_MIGRATION_LOCK = 0x6D6173636F74
SQLITE_PRAGMAS = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 10_000, "synchronous": "normal"}


@dataclass(frozen=True)
class SavedGeneration:
    """A generation as stored: its id, and its images' ids and absolute paths in seed order."""

    generation_id: int
    image_ids: tuple[int, ...]
    image_paths: tuple[Path, ...]


@dataclass(frozen=True)
class HistoryEntry:
    """One image of a browser's history, with what a gallery shows about it."""

    image_id: int
    generation_id: int
    path: Path
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    created_at: datetime
    caption: str


@dataclass(frozen=True)
class Tables:
    """One store's model classes. Each store defines its own, bound to its own database, so two never mix."""

    schema_version: type[peewee.Model]
    browser: type[peewee.Model]
    generation: type[peewee.Model]
    image: type[peewee.Model]

    @property
    def data_tables(self) -> list[type[peewee.Model]]:
        """The tables that hold data, parents first (the order to create them in)."""
        return [self.browser, self.generation, self.image]


def define_tables(db: peewee.Database) -> Tables:
    """The schema, as peewee models bound to `db`."""

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
        seed = peewee.BigIntegerField()  # up to 2**32 - 1: more than a PostgreSQL integer holds
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

        class Meta:
            table_name = "mascot_image"
            indexes = ((("generation", "position"), True),)

    return Tables(schema_version=SchemaVersion, browser=Browser, generation=Generation, image=MascotImage)


@dataclass(frozen=True)
class Migration:
    """One step of the schema's history; `apply` runs inside the migration transaction."""

    version: int
    description: str
    apply: Callable[[peewee.Database, Tables], None]


def create_current_schema(db: peewee.Database, tables: Tables) -> None:
    """Create every data table as the models define them today."""
    db.create_tables(tables.data_tables)


# Ordered; append, never edit. A fresh database gets today's schema at once and is stamped with the latest version
# (Alembic's "create_all, then stamp"), so a later migration only has to bring an existing, older database forward.
MIGRATIONS: list[Migration] = [
    Migration(1, "browsers, generations and their images", create_current_schema),
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
    """Let one process at a time migrate. SQLite's write transactions already begin IMMEDIATE (see open_database)."""
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (POSTGRES_MIGRATION_LOCK,))


def _record_versions(tables: Tables, steps: Sequence[Migration]) -> None:
    now = utc_now()
    for step in steps:
        tables.schema_version.create(version=step.version, description=step.description, applied_at=now)


def open_database(database_url: str) -> peewee.Database:
    """A peewee database for `sqlite:///path` (WAL, foreign keys, busy timeout) or `postgresql://...`."""
    scheme = urlparse(database_url).scheme
    if scheme == "sqlite":
        db = connect(database_url, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE")
        # IMMEDIATE: a transaction that reads and then writes would otherwise fail with "database is locked" at
        # once when another connection wrote in between, without waiting for the busy timeout.
        if db.database != ":memory:":
            Path(db.database).parent.mkdir(parents=True, exist_ok=True)
        return db
    if scheme in {"postgresql", "postgres"}:
        return connect(database_url)
    raise ValueError(f"database_url must start with sqlite:/// or postgresql:// (got a '{scheme}:' URL).")


def utc_now() -> datetime:
    """Now in UTC, without tzinfo: what both SQLite and a PostgreSQL `timestamp` column store unchanged."""
    return datetime.now(UTC).replace(tzinfo=None)


class MascotStore:
    """Browsers, generations and image files. Every query is scoped by the owner hash that identity derived."""

    def __init__(self, database_url: str, images_dir: Path) -> None:
        self.images_dir = images_dir.resolve()
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.database = open_database(database_url)
        self.tables = define_tables(self.database)
        check_request_columns(self.tables)
        applied = migrate(self.database, self.tables)
        if applied:
            logger.info("Database schema now at version %d (applied %s).", applied[-1], applied)
        self.sweep_orphan_files()

    def close(self) -> None:
        """Close this thread's connection (peewee keeps one per thread)."""
        self.database.close()

    @property
    def schema_version(self) -> int:
        """The latest migration applied to this database."""
        return schema_version(self.tables)

    def save_generation(
        self, owner_hash: str, request: GenerationRequest, result: GeneratedImages, model: ModelInfo
    ) -> SavedGeneration:
        """Write the image files, then their rows in one transaction; on failure, remove the files written."""
        require_owner_hash(owner_hash)
        if not result.images or len(result.images) != len(result.seeds):
            raise ValueError(
                f"A generation needs one seed per image (got {len(result.images)} images, {len(result.seeds)} seeds)."
            )
        created_at = utc_now()
        relative_paths = self._write_files(request, result, model, created_at)
        try:
            with self.database.atomic():
                generation_id = self._insert_generation(owner_hash, request, result, model, created_at)
                image_ids = self._insert_images(generation_id, result, relative_paths, created_at)
        except BaseException:
            self._remove_files(relative_paths)
            raise
        return SavedGeneration(generation_id, tuple(image_ids), tuple(self.images_dir / p for p in relative_paths))

    def history(self, owner_hash: str, *, page: int = 1, per_page: int = 24) -> list[HistoryEntry]:
        """This browser's images, newest generation first (its images in seed order), one page of them."""
        require_owner_hash(owner_hash)
        if page < 1:
            raise ValueError(f"page must be at least 1 (got {page}).")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE} (got {per_page}).")
        image, generation = self.tables.image, self.tables.generation
        query = (
            self._owned_images(owner_hash)
            .order_by(generation.created_at.desc(), generation.id.desc(), image.position)
            .paginate(page, per_page)
        )
        return [self._history_entry(row) for row in query]

    def count_history(self, owner_hash: str) -> int:
        """How many images this browser has."""
        require_owner_hash(owner_hash)
        return self._owned_images(owner_hash).count()

    def sweep_orphan_files(self, *, min_age_s: float = ORPHAN_MIN_AGE_S) -> int:
        """Remove image files that no row claims and that are older than `min_age_s`; returns how many."""
        oldest_kept = time.time() - min_age_s
        candidates = [path for path, modified in self._image_files() if modified <= oldest_kept]
        claimed = self._claimed(candidates)
        orphans = [path for path in candidates if path not in claimed]
        self._remove_files(orphans)
        if orphans:
            logger.info("Removed %d image files that no database row claims.", len(orphans))
        return len(orphans)

    def _owned_images(self, owner_hash: str) -> peewee.ModelSelect:
        image, generation, browser = self.tables.image, self.tables.generation, self.tables.browser
        return (
            image
            .select(image, generation)
            .join(generation)
            .join(browser)
            .where(browser.owner_hash == owner_hash)
        )  # fmt: skip

    def _history_entry(self, row: peewee.Model) -> HistoryEntry:
        prompt = row.generation.prompt
        return HistoryEntry(
            image_id=row.id,
            generation_id=row.generation.id,
            path=self.images_dir / row.path,
            prompt=prompt,
            negative_prompt=row.generation.negative_prompt,
            seed=row.seed,
            width=row.width,
            height=row.height,
            created_at=row.generation.created_at.replace(tzinfo=UTC),
            caption=caption(prompt),
        )

    def _write_files(
        self, request: GenerationRequest, result: GeneratedImages, model: ModelInfo, created_at: datetime
    ) -> list[str]:
        """Write each image under images/<yyyy>/<mm>/; all or none (a failure removes those already written)."""
        written: list[str] = []
        try:
            for image, seed in zip(result.images, result.seeds, strict=True):
                relative = f"{created_at:%Y/%m}/{uuid.uuid4().hex}.png"
                imaging.save_png(image, self.images_dir / relative, embedded_parameters(request, result, model, seed))
                written.append(relative)
        except BaseException:
            self._remove_files(written)
            raise
        return written

    def _insert_generation(
        self,
        owner_hash: str,
        request: GenerationRequest,
        result: GeneratedImages,
        model: ModelInfo,
        created_at: datetime,
    ) -> int:
        browser = self.tables.browser
        (
            browser
            .insert(owner_hash=owner_hash, created_at=created_at, last_seen_at=created_at)
            .on_conflict(conflict_target=[browser.owner_hash], update={browser.last_seen_at: created_at})
            .execute()
        )  # fmt: skip
        browser_id = (
            browser
            .select(browser.id)
            .where(browser.owner_hash == owner_hash)
            .scalar()
        )  # fmt: skip
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
        self, generation_id: int, result: GeneratedImages, relative_paths: Sequence[str], created_at: datetime
    ) -> list[int]:
        ids = []
        for position, (image, seed, path) in enumerate(zip(result.images, result.seeds, relative_paths, strict=True)):
            row = self.tables.image.create(
                generation=generation_id,
                position=position,
                seed=seed,
                path=path,
                width=image.width,
                height=image.height,
                created_at=created_at,
            )
            ids.append(int(row.id))
        return ids

    def _image_files(self) -> Iterator[tuple[str, float]]:
        """(relative path, mtime) of each file under images_dir the store could have written; no symlinks followed."""
        for folder, _, files in os.walk(self.images_dir, followlinks=False):
            for name in files:
                path = Path(folder, name)
                relative = path.relative_to(self.images_dir).as_posix()
                if not IMAGE_PATH_PATTERN.fullmatch(relative) or path.is_symlink():
                    continue
                try:
                    yield relative, path.lstat().st_mtime
                except FileNotFoundError:  # another replica's sweep got there first
                    continue

    def _claimed(self, relative_paths: Sequence[str]) -> set[str]:
        image = self.tables.image
        claimed: set[str] = set()
        for start in range(0, len(relative_paths), SWEEP_QUERY_CHUNK):
            chunk = relative_paths[start : start + SWEEP_QUERY_CHUNK]
            rows = (
                image
                .select(image.path)
                .where(image.path.in_(chunk))
                .tuples()
            )  # fmt: skip
            claimed.update(path for (path,) in rows)
        return claimed

    def _remove_files(self, relative_paths: Sequence[str]) -> None:
        for relative in relative_paths:
            # The pattern guarantees the path stays inside images_dir ("yyyy/mm/<hex>.png": no "..", not absolute).
            if IMAGE_PATH_PATTERN.fullmatch(relative):
                (self.images_dir / PurePosixPath(relative)).unlink(missing_ok=True)


def check_request_columns(tables: Tables) -> None:
    """Every GenerationRequest field must have its column (same name): refuse to start rather than drop one."""
    missing = [field.name for field in fields(GenerationRequest) if field.name not in tables.generation._meta.fields]
    if missing:
        raise RuntimeError(f"The generation table has no column for {missing}: add a migration and a model field.")


def require_owner_hash(owner_hash: str) -> None:
    """Refuse anything but the 64 hex digits `identity` derives, so a raw cookie or an id cannot slip in."""
    if not isinstance(owner_hash, str) or not OWNER_HASH_PATTERN.fullmatch(owner_hash):
        raise ValueError("owner_hash must be the sha256 hex digest that BrowserIdentity.owner_hash returns.")


def embedded_parameters(
    request: GenerationRequest, result: GeneratedImages, model: ModelInfo, seed: int
) -> dict[str, object]:
    """What one image's PNG carries: the request with this image's own seed (it reproduces alone), and the model."""
    parameters: dict[str, object] = {**request.as_dict(), "seed": seed, "model_name": model.name}
    if result.prompt.cut:
        parameters["prompt_cut"] = result.prompt.cut
    if result.negative_prompt.cut:
        parameters["negative_prompt_cut"] = result.negative_prompt.cut
    return parameters


def caption(prompt: str) -> str:
    """The prompt, shortened for a gallery tile."""
    if len(prompt) <= CAPTION_CHARACTERS:
        return prompt
    return prompt[: CAPTION_CHARACTERS - 1].rstrip() + "…"
