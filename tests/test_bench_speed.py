"""The speed benchmark's CPU dry run on the tiny model: every phase runs and the fast path matches the plain one."""

import json
import types

import pytest
import torch

from bench import speed
from tests.support.cuda_waits import stream_waits_only

pytestmark = pytest.mark.slow  # the speed benchmark on the tiny pipeline


def assert_the_time_is_placed(results: dict, *kinds: str) -> None:
    """Where one mascot's time went (bench/stage_clock.py), for each of `kinds` ("eager", "compiled"): every model call
    of its 2 decoder steps and 2 prior steps (the tiny scale's), one decode, and the time left outside the models."""
    for key in (f"where_the_time_goes_{kind}" for kind in kinds):
        row = results[key]
        calls = {name: row[name]["calls"] for name in ("prior", "unet", "decode")}
        assert calls == {"prior": 2, "unet": 2, "decode": 1}, (key, calls)
        assert 0 <= row["outside_the_models_s"] < row["wall_s"], (key, row)


def assert_the_shared_run_is_placed(results: dict, kind: str) -> None:
    """Where a run shared by the 2 people went: one run of both images (each UNet and prior call takes both), and
    the writing of its pictures."""
    row = results[f"where_a_run_of_2_people_goes_{kind}"]
    assert row["images"] == 2 and row["unet"]["calls"] == 2 and row["prior"]["calls"] == 2, row
    assert (
        0 <= row["outside_the_models_s"] < row["wall_s"]
        and row["writing_its_pictures_s (PNG + thumbnail, side by side)"] > 0
    )


def assert_the_convolution_settings_are_timed(results: dict, *when: str) -> None:
    """The UNet's step under each convolution setting (bench/convolutions.py), at one mascot's 2 rows and the 2
    people's 4, measured at one of `when`."""
    row = results["unet_convolution_settings_eager"]
    assert row["measured"] in when, row
    for rows in ("2_rows", "4_rows"):
        assert row[rows]["default"]["ratio_default_over_this"] == 1.0
        assert all(row[rows][name]["ms_per_step"] > 0 for name in ("cudnn_benchmark", "channels_last"))


def test_the_speed_benchmark_dry_run_alternates_plain_and_ours_and_writes_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    results = speed.main(
        ["--size", "tiny", "--runs", "1", "--warmup", "0", "--people", "2", "--people-rounds", "1",
         "--num_inference_steps", "2", "--no-compile", "--overhead-requests", "2", "--lower-precision", "int8",
         "--json", str(out)]
    )  # fmt: skip
    one = results["one_mascot_256_2+2_previews_every_2"]
    assert set(one) >= {"plain_diffusers", "ours_fast", "ours_all_fast_parts_off", "ratio_plain_over_ours_fast"}
    assert one["pixel_diff_fast_vs_parts_off"]["max"] == 0  # on a CPU every fast part keeps the maths
    assert_the_time_is_placed(results, "eager")
    assert_the_shared_run_is_placed(results, "eager")
    people = results["2_people_queued"]
    assert people["ours_worker"]["mascots_per_s"] > 0 and people["plain_diffusers"]["mascots_per_s"] > 0
    assert people["jobs_per_run"] == [2]  # queued together, they share one run
    for runner in ("ours_worker", "plain_diffusers"):  # a person's mean wait: within the round, not after it
        assert 0 < people[runner]["mean_answer_s"] <= people[runner]["median_s"], people
    overhead = results["app_overhead_per_request_ms (worker + store, no HTTP)"]
    assert overhead["save_in_background=True"]["median_ms"] > 0
    lowered = results["lower_precision_int8"]
    assert lowered["linear_layers_lowered"] > 0 and lowered["ours_int8"]["median_s"] > 0
    assert lowered["ours_fast_eager"]["median_s"] > 0 and lowered["ratio_ours_fast_eager_over_ours_int8"] > 0
    assert 0 < lowered["pixel_diff_int8_vs_ours_fast_eager"]["mean"] < 16  # lowered: changed, but the same picture
    assert "lower_precision_int8_compiled" not in results  # --no-compile
    assert_the_convolution_settings_are_timed(results, "after the other phases")
    assert json.loads(out.read_text())["total_s"] == results["total_s"]
    assert "ratio_plain_over_ours_fast" in capsys.readouterr().out


def test_the_speed_benchmark_compiles_in_a_child_while_serving_then_measures_compiled(tmp_path):
    results = speed.main(
        ["--size", "tiny", "--runs", "1", "--warmup", "0", "--people", "2", "--num_inference_steps", "2",
         "--compile-batch-images", "1,2", "--compile-processes", "1", "--overhead-requests", "1",
         "--compile-niceness", "0", "--budget-s", "3600", "--lower-precision", "int8", "--lora-rank", "4",
         "--json", str(tmp_path / "speed.json")]
    )  # fmt: skip
    compiled = results["compiled"]
    assert compiled["how"] == "1 child process(es)"
    assert set(compiled["per_bucket_s (a child's: cold; here: from the cache the children filled)"]) == {
        "256x256x1 in a child process", "256x256x2 in a child process", "256x256x1", "256x256x2"
    }  # fmt: skip
    assert set(compiled["compile_cache_lookups_here"]) == {"256x256x1", "256x256x2"}  # each bucket loaded here
    assert "compile_cache_lookups_here_in_all" in compiled and "cut" not in compiled  # warmed within the budget
    assert compiled["buckets"] == {"256x256x1": "ready", "256x256x2": "ready"}  # as /healthz would say
    assert [set(child["compiled"]) for child in compiled["children"]] == [{"256x256x1", "256x256x2"}]  # its report
    # The people, queued together, share one run (a run of 2 is the bucket compiled for them).
    assert results["2_people_queued_eager_while_compiling"]["jobs_per_run"] == [2]
    assert results["2_people_queued_compiled"]["jobs_per_run"] == [2]
    assert results["2_people_queued_compiled"]["ours_worker"]["mascots_per_s"] > 0
    assert results["compiled_one_mascot"]["pixel_diff_compiled_vs_eager"]["max"] == 0  # backend "eager" on a CPU
    assert_the_time_is_placed(results, "eager", "compiled")
    assert_the_shared_run_is_placed(results, "compiled")
    # In the child's compile time when it is still compiling by then (this machine's speed decides), else after.
    assert_the_convolution_settings_are_timed(results, "while the children compiled", "after the other phases")
    # --lora-rank: a house look, compiled (the child built the same adapter) against plain diffusers with it on.
    look = results["compiled_one_mascot_house_look"]
    assert look["ours_compiled"]["median_s"] > 0 and look["ratio_plain_over_ours_compiled"] > 0
    assert look["pixel_diff_compiled_vs_eager"]["max"] == 0
    assert look["pixel_diff_eager_look_vs_eager_base (the look acts)"]["max"] > 0
    lowered = results["lower_precision_int8_compiled"]
    assert lowered["warm_up_s"] and lowered["ours_int8_compiled"]["median_s"] > 0
    eager_lowered = results["lower_precision_int8"]["pixel_diff_int8_vs_ours_fast_eager"]
    assert lowered["pixel_diff_int8_compiled_vs_ours_fast_eager"] == eager_lowered  # the lowered eager picture
    # Against ours compiled at full precision too (the precision's own difference on a GPU): on the CPU, the same.
    assert lowered["pixel_diff_int8_compiled_vs_ours_compiled"] == eager_lowered


def test_the_speed_benchmark_hands_packages_over_for_the_full_and_the_lowered_models(tmp_path):
    """`--compile-packages --lower-precision`, the GPU round's one call: a child builds AOTInductor packages of the
    full-precision models, loaded here, then another builds them from models it lowers itself."""
    results = speed.main(
        ["--size", "tiny", "--runs", "1", "--warmup", "0", "--people", "1", "--num_inference_steps", "2",
         "--compile-batch-images", "1", "--compile-processes", "1", "--overhead-requests", "1",
         "--compile-niceness", "0", "--budget-s", "3600", "--compile-packages", "--lower-precision", "int8",
         "--json", str(tmp_path / "speed.json")]
    )  # fmt: skip
    compiled = results["compiled"]
    assert "256x256x1 loaded" in compiled["per_bucket_s (a child's: cold; here: from the cache the children filled)"]
    assert results["compiled_one_mascot"]["pixel_diff_compiled_vs_eager"]["max"] <= 2  # C++ rounds in its own order
    assert_the_time_is_placed(results)  # the packages' calls are timed too
    lowered = results["lower_precision_int8_compiled"]
    assert lowered["how"] == "packages from a child process" and "256x256x1 loaded" in lowered["warm_up_s"]
    eager_lowered = results["lower_precision_int8"]["pixel_diff_int8_vs_ours_fast_eager"]["mean"]
    assert abs(lowered["pixel_diff_int8_compiled_vs_ours_fast_eager"]["mean"] - eager_lowered) < 1  # lowered
    assert abs(lowered["pixel_diff_int8_compiled_vs_ours_compiled"]["mean"] - eager_lowered) < 1


def test_the_benchmarks_models_are_in_inference_mode_as_from_pretrained_gives_them_to_the_app():
    prior, decoder = speed.build_pipelines("tiny", "cpu")  # built in code, where modules start in training mode
    modules = [module for pipeline in (prior, decoder) for module in pipeline.components.values()]
    models = [module for module in modules if isinstance(module, torch.nn.Module)]
    assert len(models) >= 5 and not any(part.training for model in models for part in model.modules())


def test_the_benchmark_waits_for_its_stream_never_the_whole_device(monkeypatch):
    """A device-wide synchronize, or memory handed back to the device, is invalid while a stream captures a CUDA graph,
    as a bucket's load stage does beside the requests timed meanwhile: the benchmark waits on its own stream."""
    waited = stream_waits_only(monkeypatch)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 2**30)
    bench = speed.Bench(speed.parse_args(["--size", "full"]), "cuda")
    setups: list[str] = []
    result = speed.alternate(
        bench, {"plain": lambda: "p", "ours": lambda: "o"}, rounds=1, warmup=0,
        setups={"plain": lambda: setups.append("plain"), "ours": lambda: setups.append("ours")},
    )  # fmt: skip
    assert result["outputs"] == {"plain": "p", "ours": "o"} and setups == ["plain", "ours"]
    assert result["timings"]["ours"]["peak_gib"] == 1.0
    # Per runner: after its setup, then before and after its timed run.
    assert waited == [torch.device("cuda")] * 6


def tiny_fast_generator(scale: speed.Scale) -> speed.KandinskyGenerator:
    """The benchmark's fast generator on the tiny model, built afresh (tests change it)."""
    prior, decoder = speed.build_pipelines("tiny", "cpu")
    return speed.ours(prior, decoder, "cpu", speed.SpeedOptions(), scale.preview_every)


def out_of_memory(*_args, **_kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory (in a test)")


def test_a_queued_persons_failed_job_is_no_throughput(tmp_path):
    """A shared run that fails (out of memory, say) ends every job fast: the phase raises instead of recording that
    speed as mascots per second, and `guarded` records the failure and lets the call go on."""
    args = speed.parse_args(["--size", "tiny", "--runs", "1", "--warmup", "0", "--people", "2"])
    bench, scale = speed.Bench(args, "cpu"), speed.SCALES["tiny"]
    fast = tiny_fast_generator(scale)

    fast.generate_batch = out_of_memory
    with torch.inference_mode():
        speed.guarded(bench, "2_people_queued_compiled",
                      lambda: speed.people_queued(bench, scale, None, fast, tmp_path, "_compiled", 1))  # fmt: skip
    assert bench.results["2_people_queued_compiled"] == {
        "failed": "RuntimeError: a queued person's job ended failed, not done (the log says why)"
    }


def test_a_compiled_phase_runs_only_when_its_bucket_is_ready_and_its_failure_is_recorded():
    bench = speed.Bench(speed.parse_args(["--size", "tiny"]), "cpu")
    ready: set = set()
    compiled = types.SimpleNamespace(
        ready=lambda key: key in ready,
        progress=lambda: types.SimpleNamespace(buckets={"256x256x8": "eager"}),
    )
    fast = types.SimpleNamespace(compiled=compiled)
    measured: list[str] = []
    speed.compiled_only(bench, fast, 256, 8, "8_people_queued_compiled", lambda: measured.append("8 people"))
    assert measured == []  # its compile failed: runs would be eager under a compiled label
    assert bench.results["8_people_queued_compiled"] == {"skipped": "bucket 256x256x8 is eager, not ready"}
    ready.add(speed.decoder_key(256, 256, 1, True))

    def failing() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    speed.compiled_only(bench, fast, 256, 1, "compiled_one_mascot", failing)
    assert bench.results["compiled_one_mascot"] == {
        "failed": "RuntimeError: CUDA error: an illegal memory access was encountered"
    }
    speed.compiled_only(bench, fast, 256, 1, "where_the_time_goes_compiled", lambda: measured.append("one"))
    assert measured == ["one"]
    # A ready bucket whose MoVQ decode failed to compile decodes eager: the row says which of its stages are compiled.
    speed.compiled_only(bench, fast, 256, 1, "compiled_one_mascot",
                        lambda: bench.record("compiled_one_mascot", {"ours_compiled": {"median_s": 1.0}}))  # fmt: skip
    assert bench.results["compiled_one_mascot"] == {
        "ours_compiled": {"median_s": 1.0},
        "stages_compiled": {"prior/1/False/True": False, "decoder/256/256/1/True": True, "decode/256/256/1": False},
    }


def test_the_cuda_graph_pools_are_counted_beside_the_peak(monkeypatch):
    """max_memory_allocated counts no graph's pool between replays: a compiled row gives what those pools hold."""
    gib = 2**30

    def segment(pool: tuple[int, int], total: int, device: int = 0) -> dict:
        return {"device": device, "segment_pool_id": pool, "total_size": total, "active_size": 0}

    segments = [segment((0, 0), 9 * gib), segment((0, 1), 3 * gib), segment((0, 2), gib // 2), segment((0, 1), gib, 1)]
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "memory_snapshot", lambda include_traces=True: segments)
    assert speed.cuda_graph_pools_gib() == 3.5
    monkeypatch.setattr(torch.cuda, "memory_snapshot", lambda: segments)  # a torch before include_traces
    assert speed.cuda_graph_pools_gib() == 3.5


def test_a_request_that_fails_while_warming_ends_the_serving_not_the_call():
    """Out of memory beside the compile processes, say: the serving loop stops and says why; the warm-up's figures
    and every later phase still come."""
    bench, scale = speed.Bench(speed.parse_args(["--size", "tiny", "--budget-s", "3600"]), "cpu"), speed.SCALES["tiny"]
    fast = types.SimpleNamespace(generate=out_of_memory, compile_children=[])
    warming = types.SimpleNamespace(is_alive=lambda: True)

    served = speed.serve_while_warming(bench, fast, speed.request(scale), warming, started=0.0)

    assert served["serving_failed"] == "OutOfMemoryError: CUDA out of memory (in a test)"
    assert served["eager_served_while_warming_s"] == {"while_children_compiled": [], "while_loading_here": []}


def test_a_failing_convolution_phase_is_recorded_and_gives_the_models_back(monkeypatch):
    bench, scale = speed.Bench(speed.parse_args(["--size", "tiny"]), "cpu"), speed.SCALES["tiny"]
    fast = tiny_fast_generator(scale)

    monkeypatch.setattr(speed, "time_unet_settings", out_of_memory)
    speed.convolution_settings(bench, scale, fast, "while the children compiled")
    assert bench.results[speed.CONVOLUTIONS_KEY] == {"failed": "OutOfMemoryError: CUDA out of memory (in a test)"}
    assert not fast.turn._lock.locked()  # the generation's turn it took is free again
