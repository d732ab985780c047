"""When the database or the images folder cannot be written (disk full, read-only, locked): one sentence for people."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import peewee

from mascot.store.schema import SchemaVersionRow

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

CANNOT_WRITE = (
    "The server cannot save anything right now (its disk is full or read-only). Nothing was changed; "
    "please try again in a few minutes."
)

BUSY = "The database is busy right now. Nothing was changed; please try again in a moment."
# How a database says another writer holds it (SQLite: "database is locked"; PostgreSQL: "... lock timeout"), or
# that it is too slow to answer now (PostgreSQL: "canceling statement due to statement timeout").
LOCKED_WORDS = ("locked", "lock timeout", "busy", "statement timeout")


class StoreUnavailable(RuntimeError):
    """A write to the database or the images folder failed; the message is a sentence for the person who asked."""

    def __init__(self, message: str = CANNOT_WRITE) -> None:
        super().__init__(message)


def writes(method: Callable[P, R]) -> Callable[P, R]:
    """A store method that writes: a failure of the disk or the database (not a bug: those stay as they are) becomes
    StoreUnavailable, logged with its cause for the operator."""

    @functools.wraps(method)
    def writing(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (peewee.OperationalError, OSError) as error:
            log.error("%s could not write: %s", method.__name__, error)
            raise StoreUnavailable(BUSY if is_locked(error) else CANNOT_WRITE) from error

    return writing


def is_locked(error: Exception) -> bool:
    """Whether the database refused the write because another writer held it too long: not a full or read-only disk,
    and it says so (a resilience walkthrough was told "its disk is full" while a lock was held)."""
    text = str(error).lower()
    return isinstance(error, peewee.OperationalError) and any(words in text for words in LOCKED_WORDS)


def check_writable(database: peewee.Database, schema_version: type[SchemaVersionRow]) -> None:
    """Commit a write that changes nothing (the latest schema version's description set to itself), so that a
    database which answers reads but cannot write (read-only file, full disk, lock held too long) raises here."""
    latest = schema_version.select(peewee.fn.MAX(schema_version.version))
    with database.atomic():
        (
            schema_version
            .update(description=schema_version.description)
            .where(schema_version.version == latest)
            .execute()
        )  # fmt: skip


SPACE_PROBE_BYTES = 64 * 1024  # a few database pages, a small part of one image


def check_space(folder: Path) -> None:
    """Write and remove a small file in `folder`: raises OSError when its disk is full or read-only. SQLite's own
    probe above can still succeed then (it reuses room its write-ahead log already has), while a real save fails."""
    descriptor, name = tempfile.mkstemp(prefix=".space-probe-", dir=folder)
    try:
        os.write(descriptor, b"\0" * SPACE_PROBE_BYTES)
    finally:
        os.close(descriptor)
        os.unlink(name)
