"""The speed benchmark's CPU dry run on the tiny model: every phase runs and the fast path matches the plain one."""

import json

from bench import speed


def test_the_speed_benchmark_dry_run_alternates_plain_and_ours_and_writes_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    results = speed.main(
        ["--size", "tiny", "--runs", "1", "--warmup", "0", "--people", "2", "--people-rounds", "1",
         "--num_inference_steps", "2", "--no-compile", "--overhead-requests", "2", "--json", str(out)]
    )  # fmt: skip
    one = results["one_mascot_256_2+2_previews_every_2"]
    assert set(one) >= {"plain_diffusers", "ours_fast", "ours_all_fast_parts_off", "ratio_plain_over_ours_fast"}
    assert one["pixel_diff_fast_vs_parts_off"]["max"] == 0  # on a CPU every fast part keeps the maths
    people = results["2_people_queued"]
    assert people["ours_worker"]["mascots_per_s"] > 0 and people["plain_diffusers"]["mascots_per_s"] > 0
    overhead = results["app_overhead_per_request_ms (worker + store, no HTTP)"]
    assert overhead["save_in_background=True"]["median_ms"] > 0
    assert json.loads(out.read_text())["total_s"] == results["total_s"]
    assert "ratio_plain_over_ours_fast" in capsys.readouterr().out
