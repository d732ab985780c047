"""The ZIP of a browser's mascots (mascot.store.export) on a real store: paging, the cap, names, progress."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mascot.store.export import NothingToExport, export_mascots, slug
from mascot.store.store import MascotStore
from tests.support.store import owner, save


@pytest.fixture
def mascots(tmp_path: Path) -> Iterator[MascotStore]:
    """SQLite only: the export reads through `history`, which the store's own tests run on every backend."""
    store = MascotStore(f"sqlite:///{tmp_path / 'mascots.db'}", tmp_path / "images")
    yield store
    store.close()


def test_the_cap_keeps_the_newest_and_says_how_many_there_are(mascots: MascotStore, tmp_path: Path) -> None:
    for seed in range(5):
        save(mascots, owner("alice"), f"otter {seed}", seed=seed)
    save(mascots, owner("bob"), "bob's fox")
    seen: list[tuple[int, int]] = []
    result = export_mascots(
        mascots, owner("alice"), tmp_path / "a.zip", cap=3, page_size=2, on_progress=lambda *step: seen.append(step)
    )
    assert (result.exported, result.missing, result.total, result.truncated) == (3, 0, 5, True)
    assert "You have 5 mascots; one ZIP holds the newest 3." in result.note()
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with zipfile.ZipFile(result.path) as archive:
        index = json.loads(archive.read("mascots.json"))
        pngs = [info for info in archive.infolist() if info.filename.endswith(".png")]
    assert [record["prompt"] for record in index["mascots"]] == ["otter 4", "otter 3", "otter 2"]
    assert index["truncated"] is True and len(pngs) == 3
    assert all(info.compress_type == zipfile.ZIP_STORED for info in pngs)


def test_nothing_to_export_leaves_no_file(mascots: MascotStore, tmp_path: Path) -> None:
    with pytest.raises(NothingToExport, match="You have no mascots yet"):
        export_mascots(mascots, owner("nobody"), tmp_path / "none.zip")
    assert not (tmp_path / "none.zip").exists()


@pytest.mark.parametrize(
    ("idea", "expected"),
    [
        ("../../etc/passwd otter", "etc-passwd-otter"),
        ("Ünïcode Fox!!", "unicode-fox"),
        ("🦦🦦", "mascot"),
        ("a " * 40, "a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a-a"),
        ("C:\\Windows\\x", "c-windows-x"),
    ],
)
def test_a_slug_is_short_lowercase_ascii_and_never_a_path(idea: str, expected: str) -> None:
    assert slug(idea) == expected
