"""Files people download besides the stored pictures (stickers, ZIPs), kept in the data folder, which only our
checking routes serve (mascot.web.images), old ones removed; and the pruning of Gradio's own upload folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from mascot.store.files import DOWNLOAD_KEEP_S, remove_files_older_than

# Everything in Gradio's upload folder is Gradio's: uploads and its cache of files shown on pages. An upload is read
# at once (a logo, a dropped PNG); a page showing a cached file for longer gets it copied again on its next refresh.
UPLOAD_KEEP_S = 3600.0
SHARE_ID = re.compile(r"[A-Za-z0-9_-]{12}")  # store.PUBLIC_ID_PATTERN: the service imports no store internals
EXPORT_KEY = re.compile(r"[0-9a-f]{32}")
EXPORT_NAME = re.compile(r"my-mascots-\d{4}-\d{2}-\d{2}\.zip")


class DownloadFolder:
    """Stickers (one per mascot, made by anyone who may see it, served to whoever may see it when asked) and ZIPs
    (one browser's, served to it alone) under `root` in the data folder. Gradio neither serves nor copies them: the
    page hands the browser our routes' URLs. Files older than DOWNLOAD_KEEP_S are removed as new ones are written."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def sticker(self, public_id: str) -> Path | None:
        """The mascot's sticker when one was made (and not pruned yet); None otherwise."""
        path = self._sticker_path(public_id)
        return path if path is not None and path.is_file() else None

    def keep_sticker(self, public_id: str) -> bool:
        """Whether the mascot's sticker is kept already; if so it counts as new again (an hour more before pruning)."""
        path = self.sticker(public_id)
        if path is None:
            return False
        with contextlib.suppress(FileNotFoundError):  # pruned this very moment: made again
            os.utime(path)
            return True
        return False

    def write_sticker(self, public_id: str, write: Callable[[Path], None]) -> Path:
        """Keep the mascot's sticker, written by `write(path)` beside its place and moved there in one step (a route
        may be sending the previous one); returns where it is."""
        path = self._sticker_path(public_id)
        if path is None:
            raise ValueError(f"{public_id!r} is not a share id")
        remove_files_older_than(path.parent, DOWNLOAD_KEEP_S)
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{uuid.uuid4().hex}.png")
        try:
            write(scratch)
            scratch.replace(path)
        finally:
            scratch.unlink(missing_ok=True)
        return path

    def new_export_path(self, owner_hash: str, file_name: str) -> Path:
        """A fresh, empty folder for one ZIP of the owner's, and `file_name` inside it: `<owner>/<key>/<name>`, the
        key random, so a URL cannot be guessed from another."""
        remove_files_older_than(self.root / "exports", DOWNLOAD_KEEP_S)
        path = self._owner_folder(owner_hash) / uuid.uuid4().hex / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def export(self, owner_hash: str, key: str, file_name: str) -> Path | None:
        """The owner's ZIP by its key and name; None for any other owner, a malformed key or name, or a pruned one."""
        if not (EXPORT_KEY.fullmatch(key) and EXPORT_NAME.fullmatch(file_name)):
            return None
        path = self._owner_folder(owner_hash) / key / file_name
        return path if path.is_file() else None

    def forget_sticker(self, public_id: str) -> None:
        """After a deletion: the mascot's sticker goes (and, by forget_exports, every ZIP that holds its picture)."""
        sticker = self._sticker_path(public_id)
        if sticker is not None:
            sticker.unlink(missing_ok=True)

    def forget_exports(self, owner_hash: str) -> None:
        """Every ZIP kept for the owner hash goes: its mascots changed hands, or one of them was deleted."""
        shutil.rmtree(self._owner_folder(owner_hash), ignore_errors=True)

    def _sticker_path(self, public_id: str) -> Path | None:
        return self.root / "stickers" / f"{public_id}.png" if SHARE_ID.fullmatch(public_id) else None

    def _owner_folder(self, owner_hash: str) -> Path:
        # A hash of the owner hash: the folder's name says nothing the database does not.
        return self.root / "exports" / hashlib.sha256(owner_hash.encode()).hexdigest()[:32]


def prune_uploads(root: Path, max_age_s: float = UPLOAD_KEEP_S) -> int:
    """Remove Gradio's uploads and cached copies under `root` that arrived more than `max_age_s` ago; returns how
    many."""
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        if entry.is_symlink():
            continue
        if entry.is_dir():
            removed += remove_files_older_than(entry, max_age_s, by_arrival=True)
            with contextlib.suppress(OSError):  # not empty: something in it is still fresh
                entry.rmdir()
        elif _arrived_before(entry, time.time() - max_age_s):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def _arrived_before(path: Path, cutoff: float) -> bool:
    try:
        status = path.lstat()
    except FileNotFoundError:
        return False
    return max(status.st_mtime, status.st_ctime) < cutoff
