"""Lower precision (MASCOT_LOWER_PRECISION, generation/precision.py) on the tiny model: int8 lowers every linear layer
the kernels take and the pictures stay close to full precision's; fp8 where the hardware has no FP8 is refused and
changes nothing; compiling the lowered model gives its eager pictures."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mascot.generation import precision
from mascot.generation.model import KandinskyGenerator
from mascot.generation.packages import PackagedModule, fingerprint, handed_over
from mascot.generation.precision import PrecisionUnsupported, lower_precision, lowerable, unsupported_reason
from mascot.generation.speed import decode_key, decoder_key, prior_key
from mascot.prompt.request import GenerationRequest
from mascot.settings import Settings, SpeedOptions
from tests.support.packages import count_package_calls, packages_from_a_child
from tests.support.tiny import load_tiny

pytestmark = pytest.mark.slow  # the tiny pipeline, loaded afresh (lowering changes the models in place)

CPU_FAST = SpeedOptions(compile=False)  # the app's defaults on a CPU


def pixels(generator: KandinskyGenerator) -> np.ndarray:
    request = GenerationRequest.from_user(
        prompt="an otter mascot", seed=11, width=256, height=256, num_inference_steps=4, prior_num_inference_steps=2
    )
    return np.asarray(generator.generate(request).images[0], dtype=np.int16)


def linear_layers(generator: KandinskyGenerator) -> list[tuple[str, torch.nn.Linear]]:
    return [
        (name, module)
        for model in (generator.decoder.unet, generator.prior.prior)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    ]


def is_lowered(layer: torch.nn.Linear) -> bool:
    """torchao swaps a lowered layer's weight for one of its own tensor types."""
    return type(layer.weight) not in (torch.Tensor, torch.nn.Parameter)


@pytest.fixture(scope="module")
def full_precision(tiny_model_dir) -> np.ndarray:
    return pixels(load_tiny(tiny_model_dir, speed=CPU_FAST))


def test_int8_lowers_each_linear_layer_and_keeps_the_pictures_close(tiny_model_dir, full_precision):
    generator = load_tiny(tiny_model_dir, speed=SpeedOptions(compile=False, lower_precision="int8"))
    layers = linear_layers(generator)
    assert layers and all(is_lowered(layer) == lowerable(layer, name) for name, layer in layers)
    assert sum(is_lowered(layer) for _, layer in layers) == len(layers)  # the tiny model's are all multiples of 16
    for model in (generator.decoder.unet, generator.prior.prior):  # the convolutions keep their precision
        convolutions = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
        assert all(type(conv.weight) is torch.nn.Parameter for conv in convolutions)

    difference = np.abs(pixels(generator) - full_precision)
    print(f"int8 vs full precision on the tiny model: largest {difference.max()}, mean {difference.mean():.2f} of 255")
    # Lowered, so not the same picture; close, so not a broken one (a wrong scale gives another picture: mean ~60+).
    assert difference.max() > 0 and difference.mean() < 16


def test_a_layer_whose_shape_the_kernels_do_not_take_keeps_its_precision():
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.Linear(48, 10))  # 10: not a multiple of 16
    sample = torch.randn(4, 32)
    expected_tail = model[1].weight.detach().clone()
    assert lower_precision([model], "int8", "cpu").layers == 1
    assert is_lowered(model[0]) and not is_lowered(model[1])
    assert torch.equal(model[1].weight, expected_tail)
    assert model(sample).shape == (4, 10)


def test_fp8_without_fp8_hardware_is_refused_and_the_model_keeps_its_precision(tiny_model_dir, full_precision, caplog):
    with caplog.at_level(logging.WARNING, logger="mascot.generation.model"):
        generator = load_tiny(tiny_model_dir, speed=SpeedOptions(compile=False, lower_precision="fp8"))
    assert "FP8 needs an NVIDIA GPU with FP8 tensor cores" in caplog.text
    assert "The model keeps its precision." in caplog.text
    assert not any(is_lowered(layer) for _, layer in linear_layers(generator))
    assert np.array_equal(pixels(generator), full_precision)


def test_what_cannot_run_says_why():
    assert unsupported_reason("int8", "cpu") is None
    assert "compute capability 8.9" in (unsupported_reason("fp8", "cpu") or "")
    assert "fp4" in (unsupported_reason("fp4", "cpu") or "")
    model = torch.nn.Linear(32, 32)
    with pytest.raises(PrecisionUnsupported, match="FP8 needs"):
        lower_precision([model], "fp8", "cpu")
    assert not is_lowered(model)


def test_compiling_the_lowered_model_gives_its_eager_pictures(tiny_model_dir):
    speed = SpeedOptions(lower_precision="int8", compile=True, compile_process=False, compile_sizes=(256,))
    generator = load_tiny(tiny_model_dir, speed=speed)  # lowered, then compiled (aot_eager on a CPU) on a thread
    assert generator.compiled is not None and generator.compiled.thread is not None
    generator.compiled.thread.join(600)
    assert list(generator.compiled.seconds) == ["256x256x1"]
    compiled = pixels(generator)
    generator.compiled = None  # the same lowered modules, eager
    assert np.array_equal(compiled, pixels(generator))


def test_fp8_on_a_gpu_that_cannot_say_its_capability_is_refused_with_the_reason(monkeypatch):
    def unreadable(device):
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.cuda, "get_device_capability", unreadable)
    reason = unsupported_reason("fp8", "cuda")
    assert reason is not None and "compute capability can be read" in reason and "no NVIDIA driver" in reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (8, 6))  # an A10G
    assert "this GPU has 8.6" in (unsupported_reason("fp8", "cuda") or "")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))  # an H100 or H200
    assert unsupported_reason("fp8", "cuda") is None


def test_packages_built_from_the_lowered_model_are_handed_its_lowered_weights(tiny_model_dir):
    """MASCOT_LOWER_PRECISION with MASCOT_COMPILE_PACKAGES: the compile process lowers its models as the serving one
    does (the app's own compile_targets), exports them and builds packages; here they load, take our int8 weights
    part by part, and run the lowered model's pictures."""
    speed = SpeedOptions(lower_precision="int8", compile=False)
    generator = load_tiny(tiny_model_dir, speed=speed)
    full_precision_fingerprint = fingerprint(load_tiny(tiny_model_dir, speed=CPU_FAST).decoder.unet)
    assert fingerprint(generator.decoder.unet) != full_precision_fingerprint  # a full-precision package is not taken
    eager = pixels(generator)
    settings = Settings(model="tiny", data_dir=tiny_model_dir.parent, speed=speed)
    packaged = packages_from_a_child(generator, settings)
    for key in (prior_key(1, True, True), decoder_key(256, 256, 1, True), decode_key(256, 256, 1)):
        assert packaged.ready(key), key
    (runner,) = packaged.unet.runners.values()
    lowered_parts = {name for name in runner.get_constant_fqns() if ".parametrizations.weight.original" in name}
    unet_parts = handed_over(packaged.unet.exported)
    assert lowered_parts <= set(unet_parts)  # every part of a lowered weight the package reads is one of ours
    assert any(unet_parts[name].dtype == torch.int8 for name in lowered_parts)  # the int8 data, not a float copy
    calls = count_package_calls(packaged)  # the generation below must run the packages, not eager code
    packaged_pixels = pixels(generator)
    assert {"prior", "unet", "decode"} <= set(calls)
    assert int(np.abs(packaged_pixels - eager).max()) <= 2  # compiled C++ rounds floats in another order


@pytest.fixture
def fp8_on_the_cpu(monkeypatch):
    """FP8 on this CPU: torch's CPU `_scaled_mm` computes float8, so torchao's real float8 layers run here once its
    hardware check and ours stand aside (a GPU needs compute capability 8.9)."""
    quant_api = pytest.importorskip("torchao.quantization.quant_api")
    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda *_args: None)
    monkeypatch.setattr(precision, "unsupported_reason", lambda *_args: None)


@pytest.mark.usefixtures("fp8_on_the_cpu")
def test_fp8_keeps_square_128_layers_which_torchao_would_take_for_block_scaled_ones():
    """torchao 0.18 reads a per-tensor float8 weight of exactly 128x128 as one scaled in 128x128 blocks and asserts at
    its first call (the tiny UNet has twelve such layers)."""
    model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.GELU(), torch.nn.Linear(128, 256)).eval().half()
    assert lower_precision([model], "fp8", "cpu").layers == 1
    assert not is_lowered(model[0]) and is_lowered(model[2])
    with torch.inference_mode():
        assert model(torch.randn(2, 77, 128).half()).shape == (2, 77, 256)  # each layer runs


class Stack(torch.nn.Module):
    """A call as packages.py exports one: the model held as `model`, where adapters' strengths would be set."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model(hidden)


@pytest.mark.usefixtures("fp8_on_the_cpu")
def test_an_fp8_models_package_computes_as_its_eager_model(tmp_path):
    """Fused, inductor would skip an fp16 rounding of each FP8 layer's activation scale that eager makes, moving
    values onto the next float8 step: the package of an FP8 transformer differed from its eager model past the load's
    check. With eager's casts kept, it computes as eager does."""
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(6):  # the prior's transformer in small: norm, widening and narrowing linear layers
        layers += [torch.nn.LayerNorm(64), torch.nn.Linear(64, 192), torch.nn.GELU(), torch.nn.Linear(192, 64)]
    model = torch.nn.Sequential(*layers).eval().half()
    assert lower_precision([model], "fp8", "cpu").layers == 12
    packaged = PackagedModule("stack", model, Stack, lambda args, _kwargs: args, lambda output: output)
    inputs = (torch.randn(2, 77, 64).half(),)  # (batch, tokens, features), as the prior's transformer takes them
    packaged.load(packaged.build(inputs, tmp_path))  # PackageMismatch past the check's tolerance
    with torch.inference_mode():
        assert torch.equal(packaged.module(*inputs), model(*inputs))
