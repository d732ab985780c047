"""Compile processes: none outlives the serving process, and none leaves its work order in the data folder."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from mascot.generation.generator import CompileProgress
from mascot.generation.speed import CompileConfig
from tests.support import compile_children
from tests.test_speed import FAST, with_speed

PATIENCE_S = 60  # generous: only a child left running waits this long (the suite may share a busy machine)
ROOT = Path(__file__).resolve().parent.parent


def test_a_compile_process_that_fails_leaves_its_bucket_eager_and_nothing_in_the_data_folder(tiny_generator, tmp_path):
    """Its work order holds the app's settings (secrets too) and a folder is made at every start: the data folder
    keeps neither once the warm-up ends."""
    generator = with_speed(tiny_generator, FAST)
    cache = tmp_path / "compile-cache"
    generator.start_compiling(
        CompileConfig(backend="eager", cache_dir=cache),
        sizes=[256],
        batch_images=[1],
        build_in_child=compile_children.fails_to_build,
        niceness=0,
    )
    assert generator.compiled is not None and generator.compiled.thread is not None
    generator.compiled.thread.join(PATIENCE_S)
    (child,) = generator.compile_children
    assert child.process.returncode not in (None, 0)
    assert generator.compile_progress() == CompileProgress({"256x256x1": "eager"})
    assert list((cache / "work").iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="follows the child by a process file descriptor (Linux)")
def test_a_compile_process_ends_when_its_serving_process_is_killed(tmp_path):
    """Killed, or ended without its exit handlers (a second Ctrl-C, the OOM killer), the serving process cannot stop
    its children: each ends by itself, or it would hold a copy of the model on the GPU for nothing."""
    build = compile_children.builds_for_a_long_time
    serving = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from mascot.generation.compile_process import ChildCompile, start_child
        from mascot.generation.speed import CompileConfig
        from {build.__module__} import {build.__name__} as build

        folder = Path({str(tmp_path)!r})
        work = ChildCompile(build, CompileConfig(backend="eager"), ((256, 256, 1),), folder / "report-0.json", 0)
        print(start_child(work, folder).process.pid, flush=True)
        sys.stdin.readline()  # the test has read the child's id
        os._exit(137)  # no exit handlers run, as when killed
        """
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", serving], cwd=ROOT, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    ) as parent:  # fmt: skip
        assert parent.stdout is not None and parent.stdin is not None
        # Held from while the child surely runs (its parent has not reaped it): no later process with its id is
        # mistaken for it. Readable once it has ended, reaped or not.
        child = os.pidfd_open(int(parent.stdout.readline()))
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.wait(PATIENCE_S) == 137
    try:
        ended, _, _ = select.select([child], [], [], PATIENCE_S)
        if not ended:
            signal.pidfd_send_signal(child, signal.SIGKILL)  # not left behind by a failing test
        assert ended
    finally:
        os.close(child)


def no_room(*args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device")


def test_a_compile_that_cannot_start_leaves_the_model_serving_eager(tiny_generator, tmp_path, monkeypatch):
    """A data folder the compile cannot use (a full disk, a cache folder owned by another user): the model loads and
    serves eager, the health check lists no bucket as compiling, and no work folder is left behind."""
    from mascot.generation import model
    from mascot.settings import SpeedOptions
    from tests.test_speed import small_request

    speed = SpeedOptions(compile=True, compile_process=True, compile_sizes=(256,), compile_batch_images=(1,))
    generator = with_speed(tiny_generator, speed)
    request = small_request(num_images_per_prompt=1)
    eager = generator.generate(request).images[0]
    monkeypatch.setattr(model, "start_child", no_room)
    monkeypatch.setattr(model, "_work_folder", lambda config: tmp_path)

    generator.speed_up("cpu", build_in_child=compile_children.fails_to_build)

    assert generator.compile_progress() is None
    assert list(tmp_path.iterdir()) == []
    assert generator.generate(request).images[0].tobytes() == eager.tobytes()


def test_compile_processes_started_before_one_fails_to_start_can_be_stopped(tiny_generator, tmp_path, monkeypatch):
    """Each child is kept as it starts (speed_up's stop_compiling then ends it), and the work orders, which hold the
    settings, are removed."""
    from mascot.generation import model

    generator = with_speed(tiny_generator, FAST)
    start_child = model.start_child

    def no_room_for_the_second(work: object, folder: Path) -> object:
        if generator.compile_children:
            no_room()
        return start_child(work, folder)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "start_child", no_room_for_the_second)
    monkeypatch.setattr(model, "_work_folder", lambda config: tmp_path)
    with pytest.raises(OSError, match="No space left"):
        generator.start_compiling(
            CompileConfig(backend="eager"), sizes=[256], batch_images=[1, 2], processes=2,
            build_in_child=compile_children.builds_for_a_long_time, niceness=0,
        )  # fmt: skip
    (started,) = generator.compile_children
    assert list(tmp_path.iterdir()) == []

    generator.stop_compiling(timeout=0)

    assert started.process.poll() is not None


def test_a_decode_a_compile_process_could_not_compile_is_not_compiled_again_in_a_turn_here(
    tiny_generator, tmp_path, monkeypatch
):
    """MoVQ under fullgraph is the least proven stage: where a compile process could not compile its decode, the
    serving process loads the rest of the bucket and leaves the decode eager, instead of compiling it again inside a
    turn that people's runs wait for, only to fail again."""
    from mascot.generation import compile_process, speed
    from mascot.generation.speed import decode_key, decoder_key

    generator = with_speed(tiny_generator, FAST)
    where = ["in the compile process"]
    tried: list[str] = []

    def decode_that_does_not_compile(latents: object) -> object:
        tried.append(where[0])
        raise RuntimeError("the MoVQ decode does not compile (in a test)")

    run_bucket = speed.run_bucket

    def with_that_decode(prior, decoder, decode, bucket, stage, decode_counts=None):  # type: ignore[no-untyped-def]
        return run_bucket(prior, decoder, decode_that_does_not_compile, bucket, stage, decode_counts)

    monkeypatch.setattr(speed, "run_bucket", with_that_decode)
    bucket = (256, 256, 1)
    work = compile_process.ChildCompile(
        lambda: (generator.fast_prior, generator.fast_decoder), CompileConfig(backend="eager"), (bucket,),
        tmp_path / "report-0.json", 0,
    )  # fmt: skip
    report = compile_process.run(work)  # the compile process's side, run here
    assert report["compiled"].keys() == {"256x256x1"} and report["decodes"] == {"256x256x1": []}
    assert report["stages"] >= 6  # each stage counted as it started (the prior's four, the decoder, the decode)

    where[0] = "in the serving process"
    compiled = speed.CompiledModels(generator.fast_prior, generator.fast_decoder, CompileConfig(backend="eager"))
    compiled.plan([bucket])
    ended = compile_process.Child(work, subprocess.Popen([sys.executable, "-c", "pass"]), 0.0)
    ended.process.wait(PATIENCE_S)
    compile_process._load_from_cache(compiled, ended, speed.any_time)

    assert tried == ["in the compile process"]
    assert compiled.ready(decoder_key(256, 256, 1, True)) and not compiled.ready(decode_key(256, 256, 1))
    assert compiled.progress() == CompileProgress({"256x256x1": "ready"})


def test_a_compile_process_that_makes_no_progress_for_too_long_is_stopped_and_what_it_did_not_compile_left_eager(
    tiny_generator, tmp_path
):
    """A compile process stuck on a size would keep it "compiling" for good (a replica waiting for its compile,
    MASCOT_READY_WHEN_COMPILED, would never take people) and hold a copy of the model: it is stopped, the size it had
    compiled is loaded, the one it was stuck on stays eager."""
    from mascot.generation import compile_process, speed

    generator = with_speed(tiny_generator, FAST)
    done, stuck = (256, 256, 1), (256, 256, 2)
    compiled = speed.CompiledModels(generator.fast_prior, generator.fast_decoder, CompileConfig(backend="eager"))
    compiled.plan([done, stuck])
    folder = tmp_path / "work"
    work = compile_process.ChildCompile(
        compile_children.builds_for_a_long_time, CompileConfig(backend="eager"), (done, stuck),
        folder / "report-0.json", 0,
    )  # fmt: skip
    child = compile_process.start_child(work, folder)
    # What it reports once its first size is compiled; the second never comes (its build sleeps for ten minutes).
    report = {"compiled": {"256x256x1": 1.0}, "failed": [], "packages": {}, "decodes": {"256x256x1": [1]}}
    compile_process._write_report(work.report, report)

    warm_up = threading.Thread(
        target=compile_process.warm_after_children,
        args=(compiled, [child], speed.any_time),
        kwargs={"work_folder": folder, "stall_s": 0.5},
    )
    warm_up.start()
    warm_up.join(PATIENCE_S)
    ended = not warm_up.is_alive()
    if not ended:  # not left for ten minutes by a failing test
        child.process.kill()
        warm_up.join()

    assert ended and child.process.returncode is not None
    assert compiled.progress() == CompileProgress({"256x256x1": "ready", "256x256x2": "eager"})
    assert not folder.exists()


def test_a_compile_process_is_stuck_only_while_it_starts_no_stage_and_finishes_no_size(tmp_path):
    from mascot.generation.compile_process import Child, ChildCompile, _write_report

    buckets = ((256, 256, 1), (256, 256, 2))
    work = ChildCompile(compile_children.builds_for_a_long_time, CompileConfig(), buckets, tmp_path / "r.json", 0)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) as process:
        try:
            child = Child(work, process, started=time.monotonic() - 100)
            assert child.stalled(50)  # nothing finished in 100 s
            _write_report(work.report, {"compiled": {"256x256x1": 1.0}, "failed": []})
            assert not child.stalled(50)  # a size compiled just now
            child.progressed -= 100
            assert child.stalled(50)
            _write_report(work.report, {"compiled": {"256x256x1": 1.0}, "failed": ["256x256x2"]})
            assert not child.stalled(50)  # a size that failed is a size finished too
            child.progressed -= 100
            _write_report(work.report, {"compiled": {"256x256x1": 1.0}, "failed": ["256x256x2"], "stages": 1})
            assert not child.stalled(50)  # a stage started: a slow compile, not a stuck one
        finally:
            process.kill()
    assert not child.stalled(0)  # ended: not stuck


class Called(torch.nn.Module):
    """A module's call as packages export it: the module itself under the name "model"."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.model(sample)


def test_a_package_build_that_fails_leaves_no_partial_files_in_the_data_folder(tmp_path, monkeypatch):
    """A package build failing mid-way (out of memory, a compiler error) leaves the packages folder, kept in the data
    folder across restarts, as it found it."""
    from mascot.generation.packages import PackagedModule

    module = PackagedModule("decode", torch.nn.Linear(2, 2), Called, lambda args, kwargs: None, lambda output: output)
    written: list[Path] = []

    def fails_half_way(program: object, package_path: str, **options: object) -> str:
        Path(package_path).write_bytes(b"half a package")
        written.append(Path(package_path))
        raise RuntimeError("C++ compile failed (in a test)")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", fails_half_way)
    with pytest.raises(RuntimeError, match="C\\+\\+ compile failed"):
        module.build((torch.ones(1, 2),), tmp_path)

    assert [path.parent for path in written] == [tmp_path]
    assert list(tmp_path.iterdir()) == []


def test_partial_files_a_killed_package_build_left_are_removed_and_fresh_ones_kept(tmp_path):
    """A build killed between writing its package and renaming it (SIGTERM and SIGKILL skip its cleanup) leaves partials
    in the data folder for good; the next compile process removes them, but not a build's of another replica now."""
    from mascot.generation.packages import remove_abandoned_partials

    names = ("unet-1.a.partial.pt2", "unet-1.a.partial-extra", "unet-1.pt2", "unet-1.extra", "unet-2.b.partial.pt2")
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for name in names[:4]:
        os.utime(tmp_path / name, (two_hours_ago, two_hours_ago))

    assert remove_abandoned_partials(tmp_path) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["unet-1.extra", "unet-1.pt2", "unet-2.b.partial.pt2"]
