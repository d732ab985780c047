"""The UNet's step under each convolution setting (issue 11). Convolutions are 86% of the UNet's arithmetic
(bench/flops.py), so the 8-people goal, which needs about 312 TFLOP/s sustained, hangs on how fast they run; lower
precision through torchao does not touch them. Two settings change their kernels without changing the model:
- `torch.backends.cudnn.benchmark`: cuDNN times its algorithms for each new shape once and keeps the fastest, instead
  of picking one by its heuristics;
- channels-last order (NHWC) for the weights and the activations, the order cuDNN's fp16 tensor-core kernels read,
  instead of converting on the way in and out.

Timed on a copy of the served UNet's architecture with random weights (the served models and their compiled code
never see a changed setting), eager, every setting once per round in a rotating order (round by round, as the other
phases alternate, so a change in the machine's load does not favour one), inside a generation's turn so no compiled
code loads meanwhile. Each setting runs on a thread of its own: PyTorch keeps cuDNN's chosen algorithms per thread
and per shape, whatever the benchmark flag was when they were chosen, so on a shared thread the benchmark would never
run (the default's choice, made first, would be found). Under torch.compile, inductor picks its own layout; cuDNN's
choice of algorithm still applies."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from bench.flops import count_call, unet_inputs

# (cudnn.benchmark, channels-last) of each setting; the first is PyTorch's default, the others' ratios are against it.
SETTINGS: dict[str, tuple[bool, bool]] = {
    "default": (False, False),
    "cudnn_benchmark": (True, False),
    "channels_last": (False, True),
    "cudnn_benchmark_and_channels_last": (True, True),
}


def time_unet_settings(
    config: Any,
    device: str,
    dtype: torch.dtype,
    latent_side: int,
    rows: list[int],
    *,
    steps: int,
    rounds: int,
    synchronize: Callable[[], None],
) -> dict[str, Any]:
    """For each number of rows a UNet call computes (2 per image under guidance): each setting's median time per
    step, its rate against the arithmetic bench/flops.py counts, and the default's time over its time."""
    with torch.device("meta"):
        counted = UNet2DConditionModel.from_config(config)
    with torch.device(device):  # random weights made where they run: on a GPU, seconds instead of a minute
        unet = UNet2DConditionModel.from_config(config).to(dtype).eval()
    if torch.device(device).type == "cuda":  # the fp32 weights it was made with (4.9 GB at full size) go back
        torch.cuda.empty_cache()
    cudnn_benchmark_was = torch.backends.cudnn.benchmark
    threads = {name: ThreadPoolExecutor(1, thread_name_prefix=f"convolutions-{name}") for name in SETTINGS}

    def on_its_thread(name: str, step_inputs: dict[str, Any], calls: int) -> float:
        def timed() -> float:
            with torch.inference_mode():  # autograd's mode is each thread's own
                return run_steps(unet, step_inputs, SETTINGS[name], calls, synchronize)

        return threads[name].submit(timed).result()

    results: dict[str, Any] = {}
    try:
        for count in rows:
            step_inputs = unet_inputs(config, device, dtype, (latent_side, latent_side), count)
            meta_inputs = unet_inputs(config, "meta", dtype, (latent_side, latent_side), count)
            flops = count_call(counted, "unet", count, functools.partial(counted, **meta_inputs)).flops
            seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
            names = list(SETTINGS)
            for name in names:  # a first call each: cuDNN's benchmark times its algorithms here, not in a round
                on_its_thread(name, step_inputs, 1)
            for round_index in range(rounds):
                order = names[round_index % len(names) :] + names[: round_index % len(names)]
                for name in order:
                    seconds[name].append(on_its_thread(name, step_inputs, steps))
            medians = {name: statistics.median(values) for name, values in seconds.items()}
            results[f"{count}_rows"] = {
                "flop_per_step": flops,
                **{
                    name: {
                        "ms_per_step": round(median * 1000, 2),
                        "tflop_per_s": round(flops / median / 1e12, 1),
                        "ratio_default_over_this": round(medians["default"] / median, 3),
                    }
                    for name, median in medians.items()
                },
            }
    finally:
        for pool in threads.values():
            pool.shutdown()
        torch.backends.cudnn.benchmark = cudnn_benchmark_was
    return {"steps_per_round": steps, "rounds": rounds, "latent_side": latent_side, **results}


def run_steps(
    unet: UNet2DConditionModel,
    inputs: dict[str, Any],
    setting: tuple[bool, bool],
    steps: int,
    synchronize: Callable[[], None],
) -> float:
    """Seconds per step of `steps` UNet calls under `setting` (the conversion itself not timed)."""
    cudnn_benchmark, channels_last = setting
    torch.backends.cudnn.benchmark = cudnn_benchmark
    layout = torch.channels_last if channels_last else torch.contiguous_format
    unet.to(memory_format=layout)  # type: ignore[call-arg]  # torch's stubs lack memory_format, which `to` takes
    step_inputs = {**inputs, "sample": inputs["sample"].contiguous(memory_format=layout)}
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        unet(**step_inputs)
    synchronize()
    return (time.perf_counter() - started) / steps
