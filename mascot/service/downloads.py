"""Files people download (stickers, ZIPs): each in a fresh folder of Gradio's upload folder, old ones removed first."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from mascot.store.files import DOWNLOAD_KEEP_S, remove_files_older_than


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
