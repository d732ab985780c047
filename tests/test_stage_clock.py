"""The benchmark's clock of where a generation's time goes (bench/stage_clock.py), on the tiny pipeline: it counts
each model's calls as the run makes them, eager and compiled, and leaves the models and the pictures as they were."""

import threading

import numpy as np
import pytest
import torch

from bench.stage_clock import StageClock, models_a_run_calls, where_the_time_goes
from mascot.generation.generator import GeneratedImages
from mascot.generation.model import KandinskyGenerator
from mascot.generation.speed import CompileConfig
from mascot.prompt.request import GenerationRequest
from mascot.settings import SpeedOptions

pytestmark = pytest.mark.slow  # generations on the tiny pipeline

STEPS, PRIOR_STEPS = 3, 2


def one_mascot() -> GenerationRequest:
    return GenerationRequest.from_user(
        prompt="an otter mascot",
        seed=5,
        width=256,
        height=256,
        num_inference_steps=STEPS,
        prior_num_inference_steps=PRIOR_STEPS,
    )


def fast(tiny_generator: KandinskyGenerator) -> KandinskyGenerator:
    speed = SpeedOptions(compile=False)
    return KandinskyGenerator(tiny_generator.prior, tiny_generator.decoder, tiny_generator.info, speed=speed)


def keep(pictures: list, result: GeneratedImages) -> GeneratedImages:
    pictures.append(result.images[0])
    return result


def hooks(module: torch.nn.Module) -> int:
    return len(module._forward_hooks) + len(module._forward_pre_hooks)


def assert_a_whole_run(row: dict, wall_floor: float = 0.0) -> None:
    """One guided mascot: a UNet call per step (both halves of guidance in one batch), a prior call per prior step,
    one decode; the models' time fits inside the wall time."""
    assert row["unet"]["calls"] == STEPS and row["prior"]["calls"] == PRIOR_STEPS and row["decode"]["calls"] == 1
    assert row["text_encoder"]["calls"] >= 1
    inside = sum(row[name]["s"] for name in ("text_encoder", "prior", "unet", "decode"))
    assert all(row[name]["s"] > 0 for name in ("text_encoder", "prior", "unet", "decode"))
    assert row["wall_s"] > wall_floor and inside <= row["wall_s"] + 0.005  # each figure is rounded to 1 ms
    assert row["outside_the_models_s"] == pytest.approx(row["wall_s"] - inside, abs=0.005)
    prior_stage = row["prior_stage_s (text encoder, prior steps)"]
    decoder_stage = row["decoder_stage_s (steps, decode, pictures)"]
    # The generator's own stage clocks: the prior stage holds the text encoder and the prior, the decoder stage the
    # UNet and the decode (each figure rounded to 1 ms).
    assert prior_stage + 0.005 >= row["text_encoder"]["s"] + row["prior"]["s"]
    assert decoder_stage + 0.005 >= row["unet"]["s"] + row["decode"]["s"]
    assert prior_stage + decoder_stage <= row["wall_s"] + 0.005


def test_the_eager_run_is_timed_model_by_model_and_left_as_it_was(tiny_generator):
    generator = fast(tiny_generator)
    before = generator.generate(one_mascot()).images[0]
    pictures = []
    row = where_the_time_goes(False, generator, lambda: keep(pictures, generator.generate(one_mascot())))
    assert_a_whole_run(row)
    assert np.array_equal(np.asarray(pictures[0]), np.asarray(before))  # watching changes nothing
    modules, _ = models_a_run_calls(generator)
    assert [hooks(module) for module in modules.values()] == [0, 0, 0, 0]  # every hook removed
    assert row["unet"]["ms_per_call"] == pytest.approx(1000 * row["unet"]["s"] / STEPS, abs=0.5)


def test_a_compiled_run_times_the_compiled_stand_ins_and_compiles_nothing_new(tiny_generator):
    generator = fast(tiny_generator)
    eager = generator.generate(one_mascot()).images[0]
    generator.start_compiling(CompileConfig(backend="eager"), sizes=[256], batch_images=[1])
    assert generator.compiled is not None and generator.compiled.thread is not None
    generator.compiled.thread.join(300)
    compiled_decode = generator.compiled.decode
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    pictures = []
    row = where_the_time_goes(False, generator, lambda: keep(pictures, generator.generate(one_mascot())))
    assert_a_whole_run(row)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # the hooks stay outside the graphs
    assert np.array_equal(np.asarray(pictures[0]), np.asarray(eager))  # backend "eager": the eager picture
    assert generator.compiled.decode is compiled_decode  # the timed stand-in is gone
    assert hooks(generator.compiled.decoder.unet) == 0 and hooks(generator.decoder.unet) == 0


def test_the_models_are_not_watched_while_a_warm_up_traces_them_here(tiny_generator):
    generator = fast(tiny_generator)
    generator.start_compiling(CompileConfig(backend="eager"), sizes=[256], batch_images=[1])
    assert generator.compiled is not None and generator.compiled.thread is not None
    generator.compiled.thread.join(300)
    release = threading.Event()
    generator.compiled.thread = threading.Thread(target=release.wait)  # a warm-up still running, for as long as needed
    generator.compiled.thread.start()
    try:
        with pytest.raises(RuntimeError, match="warm-up has ended"):
            models_a_run_calls(generator)
    finally:
        release.set()
        generator.compiled.thread.join()


def test_a_method_stood_in_for_is_uncovered_again_and_a_call_that_fails_is_still_timed():
    class Decoder:
        def decode(self, value: int) -> int:
            if value < 0:
                raise ValueError("negative")
            return value * 2

    owner, clock = Decoder(), StageClock(cuda=False)
    with clock.watching({}, {"decode": (owner, "decode")}):
        assert owner.decode(3) == 6
        with pytest.raises(ValueError):
            owner.decode(-1)
    assert "decode" not in vars(owner) and owner.decode(4) == 8  # the class's method again
    assert clock.report(1.0)["decode"]["calls"] == 2
