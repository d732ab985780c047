"""bench.flops counts the full-size architecture's arithmetic on the meta device, by model and by kind of layer."""

import json

import pytest
import torch

from bench import flops
from mascot.prompt.request import GenerationRequest


@pytest.fixture(scope="module")
def one_and_eight():
    return flops.count_run(1, 768), flops.count_run(8, 768)


def test_a_hand_counted_module_gives_each_kind_its_own_operations():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 16))
    counted = flops.count_call(model, "hand", 2, lambda: model(torch.zeros(2, 3, 4, 4)))
    convolution = 2 * (2 * 8 * 4 * 4) * 3 * 3 * 3  # 2 * outputs * (inputs * kernel): multiply-adds
    linear = 2 * (2 * 16) * (8 * 4 * 4)
    assert counted.by_kind == {"3x3 convolutions": convolution, "linear layers": linear, flops.REST: 0}
    assert counted.flops == convolution + linear
    assert not model._forward_hooks and not model[0]._forward_hooks  # the hooks are gone afterwards


def test_the_full_size_counts_match_the_reference_measured_apart(one_and_eight):
    one, _ = one_and_eight
    # ../shared/reference/kandinsky-2-2.md: UNet step with guidance at 768² 3.99 TFLOP, MoVQ decode 4.9 TFLOP,
    # prior step with guidance 0.33 TFLOP (the app's default prior runs unguided: one row, half of it).
    assert one.unet_step.rows == 2 and one.unet_step.flops == pytest.approx(3.99e12, rel=0.005)
    assert one.movq_decode.flops == pytest.approx(4.9e12, rel=0.005)
    guided = flops.count_run(1, 768, GenerationRequest(prompt="a fox", prior_guidance_scale=4.0))
    assert guided.prior_step.rows == 2 and guided.prior_step.flops == pytest.approx(0.33e12, rel=0.01)
    assert one.prior_step.rows == 1 and one.prior_step.flops == pytest.approx(guided.prior_step.flops / 2, rel=0.01)


def test_a_run_adds_its_steps_and_its_kinds_add_up(one_and_eight):
    for run in one_and_eight:
        steps = run.unet_step.flops * 50 + run.prior_step.flops * 25 + run.movq_decode.flops
        assert run.flops == steps and sum(run.by_kind.values()) == run.flops
        for call in (run.unet_step, run.prior_step, run.movq_decode):
            assert sum(call.by_kind.values()) == call.flops and min(call.by_kind.values()) >= 0
    one, eight = one_and_eight
    assert eight.unet_step.flops == 8 * one.unet_step.flops and eight.movq_decode.flops == 8 * one.movq_decode.flops
    # Convolutions carry the UNet: linear layers, all that torchao's FP8 lowers, are under a tenth of the arithmetic.
    assert one.linear_share < 0.1 and one.unet_step.by_kind["3x3 convolutions"] > 0.8 * one.unet_step.flops
    assert one.goal_s == flops.GOAL_ONE_MASCOT_S and eight.goal_s == pytest.approx(8 / flops.GOAL_MASCOTS_PER_S)
    assert eight.tflops_per_s_for_goal == pytest.approx(eight.flops / eight.goal_s / 1e12)


def test_the_command_prints_each_run_and_writes_json(tmp_path, capsys):
    out = tmp_path / "flops.json"
    flops.main(["--size", "512", "--images", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "2 image(s) at 512²" in printed and "TFLOP/s sustained" in printed
    [row] = json.loads(out.read_text())
    assert row["images"] == 2 and row["size"] == 512 and row["unet_step"]["rows"] == 4
    assert row["linear_share"] == pytest.approx(row["by_kind"]["linear layers"] / row["flops"])
