"""`python -m mascot.moderate`, run as the operator runs it, on a real SQLite database in a data folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mascot.clients import AddressKeys
from mascot.store import MascotStore
from tests.app_process import ROOT
from tests.store_support import owner, save

KEYS = AddressKeys(b"s" * 40)
ALICE, BOB = owner("alice"), owner("bob")
NETWORKS = [KEYS.address_hash(f"198.51.100.{number}") for number in range(3)]


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
        [sys.executable, "-m", "mascot.moderate", *flags, *args],
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

    done = moderate("delete", public_id, data_dir=data_dir)

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Deleted {public_id}: its image, thumbnail, likes and reports are gone.\n"
    assert not saved.image_paths[0].exists() and not saved.thumbnail_paths[0].exists()
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
