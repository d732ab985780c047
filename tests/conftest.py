"""Shared fixtures: the tiny Kandinsky 2.2 (built once per session), a store per test on each backend, a site in
this process with a fake generator, one Chromium per browser test module, and no job left behind in an app process
shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mascot.store.store import MascotStore
from tests.support.store import BACKENDS, POSTGRES_URL, OpenStore, fresh_postgres_schema


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly built tiny model, at `<data dir>/tiny-kandinsky-2-2` so its parent works as a data folder."""
    from mascot.generation.tiny import TINY_MODEL_FOLDER, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("data") / TINY_MODEL_FOLDER)


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir: Path):
    """KandinskyGenerator on the CPU, loaded from the tiny model folder with `from_pretrained`."""
    from mascot.generation.model import KandinskyGenerator
    from mascot.generation.sources import ModelSource

    source = ModelSource(
        name="tiny test model",
        prior=str(tiny_model_dir / "prior"),
        decoder=str(tiny_model_dir / "decoder"),
        is_preview_model=True,
        reason="Tests run on the tiny model.",
    )
    return KandinskyGenerator.load(source, device="cpu")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store's tests run on SQLite and, when MASCOT_TEST_POSTGRES_URL is set, in a fresh PostgreSQL schema."""
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


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The app in this process on a free port, with a fake generator and a daily quota of 5."""
    from tests.support.site import serve  # imports the app and Gradio: only the tests that ask for a site pay for it

    yield from serve(tmp_path, monkeypatch, ["--daily-quota", "5"])


@pytest.fixture(autouse=True)
def no_job_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on a module's shared app (its `app` fixture: a `python app.py` or a site in this process), wait
    until that app has no job.

    Under load a job a test left running (one it cancelled, one whose browser left) would otherwise still hold the
    worker when the next test's job queues behind it, and that test would time out for nothing it did.
    """
    app = request.getfixturevalue("app") if "app" in request.fixturenames else None
    yield
    wait_until_idle = getattr(app, "wait_until_idle", None)  # AppProcess and Site have it (no import: they are heavy)
    if callable(wait_until_idle):
        wait_until_idle()


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Debian's Chromium through Playwright, one per module (tests/support/browser.py)."""
    from tests.support.browser import launched_chromium  # imports playwright: only where a browser test runs

    yield from launched_chromium()
