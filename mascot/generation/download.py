"""Fetching a pipeline from the Hugging Face hub into the local cache, with its progress said for the page's banner."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

Say = Callable[[str], None]
Download = Callable[..., str]
SAY_EVERY_SECONDS = 2.0  # the banner polls every 2 s: saying more often only fills the log


def local_copy(location: str, label: str, say: Say, download: Download | None = None) -> str:
    """A folder holding the pipeline: `location` itself when it is one, else the hub repo fetched into the cache
    (about 10 GB each for Kandinsky 2.2's prior and decoder, the first time; a cached copy costs nothing)."""
    if Path(location).is_dir():
        return location
    if download is None:
        from huggingface_hub import snapshot_download

        download = snapshot_download
    say(f"Fetching {label} ({location}) from the Hugging Face hub…")
    try:
        return str(download(location, tqdm_class=progress_class(label, say)))
    except Exception as error:  # the banner shows this sentence; the log keeps the traceback
        raise DownloadFailed(
            f"Could not download {location} from the Hugging Face hub ({type(error).__name__}). Check the internet "
            "connection and try again, or start with --model PATH for weights on disk, or --model tiny for the "
            "offline preview model."
        ) from error


class DownloadFailed(RuntimeError):
    """A hub download did not complete; the message is a sentence for the page's banner."""


def progress_class(label: str, say: Say, clock: Callable[[], float] = time.monotonic) -> type[tqdm]:
    """A tqdm that tells `say` how many bytes of `label` have arrived, at most every SAY_EVERY_SECONDS."""

    class BannerProgress(tqdm):
        last_said = -SAY_EVERY_SECONDS

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False  # huggingface_hub disables its bars when not on a terminal: we still report
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.unit == "B" and self.total and clock() - BannerProgress.last_said >= SAY_EVERY_SECONDS:
                BannerProgress.last_said = clock()
                say(f"Downloading {label}: {gigabytes(self.n)} of {gigabytes(self.total)} GB.")
            return shown

    return BannerProgress


def gigabytes(size: float) -> str:
    return f"{size / 1e9:.1f}"
