"""Trained LoRA adapters in the app's generator (generation/adapters.py): exact, scale 0 = base, loud failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lora import train
from mascot.generation.adapter_files import CARD_NAME, WEIGHT_NAME, AdapterError
from mascot.generation.adapters import (
    AdapterSpec,
    load_adapter,
    loaded_adapters,
    parse_adapter_specs,
    set_adapter_scale,
)
from mascot.generation.model import KandinskyGenerator
from mascot.prompt.request import GenerationRequest
from tests.support.lora_data import make_dataset, train_args
from tests.support.tiny import load_tiny

pytestmark = pytest.mark.slow  # training runs and the tiny pipeline


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """A decoder and a prior adapter, trained hard enough to show; the decoder's alpha is 2 x rank, so PEFT's
    alpha/r scaling is 2 and a test that forgot it would fail."""
    root = tmp_path_factory.mktemp("adapters")
    data = make_dataset(root / "data")
    decoder_flags = ("--learning_rate", "2e-2", "--rank", "4", "--lora_alpha", "8")
    train.main(train_args(tiny_model_dir, data, root / "look", "decoder", 15, *decoder_flags))
    train.main(train_args(tiny_model_dir, data, root / "words", "prior", 15, "--learning_rate", "2e-2"))
    return {"decoder": root / "look", "prior": root / "words"}


@pytest.fixture(scope="module")
def adapted_generator(tiny_model_dir, adapters) -> KandinskyGenerator:
    specs = parse_adapter_specs([f"look={adapters['decoder']}", f"words={adapters['prior']}"])
    return load_tiny(tiny_model_dir, adapters=specs)


def base_unet(tiny_model_dir: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny_model_dir / "decoder" / "unet")


def small_request(**overrides) -> GenerationRequest:
    values = {"prompt": "a cheerful otter mascot", "seed": 11, "width": 256, "height": 256}
    values |= {"num_inference_steps": 2, "prior_num_inference_steps": 2}
    return GenerationRequest.from_user(**(values | overrides))


def pixels(generator: KandinskyGenerator, **overrides) -> np.ndarray:
    return np.asarray(generator.generate(small_request(**overrides)).images[0], dtype=np.int16)


@pytest.mark.parametrize("module_name", ["down_blocks.1.attentions.0.to_q", "mid_block.attentions.0.add_k_proj"])
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_the_loaded_decoder_adapter_adds_exactly_scale_times_alpha_over_r_b_a(
    adapted_generator, adapters, tiny_model_dir, module_name, scale
):
    saved = load_file(adapters["decoder"] / WEIGHT_NAME)
    card = json.loads((adapters["decoder"] / CARD_NAME).read_text())
    lora_a, lora_b = saved[f"{module_name}.lora_A.weight"], saved[f"{module_name}.lora_B.weight"]
    base = base_unet(tiny_model_dir).get_submodule(module_name)
    unet = adapted_generator.decoder.unet
    adapted = unet.get_submodule(module_name)
    x = torch.randn(3, base.in_features, generator=torch.Generator().manual_seed(1))

    adapted_generator.select_adapter("look", scale)
    with torch.no_grad():
        got = adapted(x)
        weight = base.weight + scale * (card["lora_alpha"] / card["rank"]) * lora_b @ lora_a
        expected = x @ weight.T + base.bias
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert (got - base(x)).abs().max() > 1e-3  # trained: the delta is really there
        adapted_generator.select_adapter(None)
        torch.testing.assert_close(adapted(x), base(x), rtol=0, atol=0)


def test_scale_zero_or_no_adapter_gives_the_base_generation_and_scale_one_changes_it(adapted_generator, tiny_generator):
    base = pixels(tiny_generator)  # the shared generator, loaded without adapters

    assert np.array_equal(pixels(adapted_generator, adapter_name="look", lora_scale=0), base)
    assert np.array_equal(pixels(adapted_generator), base)
    with_look = pixels(adapted_generator, adapter_name="look", lora_scale=1)
    with_words = pixels(adapted_generator, adapter_name="words", lora_scale=1)
    assert np.array_equal(pixels(adapted_generator), base)  # each request picks its own adapter, or none

    assert np.abs(with_look - base).max() > 10
    assert np.abs(with_words - base).max() > 10
    assert adapted_generator.adapter_names == ("look", "words")
    assert adapted_generator.info.adapters == ("look", "words")


def test_choosing_an_adapter_that_is_not_loaded_names_the_loaded_ones(adapted_generator):
    with pytest.raises(AdapterError, match=r"no LoRA adapter named 'otter' \(loaded: 'look', 'words'\)"):
        adapted_generator.select_adapter("otter", 1.0)


def test_a_load_that_matches_nothing_fails_loudly_naming_the_file(tiny_model_dir, tmp_path):
    folder = tmp_path / "nothing"
    folder.mkdir()
    save_file(
        {"no_such_block.to_q.lora_A.weight": torch.ones(4, 32), "no_such_block.to_q.lora_B.weight": torch.ones(32, 4)},
        folder / WEIGHT_NAME,
    )
    (folder / CARD_NAME).write_text(json.dumps({"target": "decoder", "rank": 4, "lora_alpha": 4}))
    unet = base_unet(tiny_model_dir)

    with pytest.raises(AdapterError, match=rf"{WEIGHT_NAME}.* does not fit this decoder|loaded nothing"):
        load_adapter(unet, AdapterSpec.parse(f"ghost={folder}"))
    assert loaded_adapters(unet) == []


@pytest.mark.parametrize("name", ["0", "to_q"])
def test_an_adapter_named_like_a_part_of_a_module_path_loads(tiny_model_dir, adapters, name):
    """The load check strips only the adapter's own part of each path: "0" and "to_q" also name parts of the
    decoder's modules (attentions.0.…to_q), and were refused as if the file did not fit."""
    unet = base_unet(tiny_model_dir)
    load_adapter(unet, AdapterSpec.parse(f"{name}={adapters['decoder']}"))
    assert loaded_adapters(unet) == [name]


def test_a_load_that_leaves_tensors_out_fails_and_leaves_the_model_as_it_was(tiny_model_dir, adapters, tmp_path):
    folder = tmp_path / "partial"
    shutil.copytree(adapters["decoder"], folder, ignore=shutil.ignore_patterns("checkpoint-*", "validation"))
    tensors = load_file(folder / WEIGHT_NAME)
    tensors["down_blocks.1.attentions.0.to_nothing.lora_A.weight"] = torch.ones(4, 32)
    tensors["down_blocks.1.attentions.0.to_nothing.lora_B.weight"] = torch.ones(32, 4)
    save_file(tensors, folder / WEIGHT_NAME)
    unet = base_unet(tiny_model_dir)

    with pytest.raises(AdapterError, match=r"partial.*left 2 of its \d+ tensors out of the model"):
        load_adapter(unet, AdapterSpec.parse(f"partial={folder}"))
    assert loaded_adapters(unet) == []


def test_a_decoder_adapter_is_refused_by_the_prior(tiny_model_dir, adapters):
    from diffusers import PriorTransformer

    prior = PriorTransformer.from_pretrained(tiny_model_dir / "prior" / "prior")
    with pytest.raises(AdapterError, match=r"is for the decoder \(UNet2DConditionModel\), not for a PriorTransformer"):
        load_adapter(prior, AdapterSpec.parse(str(adapters["decoder"])))


def test_an_old_attention_processor_checkpoint_is_sent_to_the_converter(tiny_model_dir, tmp_path):
    folder = tmp_path / "checkpoint-2500"
    folder.mkdir()
    legacy = {"down_blocks.1.attentions.0.processor.to_q_lora.down.weight": torch.ones(4, 32)}
    save_file(legacy, folder / WEIGHT_NAME)
    (folder / CARD_NAME).write_text(json.dumps({"target": "decoder", "rank": 4, "lora_alpha": 4}))
    with pytest.raises(AdapterError, match=r"old attention-processor LoRA checkpoint: convert it .*lora/convert.py"):
        load_adapter(base_unet(tiny_model_dir), AdapterSpec.parse(str(folder)))


def test_adapter_specs_parse_name_path_and_path_alone(adapters, tmp_path):
    named = AdapterSpec.parse(f"otter-v2={adapters['decoder']}")
    assert (named.name, named.path, named.target) == ("otter-v2", adapters["decoder"] / WEIGHT_NAME, "decoder")
    by_folder = AdapterSpec.parse(str(adapters["prior"] / WEIGHT_NAME))
    assert (by_folder.name, by_folder.target) == ("words", "prior")
    assert by_folder.card is not None and by_folder.card.steps == 15

    # Without a card the target follows from the module names.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(adapters["prior"] / WEIGHT_NAME, bare / WEIGHT_NAME)
    assert AdapterSpec.parse(str(bare)).target == "prior"

    with pytest.raises(AdapterError, match=r"has no pytorch_lora_weights.safetensors"):
        AdapterSpec.parse(str(tmp_path))
    with pytest.raises(AdapterError, match=r"'eval' is not usable: torch modules already have an attribute"):
        AdapterSpec.parse(f"eval={adapters['decoder']}")
    with pytest.raises(AdapterError, match=r"'otter.v2' is not usable"):
        AdapterSpec.parse(f"otter.v2={adapters['decoder']}")
    with pytest.raises(AdapterError, match=r"Two decoder adapters are named 'look'"):
        parse_adapter_specs([f"look={adapters['decoder']}", f"look={adapters['decoder']}"])


def test_set_adapter_scale_without_adapters_is_the_base_model(tiny_model_dir):
    unet = base_unet(tiny_model_dir)
    set_adapter_scale(unet, None, 1.0)  # nothing loaded: nothing to turn off, no error
    with pytest.raises(AdapterError, match="No adapter named 'look'"):
        set_adapter_scale(unet, "look", 1.0)


def test_two_decoder_adapters_in_one_unet_are_used_one_at_a_time(tiny_model_dir, adapters, tmp_path):
    double = tmp_path / "double"  # a folder name that is a torch.nn.Module method: the default name avoids it
    double.mkdir()
    tensors = load_file(adapters["decoder"] / WEIGHT_NAME)
    save_file({key: 2 * value if "lora_B" in key else value for key, value in tensors.items()}, double / WEIGHT_NAME)
    shutil.copy(adapters["decoder"] / CARD_NAME, double / CARD_NAME)
    unet = base_unet(tiny_model_dir)
    load_adapter(unet, AdapterSpec.parse(f"look={adapters['decoder']}"))
    load_adapter(unet, AdapterSpec.parse(str(double)))
    module = unet.get_submodule("up_blocks.2.attentions.1.to_v")
    x = torch.randn(3, module.in_features)

    with torch.no_grad():
        set_adapter_scale(unet, "look", 1.0)
        look = module(x)
        set_adapter_scale(unet, "double_lora", 0.5)  # half of twice B: the same delta as "look" alone at 1
        torch.testing.assert_close(module(x), look, rtol=1e-5, atol=1e-6)
        set_adapter_scale(unet, "double_lora", 1.0)
        torch.testing.assert_close(
            module(x) - module.base_layer(x), 2 * (look - module.base_layer(x)), rtol=1e-4, atol=1e-5
        )
    assert loaded_adapters(unet) == ["look", "double_lora"]


def test_a_card_that_does_not_match_the_weights_is_refused(tiny_model_dir, adapters, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(adapters["decoder"] / WEIGHT_NAME, folder / WEIGHT_NAME)
    card = json.loads((adapters["decoder"] / CARD_NAME).read_text())
    (folder / CARD_NAME).write_text(json.dumps(card | {"lora_alpha": 16}))
    unet = base_unet(tiny_model_dir)

    with pytest.raises(AdapterError, match=r"lora_alpha 8.0, but its card says rank 4 and lora_alpha 16"):
        load_adapter(unet, AdapterSpec.parse(str(folder)))
    assert loaded_adapters(unet) == []


def test_compiled_code_runs_every_adapter_at_every_strength_without_compiling_again(
    adapted_generator, adapters, tiny_model_dir
):
    """Once compiled, runs with a LoRA adapter use the compiled code too (a house look would otherwise never get it):
    the strengths are tensors (generation/strengths.py), so a new adapter or strength compiles nothing, and the
    pictures are the plain PEFT path's bit for bit."""
    from torch._dynamo.utils import counters

    from mascot.generation.speed import CompileConfig, decode_key, decoder_key
    from mascot.settings import SpeedOptions

    specs = parse_adapter_specs([f"look={adapters['decoder']}", f"words={adapters['prior']}"])
    compiled = load_tiny(tiny_model_dir, adapters=specs, speed=SpeedOptions(compile=False))
    choices = [
        {"adapter_name": "look", "lora_scale": 0.7},
        {"adapter_name": "words", "lora_scale": 1.3},
        {},
        {"adapter_name": "look", "lora_scale": 1.6},
        {"adapter_name": "look", "lora_scale": 0},
    ]
    plain = [pixels(adapted_generator, **choice) for choice in choices]  # PEFT's own floats and flags
    compiled.start_compiling(CompileConfig(backend="eager"), sizes=[256], batch_images=[1])
    staged = compiled.compiled
    assert staged is not None and staged.thread is not None
    staged.thread.join(600)
    assert staged.ready(decoder_key(256, 256, 1, True))
    assert staged.ready(decode_key(256, 256, 1))
    decodes: list[int] = []
    decode = staged.decode
    staged.decode = lambda latents: decodes.append(1) or decode(latents)
    graphs = counters["stats"]["unique_graphs"]

    for choice, expected in zip(choices, plain, strict=True):
        assert np.array_equal(pixels(compiled, **choice), expected), choice
    assert decodes == [1] * len(choices)  # each run, adapter or not, ran the compiled stages
    assert counters["stats"]["unique_graphs"] == graphs  # and compiled nothing new
    assert np.abs(plain[0] - plain[2]).max() > 10 and np.abs(plain[3] - plain[0]).max() > 10  # the strengths show


def test_a_package_runs_the_adapter_and_strength_each_run_chooses(adapted_generator, tmp_path):
    """A package is built and checked on the base model, whatever adapter was on, and keeps every adapter in its graph
    with its strength handed over as a tensor: the same package then runs any adapter at any strength."""
    from mascot.generation.packages import PackagedModels
    from mascot.generation.speed import CompileConfig

    unet = PackagedModels(adapted_generator.prior, adapted_generator.fast_decoder, CompileConfig(packages=True)).unet
    inputs = (torch.randn(2, 4, 32, 32), torch.tensor(999), torch.randn(2, 32))
    with torch.inference_mode():
        adapted_generator.select_adapter(None)
        base = unet.exported(*inputs)
        adapted_generator.select_adapter("look", 1.0)  # as a run with the look leaves the UNet
        assert not torch.allclose(unet.exported(*inputs), base, atol=1e-3)  # the look changes this call
        package = unet.build(inputs, tmp_path)
        adapted_generator.select_adapter("look", 1.0)
        unet.load(package)  # checked against the base model, whatever the last run chose
        runner = unet.runners[package.signature]
        assert torch.allclose(runner(*inputs), base, atol=1e-4)  # the check left every strength at 0
        for strength in (1.0, 0.4, 1.8):
            adapted_generator.select_adapter("look", strength)
            eager = unet.exported(*inputs)
            assert not torch.allclose(eager, base, atol=1e-3)
            # The package's float32 kernels round otherwise than eager, more as a strength grows the output: up to
            # 1.5e-4, and 4.3e-4 under load, on a CPU without AVX-512. The look moves the output by 0.6 to 2.1 here,
            # so a package that ran another strength would be off by hundreds of times this tolerance.
            torch.testing.assert_close(runner(*inputs), eager, rtol=1e-3, atol=1e-3)
        adapted_generator.select_adapter(None)
        torch.testing.assert_close(runner(*inputs), base, rtol=1e-4, atol=1e-4)


def test_a_house_look_runs_the_packages_a_compile_process_built_with_the_same_adapters(tiny_model_dir, adapters):
    """MASCOT_COMPILE_PACKAGES with a house look: the compile process loads the same adapters (the app's own
    compile_targets) and holds their strengths in tensors as the serving process does, so its packages fit here
    (their fingerprints name the strength buffers); runs with the look at two strengths and without it call them."""
    from mascot.generation.speed import decode_key, decoder_key
    from mascot.settings import Settings, SpeedOptions
    from tests.support.packages import count_package_calls, packages_from_a_child

    lora = (f"look={adapters['decoder']}",)
    speed = SpeedOptions(compile=False)
    generator = load_tiny(tiny_model_dir, adapters=parse_adapter_specs(lora), speed=speed)
    choices = [{"adapter_name": "look", "lora_scale": 1.0}, {"adapter_name": "look", "lora_scale": 0.5}, {}]
    eager = [pixels(generator, **choice) for choice in choices]
    settings = Settings(model="tiny", data_dir=tiny_model_dir.parent, speed=speed, lora=lora, default_lora="look")
    packaged = packages_from_a_child(generator, settings)
    assert packaged.ready(decoder_key(256, 256, 1, True)) and packaged.ready(decode_key(256, 256, 1))
    calls = count_package_calls(packaged)

    for choice, expected in zip(choices, eager, strict=True):
        calls.clear()
        picture = pixels(generator, **choice)
        assert calls.count("unet") == small_request().num_inference_steps and "decode" in calls, choice
        assert int(np.abs(picture - expected).max()) <= 2, choice  # compiled C++ rounds floats in another order
    assert np.abs(eager[0] - eager[2]).max() > 10 and np.abs(eager[0] - eager[1]).max() > 2  # the strengths show


def test_an_adapter_whose_strength_cannot_be_a_tensor_leaves_its_runs_eager(tiny_model_dir):
    """DoRA (or another PEFT variant) computes its own scaling: such a model is left as PEFT made it, and the
    compiled models say they cannot serve its adapter runs."""
    from peft import LoraConfig

    from mascot.generation.strengths import hold_strengths_in_tensors, strength_tensors

    unet = base_unet(tiny_model_dir)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q"], use_dora=True), adapter_name="dora")
    assert not hold_strengths_in_tensors(unet)
    assert strength_tensors(unet) is None
    assert not any(name.endswith("mascot_strength") for name, _ in unet.named_buffers())
    assert hold_strengths_in_tensors(base_unet(tiny_model_dir))  # no adapters: nothing to hold, nothing in the way


def test_an_adapter_cannot_be_loaded_once_strengths_are_tensors(tiny_model_dir, adapters):
    from mascot.generation.strengths import hold_strengths_in_tensors

    unet = base_unet(tiny_model_dir)
    load_adapter(unet, AdapterSpec.parse(f"look={adapters['decoder']}"))
    assert hold_strengths_in_tensors(unet)
    with pytest.raises(AdapterError, match="cannot be loaded after compiling started"):
        load_adapter(unet, AdapterSpec.parse(f"again={adapters['decoder']}"))
    assert loaded_adapters(unet) == ["look"]


def test_choosing_a_strength_in_tensors_never_writes_peft_scaling(tiny_model_dir, adapters):
    """A compile traces the model on its own thread while runs choose strengths: a passing value in PEFT's `scaling`
    would be baked into what it traced (and compile again once it read 1). The buffers still get PEFT's scale."""
    from peft.tuners.lora.layer import LoraLayer

    from mascot.generation.strengths import STRENGTH, hold_strengths_in_tensors, strength_tensors

    written: list[float] = []

    class Watched(dict):
        def __setitem__(self, key: str, value: float) -> None:
            written.append(value)
            super().__setitem__(key, value)

    unet = base_unet(tiny_model_dir)
    load_adapter(unet, AdapterSpec.parse(f"look={adapters['decoder']}"))
    assert hold_strengths_in_tensors(unet)
    layers = [module for module in unet.modules() if isinstance(module, LoraLayer)]
    for layer in layers:
        layer.scaling = Watched(layer.scaling)
    tensors = strength_tensors(unet)
    assert tensors is not None

    tensors.use("look", 0.7)

    assert written == []
    assert all(layer.scaling["look"] == 1.0 for layer in layers)
    expected = 0.7 * 8 / 4  # the card's lora_alpha over its rank, as PEFT's set_scale writes it
    strengths = {float(getattr(layer.lora_B["look"], STRENGTH)) for layer in layers}
    assert strengths == {float(torch.tensor(expected, dtype=layers[0].lora_B["look"].weight.dtype))}


def test_an_adapter_on_a_lowered_model_changes_only_its_own_layers(tiny_model_dir, adapters):
    """MASCOT_LOWER_PRECISION=int8 with adapters loaded: the base layers are lowered, the adapter's stay as trained,
    and strength 0 is the lowered base model exactly."""
    from mascot.settings import SpeedOptions

    specs = parse_adapter_specs([f"look={adapters['decoder']}"])
    lowered = load_tiny(tiny_model_dir, adapters=specs, speed=SpeedOptions(compile=False, lower_precision="int8"))
    layers = dict(lowered.decoder.unet.named_modules())
    query = "down_blocks.1.attentions.0.to_q"
    assert type(layers[f"{query}.base_layer"].weight) is not torch.nn.Parameter  # lowered by torchao
    assert type(layers[f"{query}.lora_A.look"].weight) is torch.nn.Parameter  # the adapter's own, as trained

    base = pixels(lowered)
    assert np.array_equal(pixels(lowered, adapter_name="look", lora_scale=0), base)
    assert np.abs(pixels(lowered, adapter_name="look", lora_scale=1) - base).max() > 10
    assert np.array_equal(pixels(lowered), base)
