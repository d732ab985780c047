"""Files people download (stickers, ZIPs): each in a fresh folder of Gradio's upload folder, old ones removed first."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from mascot.store.files import DOWNLOAD_KEEP_S, remove_files_older_than

DOWNLOAD_KINDS = ("stickers", "exports", "pngs")  # our own folders there; each is pruned as it is written to
# Everything else in the folder is Gradio's: uploads and its cache of files shown on pages. An upload is read at once
# (a logo, a dropped PNG); a page showing a cached file for longer gets it copied again on its next refresh.
UPLOAD_KEEP_S = 3600.0


class DownloadFolder:
    """Hands out a new path per download under `root()` (Gradio's upload folder, which Gradio serves, unlike the data
    folder), so no two downloads and no client's choice ever share a path; the file keeps a readable name for the
    person's disk. Downloads of the same kind older than DOWNLOAD_KEEP_S are removed first."""

    def __init__(self, root: Callable[[], Path]) -> None:
        self._root = root  # read on every download: Gradio's folder follows GRADIO_TEMP_DIR, which tests set

    def new_path(self, kind: str, file_name: str) -> Path:
        """A fresh, empty folder under `<root>/<kind>/`, and `file_name` inside it."""
        folder = self._root() / kind
        remove_files_older_than(folder, DOWNLOAD_KEEP_S)
        path = folder / uuid.uuid4().hex / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def prune_uploads(self, max_age_s: float = UPLOAD_KEEP_S) -> int:
        """Remove Gradio's uploads and cached copies that arrived more than `max_age_s` ago; returns how many."""
        root = self._root()
        if not root.is_dir():
            return 0
        removed = 0
        for entry in root.iterdir():
            if entry.name in DOWNLOAD_KINDS or entry.is_symlink():
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
