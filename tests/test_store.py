"""The store on SQLite and, when MASCOT_TEST_POSTGRES_URL is set, on PostgreSQL: history, files, sweep, migrations."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlparse

import peewee
import pytest
from PIL import Image

from mascot import imaging, store
from mascot.generator import GeneratedImages, ModelInfo, PromptUse
from mascot.request import GenerationRequest
from mascot.store import MascotStore, Migration

POSTGRES_URL = os.environ.get("MASCOT_TEST_POSTGRES_URL")
BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skipif(not POSTGRES_URL, reason="MASCOT_TEST_POSTGRES_URL is not set")),
]
MODEL = ModelInfo(name="tiny preview model", is_preview_model=True, device="cpu")
OLD = time.time() - 2 * store.ORPHAN_MIN_AGE_S

OpenStore = Callable[..., MascotStore]


def owner(name: str) -> str:
    """An owner hash as identity makes them: sha256 hex."""
    return hashlib.sha256(name.encode()).hexdigest()


def make_request(prompt: str = "a cheerful otter barista", *, seed: int = 7, count: int = 1) -> GenerationRequest:
    return GenerationRequest.from_user(
        prompt=prompt,
        negative_prompt="blurry",
        seed=seed,
        width=320,
        height=256,
        num_inference_steps=2,
        guidance_scale=5.5,
        prior_num_inference_steps=3,
        prior_guidance_scale=1.5,
        num_images_per_prompt=count,
    )


def make_result(request: GenerationRequest, *, prompt_cut: str = "") -> GeneratedImages:
    count = request.num_images_per_prompt
    return GeneratedImages(
        images=[Image.new("RGB", (request.width, request.height), (40 * i, 100, 200)) for i in range(count)],
        seeds=[request.seed + i for i in range(count)],
        prompt=PromptUse(used=request.prompt, cut=prompt_cut),
        negative_prompt=PromptUse(used=request.negative_prompt),
        prior_seconds=0.25,
        decoder_seconds=1.5,
    )


def save(mascots: MascotStore, who: str, prompt: str = "a cheerful otter barista", *, seed: int = 7, count: int = 1):
    request = make_request(prompt, seed=seed, count=count)
    return mascots.save_generation(who, request, make_result(request), MODEL)


def png_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def orphan_path(images_dir: Path, month: str = "2020/01") -> Path:
    path = images_dir / month / f"{uuid.uuid4().hex}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    os.utime(path, (OLD, OLD))
    return path


def fresh_postgres_schema(admin_url: str) -> Iterator[str]:
    """A URL whose connections work in a new, empty schema of the test database; the schema is dropped afterwards.

    A schema costs well under a millisecond where CREATE DATABASE costs a few hundred; the store only sees a URL.
    """
    import psycopg2

    schema = f"mascot_test_{uuid.uuid4().hex[:16]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{schema}"')
        parts = urlparse(admin_url)
        query = "&".join(filter(None, [parts.query, urlencode({"options": f"-csearch_path={schema}"})]))
        yield parts._replace(query=query).geturl()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.close()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'mascots.db'}"
    else:
        assert POSTGRES_URL
        yield from fresh_postgres_schema(POSTGRES_URL)


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "images"


@pytest.fixture
def open_store(database_url: str, images_dir: Path) -> Iterator[OpenStore]:
    """Opens stores on this test's database and images folder; closes them all afterwards."""
    opened: list[MascotStore] = []

    def open_(url: str = database_url, folder: Path = images_dir) -> MascotStore:
        opened.append(MascotStore(url, folder))
        return opened[-1]

    yield open_
    for mascots in opened:
        mascots.close()


@pytest.fixture
def mascots(open_store: OpenStore) -> MascotStore:
    return open_store()


def test_saved_generations_come_back_newest_first_with_their_prompts(mascots: MascotStore) -> None:
    alice = owner("alice")
    first = save(mascots, alice, "an otter barista", seed=10, count=2)
    second = save(mascots, alice, "a fox astronaut", seed=20)

    history = mascots.history(alice)

    assert [(entry.prompt, entry.seed) for entry in history] == [
        ("a fox astronaut", 20),
        ("an otter barista", 10),
        ("an otter barista", 11),
    ]
    assert [entry.generation_id for entry in history] == [second.generation_id, *[first.generation_id] * 2]
    assert [entry.image_id for entry in history] == [*second.image_ids, *first.image_ids]
    assert [entry.path for entry in history] == [*second.image_paths, *first.image_paths]
    assert all(entry.path.is_absolute() and entry.path.is_file() for entry in history)
    assert history[0].negative_prompt == "blurry"
    assert (history[0].width, history[0].height) == (320, 256)
    assert history[0].caption == "a fox astronaut"
    assert history[0].created_at.tzinfo == UTC
    assert abs((datetime.now(UTC) - history[0].created_at).total_seconds()) < 60
    assert mascots.count_history(alice) == 3


def test_image_files_live_under_year_and_month_with_random_names(mascots: MascotStore, images_dir: Path) -> None:
    saved = save(mascots, owner("alice"), count=2)

    now = datetime.now(UTC)
    for path in saved.image_paths:
        relative = path.relative_to(images_dir.resolve()).as_posix()
        assert store.IMAGE_PATH_PATTERN.fullmatch(relative)
        assert relative.startswith(f"{now:%Y/%m}/") or relative.startswith(f"{now.year}/")
    assert len(set(saved.image_paths)) == 2


def test_each_png_carries_every_parameter_its_own_seed_and_the_model(mascots: MascotStore) -> None:
    request = make_request(seed=100, count=2)
    saved = mascots.save_generation(owner("alice"), request, make_result(request, prompt_cut="and more"), MODEL)

    parameters = imaging.read_parameters(saved.image_paths[1])

    assert parameters == {
        **request.as_dict(),
        "seed": 101,
        "model_name": "tiny preview model",
        "prompt_cut": "and more",
    }
    with Image.open(saved.image_paths[1]) as image:
        assert image.size == (320, 256)


def test_every_request_field_is_stored_under_its_diffusers_name(mascots: MascotStore) -> None:
    request = make_request(count=2)
    saved = mascots.save_generation(owner("alice"), request, make_result(request, prompt_cut="cut words"), MODEL)

    row = mascots.tables.generation.get_by_id(saved.generation_id)

    assert {name: getattr(row, name) for name in request.as_dict()} == request.as_dict()
    assert (row.prompt_cut, row.negative_prompt_cut, row.model_name) == ("cut words", "", "tiny preview model")
    assert (row.prior_seconds, row.decoder_seconds) == (0.25, 1.5)


def test_the_largest_seed_is_stored_exactly(mascots: MascotStore) -> None:
    alice = owner("alice")
    save(mascots, alice, seed=2**32 - 1)

    assert mascots.history(alice)[0].seed == 2**32 - 1


def test_history_pages_cover_every_image_once(mascots: MascotStore) -> None:
    alice = owner("alice")
    for seed in range(5):
        save(mascots, alice, f"mascot {seed}", seed=seed)

    pages = [mascots.history(alice, page=page, per_page=2) for page in (1, 2, 3, 4)]

    assert [len(page) for page in pages] == [2, 2, 1, 0]
    assert [entry.seed for page in pages for entry in page] == [4, 3, 2, 1, 0]
    assert mascots.count_history(alice) == 5


def test_paging_arguments_out_of_range_are_refused(mascots: MascotStore) -> None:
    alice = owner("alice")
    with pytest.raises(ValueError, match="page"):
        mascots.history(alice, page=0)
    with pytest.raises(ValueError, match="per_page"):
        mascots.history(alice, per_page=0)
    with pytest.raises(ValueError, match="per_page"):
        mascots.history(alice, per_page=store.MAX_PER_PAGE + 1)


def test_two_browsers_never_see_each_others_history(mascots: MascotStore) -> None:
    alice, bob = owner("alice"), owner("bob")
    save(mascots, alice, "alice's otter", count=2)
    save(mascots, bob, "bob's fox")

    assert {entry.prompt for entry in mascots.history(alice)} == {"alice's otter"}
    assert {entry.prompt for entry in mascots.history(bob)} == {"bob's fox"}
    assert (mascots.count_history(alice), mascots.count_history(bob)) == (2, 1)


def test_a_browser_never_seen_has_no_history(mascots: MascotStore) -> None:
    save(mascots, owner("alice"))

    assert mascots.history(owner("stranger")) == []
    assert mascots.count_history(owner("stranger")) == 0


@pytest.mark.parametrize("bad", ["", "abc", "A" * 64, "g" * 64, owner("x")[:-1], owner("x") + "0", "1 OR 1=1"])
def test_anything_but_an_owner_hash_is_refused(mascots: MascotStore, bad: str) -> None:
    with pytest.raises(ValueError, match="owner_hash"):
        mascots.history(bad)
    with pytest.raises(ValueError, match="owner_hash"):
        mascots.count_history(bad)
    with pytest.raises(ValueError, match="owner_hash"):
        save(mascots, bad)


def test_result_without_one_seed_per_image_is_refused_before_writing(mascots: MascotStore, images_dir: Path) -> None:
    request = make_request(count=2)
    result = make_result(request)
    broken = GeneratedImages(images=result.images, seeds=[1], prompt=result.prompt, negative_prompt=result.prompt)

    with pytest.raises(ValueError, match="seed"):
        mascots.save_generation(owner("alice"), request, broken, MODEL)
    assert png_files(images_dir) == []


def test_reopening_the_store_keeps_history_and_files(open_store: OpenStore) -> None:
    alice = owner("alice")
    first = open_store()
    save(first, alice, "kept across restarts", count=2)
    before = first.history(alice)
    first.close()

    reopened = open_store()

    assert reopened.history(alice) == before
    assert all(entry.path.is_file() for entry in before)
    save(reopened, alice, "after the restart")
    assert reopened.count_history(alice) == 3


def test_image_files_are_written_before_their_rows(mascots: MascotStore, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = owner("alice")
    rows_seen_while_writing: list[int] = []
    real_save_png = imaging.save_png

    def save_png_and_look(image: Image.Image, path: Path, parameters: dict[str, object]) -> None:
        rows_seen_while_writing.append(mascots.count_history(alice))
        real_save_png(image, path, parameters)

    monkeypatch.setattr(imaging, "save_png", save_png_and_look)
    save(mascots, alice, count=3)

    assert rows_seen_while_writing == [0, 0, 0]
    assert mascots.count_history(alice) == 3


def test_a_failed_transaction_leaves_no_file_and_no_row(
    mascots: MascotStore, images_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = owner("alice")

    def fail_after_the_generation_row(*args: object) -> list[int]:
        raise peewee.IntegrityError("simulated failure inside the transaction")

    monkeypatch.setattr(mascots, "_insert_images", fail_after_the_generation_row)
    with pytest.raises(peewee.IntegrityError):
        save(mascots, alice, count=2)

    assert png_files(images_dir) == []
    assert mascots.count_history(alice) == 0
    assert mascots.tables.generation.select().count() == 0  # the generation row was rolled back too
    monkeypatch.undo()
    save(mascots, alice)
    assert mascots.count_history(alice) == 1


def test_a_failed_image_write_removes_the_images_already_written(
    mascots: MascotStore, images_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save_png = imaging.save_png
    calls: list[Path] = []

    def fail_on_the_second(image: Image.Image, path: Path, parameters: dict[str, object]) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real_save_png(image, path, parameters)

    monkeypatch.setattr(imaging, "save_png", fail_on_the_second)
    with pytest.raises(OSError, match="disk full"):
        save(mascots, owner("alice"), count=3)

    assert len(calls) == 2
    assert png_files(images_dir) == []
    assert mascots.tables.generation.select().count() == 0


def test_sweep_removes_unclaimed_pngs_and_keeps_claimed_ones(mascots: MascotStore, images_dir: Path) -> None:
    saved = save(mascots, owner("alice"), count=2)
    for path in saved.image_paths:
        os.utime(path, (OLD, OLD))  # as old as the orphan: only the claim may save them
    orphan = orphan_path(images_dir)

    assert mascots.sweep_orphan_files() == 1

    assert not orphan.exists()
    assert all(path.is_file() for path in saved.image_paths)
    assert mascots.history(owner("alice"))[0].path.is_file()


def test_sweep_spares_recent_files_a_sibling_process_may_be_about_to_claim(
    mascots: MascotStore, images_dir: Path
) -> None:
    recent = orphan_path(images_dir)
    os.utime(recent, None)

    assert mascots.sweep_orphan_files() == 0
    assert recent.exists()
    assert mascots.sweep_orphan_files(min_age_s=0) == 1
    assert not recent.exists()


def test_sweep_leaves_files_it_would_never_have_written(mascots: MascotStore, images_dir: Path) -> None:
    month = images_dir / "2020" / "01"
    month.mkdir(parents=True)
    strangers = [
        month / "notes.txt",
        month / "picture.png",
        month / f"{uuid.uuid4().hex}.png.tmp",
        images_dir / f"{uuid.uuid4().hex}.png",
        images_dir / "2020" / "01" / "deeper" / f"{uuid.uuid4().hex}.png",
    ]
    for path in strangers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not ours")
        os.utime(path, (OLD, OLD))

    assert mascots.sweep_orphan_files() == 0
    assert all(path.exists() for path in strangers)


def test_sweep_never_touches_files_outside_the_images_folder(
    mascots: MascotStore, images_dir: Path, tmp_path: Path
) -> None:
    outside = orphan_path(tmp_path / "outside")
    (images_dir / "2021").symlink_to(outside.parent.parent, target_is_directory=True)  # a linked year folder
    (images_dir / "2022" / "02").mkdir(parents=True)
    linked_file = images_dir / "2022" / "02" / f"{uuid.uuid4().hex}.png"
    linked_file.symlink_to(outside)

    assert mascots.sweep_orphan_files(min_age_s=0) == 0

    assert outside.is_file()
    assert linked_file.is_symlink()


def test_opening_a_store_sweeps_old_orphans(open_store: OpenStore, images_dir: Path) -> None:
    first = open_store()
    orphan = orphan_path(images_dir)
    first.close()

    open_store()

    assert not orphan.exists()


def test_migrations_are_idempotent(open_store: OpenStore) -> None:
    mascots = open_store()
    save(mascots, owner("alice"))
    latest = store.MIGRATIONS[-1].version

    assert mascots.schema_version == latest
    assert store.migrate(mascots.database, mascots.tables) == []
    mascots.close()
    reopened = open_store()

    assert reopened.schema_version == latest
    assert reopened.tables.schema_version.select().count() == len(store.MIGRATIONS)
    assert reopened.count_history(owner("alice")) == 1


def test_a_new_migration_runs_exactly_once_on_an_existing_database(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(open_store(), owner("alice"))
    runs: list[int] = []

    def add_a_table(db: peewee.Database, tables: store.Tables) -> None:
        runs.append(1)
        db.execute_sql("CREATE TABLE migration_probe (id INTEGER PRIMARY KEY)")

    monkeypatch.setattr(store, "MIGRATIONS", [*store.MIGRATIONS, Migration(2, "a probe table", add_a_table)])
    upgraded = open_store()
    again = open_store()

    assert runs == [1]
    assert (upgraded.schema_version, again.schema_version) == (2, 2)
    assert again.database.execute_sql("SELECT COUNT(*) FROM migration_probe").fetchone()[0] == 0
    assert again.count_history(owner("alice")) == 1


def test_a_fresh_database_gets_todays_schema_and_skips_old_steps(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(db: peewee.Database, tables: store.Tables) -> None:
        raise AssertionError("a fresh database already has the current schema")

    monkeypatch.setattr(store, "MIGRATIONS", [*store.MIGRATIONS, Migration(2, "already in the models", must_not_run)])
    mascots = open_store()

    assert mascots.schema_version == 2
    save(mascots, owner("alice"))


def test_concurrent_saves_from_many_threads_all_land(mascots: MascotStore) -> None:
    alice, errors = owner("alice"), []

    def save_some(thread: int) -> None:
        try:
            for i in range(4):
                save(mascots, alice if i % 2 else owner(f"browser {thread}"), f"thread {thread} image {i}")
        except Exception as error:  # collected: an exception in a thread would not fail the test by itself
            errors.append(error)
        finally:
            mascots.close()  # this thread's connection

    threads = [threading.Thread(target=save_some, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert mascots.count_history(alice) == 8
    assert all(mascots.count_history(owner(f"browser {n}")) == 2 for n in range(4))


def test_two_stores_in_one_process_keep_to_their_own_database(tmp_path: Path) -> None:
    one = MascotStore(f"sqlite:///{tmp_path / 'one.db'}", tmp_path / "one")
    two = MascotStore(f"sqlite:///{tmp_path / 'two.db'}", tmp_path / "two")
    try:
        alice = owner("alice")
        save(one, alice, "only in one")
        save(two, alice, "only in two", count=2)

        assert [entry.prompt for entry in one.history(alice)] == ["only in one"]
        assert [entry.prompt for entry in two.history(alice)] == ["only in two"] * 2
        assert all(entry.path.is_relative_to((tmp_path / "two").resolve()) for entry in two.history(alice))
    finally:
        one.close()
        two.close()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    mascots = MascotStore(f"sqlite:///{tmp_path / 'nested' / 'mascots.db'}", tmp_path / "images")
    try:
        assert mascots.database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert mascots.database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
        assert mascots.database.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 1000
    finally:
        mascots.close()


def test_an_unsupported_database_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sqlite:/// or postgresql://"):
        MascotStore("mysql://localhost/mascots", tmp_path / "images")


def test_caption_shortens_long_prompts() -> None:
    long_prompt = "a very " * 30 + "long prompt"

    assert store.caption("short prompt") == "short prompt"
    assert len(store.caption(long_prompt)) <= store.CAPTION_CHARACTERS
    assert store.caption(long_prompt).endswith("…")
