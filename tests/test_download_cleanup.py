"""Short-lived downloads (stickers, ZIP exports) are removed once old, and nothing else is touched."""

from __future__ import annotations

import os
import time

from mascot.store.files import remove_files_older_than


def age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_old_files_and_the_folders_they_leave_empty_go_and_fresh_ones_stay(tmp_path):
    exports = tmp_path / "exports"
    (exports / "old-export").mkdir(parents=True)
    (exports / "fresh-export").mkdir()
    old_zip, fresh_zip = exports / "old-export" / "my-mascots.zip", exports / "fresh-export" / "my-mascots.zip"
    old_zip.write_bytes(b"PK old")
    fresh_zip.write_bytes(b"PK fresh")
    age(old_zip, 7200)

    assert remove_files_older_than(exports, 3600) == 1
    assert not (exports / "old-export").exists()
    assert fresh_zip.read_bytes() == b"PK fresh"


def test_a_link_is_removed_itself_never_what_it_points_to(tmp_path):
    keep = tmp_path / "images" / "precious.png"
    keep.parent.mkdir()
    keep.write_bytes(b"png")
    age(keep, 7200)
    stickers = tmp_path / "stickers"
    stickers.mkdir()
    (stickers / "link.png").symlink_to(keep)
    os.utime(stickers / "link.png", (time.time() - 7200,) * 2, follow_symlinks=False)

    assert remove_files_older_than(stickers, 3600) == 1
    assert keep.read_bytes() == b"png"


def test_a_folder_that_is_not_there_yet_is_fine(tmp_path):
    assert remove_files_older_than(tmp_path / "stickers", 3600) == 0
