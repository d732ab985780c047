"""Compiling in child processes: each builds the same models, compiles its buckets into the persistent compile cache at
low priority (or, with `CompileConfig.packages`, into AOTInductor packages: packages.py) and exits; the serving
process then loads each bucket from that cache or those packages, one stage between two runs."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mascot.generation.packages import PackagedModels, remove_abandoned_partials
from mascot.generation.speed import (
    Bucket,
    CompileConfig,
    CompiledModels,
    StagedModels,
    Turn,
    bucket_decode_counts,
    bucket_name,
    decode_key,
    stoppable,
)

logger = logging.getLogger(__name__)

# What a child builds: the prior and decoder pipelines exactly as the serving process compiles them (same modules,
# dtypes, adapters and devices, so the compiled graphs and the cache's keys are the same). Pickled by reference: a
# module-level function, or a functools.partial of one.
BuildTargets = Callable[[], tuple[Any, Any]]
CHILD_NICENESS = 10  # below the serving process: its eager loop gets the cores first
POLL_S = 0.5
PARENT_CHECK_S = 1.0  # how often a child looks whether the serving process that started it is still there
# A child that starts no stage and finishes no bucket for this long is taken as stuck and stopped, its buckets left
# eager: else they would stay "compiling" for good (a replica that waits for its compile, MASCOT_READY_WHEN_COMPILED,
# would never take people) while it held a copy of the model on the GPU. A whole bucket, seven stages or more, took
# 149 to 184 s cold on the H200, and 240 to 246 s with the tiny model on a 2-core CPU (docs/performance.md).
STALL_S = 1800.0


@dataclass(frozen=True)
class ChildCompile:
    """A child's work: build the models with `build`, compile `buckets` with `config`, write a report to `report`."""

    build: BuildTargets
    config: CompileConfig
    buckets: tuple[Bucket, ...]
    report: Path
    niceness: int = CHILD_NICENESS


@dataclass
class Child:
    """A running child and what it compiles."""

    work: ChildCompile
    process: subprocess.Popen[bytes]
    started: float
    # The report as last read: still there once the work folder is removed (the benchmark reads it after the warm-up).
    last_report: dict[str, Any] = field(default_factory=dict)
    # When its report last showed progress (a stage started, a bucket finished), on the monotonic clock.
    progressed: float = field(init=False)

    def __post_init__(self) -> None:
        self.progressed = self.started

    def report(self) -> dict[str, Any]:
        """What the child wrote: {"compiled": {bucket name: seconds}, "failed": [...]}; empty when it wrote nothing."""
        before = self.steps_done()
        with contextlib.suppress(OSError, ValueError):  # not written yet, or its folder removed: the last one read
            self.last_report = dict(json.loads(self.work.report.read_text()))
        if self.steps_done() > before:
            self.progressed = time.monotonic()
        return dict(self.last_report)

    def steps_done(self) -> int:
        """What its last report read counts: stages started and buckets finished (compiled or failed)."""
        report = self.last_report
        return int(report.get("stages", 0)) + len(report.get("compiled", {})) + len(report.get("failed", []))

    def stalled(self, stall_s: float) -> bool:
        """Still running, having made no progress in the last `stall_s` seconds (its report read afresh)."""
        self.report()
        return self.process.poll() is None and time.monotonic() - self.progressed > stall_s


def split_buckets(buckets: Sequence[Bucket], processes: int) -> list[tuple[Bucket, ...]]:
    """Buckets dealt round-robin to at most `processes` children (the first bucket to the first child)."""
    count = max(1, min(processes, len(buckets)))
    return [tuple(buckets[index::count]) for index in range(count)]


def start_child(work: ChildCompile, folder: Path) -> Child:
    """Start `python -m mascot.generation.compile_process` on `work` (pickled into `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=folder, prefix="compile-", suffix=".pickle")
    with os.fdopen(handle, "wb") as file:
        pickle.dump(work, file)
    environment = dict(os.environ)
    # The child imports what the parent could (the repository root, carried site folders) and writes the same cache.
    environment["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    if work.config.cache_dir is not None:
        environment["TORCHINDUCTOR_CACHE_DIR"] = str(work.config.cache_dir)
    if work.config.threads > 0:
        environment["TORCHINDUCTOR_COMPILE_THREADS"] = str(work.config.threads)
    # A session of its own: a Ctrl-C at the terminal reaches the serving process, whose shutdown stops the children
    # (stop_compiling), not each child mid-compile with a traceback of its own.
    process = subprocess.Popen(
        # Our id, not the child's getppid(): this process may be gone by the time the child asks.
        [sys.executable, "-m", "mascot.generation.compile_process", name, str(os.getpid())],
        env=environment,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    logger.info("compiling %s in process %d", ", ".join(bucket_name(b) for b in work.buckets), process.pid)
    atexit.register(stop_child, process)  # a child outliving us would hold a copy of the model on the GPU for nothing
    return Child(work, process, time.monotonic())


def stop_child(process: subprocess.Popen[bytes]) -> None:
    """End a child that is still compiling (its cache entries so far are kept)."""
    stop_children([process])


def stop_children(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """End the children still compiling: all asked at once, then each killed that has not ended within `timeout`
    seconds in all (a shutdown's drain waits once, not once per child)."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()  # reaped now, not left a zombie until the Popen is collected


def warm_after_children(
    compiled: StagedModels,
    children: Sequence[Child],
    turn: Turn,
    stopped: threading.Event | None = None,
    work_folder: Path | None = None,
    stall_s: float = STALL_S,
) -> None:
    """As each child ends, load the buckets it compiled from the cache (each stage inside `turn`), in the order the
    children end; a bucket a child could not compile stays eager (compiling it here would starve the eager path).
    A child that starts no stage and finishes no bucket within `stall_s` seconds is stopped and counts as ended
    (what it reported compiled is loaded). Once `stopped` is set, no further stage starts. The children's
    `work_folder` (their work orders and reports) is removed at the end: one is made at every start, in the data
    folder."""
    turn = stoppable(turn, stopped)
    waiting = list(children)
    try:
        while waiting and not (stopped is not None and stopped.is_set()):
            for child in waiting:
                if child.stalled(stall_s):
                    logger.warning(
                        "the compile process %d made no progress in %.0f minutes: it is stopped, and what it did not "
                        "compile stays eager",
                        child.process.pid,
                        stall_s / 60,
                    )
                    stop_child(child.process)
            ended = [child for child in waiting if child.process.poll() is not None]
            if not ended:
                time.sleep(POLL_S)
                continue
            for child in ended:
                waiting.remove(child)
                _load_from_cache(compiled, child, turn)
    finally:
        # Stopped: the children's work is wasted, not harmful; do not leave them running.
        stop_children([child.process for child in waiting])
        if work_folder is not None:
            # A work order a child never read holds the app's settings (its secrets too): not left behind.
            shutil.rmtree(work_folder, ignore_errors=True)


def _load_from_cache(compiled: StagedModels, child: Child, turn: Turn) -> None:
    report = child.report()
    done = report.get("compiled", {})
    for name, seconds in done.items():
        compiled.seconds[f"{name} in a child process"] = seconds
    ready = [bucket for bucket in child.work.buckets if bucket_name(bucket) in done]
    for bucket in child.work.buckets:
        if bucket not in ready:
            logger.warning(
                "the compile process (exit %s) did not compile %s; it stays eager",
                child.process.returncode,
                bucket_name(bucket),
            )
            compiled.settle(bucket, "eager")
    if isinstance(compiled, PackagedModels):
        for bucket in ready:
            compiled.load(bucket, report.get("packages", {}).get(bucket_name(bucket), {}), turn)
    elif isinstance(compiled, CompiledModels):
        decodes = report.get("decodes", {})
        compiled.warm(
            ready, turn, decode_counts={b: decodes[bucket_name(b)] for b in ready if bucket_name(b) in decodes}
        )


def run(work: ChildCompile) -> dict[str, Any]:
    """The child's side: build, compile each bucket, report (written after each bucket, so a crash keeps the rest, and
    as each stage starts, so the serving process sees a slow compile is not a stuck one)."""
    if work.niceness and hasattr(os, "nice"):
        os.nice(work.niceness)
    # "decodes": per bucket, the decode sizes (images at once) compiled; the serving process loads only those.
    # "stages": how many stages (and packages) it has started so far.
    report: dict[str, Any] = {"compiled": {}, "failed": [], "packages": {}, "decodes": {}, "stages": 0}

    def started_another() -> None:
        report["stages"] += 1
        _write_report(work.report, report)

    @contextlib.contextmanager
    def stage() -> Iterator[None]:
        started_another()
        yield

    prior, decoder = work.build()
    if work.config.packages:
        packaged = PackagedModels(prior, decoder, work.config)
        # In the persistent cache, a restart finds its packages built (each is checked when it is loaded).
        cache = work.config.cache_dir
        folder = cache / "packages" if cache is not None else work.report.parent / "packages"
        if folder.is_dir() and (removed := remove_abandoned_partials(folder)):
            logger.info("removed %d partial package files left by killed builds", removed)
        for bucket in work.buckets:
            _build_packages(packaged, bucket, folder, report, started_another)
            _write_report(work.report, report)
        return report
    compiled = CompiledModels(prior, decoder, work.config)  # the same cache folder and thread cap as the parent's
    for bucket in work.buckets:
        if compiled.warm([bucket], stage):
            report["compiled"][bucket_name(bucket)] = compiled.seconds[bucket_name(bucket)]
            height, width, _ = bucket
            report["decodes"][bucket_name(bucket)] = [
                count for count in bucket_decode_counts(bucket) if compiled.ready(decode_key(height, width, count))
            ]
        else:
            report["failed"].append(bucket_name(bucket))
        _write_report(work.report, report)
    return report


def _write_report(path: Path, report: dict[str, Any]) -> None:
    """Whole or not at all: a child stopped mid-write would otherwise leave a report the parent cannot read, and every
    bucket it had compiled would stay eager."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(report))
    os.replace(partial, path)


def _build_packages(
    packaged: PackagedModels, bucket: Bucket, folder: Path, report: dict[str, Any], started_another: Callable[[], None]
) -> None:
    """One bucket's packages into `folder`, and into the report what each of its stages needs."""
    name = bucket_name(bucket)
    started = time.perf_counter()
    try:
        needs = packaged.build(bucket, folder, started_another)
    except Exception:
        logger.exception("building the compiled packages for %s failed; it stays eager", name)
        report["failed"].append(name)
        return
    report["compiled"][name] = round(time.perf_counter() - started, 2)
    report["packages"][name] = {stage: [vars(package) for package in packages] for stage, packages in needs.items()}


def end_with_parent(parent: int, check_s: float = PARENT_CHECK_S) -> threading.Thread:
    """A daemon thread that ends this process once `parent` is gone (a serving process killed, or ended without its
    exit handlers: a second Ctrl-C, the OOM killer): a child left compiling would hold a copy of the model on the GPU
    for nothing. Its parent then is another process (init)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(check_s)
        logger.warning("the serving process %d is gone: this compile process ends", parent)
        os._exit(1)

    thread = threading.Thread(target=watch, name="end-with-parent", daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str]) -> int:
    """`python -m mascot.generation.compile_process WORK.pickle PARENT_PID` (started by `start_child`, which wrote
    the file)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s compile-process %(levelname)s %(message)s")
    end_with_parent(int(argv[1]) if len(argv) > 1 else os.getppid())
    path = Path(argv[0])
    with path.open("rb") as file:
        work = pickle.load(file)  # written by our own parent process, in a folder only it writes
    path.unlink(missing_ok=True)
    report = run(work)
    return 0 if not report["failed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
