"""The store on SQLite and, when MASCOT_TEST_POSTGRES_URL is set, on PostgreSQL: saving, history, files and sweep."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import peewee
import pytest
from PIL import Image

from mascot.generation.generator import GeneratedImages
from mascot.store import entries, files, imaging
from mascot.store.faults import StoreUnavailable
from mascot.store.store import MascotStore
from mascot.store.upkeep import FileCheck
from tests.support.store import (
    MODEL,
    OLD,
    OpenStore,
    all_files,
    make_old,
    make_request,
    make_result,
    orphan_path,
    owner,
    png_files,
    save,
)


def test_saved_generations_come_back_newest_first_with_their_prompts(mascots: MascotStore) -> None:
    alice = owner("alice")
    first = save(mascots, alice, "an otter barista", seed=10, count=2)
    second = save(mascots, alice, "a fox astronaut", seed=20)

    history = mascots.history(alice)

    assert [(entry.request.prompt, entry.seed) for entry in history] == [
        ("a fox astronaut", 20),
        ("an otter barista", 10),
        ("an otter barista", 11),
    ]
    assert [entry.generation_id for entry in history] == [second.generation_id, *[first.generation_id] * 2]
    assert [entry.image_id for entry in history] == [*second.image_ids, *first.image_ids]
    assert [entry.path for entry in history] == [*second.image_paths, *first.image_paths]
    assert all(entry.path.is_absolute() and entry.path.is_file() for entry in history)
    assert history[0].request.negative_prompt == "blurry"
    assert (history[0].request.width, history[0].request.height) == (320, 256)
    assert history[0].caption == "a fox astronaut"
    assert history[0].created_at.tzinfo == UTC
    assert abs((datetime.now(UTC) - history[0].created_at).total_seconds()) < 60
    assert mascots.count_history(alice) == 3


def test_image_files_live_under_year_and_month_with_random_names(mascots: MascotStore, images_dir: Path) -> None:
    saved = save(mascots, owner("alice"), count=2)

    now = datetime.now(UTC)
    for path in saved.image_paths:
        relative = path.relative_to(images_dir.resolve()).as_posix()
        assert files.IMAGE_PATH_PATTERN.fullmatch(relative)
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
        # what the model was given, as other tools show it (the fake result used the request's words)
        "model_prompt": request.prompt,
        "model_negative_prompt": request.negative_prompt,
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
        mascots.history(alice, per_page=entries.MAX_PER_PAGE + 1)


def test_two_browsers_never_see_each_others_history(mascots: MascotStore) -> None:
    alice, bob = owner("alice"), owner("bob")
    save(mascots, alice, "alice's otter", count=2)
    save(mascots, bob, "bob's fox")

    assert {entry.request.prompt for entry in mascots.history(alice)} == {"alice's otter"}
    assert {entry.request.prompt for entry in mascots.history(bob)} == {"bob's fox"}
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

    assert all_files(images_dir) == []
    assert mascots.count_history(alice) == 0
    assert mascots.tables.generation.select().count() == 0  # the generation row was rolled back too
    monkeypatch.undo()
    save(mascots, alice)
    assert mascots.count_history(alice) == 1


def test_a_commit_whose_answer_was_lost_keeps_the_files_its_rows_may_claim(
    mascots: MascotStore, images_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server committed, and the connection was lost before its answer came: the rows are there, so their files
    must be too (a review of the store found them removed: a mascot in the history whose picture is gone)."""
    alice = owner("alice")
    commit = mascots.database.commit

    def commit_then_lose_the_connection() -> None:
        commit()
        raise peewee.OperationalError("server closed the connection unexpectedly (in a test)")

    monkeypatch.setattr(mascots.database, "commit", commit_then_lose_the_connection)
    with pytest.raises(StoreUnavailable):
        save(mascots, alice, count=2)
    monkeypatch.undo()

    [first, second] = mascots.history(alice)
    assert first.path.is_file() and second.path.is_file()


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
    with pytest.raises(StoreUnavailable) as refused:  # a sentence for the person; the disk's error is its cause
        save(mascots, owner("alice"), count=3)
    assert str(refused.value.__cause__) == "disk full"

    assert len(calls) == 3  # the images are written side by side: the third was under way when the second failed
    assert all_files(images_dir) == []  # the others' PNGs and thumbnails too
    assert mascots.tables.generation.select().count() == 0


LAST_COLOUR = (200, 100, 50)  # the second picture's: its thumbnail is the slow write


def test_a_failed_write_waits_for_the_others_before_removing_them(
    mascots: MascotStore, images_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first PNG fails while the second image's thumbnail is still being written. Removing before that write has
    # ended would leave its file behind: the slow write holds on until a removal happens (or gives up after a while,
    # as it must when the store waits for it), so a removal too early is seen every time, not by chance.
    real_save_png, real_save_thumbnail = imaging.save_png, imaging.save_thumbnail
    real_remove = files.ImageFiles.remove
    slow_write_started, removed = threading.Event(), threading.Event()

    def fail_the_first_once_the_slow_write_runs(image: Image.Image, path: Path, parameters: dict[str, object]) -> None:
        if image.getpixel((0, 0)) != LAST_COLOUR:
            slow_write_started.wait(30)
            raise OSError("disk full")
        real_save_png(image, path, parameters)

    def slow_last_thumbnail(image: Image.Image, path: Path) -> Image.Image:
        if image.getpixel((0, 0)) == LAST_COLOUR:
            slow_write_started.set()
            removed.wait(2)
        return real_save_thumbnail(image, path)

    def remove_and_tell(self: files.ImageFiles, relative_paths: Iterable[str]) -> None:
        real_remove(self, relative_paths)
        removed.set()

    monkeypatch.setattr(files, "ENCODERS", ThreadPoolExecutor(4))  # room for every write at once, on any machine
    monkeypatch.setattr(imaging, "save_png", fail_the_first_once_the_slow_write_runs)
    monkeypatch.setattr(imaging, "save_thumbnail", slow_last_thumbnail)
    monkeypatch.setattr(files.ImageFiles, "remove", remove_and_tell)
    images = [Image.new("RGB", (64, 64), (10, 20, 30)), Image.new("RGB", (64, 64), LAST_COLOUR)]
    with pytest.raises(OSError, match="disk full"):
        mascots.files.write_images(images, [{"seed": 1}, {"seed": 2}], datetime(2026, 12, 5, tzinfo=UTC))

    assert removed.is_set()
    assert all_files(images_dir) == []


def test_sweep_removes_unclaimed_pngs_and_keeps_claimed_ones(mascots: MascotStore, images_dir: Path) -> None:
    saved = save(mascots, owner("alice"), count=2)
    for path in saved.image_paths:
        os.utime(path, (OLD, OLD))  # as old as the orphan: only the claim may save them
    orphan = orphan_path(images_dir)

    assert mascots.sweep_orphan_files() == 1

    assert not orphan.exists()
    assert all(path.is_file() for path in saved.image_paths)
    assert mascots.history(owner("alice"))[0].path.is_file()


def test_a_failed_thumbnail_write_removes_everything_written(
    mascots: MascotStore, images_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save_thumbnail = imaging.save_thumbnail
    calls: list[Path] = []

    def fail_on_the_second(image: Image.Image, path: Path) -> Image.Image:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save_thumbnail(image, path)

    monkeypatch.setattr(imaging, "save_thumbnail", fail_on_the_second)
    with pytest.raises(StoreUnavailable) as refused:  # a sentence for the person; the disk's error is its cause
        save(mascots, owner("alice"), count=2)
    assert str(refused.value.__cause__) == "disk full"

    assert len(calls) == 2
    assert all_files(images_dir) == []
    assert mascots.tables.image.select().count() == 0


def test_each_image_gets_its_thumbnail_beside_it_at_save_time(mascots: MascotStore, images_dir: Path) -> None:
    saved = save(mascots, owner("alice"), count=2)

    for image_path, thumbnail_path in zip(saved.image_paths, saved.thumbnail_paths, strict=True):
        relative = thumbnail_path.relative_to(images_dir.resolve()).as_posix()
        assert files.THUMBNAIL_PATH_PATTERN.fullmatch(relative)
        assert thumbnail_path == image_path.with_name(image_path.stem + ".thumb.webp")
        assert thumbnail_path.is_file()
    assert len(all_files(images_dir)) == 4
    assert [entry.thumbnail_path for entry in mascots.history(owner("alice"))] == list(saved.thumbnail_paths)


def test_sweep_removes_unclaimed_thumbnails_and_keeps_claimed_ones(mascots: MascotStore, images_dir: Path) -> None:
    saved = save(mascots, owner("alice"))
    make_old(*saved.image_paths, *saved.thumbnail_paths)
    orphan = images_dir / "2020" / "01" / f"{uuid.uuid4().hex}.thumb.webp"
    imaging.save_thumbnail(Image.new("RGB", (32, 32)), orphan)
    make_old(orphan)

    assert mascots.sweep_orphan_files() == 1

    assert not orphan.exists()
    assert saved.thumbnail_paths[0].is_file() and saved.image_paths[0].is_file()


def test_sweep_removes_the_half_written_files_of_a_killed_save(mascots: MascotStore, images_dir: Path) -> None:
    """A process killed while it wrote a picture leaves write_atomically's temporary file (a resilience walkthrough
    found them kept across restarts)."""
    saved = save(mascots, owner("alice"))
    make_old(*saved.image_paths, *saved.thumbnail_paths)
    month = images_dir / "2020" / "01"
    month.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    left = [month / f".{name}.png.k3x_9q2a.tmp", month / f".{name}.thumb.webp.z1y2x3w4.tmp"]
    fresh = month / f".{uuid.uuid4().hex}.png.abcd1234.tmp"  # maybe another replica's save right now: kept
    not_ours = month / ".notes.tmp"
    for path in (*left, fresh, not_ours):
        path.write_bytes(b"half a picture")
    make_old(*left, not_ours)

    assert mascots.sweep_orphan_files() == 2

    assert not any(path.exists() for path in left)
    assert fresh.exists() and not_ours.exists()
    assert saved.image_paths[0].is_file() and saved.thumbnail_paths[0].is_file()


def test_a_thumbnail_whose_image_row_was_deleted_is_swept(mascots: MascotStore) -> None:
    saved = save(mascots, owner("alice"))
    mascots.tables.image.delete().execute()  # as if a crash came between a delete's commit and its file removal
    make_old(*saved.image_paths, *saved.thumbnail_paths)

    assert mascots.sweep_orphan_files() == 2

    assert not saved.thumbnail_paths[0].exists() and not saved.image_paths[0].exists()


def test_rows_whose_image_file_is_missing_are_marked_at_start_and_hidden(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    alice = owner("alice")
    first = open_store()
    saved = save(first, alice, count=3)
    lost, kept = saved.public_ids[:2], saved.public_ids[2]
    for path in saved.image_paths[:2]:
        path.unlink()
    first.close()

    with caplog.at_level("WARNING", logger="mascot.store.store"):
        reopened = open_store()

    assert "2 images have lost their file" in caplog.text
    assert [entry.public_id for entry in reopened.history(alice)] == [kept]
    assert reopened.count_history(alice) == 1
    assert [entry.public_id for entry in reopened.gallery(None).items] == [kept]
    assert reopened.gallery(None).total == reopened.count_gallery() == 1
    assert all(reopened.mascot(public_id, alice) is None for public_id in lost)
    assert reopened.toggle_like(owner("bob"), lost[0]) is None
    image = reopened.tables.image
    assert image.select().where(image.file_missing == True).count() == 2  # noqa: E712 - rows kept, only marked
    assert all(path.is_file() for path in saved.thumbnail_paths)  # claimed by their rows: kept
    assert reopened.sweep_orphan_files(min_age_s=0) == 0


def test_a_missing_file_that_comes_back_is_shown_again(mascots: MascotStore) -> None:
    saved = save(mascots, owner("alice"))
    backup = saved.image_paths[0].read_bytes()
    saved.image_paths[0].unlink()
    assert mascots.check_files().missing == 1
    assert mascots.count_history(owner("alice")) == 0

    saved.image_paths[0].write_bytes(backup)

    assert mascots.check_files() == FileCheck(missing=0, restored=1, thumbnails_made=0)
    assert mascots.count_history(owner("alice")) == 1
    assert mascots.check_files() == FileCheck(missing=0, restored=0, thumbnails_made=0)


def test_a_lost_thumbnail_is_made_again_at_start(open_store: OpenStore) -> None:
    first = open_store()
    saved = save(first, owner("alice"))
    saved.thumbnail_paths[0].unlink()
    first.close()

    reopened = open_store()

    assert saved.thumbnail_paths[0].is_file()
    with Image.open(saved.thumbnail_paths[0]) as thumbnail:
        assert thumbnail.format == "WEBP" and max(thumbnail.size) == 256
    assert reopened.history(owner("alice"))[0].thumbnail_path == saved.thumbnail_paths[0]


def test_a_damaged_image_gets_no_thumbnail_and_the_store_still_opens(
    open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    first = open_store()
    saved = save(first, owner("alice"))
    saved.thumbnail_paths[0].unlink()
    saved.image_paths[0].write_bytes(b"not a png any more")
    first.close()

    with caplog.at_level("WARNING", logger="mascot.store.store"):
        reopened = open_store()

    assert "Could not make a thumbnail" in caplog.text
    assert reopened.count_history(owner("alice")) == 1


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
        month / f"{uuid.uuid4().hex}.webp",
        month / "notes.thumb.webp",
        month / f".{uuid.uuid4().hex}.thumb.webp.tmp",  # no random part: not write_atomically's
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

        assert [entry.request.prompt for entry in one.history(alice)] == ["only in one"]
        assert [entry.request.prompt for entry in two.history(alice)] == ["only in two"] * 2
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

    assert entries.caption("short prompt") == "short prompt"
    assert len(entries.caption(long_prompt)) <= entries.CAPTION_CHARACTERS
    assert entries.caption(long_prompt).endswith("…")
