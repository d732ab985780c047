"""Exporting a browser's mascots: one ZIP of their PNGs as stored plus a `mascots.json` index, read page by page."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from mascot.clock import utc_now
from mascot.store.entries import MAX_PER_PAGE, MascotEntry
from mascot.store.store import MascotStore

EXPORT_CAP = 2_000  # one ZIP of at most ~2 GB at full size: bigger ones time out in browsers and fill disks
EXPORT_PAGE_SIZE = MAX_PER_PAGE  # rows read at a time, so a big export never holds every row in memory
INDEX_NAME = "mascots.json"
SLUG_CHARACTERS = 40
NOTHING_TO_EXPORT = "You have no mascots yet: make one on the Create tab."

Progress = Callable[[int, int], None]  # (mascots written, mascots to write)


class NothingToExport(Exception):
    """The browser has no mascots."""


@dataclass(frozen=True)
class ExportResult:
    """What the ZIP holds: how many PNGs, how many were missing on disk, and how many the browser has in all."""

    path: Path
    exported: int
    missing: int
    total: int
    cap: int

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def note(self) -> str:
        """A sentence for the person: what is in the ZIP, and what is not."""
        parts = [f"{self.exported} mascot{'' if self.exported == 1 else 's'} exported."]
        if self.missing:
            parts.append(f"{self.missing} whose image file is missing on the server are listed in {INDEX_NAME} only.")
        if self.truncated:
            parts.append(f"You have {self.total:,} mascots; one ZIP holds the newest {self.cap:,}.")
        return " ".join(parts)


def slug(idea: str) -> str:
    """The idea as a file-name part: ASCII letters, digits and '-', at most SLUG_CHARACTERS; 'mascot' if none."""
    ascii_text = unicodedata.normalize("NFKD", idea).encode("ascii", "ignore").decode("ascii").lower()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return words[:SLUG_CHARACTERS].strip("-") or "mascot"


class Named(Protocol):
    """What a download's name is made of: a mascot's idea and share id (a MascotEntry, a store.PictureFiles)."""

    @property
    def prompt(self) -> str: ...

    @property
    def public_id(self) -> str: ...


def file_name(entry: Named, kind: str = "") -> str:
    """Every download's name, one pattern (the PNG, the sticker, a ZIP's entries): `mascot-<slug>-<share id>.png`,
    `kind` ("sticker") before the suffix. Readable, and unique because the share id is ([A-Za-z0-9_-] only)."""
    marked = f"-{kind}" if kind else ""
    return f"mascot-{slug(entry.prompt)}-{entry.public_id}{marked}.png"


def index_record(entry: MascotEntry, name: str | None) -> dict[str, Any]:
    """One mascot in mascots.json, in the API's vocabulary; `file` is None when its image was missing."""
    request = entry.request
    return {
        "file": name,
        "missing": name is None,
        "public_id": entry.public_id,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "style": request.style,
        "brand": request.brand,
        "seed": entry.seed,
        "width": request.width,
        "height": request.height,
        "num_inference_steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale,
        "prior_num_inference_steps": request.prior_num_inference_steps,
        "prior_guidance_scale": request.prior_guidance_scale,
        "created_at": entry.created_at.isoformat(),
        "like_count": entry.like_count,
        "is_public": entry.is_public,
    }


def owned_entries(store: MascotStore, owner_hash: str, *, limit: int, page_size: int) -> Iterator[MascotEntry]:
    """The browser's mascots, newest first, one page of rows at a time, at most `limit`, each once.

    A mascot made during the export pushes older ones a page down, so the same one can come twice: skip repeats.
    """
    seen: set[str] = set()
    page = 1
    while len(seen) < limit:
        rows = store.history(owner_hash, page=page, per_page=page_size)
        for entry in rows:
            if entry.public_id not in seen and len(seen) < limit:
                seen.add(entry.public_id)
                yield entry
        if len(rows) < page_size:
            return
        page += 1


def export_fingerprint(store: MascotStore, owner_hash: str, *, cap: int = EXPORT_CAP) -> str:
    """What a ZIP of the browser's mascots would hold, as one hash: each record of its index (likes, visibility and
    whether its file is on disk included) and the total. Reading rows is cheap next to writing a ZIP, so an export
    whose hash is unchanged is handed out again instead of written anew."""
    digest = hashlib.sha256(str(store.count_history(owner_hash)).encode())
    for entry in owned_entries(store, owner_hash, limit=cap, page_size=EXPORT_PAGE_SIZE):
        present = entry.path.is_file() and not entry.path.is_symlink()
        record = index_record(entry, file_name(entry) if present else None)
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


def export_mascots(
    store: MascotStore,
    owner_hash: str,
    destination: Path,
    *,
    cap: int = EXPORT_CAP,
    page_size: int | None = None,
    now: datetime | None = None,
    on_progress: Progress | None = None,
) -> ExportResult:
    """Write the browser's mascots (newest `cap`) as a ZIP at `destination`; raises NothingToExport when none.

    A half-written ZIP is removed, so a failed export leaves nothing behind to be served.
    """
    total = store.count_history(owner_hash)
    if total == 0:
        raise NothingToExport(NOTHING_TO_EXPORT)
    to_write = min(total, cap)
    entries = owned_entries(store, owner_hash, limit=cap, page_size=page_size or EXPORT_PAGE_SIZE)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(destination, "w") as archive:
            records = _write_images(archive, entries, to_write, on_progress)
            index = _index(records, total, cap, now)
            archive.writestr(INDEX_NAME, json.dumps(index, indent=2, ensure_ascii=False), zipfile.ZIP_DEFLATED)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    missing = sum(1 for record in records if record["missing"])
    return ExportResult(destination, len(records) - missing, missing, total, cap)


def _write_images(
    archive: zipfile.ZipFile, entries: Iterator[MascotEntry], to_write: int, on_progress: Progress | None
) -> list[dict[str, Any]]:
    records = []
    for done, entry in enumerate(entries, start=1):
        name = file_name(entry)
        records.append(index_record(entry, name if _add_png(archive, entry.path, name) else None))
        if on_progress is not None:
            on_progress(done, max(to_write, done))
    return records


def _add_png(archive: zipfile.ZipFile, path: Path, name: str) -> bool:
    """Add the PNG as stored (ZIP_STORED: PNG is compressed already); False when it is not on disk."""
    if not path.is_file() or path.is_symlink():  # the store never writes a symlink: do not follow one
        return False
    try:
        archive.write(path, name, compress_type=zipfile.ZIP_STORED)
    except FileNotFoundError:  # deleted since the check (it opens the file before writing any header)
        return False
    return True


def _index(records: list[dict[str, Any]], total: int, cap: int, now: datetime | None) -> dict[str, Any]:
    return {
        "exported_at": (now or utc_now()).isoformat(),
        "total": total,
        "cap": cap,
        "truncated": total > cap,
        "missing": sum(1 for record in records if record["missing"]),
        "mascots": records,
    }
