"""Benchmark of the store's page and like queries on 10,000 mascots with their files (a script, not a test).

Usage:
    python -m bench.store                    # SQLite, in a temporary data folder
    python -m bench.store --database-url postgresql://mascot:mascot@127.0.0.1:5432/mascot_test
    python -m bench.store --images 2000 --runs 20    # smaller and quicker

It fills a fresh database and images folder through `MascotStore.save_generation` (so every image has a real PNG
and WebP thumbnail, 64 x 64 to keep the folder small), spread over 60 days, 300 browsers (one of them made a fifth
of everything), generations of 1-4 images, a tenth of them private; then likes from random browsers, skewed
towards a popular few (inserted in bulk, like_count recomputed to match). On PostgreSQL it works in a new schema
of the given database, ANALYZEd as autovacuum would, and drops the schema afterwards.

Then it times each store call in this process (server-side: no HTTP, no Gradio), searches included (a LIKE scan
of each word in the idea, style and brand), warm, `--runs` times, and prints
the median, p95 and worst in milliseconds next to the issue's targets (a page <= 100 ms, a like <= 20 ms), and
how long opening the filled store takes (migration check, file check of every row, orphan sweep).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import peewee
from PIL import Image, ImageDraw

from mascot.generation.generator import GeneratedImages, ModelInfo, PromptUse
from mascot.prompt.request import GenerationRequest
from mascot.store.schema import as_stored_time, tuple_rows
from mascot.store.scratch import postgres_schema
from mascot.store.store import GallerySort, MascotStore

logger = logging.getLogger(__name__)

MODEL = ModelInfo(name="benchmark", is_preview_model=True, device="cpu")
PAGE_TARGET_MS, LIKE_TARGET_MS = 100.0, 20.0
PER_PAGE = 24
BROWSERS = 300
HEAVY_SHARE = 0.2  # of all generations, made by one browser: its history is the deepest there is
PRIVATE_SHARE = 0.1
LIKES_PER_IMAGE = 2
DAYS = 60
WORDS = (
    "otter",
    "fox",
    "owl",
    "robot",
    "dragon",
    "barista",
    "astronaut",
    "sticker",
    "kawaii",
    "plush",
    "tiny",
    "brave",
)
SEARCH = "Otter ROBOT"  # two of WORDS, in any case: about a quarter of the mascots match both
NO_MATCH = "unicorn"  # in no prompt: the search reads every listed mascot to find none
NOT_ASCII = "Öl"  # neither: SQLite compares such a word through Python's lower() (mascot.store.search)


@dataclass(frozen=True)
class Timing:
    """One benchmarked call: its name, its target and the milliseconds of every run."""

    name: str
    target_ms: float
    runs_ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.runs_ms)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]

    def line(self) -> str:
        verdict = "ok" if self.p95 <= self.target_ms else "OVER"
        return (
            f"{self.name:<44} {self.median:8.2f} {self.p95:8.2f} {max(self.runs_ms):8.2f}"
            f"   <= {self.target_ms:>5.0f}  {verdict}"
        )


@dataclass(frozen=True)
class Population:
    """Who and what the filled database holds, for picking benchmark arguments."""

    owners: list[str]
    heavy_owner: str
    public_ids: list[str]


def owner_hash(number: int) -> str:
    """A stand-in for identity's sha256 owner hashes."""
    return f"{number:064x}"


def small_image(rng: random.Random) -> Image.Image:
    """A real, small picture: a coloured disc on a coloured ground."""
    image = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
    ImageDraw.Draw(image).ellipse((8, 8, 56, 56), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def fake_generation(rng: random.Random) -> tuple[GenerationRequest, GeneratedImages]:
    count = rng.choice((1, 1, 2, 4))
    prompt = " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
    request = GenerationRequest(prompt=prompt, seed=rng.randrange(2**32 - 4), num_images_per_prompt=count)
    result = GeneratedImages(
        images=[small_image(rng) for _ in range(count)],
        seeds=[request.seed + i for i in range(count)],
        prompt=PromptUse(used=prompt),
        negative_prompt=PromptUse(used=""),
    )
    return request, result


def fill(store: MascotStore, images: int, rng: random.Random) -> Population:
    """Save generations until `images` images exist, oldest first, then add likes in bulk."""
    owners = [owner_hash(number) for number in range(1, BROWSERS + 1)]
    start, saved = as_stored_time(None) - timedelta(days=DAYS), 0
    public_ids: list[str] = []
    step = timedelta(days=DAYS) / images
    while saved < images:
        request, result = fake_generation(rng)
        who = owners[0] if rng.random() < HEAVY_SHARE else rng.choice(owners)
        is_public = rng.random() >= PRIVATE_SHARE
        generation = store.save_generation(who, request, result, MODEL, now=start + saved * step, is_public=is_public)
        saved += len(generation.public_ids)
        if is_public:
            public_ids.extend(generation.public_ids)
        if saved % 2000 < len(generation.public_ids):
            logger.info("%d images saved", saved)
    add_likes(store, owners, rng)
    return Population(owners=owners, heavy_owner=owners[0], public_ids=public_ids)


def add_likes(store: MascotStore, owners: Sequence[str], rng: random.Random) -> None:
    """About LIKES_PER_IMAGE likes per public image, skewed (Pareto) so that the "top" order means something."""
    tables, db = store.tables, store.database
    browser_ids = [row_id for (row_id,) in tuple_rows(tables.browser.select(tables.browser.id))]
    public = (
        tables.image
        .select(tables.image.id)
        .where(tables.image.is_public == True)  # noqa: E712 - SQL, not Python truthiness
    )  # fmt: skip
    image_ids = [row_id for (row_id,) in tuple_rows(public)]
    pairs: set[tuple[int, int]] = set()
    for _ in range(LIKES_PER_IMAGE * len(image_ids)):
        popular = min(int(rng.paretovariate(1.2)) - 1, len(image_ids) - 1)
        image_id = image_ids[-1 - popular] if rng.random() < 0.5 else rng.choice(image_ids)
        pairs.add((rng.choice(browser_ids), image_id))
    rows = [{"browser": browser, "image": image, "created_at": as_stored_time(None)} for browser, image in pairs]
    with db.atomic():
        for batch in peewee.chunked(rows, 500):
            tables.like.insert_many(batch).execute()
        db.execute_sql(
            "UPDATE mascot_image SET like_count = (SELECT COUNT(*) FROM mascot_like WHERE image_id = mascot_image.id)"
        )
    logger.info("%d likes added", len(rows))


def time_calls(name: str, target_ms: float, call: Callable[[int], object], runs: int, warmup: int = 3) -> Timing:
    """Run `call(i)` warmup + runs times; keep the milliseconds of the timed runs."""
    for i in range(warmup):
        call(-1 - i)
    runs_ms = []
    for i in range(runs):
        started = time.perf_counter()
        call(i)
        runs_ms.append((time.perf_counter() - started) * 1000)
    return Timing(name, target_ms, runs_ms)


def benchmark(store: MascotStore, population: Population, runs: int, rng: random.Random) -> list[Timing]:
    """Time the calls the pages make: gallery and history pages (first and last), a share link, a like."""
    viewer = population.owners[1]
    gallery_pages = math.ceil(store.count_gallery() / PER_PAGE)
    heavy = population.heavy_owner
    history_pages = math.ceil(store.count_history(heavy) / PER_PAGE)
    likers = [rng.choice(population.owners) for _ in range(runs + 3)]
    liked = [rng.choice(population.public_ids) for _ in range(runs + 3)]

    def gallery(page: int, sort: GallerySort, search: str = "") -> Callable[[int], object]:
        return lambda _: store.gallery(viewer, page=page, per_page=PER_PAGE, sort=sort, search=search)

    def liked_by(who: str, search: str = "") -> Callable[[int], object]:
        return lambda _: store.gallery(who, per_page=PER_PAGE, sort="liked", search=search)

    page = PAGE_TARGET_MS
    liked_by_heavy = store.count_gallery(liked_by=heavy)
    found_pages = max(1, math.ceil(store.count_gallery(search=SEARCH) / PER_PAGE))
    return [
        time_calls("gallery newest, page 1", page, gallery(1, "newest"), runs),
        time_calls(f"gallery newest, last page ({gallery_pages})", page, gallery(gallery_pages, "newest"), runs),
        time_calls("gallery top, page 1", page, gallery(1, "top"), runs),
        time_calls(f"gallery top, last page ({gallery_pages})", page, gallery(gallery_pages, "top"), runs),
        # Every like was made just now, so the week's window holds them all: the most "Top this week" has to count.
        time_calls("gallery top this week, page 1", page, gallery(1, "week"), runs),
        time_calls(f"gallery top this week, last page ({gallery_pages})", page, gallery(gallery_pages, "week"), runs),
        time_calls(f"search '{SEARCH}', top this week, page 1", page, gallery(1, "week", SEARCH), runs),
        time_calls("gallery newest, page 1, anonymous", page, lambda _: store.gallery(None, per_page=PER_PAGE), runs),
        time_calls(f"gallery liked by me, page 1 ({liked_by_heavy} liked)", page, liked_by(heavy), runs),
        time_calls(f"gallery liked by me, '{SEARCH}'", page, liked_by(heavy, SEARCH), runs),
        time_calls(f"search '{SEARCH}', newest, page 1", page, gallery(1, "newest", SEARCH), runs),
        time_calls(
            f"search '{SEARCH}', newest, last page ({found_pages})", page, gallery(found_pages, "newest", SEARCH), runs
        ),
        time_calls(f"search '{SEARCH}', top, page 1", page, gallery(1, "top", SEARCH), runs),
        time_calls(f"search '{NO_MATCH}' (matches none)", page, gallery(1, "newest", NO_MATCH), runs),
        time_calls(f"search '{NOT_ASCII}' (not ASCII, matches none)", page, gallery(1, "newest", NOT_ASCII), runs),
        time_calls("history page 1 (+ total)", page, lambda _: store.history_page(heavy, per_page=PER_PAGE), runs),
        time_calls(
            f"history last page ({history_pages}) (+ total)",
            page,
            lambda _: store.history_page(heavy, page=history_pages, per_page=PER_PAGE),
            runs,
        ),
        time_calls(
            f"history search '{SEARCH}' (+ total)",
            page,
            lambda _: store.history_page(heavy, per_page=PER_PAGE, search=SEARCH),
            runs,
        ),
        time_calls("share link: mascot(public_id)", page, lambda i: store.mascot(liked[i], viewer), runs),
        # What each picture request asked before store.visible_picture: the owner resolved, then the whole mascot.
        time_calls(
            "picture, as before: resolve + mascot",
            LIKE_TARGET_MS,
            lambda i: store.mascot(liked[i], store.resolve_owner(viewer)),
            runs,
        ),
        time_calls(
            "picture: visible_picture (one query)",
            LIKE_TARGET_MS,
            lambda i: store.visible_picture(liked[i], viewer),
            runs,
        ),
        time_calls("like toggle (committed)", LIKE_TARGET_MS, lambda i: store.toggle_like(likers[i], liked[i]), runs),
        time_calls("claim_job + release_job", LIKE_TARGET_MS, lambda i: claim_and_release(store, likers[i]), runs),
    ]


def claim_and_release(store: MascotStore, owner: str) -> None:
    claim = store.claim_job(owner, 1, 10_000)
    store.release_job(owner, claim.claim_id)


@contextmanager
def bench_database(database_url: str | None, folder: Path) -> Iterator[str]:
    if database_url is None:
        yield f"sqlite:///{folder / 'mascots.db'}"
    elif urlparse(database_url).scheme in {"postgresql", "postgres"}:
        with postgres_schema(database_url, prefix="mascot_bench") as url:
            yield url
    else:
        raise SystemExit("--database-url must be a postgresql:// URL (SQLite is the default).")


def describe(store: MascotStore, fill_seconds: float) -> str:
    """The database, its contents and the machine, for the report's header."""
    db, tables = store.database, store.tables
    if isinstance(db, peewee.PostgresqlDatabase):
        engine = "PostgreSQL " + db.execute_sql("SHOW server_version").fetchone()[0]
    else:
        engine = "SQLite " + db.execute_sql("SELECT sqlite_version()").fetchone()[0] + " (WAL)"
    images, generations = tables.image.select().count(), tables.generation.select().count()
    return (
        f"{engine}; {images:,} images in {generations:,} generations, {tables.like.select().count():,} likes, "
        f"{BROWSERS} browsers; filled in {fill_seconds:.0f} s through save_generation (PNG + WebP thumbnail each).\n"
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}; {datetime.now():%Y-%m-%d}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="postgresql://... (a new schema is used and dropped); default SQLite")
    parser.add_argument("--images", type=int, default=10_000, help="images to create (default 10000)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per call (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data and of the arguments")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with (
        tempfile.TemporaryDirectory(prefix="mascot-bench-") as folder,
        bench_database(args.database_url, Path(folder)) as url,
    ):
        print(run(url, Path(folder) / "images", args.images, args.runs, random.Random(args.seed)))


def run(url: str, images_dir: Path, images: int, runs: int, rng: random.Random) -> str:
    """Fill, time, reopen; the report as text."""
    store = MascotStore(url, images_dir)
    started = time.perf_counter()
    population = fill(store, images, rng)
    fill_seconds = time.perf_counter() - started
    if isinstance(store.database, peewee.PostgresqlDatabase):
        store.database.execute_sql("ANALYZE")
    summary = describe(store, fill_seconds)
    timings = benchmark(store, population, runs, rng)
    store.close()
    started = time.perf_counter()
    MascotStore(url, images_dir).close()
    reopen_ms = (time.perf_counter() - started) * 1000
    header = f"{'call (' + str(runs) + ' warm runs, ms)':<44} {'median':>8} {'p95':>8} {'worst':>8}   target"
    lines = [summary, "", header, *(timing.line() for timing in timings), ""]
    lines.append(f"opening the filled store (file check of every row + orphan sweep): {reopen_ms:.0f} ms, once")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
