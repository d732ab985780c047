"""bench.convolutions times a spare UNet under each convolution setting, and leaves the process's settings as found."""

import threading

import pytest
import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from bench import convolutions, flops


@pytest.fixture(scope="module")
def unet_config():
    from mascot.generation.tiny import build_decoder_pipeline

    return build_decoder_pipeline().unet.config


def test_each_setting_is_timed_as_set_and_the_process_gets_its_settings_back(unet_config, monkeypatch):
    seen: dict[tuple[bool, bool], set[str]] = {}
    forward = UNet2DConditionModel.forward

    def watched(self, sample, *args, **kwargs):
        if sample.device.type == "meta":  # the count of its arithmetic, not a timed step
            return forward(self, sample, *args, **kwargs)
        weight = self.conv_in.weight
        channels_last = sample.is_contiguous(memory_format=torch.channels_last) and weight.is_contiguous(
            memory_format=torch.channels_last
        )
        setting = (torch.backends.cudnn.benchmark, channels_last and not sample.is_contiguous())
        seen.setdefault(setting, set()).add(threading.current_thread().name)
        assert torch.is_inference_mode_enabled()  # on its own thread too
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", watched)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with torch.inference_mode():
        result = convolutions.time_unet_settings(
            unet_config, "cpu", torch.float32, 16, [2, 4], steps=1, rounds=2, synchronize=lambda: None
        )
    assert set(seen) == set(convolutions.SETTINGS.values())
    # Each setting on one thread of its own, for all its calls: cuDNN keeps its chosen algorithms per thread.
    threads = [next(iter(names)) for names in seen.values() if len(names) == 1]
    assert len(threads) == len(convolutions.SETTINGS) == len(set(threads))
    assert torch.backends.cudnn.benchmark is False
    for rows in (2, 4):
        row = result[f"{rows}_rows"]
        assert set(row) == {"flop_per_step", *convolutions.SETTINGS}
        assert row["default"]["ratio_default_over_this"] == 1.0
        assert all(row[name]["ms_per_step"] > 0 for name in convolutions.SETTINGS)
    assert result["rounds"] == 2 and result["steps_per_round"] == 1 and result["latent_side"] == 16


def test_a_failing_round_still_gives_the_process_its_settings_back(unet_config, monkeypatch):
    failing = iter([False, True])  # the default's first call passes; cuDNN's benchmark's fails, with its flag on

    def run_steps(_unet, _inputs, setting, _steps, _synchronize):
        torch.backends.cudnn.benchmark = setting[0]
        if next(failing):
            raise RuntimeError("out of memory")
        return 0.1

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(convolutions, "run_steps", run_steps)
    with pytest.raises(RuntimeError, match="out of memory"):
        convolutions.time_unet_settings(unet_config, "cpu", torch.float32, 16, [2], steps=1, rounds=1,
                                        synchronize=lambda: None)  # fmt: skip
    assert torch.backends.cudnn.benchmark is False


def test_the_rate_is_the_counted_arithmetic_over_the_time(unet_config, monkeypatch):
    monkeypatch.setattr(convolutions, "run_steps", lambda *_args: 1e-6)  # every step a microsecond
    result = convolutions.time_unet_settings(unet_config, "cpu", torch.float32, 16, [2], steps=1, rounds=1,
                                             synchronize=lambda: None)  # fmt: skip
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
    inputs = flops.unet_inputs(unet_config, "meta", torch.float32, (16, 16), 2)
    counted = flops.count_call(unet, "unet", 2, lambda: unet(**inputs)).flops
    row = result["2_rows"]
    assert row["flop_per_step"] == counted > 0
    assert row["cudnn_benchmark"] == {"ms_per_step": 0.0, "tflop_per_s": round(counted / 1e-6 / 1e12, 1),
                                      "ratio_default_over_this": 1.0}  # fmt: skip
