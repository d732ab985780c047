"""The store's test fixtures (a pytest plugin: `pytest_plugins = ["tests.store_fixtures"]`): one store per test,
on SQLite and, when MASCOT_TEST_POSTGRES_URL is set, in a fresh schema of that PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mascot.store.store import MascotStore
from tests.store_support import BACKENDS, POSTGRES_URL, OpenStore, fresh_postgres_schema


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'mascots.db'}"
    else:
        assert POSTGRES_URL
        yield from fresh_postgres_schema(POSTGRES_URL)


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return tmp_path / "data" / "images"


@pytest.fixture
def open_store(database_url: str, images_dir: Path) -> Iterator[OpenStore]:
    """Opens stores on this test's database and images folder; closes them all afterwards."""
    opened: list[MascotStore] = []

    def open_(url: str = database_url, folder: Path = images_dir) -> MascotStore:
        opened.append(MascotStore(url, folder))
        return opened[-1]

    yield open_
    for mascots in opened:
        mascots.close()


@pytest.fixture
def mascots(open_store: OpenStore) -> MascotStore:
    return open_store()
