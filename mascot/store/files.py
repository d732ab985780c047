"""The images folder: where each image and its thumbnail go, writing them all-or-none, finding and removing them."""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from PIL import Image

from mascot.store import imaging

# The only files the store ever writes, relative to the images folder; nothing else is ever removed.
IMAGE_PATH_PATTERN = re.compile(r"[0-9]{4}/[0-9]{2}/[0-9a-f]{32}\.png")
THUMBNAIL_SUFFIX = ".thumb.webp"
THUMBNAIL_PATH_PATTERN = re.compile(r"[0-9]{4}/[0-9]{2}/[0-9a-f]{32}\.thumb\.webp")
# imaging.write_atomically's file being written (`.<name>.<random>.tmp`), left behind when the process was killed
# meanwhile: no row ever claims one, so the orphan sweep removes it once it is old.
WRITING_PATH_PATTERN = re.compile(r"[0-9]{4}/[0-9]{2}/\.[0-9a-f]{32}(?:\.png|\.thumb\.webp)\.[A-Za-z0-9_]+\.tmp")
STORED_PATH_PATTERNS = (IMAGE_PATH_PATTERN, THUMBNAIL_PATH_PATTERN, WRITING_PATH_PATTERN)

# The threads that encode and write images and thumbnails, shared by every save in the process (in the app, the
# saver threads' saves of one shared run's jobs). They take the encodes in the order the saves hand them over, so a
# job saved first tends to be stored first. Threads start only when a save needs them.
ENCODERS = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="image-encoder")


@dataclass(frozen=True)
class StoredImage:
    """One image as written: its PNG and its thumbnail, both relative to the images folder, with "/"."""

    path: str
    thumbnail: str


def is_stored_file(relative: str) -> bool:
    """Whether `relative` names a file the store could have written (an image or a thumbnail, or one being written)."""
    return any(pattern.fullmatch(relative) for pattern in STORED_PATH_PATTERNS)


def thumbnail_path(image_path: str) -> str:
    """The thumbnail's name beside its image: `yyyy/mm/<hex>.png` -> `yyyy/mm/<hex>.thumb.webp`.

    Derived rather than random, so two replicas that both make a missing thumbnail agree on where it goes.
    """
    if not IMAGE_PATH_PATTERN.fullmatch(image_path):
        raise ValueError(f"Not an image path the store writes: {image_path!r}.")
    return image_path.removesuffix(".png") + THUMBNAIL_SUFFIX


class ImageFiles:
    """The files under one images folder. Paths in and out are relative, with "/", as the database keeps them."""

    def __init__(self, images_dir: Path) -> None:
        self.root = images_dir.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def absolute(self, relative: str) -> Path:
        """The absolute path of a stored file."""
        return self.root / PurePosixPath(relative)

    def exists(self, relative: str) -> bool:
        """Whether the stored file is there (a symlink does not count: the store never makes one)."""
        path = self.absolute(relative)
        return path.is_file() and not path.is_symlink()

    def write_images(
        self, images: Sequence[Image.Image], parameters: Sequence[Mapping[str, object]], created_at: datetime
    ) -> list[StoredImage]:
        """Write each image under <yyyy>/<mm>/ with its thumbnail; all or none (a failure removes what was written).

        The files are encoded side by side (`ENCODERS`): Pillow's PNG and WebP encoders let go of the GIL, and the
        encoding is most of a save (a smooth 768² mascot: PNG 30 ms, thumbnail 8 ms on one core), which the
        person whose mascot it is waits for."""
        stored = [self._new_names(created_at) for _ in images]
        writes: list[Future[object]] = []
        try:
            for image, embedded, names in zip(images, parameters, stored, strict=True):
                # Two threads read the picture, and Pillow may load or swap its pixels on first use (a picture still
                # in its file, a read-only buffer that saving copies in place): the thumbnail gets a copy made here.
                own_copy = image.copy()
                writes.append(ENCODERS.submit(imaging.save_png, image, self.absolute(names.path), embedded))
                writes.append(ENCODERS.submit(self.write_thumbnail, own_copy, names.path))
            for write in writes:
                write.result()
        except BaseException:
            # Every write has ended before anything is removed, so no file appears after the clean-up.
            futures.wait(writes)
            self.remove(name for names in stored for name in (names.path, names.thumbnail))
            raise
        return stored

    @staticmethod
    def _new_names(created_at: datetime) -> StoredImage:
        """A new image's name, unguessable, under the month it was made, and its thumbnail's beside it."""
        path = f"{created_at:%Y/%m}/{uuid.uuid4().hex}.png"
        return StoredImage(path=path, thumbnail=thumbnail_path(path))

    def write_thumbnail(self, image: Image.Image, image_path: str) -> str:
        """Write the thumbnail of the image stored at `image_path`; returns the thumbnail's relative path."""
        thumbnail = thumbnail_path(image_path)
        imaging.save_thumbnail(image, self.absolute(thumbnail))
        return thumbnail

    def remake_thumbnail(self, image_path: str) -> str:
        """Make the thumbnail again from the stored image (a row older than thumbnails, or a lost thumbnail file)."""
        with Image.open(self.absolute(image_path)) as image:
            image.load()
            return self.write_thumbnail(image, image_path)

    def remove(self, relative_paths: Iterable[str]) -> None:
        """Remove stored files; anything that is not a path the store writes is left alone."""
        for relative in relative_paths:
            # The patterns guarantee the path stays inside the folder ("yyyy/mm/<hex>...": no "..", not absolute).
            if is_stored_file(relative):
                self.absolute(relative).unlink(missing_ok=True)

    def stored_files(self) -> Iterator[tuple[str, float]]:
        """(relative path, mtime) of each file the store could have written; symlinks neither followed nor listed."""
        for folder, _, names in os.walk(self.root, followlinks=False):
            for name in names:
                path = Path(folder, name)
                relative = path.relative_to(self.root).as_posix()
                if not is_stored_file(relative) or path.is_symlink():
                    continue
                try:
                    yield relative, path.lstat().st_mtime
                except FileNotFoundError:  # another replica's sweep got there first
                    continue


# Stickers and ZIP exports are made for one download right away: an hour is plenty, and a 2 GB export must not
# stay on disk for long.
DOWNLOAD_KEEP_S = 3600.0


def remove_files_older_than(
    folder: Path, max_age_s: float, now: float | None = None, *, by_arrival: bool = False
) -> int:
    """Delete the files under `folder` last changed more than `max_age_s` ago, then the folders left empty; returns
    how many files went. Symbolic links are never followed, and a file another process removes first is skipped.
    `by_arrival`: a file's age counts from when it arrived (moved or copied in: its ctime) if that is later, for
    folders where copies keep their source's older mtime (Gradio's cache copies with shutil.copy2)."""
    if not folder.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - max_age_s
    removed = 0
    for parent, folders, files in os.walk(folder, topdown=False):
        for name in files:
            path = Path(parent) / name
            try:
                status = path.lstat()
                if max(status.st_mtime, status.st_ctime if by_arrival else 0.0) < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        for name in folders:
            with contextlib.suppress(OSError):  # not empty (a fresh file), or already gone
                (Path(parent) / name).rmdir()
    return removed
