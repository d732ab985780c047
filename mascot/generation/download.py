"""Fetching a pipeline from the Hugging Face hub into the local cache, with its progress said for the page's banner."""

from __future__ import annotations

import glob
import logging
import posixpath
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

Say = Callable[[str], None]
Download = Callable[..., str]
ListFiles = Callable[[str], Iterable[str]]
SAY_EVERY_SECONDS = 2.0  # the banner polls every 2 s: saying more often only fills the log
# Weights in formats torch's from_pretrained never reads: Flax, TensorFlow, ONNX.
OTHER_FRAMEWORKS = (".msgpack", ".h5", ".onnx", ".onnx_data")
# PyTorch's pickled weights (and a sharded set's index), which diffusers and transformers read only where a folder
# holds no safetensors.
PICKLED_WEIGHTS = (".bin", ".bin.index.json")


def local_copy(
    location: str, label: str, say: Say, download: Download | None = None, list_files: ListFiles | None = None
) -> str:
    """A folder holding the pipeline: `location` itself when it is one, else the hub repo fetched into the cache
    (about 10 GB each for Kandinsky 2.2's prior and decoder, the first time; a cached copy costs nothing), without
    the files its from_pretrained will not read (unread_files)."""
    if Path(location).is_dir():
        return location
    if download is None:
        from huggingface_hub import snapshot_download

        download = snapshot_download
    say(f"Fetching {label} ({location}) from the Hugging Face hub…")
    try:
        skipped = unread_files((list_files or hub_files)(location))
    except Exception as error:  # offline with a cached copy, say: the download then decides, as before
        log.info("could not list %s's files (%s): fetching all of them", location, type(error).__name__)
        skipped = []
    try:
        # Each name escaped: the hub reads these as glob patterns.
        ignore_patterns = [glob.escape(name) for name in skipped] or None
        return str(download(location, tqdm_class=progress_class(label, say), ignore_patterns=ignore_patterns))
    except Exception as error:  # the banner shows this sentence; the log keeps the traceback
        raise DownloadFailed(
            f"Could not download {location} from the Hugging Face hub ({type(error).__name__}). Check the internet "
            "connection and try again, or start with --model PATH for weights on disk, or --model tiny for the "
            "offline preview model."
        ) from error


def hub_files(repo_id: str) -> list[str]:
    """The paths of a hub repo's files, from the call snapshot_download makes itself (without a network it fails at
    once: list_repo_files would try again for about 20 s)."""
    from huggingface_hub import model_info

    return [sibling.rfilename for sibling in model_info(repo_id).siblings or []]


def unread_files(files: Iterable[str]) -> list[str]:
    """The files of a repo (paths as the hub lists them) that loading its pipeline with from_pretrained does not read:
    weights for other frameworks, and pickled PyTorch weights in a folder that also holds safetensors (which diffusers
    and transformers read first). A repo that keeps both formats of every model is otherwise fetched twice over."""
    files = list(files)
    with_safetensors = {posixpath.dirname(name) for name in files if name.endswith(".safetensors")}
    return sorted(
        name
        for name in files
        if name.endswith(OTHER_FRAMEWORKS)
        or (name.endswith(PICKLED_WEIGHTS) and posixpath.dirname(name) in with_safetensors)
    )


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
