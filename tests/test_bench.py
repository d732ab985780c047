"""The generation benchmark runs end to end on the tiny model (a smoke run: nothing here asserts a time)."""

import pytest
import torch

from bench import model as bench

pytestmark = pytest.mark.slow  # the model benchmark on the tiny pipeline


def test_the_benchmark_times_ours_and_plain_diffusers_on_the_same_cases(capsys):
    measurements = bench.main(
        ["--runs", "1", "--warmup", "0", "--resolutions", "256", "--num_inference_steps", "2",
         "--prior_num_inference_steps", "2"]
    )  # fmt: skip
    names = ["256² 2+2 steps, 1 image", "256² 2+2 steps, 4 images in one request", "256² 2+2 steps, 4 visitors at once"]
    expected = [(name, runner) for name in names for runner in ("plain", "ours")]
    assert [(m.case, m.runner) for m in measurements] == expected
    assert all(m.median_s > 0 for m in measurements)
    printed = capsys.readouterr().out
    assert all(f"| {name} |" in printed for name in names) and "ours / plain" in printed


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the full-size architecture needs a CUDA GPU")
def test_the_full_size_architecture_builds_and_both_runners_generate_on_the_gpu():
    measurements = bench.main(["--size", "full", "--runs", "1", "--warmup", "1", "--resolutions", "512"])
    assert {m.runner for m in measurements} == {"plain", "ours"}
    assert all(m.peak_gib is not None and m.peak_gib > 5 for m in measurements)  # fp16 weights alone are ~9 GiB
