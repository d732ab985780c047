"""`python -m mascot.admin`, run as the operator runs it, on a real SQLite database in a data folder."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mascot.admin import NO_WORDS_FILE
from mascot.service.downloads import DownloadFolder
from mascot.store.moderation import TAKEN_DOWN
from mascot.store.store import MascotStore, SavedGeneration
from mascot.web.clients import AddressKeys
from tests.support.app_process import ROOT
from tests.support.store import MODEL, make_request, make_result, owner, save

KEYS = AddressKeys(b"s" * 40)
ALICE, BOB = owner("alice"), owner("bob")
NETWORKS = [KEYS.address_hash(f"198.51.100.{number}") for number in range(3)]
WORDS = "# the operator's list\ngore\nblood bath  # a phrase\n"
HIDDEN = "it is out of the gallery and its share link works for its owner only."


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def mascots(data_dir: Path) -> Iterator[MascotStore]:
    """The app's store on the data folder's own database, as `python app.py --data-dir` opens it."""
    store = MascotStore(f"sqlite:///{(data_dir / 'mascots.db').resolve()}", data_dir / "images")
    yield store
    store.close()


def moderate(
    *args: str, data_dir: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    flags = ["--data-dir", str(data_dir)] if data_dir is not None else []
    clean = {name: value for name, value in os.environ.items() if not name.startswith("MASCOT_")}
    return subprocess.run(
        [sys.executable, "-m", "mascot.admin", *flags, *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def report_from(mascots: MascotStore, public_id: str, networks: list[str | None], reason: str = "") -> None:
    for number, network in enumerate(networks):
        outcome = mascots.report_mascot(owner(f"reporter {number} {network}"), public_id, reason, address_hash=network)
        assert outcome.outcome == "reported"


def test_list_says_so_when_nothing_is_reported(mascots: MascotStore, data_dir: Path) -> None:
    save(mascots, ALICE)

    done = moderate("list", data_dir=data_dir)

    assert (done.returncode, done.stdout, done.stderr) == (0, "No mascot is reported or hidden.\n", "")


def test_list_shows_reported_mascots_most_reported_first(mascots: MascotStore, data_dir: Path) -> None:
    once = save(mascots, ALICE, "a grumpy cat")
    hidden = save(mascots, BOB, 'a "rude" otter, très impoli')
    save(mascots, BOB, "never reported")
    report_from(mascots, once.public_ids[0], [NETWORKS[0]], "spam")
    report_from(mascots, hidden.public_ids[0], [None])  # no readable address: listed, never counted as a network
    report_from(mascots, hidden.public_ids[0], NETWORKS, "offensive")

    done = moderate("list", data_dir=data_dir)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{hidden.public_ids[0]}  4 reports (offensive 3, no reason 1) from 3 networks  hidden after reports  "
        f'"a \\"rude\\" otter, très impoli"  {hidden.image_paths[0]}',
        f'{once.public_ids[0]}  1 report (spam 1) from 1 network  not hidden  "a grumpy cat"  {once.image_paths[0]}',
    ]


def test_hide_takes_a_mascot_down_and_restore_brings_it_back_without_its_reports(
    mascots: MascotStore, data_dir: Path
) -> None:
    [public_id] = save(mascots, ALICE).public_ids
    report_from(mascots, public_id, [NETWORKS[0]])

    hidden = moderate("hide", public_id, data_dir=data_dir)

    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout == f"Hid {public_id}: it is out of the gallery and its share link works for its owner only.\n"
    assert mascots.count_gallery() == 0 and mascots.mascot(public_id, BOB) is None
    assert "taken down" in moderate("list", data_dir=data_dir).stdout

    restored = moderate("restore", public_id, data_dir=data_dir)

    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == f"Restored {public_id}: its reports are cleared and it shows as its owner set it.\n"
    assert mascots.count_gallery() == 1 and mascots.reported_mascots() == []


def test_delete_removes_the_mascot_its_files_likes_and_reports(mascots: MascotStore, data_dir: Path) -> None:
    saved = save(mascots, ALICE)
    [public_id] = saved.public_ids
    report_from(mascots, public_id, NETWORKS)
    mascots.toggle_like(BOB, public_id)
    # Its downloads hold its picture: a sticker anyone who could see it made, and Alice's ZIP of her mascots.
    downloads = DownloadFolder(data_dir / "downloads")
    sticker = downloads.write_sticker(public_id, lambda path: path.write_bytes(b"sticker"))
    alices_zip = downloads.new_export_path(ALICE, "my-mascots-2026-12-08.zip")
    alices_zip.write_bytes(b"zip")
    bobs_zip = downloads.new_export_path(BOB, "my-mascots-2026-12-08.zip")
    bobs_zip.write_bytes(b"zip")

    done = moderate("delete", public_id, data_dir=data_dir)

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Deleted {public_id}: its image, thumbnail, likes, reports and downloads are gone.\n"
    assert not saved.image_paths[0].exists() and not saved.thumbnail_paths[0].exists()
    assert not sticker.exists() and not alices_zip.exists() and bobs_zip.exists()  # as Alice's own delete does
    assert mascots.count_history(ALICE) == 0
    assert mascots.tables.report.select().count() == mascots.tables.like.select().count() == 0


@pytest.mark.parametrize("command", ["hide", "restore", "delete"])
def test_an_unknown_id_exits_non_zero_with_a_sentence(mascots: MascotStore, data_dir: Path, command: str) -> None:
    save(mascots, ALICE)

    done = moderate(command, "AAAAAAAAAAAA", data_dir=data_dir)

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == "No mascot has the id 'AAAAAAAAAAAA': copy it from `list` or from its share link.\n"
    assert mascots.count_gallery() == 1


def test_it_reads_the_data_folder_from_the_apps_variable(mascots: MascotStore, data_dir: Path) -> None:
    [public_id] = save(mascots, ALICE).public_ids

    done = moderate("hide", public_id, env={"MASCOT_DATA_DIR": str(data_dir)})

    assert done.returncode == 0, done.stderr
    assert mascots.count_gallery() == 0


def test_a_folder_without_a_database_is_refused_rather_than_given_an_empty_one(tmp_path: Path) -> None:
    done = moderate("list", data_dir=tmp_path / "elsewhere")

    assert done.returncode == 2
    assert "There is no database at" in done.stderr and "--data-dir" in done.stderr
    assert not (tmp_path / "elsewhere").exists()


@pytest.fixture
def words(tmp_path: Path) -> Path:
    path = tmp_path / "blocked-words.txt"
    path.write_text(WORDS, encoding="utf-8")
    return path


def blocked(words: Path, data_dir: Path, *options: str) -> subprocess.CompletedProcess:
    return moderate("--blocked-words", str(words), "blocked", *options, data_dir=data_dir)


def save_avoiding(mascots: MascotStore, prompt: str, negative_prompt: str) -> SavedGeneration:
    request = dataclasses.replace(make_request(prompt), negative_prompt=negative_prompt)
    return mascots.save_generation(ALICE, request, make_result(request), MODEL)


def gallery_ids(mascots: MascotStore) -> list[str]:
    return sorted(item.public_id for item in mascots.gallery(None, per_page=100).items)


def test_blocked_lists_the_gallerys_matches_first_with_the_entry_and_its_line(
    mascots: MascotStore, data_dir: Path, words: Path
) -> None:
    private = save(mascots, BOB, "a blood-bath otter", is_public=False)  # saved first, listed after the gallery's
    gory = save(mascots, ALICE, "an otter covered in GORE")
    save(mascots, ALICE, "a grape otter, gorilla friend")  # entries inside other words
    save_avoiding(mascots, "a calm otter", "gore, blood bath")  # only what it steers away from uses them
    reported = save(mascots, ALICE, "gore-soaked paws")
    report_from(mascots, reported.public_ids[0], NETWORKS)

    done = blocked(words, data_dir)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{gory.public_ids[0]}  'gore' (line 2)  in the gallery  \"an otter covered in GORE\"  {gory.image_paths[0]}",
        f"{private.public_ids[0]}  'blood bath' (line 3)  private  \"a blood-bath otter\"  {private.image_paths[0]}",
        f"{reported.public_ids[0]}  'gore' (line 2)  hidden after reports  \"gore-soaked paws\"  "
        f"{reported.image_paths[0]}",
    ]


def test_blocked_hide_takes_every_match_down_and_a_second_run_finds_none_left(
    mascots: MascotStore, data_dir: Path, words: Path
) -> None:
    first = save(mascots, ALICE, "gore everywhere").public_ids[0]
    private = save(mascots, BOB, "a blood bath", is_public=False).public_ids[0]
    clean = save(mascots, BOB, "a cheerful otter").public_ids[0]
    second = save(mascots, BOB, "more gore").public_ids[0]

    done = blocked(words, data_dir, "--hide")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"Hid {first} ('gore' (line 2)): {HIDDEN}",
        f"Hid {second} ('gore' (line 2)): {HIDDEN}",
        f"Hid {private} ('blood bath' (line 3)): {HIDDEN}",  # so its owner cannot make it public later
        "3 mascots taken down.",
    ]
    assert gallery_ids(mascots) == [clean]
    assert mascots.mascot(private, BOB).moderation == TAKEN_DOWN
    assert not mascots.set_public(BOB, private, True)

    again = moderate("blocked", "--hide", env={"MASCOT_DATA_DIR": str(data_dir), "MASCOT_BLOCKED_WORDS": str(words)})

    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == f"No mascot whose idea uses an entry of {words.resolve()} is left to take down.\n"
    listed = blocked(words, data_dir).stdout.splitlines()  # the list still shows them, as taken down
    assert [line.split("  ")[0] for line in listed] == [first, private, second]
    assert all("  taken down  " in line for line in listed)


def test_blocked_says_so_when_no_idea_uses_an_entry(mascots: MascotStore, data_dir: Path, words: Path) -> None:
    save(mascots, ALICE, "a cheerful otter")

    done = blocked(words, data_dir)

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"No stored mascot's idea uses an entry of {words.resolve()}.\n"


def test_blocked_without_a_words_file_exits_2_with_a_sentence(mascots: MascotStore, data_dir: Path) -> None:
    save(mascots, ALICE, "gore everywhere")

    done = moderate("blocked", "--hide", data_dir=data_dir)

    assert (done.returncode, done.stdout, done.stderr) == (2, "", NO_WORDS_FILE + "\n")
    assert mascots.count_gallery() == 1


def test_blocked_with_a_missing_words_file_exits_2_naming_it(mascots: MascotStore, data_dir: Path, tmp_path) -> None:
    done = blocked(tmp_path / "nowhere.txt", data_dir)

    assert done.returncode == 2 and done.stdout == ""
    assert f"The blocked-words file {(tmp_path / 'nowhere.txt').resolve()} does not exist" in done.stderr


@pytest.mark.parametrize("options", [(), ("--hide",)])
def test_blocked_reads_every_batch_once(mascots: MascotStore, data_dir: Path, words: Path, options) -> None:
    prompts = ["gore one", "calm", "calm", "gore two", "calm", "calm", "gore three"]  # ids 1..7: batches of 2
    saved = [save(mascots, ALICE, prompt).public_ids[0] for prompt in prompts]
    matching = [public_id for public_id, prompt in zip(saved, prompts, strict=True) if "gore" in prompt]

    done = blocked(words, data_dir, "--batch-size", "2", *options)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if options:
        assert lines[-1] == "3 mascots taken down."
        assert gallery_ids(mascots) == sorted(set(saved) - set(matching))
        lines = lines[:-1]
    assert [line.split()[1 if options else 0] for line in lines] == matching


def test_stored_ideas_reads_more_rows_than_one_batch_in_id_order(mascots: MascotStore) -> None:
    saved = [save(mascots, ALICE, f"otter {number}").public_ids[0] for number in range(5)]

    ideas = list(mascots.stored_ideas(in_gallery=True, batch_size=2))

    assert [idea.public_id for idea in ideas] == saved
    assert [idea.prompt for idea in ideas] == [f"otter {number}" for number in range(5)]


def test_a_share_id_that_starts_with_a_dash_is_taken_as_an_id() -> None:
    from mascot.admin import build_parser, ids_taken_literally

    arguments = build_parser().parse_args(ids_taken_literally(["--data-dir", "d", "delete", "-abcDEF12345"]))
    assert (arguments.command, arguments.public_id) == ("delete", "-abcDEF12345")
    assert ids_taken_literally(["hide", "--help"]) == ["hide", "--help"]
