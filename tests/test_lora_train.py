"""The LoRA trainer (lora/train.py) on the tiny model: both targets, outputs, overfitting, resuming, dataset errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lora import bench_train, train
from lora.dataset import MIN_IMAGES, DatasetError, load_examples
from lora.objectives import add_lora, decoder_loss
from mascot.generation.adapter_files import CARD_NAME, WEIGHT_NAME
from mascot.generation.adapters import parse_adapter_specs
from mascot.prompt.request import GenerationRequest
from tests.support.lora_data import make_dataset, train_args
from tests.support.tiny import load_tiny

ROOT = Path(__file__).resolve().parents[1]


def lora_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / WEIGHT_NAME)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("mascots"))


@pytest.mark.slow
def test_decoder_run_saves_a_peft_adapter_with_its_card_checkpoints_and_validation_images(
    tiny_model_dir, dataset, tmp_path
):
    output = tmp_path / "decoder-lora"
    extra = ("--checkpointing_steps", "2", "--num_validation_images", "1", "--learning_rate", "1e-3")
    extra += ("--validation_num_inference_steps", "2", "--validation_prior_num_inference_steps", "2")
    result = train.main(train_args(tiny_model_dir, dataset, output, "decoder", 4, *extra))

    assert result.adapter_path == output / WEIGHT_NAME
    assert [step for step, _ in result.losses] == [1, 2, 3, 4]
    tensors = lora_tensors(output)
    assert {key.split(".")[-3] for key in tensors} == {"to_q", "to_k", "to_v", "0", "add_k_proj", "add_v_proj"}
    assert all(key.endswith((".lora_A.weight", ".lora_B.weight")) for key in tensors)
    # B starts at zero: non-zero B means the optimizer really trained the adapter.
    assert max(value.abs().max().item() for key, value in tensors.items() if "lora_B" in key) > 1e-4
    card = json.loads((output / CARD_NAME).read_text())
    assert card["target"] == "decoder"
    assert card["base_model"] == str(tiny_model_dir / "decoder")
    assert (card["rank"], card["lora_alpha"], card["steps"], card["resolution"]) == (4, 4.0, 4, 64)
    assert (card["train_images"], card["learning_rate"]) == (4, 1e-3)
    for step in (2, 4):
        checkpoint = output / f"checkpoint-{step}"
        assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
        assert json.loads((checkpoint / CARD_NAME).read_text())["steps"] == step
        with Image.open(checkpoint / "validation" / "00-00.png") as image:
            assert image.size == (64, 64)
    assert json.loads((output / "validation" / "prompts.json").read_text()) == ["a cheerful otter mascot number 0"]
    logged = [json.loads(line)["step"] for line in (output / "loss.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]


@pytest.mark.slow
def test_prior_run_learns_the_captions_and_its_loss_falls(tiny_model_dir, dataset, tmp_path):
    output = tmp_path / "prior-lora"
    result = train.main(
        train_args(tiny_model_dir, dataset, output, "prior", 30, "--learning_rate", "1e-2", "--train_batch_size", "4")
    )

    losses = [loss for _, loss in result.losses]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert all(key.startswith("transformer_blocks.") for key in lora_tensors(output))
    assert json.loads((output / CARD_NAME).read_text())["target"] == "prior"


@pytest.mark.slow
def test_decoder_lora_overfits_a_fixed_batch(tiny_model_dir):
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir / "decoder" / "unet")
    scheduler = DDPMScheduler.from_pretrained(tiny_model_dir / "decoder" / "scheduler")
    parameters = add_lora(unet, "decoder", rank=8, lora_alpha=8.0)
    optimizer = torch.optim.AdamW(parameters, lr=1e-2)
    latents, image_embeds = torch.randn(2, 4, 8, 8), torch.randn(2, unet.config.encoder_hid_dim)
    losses = []
    for _ in range(30):
        # The same noise and timesteps every step: the batch is fixed, so the loss can only fall by learning.
        loss = decoder_loss(unet, scheduler, latents, image_embeds, torch.Generator().manual_seed(0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    # Without learning every step's loss would be the same number; the tiny UNet's attention LoRA gets ~25 % lower.
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


@pytest.fixture
def own_accelerate_state():
    """accelerate keeps one state per process, and the first Accelerator fixes its mixed precision: a run with another
    one needs a fresh state, and the runs after it need theirs back (accelerate's own tests reset it the same way)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.slow
def test_bf16_training_keeps_frozen_weights_in_bf16_trains_an_fp32_lora_that_works_in_the_app(
    tiny_model_dir, tiny_generator, dataset, tmp_path, monkeypatch, own_accelerate_state
):
    # accelerate runs bf16 autocast on a CPU: the one mixed precision this suite can train with (fp16 needs a GPU).
    runs = []
    set_up = train.set_up

    def keep_run(args, accelerator):
        run = set_up(args, accelerator)
        runs.append((run, [parameter.detach().clone() for parameter in run.parameters]))
        return run

    monkeypatch.setattr(train, "set_up", keep_run)
    output = tmp_path / "bf16-lora"
    extra = ("--mixed_precision", "bf16", "--learning_rate", "2e-2", "--checkpointing_steps", "2")
    extra += ("--num_validation_images", "1", "--validation_num_inference_steps", "2")
    extra += ("--validation_prior_num_inference_steps", "2")
    train.main(train_args(tiny_model_dir, dataset, output, "decoder", 4, *extra))
    (run, initial), trained = runs[0], runs[0][0].models.trained

    frozen = [p for module in run.models.frozen_modules() for p in module.parameters()]
    frozen += [p for name, p in trained.named_parameters() if "lora_" not in name]
    assert {p.dtype for p in frozen} == {torch.bfloat16}
    assert {p.dtype for p in run.parameters} == {torch.float32}
    assert all(not torch.equal(before, after) for before, after in zip(initial, run.parameters, strict=True))
    saved = lora_tensors(output)
    assert {value.dtype for value in saved.values()} == {torch.float32}
    for name, parameter in trained.named_parameters():
        if parameter.requires_grad:
            assert torch.equal(saved[name.replace(".default", "")], parameter.detach())
    assert json.loads((output / CARD_NAME).read_text())["mixed_precision"] == "bf16"
    # The validation images of a checkpoint and of the final adapter were made under bf16 too.
    assert (output / "checkpoint-2" / "validation" / "00-00.png").is_file()
    assert (output / "validation" / "00-00.png").is_file()

    generator = load_tiny(tiny_model_dir, adapters=parse_adapter_specs([f"bf16={output}"]))
    request = {"prompt": "a cheerful otter mascot", "seed": 11, "width": 256, "height": 256}
    request |= {"num_inference_steps": 2, "prior_num_inference_steps": 2}
    base = np.asarray(tiny_generator.generate(GenerationRequest.from_user(**request)).images[0], dtype=np.int16)
    adapted = generator.generate(GenerationRequest.from_user(**request, adapter_name="bf16", lora_scale=1))
    assert np.abs(np.asarray(adapted.images[0], dtype=np.int16) - base).max() > 10


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_step_with_the_same_weights_as_an_uninterrupted_run(
    tiny_model_dir, dataset, tmp_path
):
    every_two = ("--checkpointing_steps", "2", "--learning_rate", "1e-2")
    straight = train.main(train_args(tiny_model_dir, dataset, tmp_path / "straight", "decoder", 4, *every_two))
    interrupted = tmp_path / "interrupted"
    first = train.main(train_args(tiny_model_dir, dataset, interrupted, "decoder", 2, *every_two))
    after_two = lora_tensors(interrupted)
    resumed = train.main(
        train_args(tiny_model_dir, dataset, interrupted, "decoder", 4, *every_two, "--resume", "latest")
    )

    assert (first.start_step, resumed.start_step, resumed.final_step) == (0, 2, 4)
    assert [step for step, _ in resumed.losses] == [3, 4]
    assert [loss for _, loss in resumed.losses] == pytest.approx([loss for _, loss in straight.losses[2:]], rel=1e-5)
    final, expected = lora_tensors(interrupted), lora_tensors(tmp_path / "straight")
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, rtol=1e-5, atol=1e-6)
    # It went on from step 2's weights: steps 3 and 4 changed them (a restart would have begun from B = 0).
    assert any(not torch.equal(final[key], after_two[key]) for key in final)
    logged = [json.loads(line)["step"] for line in (interrupted / "loss.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4]
    assert json.loads((interrupted / CARD_NAME).read_text())["steps"] == 4


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_from_a_different_run(tiny_model_dir, dataset, tmp_path):
    output = tmp_path / "lora"
    train.main(train_args(tiny_model_dir, dataset, output, "decoder", 1, "--checkpointing_steps", "1"))

    with pytest.raises(SystemExit, match="rank 4 there, 8 now"):
        train.main(train_args(tiny_model_dir, dataset, output, "decoder", 2, "--rank", "8", "--resume", "latest"))


def test_data_order_and_noise_depend_only_on_seed_and_step():
    first_epoch = train.batch_indices(5, 5, 0, seed=1)
    assert sorted(first_epoch) == [0, 1, 2, 3, 4]  # one pass sees every image once
    assert train.batch_indices(5, 2, 3, seed=1) == train.batch_indices(5, 2, 3, seed=1)
    assert train.batch_indices(5, 2, 0, seed=1, process_index=1, num_processes=2) == first_epoch[2:4]
    noise = torch.randn(3, generator=train.step_generator(1, 7, 0))
    assert torch.equal(noise, torch.randn(3, generator=train.step_generator(1, 7, 0)))
    assert not torch.equal(noise, torch.randn(3, generator=train.step_generator(1, 8, 0)))


# -- bad datasets -----------------------------------------------------------------------------------------------------


def write_metadata(folder: Path, rows: list[dict | str]) -> None:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"The training data folder .*nowhere.* does not exist"):
        load_examples(tmp_path / "nowhere", need_captions=False)


def test_a_folder_without_metadata_says_what_to_add(tmp_path):
    with pytest.raises(DatasetError, match=r"has no metadata.jsonl: add one line per image, like \{\"file_name\""):
        load_examples(tmp_path, need_captions=False)


def test_a_listed_file_that_is_missing_is_named_with_its_line(tmp_path):
    data = make_dataset(tmp_path / "data")
    (data / "mascot-2.png").unlink()
    with pytest.raises(DatasetError, match=r"line 3 lists 'mascot-2.png', which is not in"):
        load_examples(data, need_captions=False)


def test_an_unreadable_image_is_named(tmp_path):
    data = make_dataset(tmp_path / "data")
    (data / "mascot-1.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"line 2 lists 'mascot-1.png', which is not a readable image"):
        load_examples(data, need_captions=False)


def test_a_line_that_is_not_json_is_named(tmp_path):
    data = make_dataset(tmp_path / "data")
    write_metadata(data, [{"file_name": "mascot-0.png", "text": "otter"}, "{not json"])
    with pytest.raises(DatasetError, match=r"metadata.jsonl line 2 is not valid JSON"):
        load_examples(data, need_captions=False)


def test_empty_captions_stop_a_prior_run_but_not_a_decoder_run(tmp_path):
    data = make_dataset(tmp_path / "data")
    rows = [{"file_name": f"mascot-{index}.png", "text": "otter" if index % 2 else " "} for index in range(4)]
    write_metadata(data, rows)

    with pytest.raises(
        DatasetError, match=r"2 images have an empty or missing 'text' .*line 1, 3.*every image needs one"
    ):
        load_examples(data, need_captions=True)
    assert len(load_examples(data, need_captions=False)) == 4  # the decoder does not read captions


def test_too_few_images_states_the_minimum(tmp_path):
    data = make_dataset(tmp_path / "data", count=MIN_IMAGES - 1)
    with pytest.raises(
        DatasetError, match=rf"lists {MIN_IMAGES - 1} images; LoRA training needs at least {MIN_IMAGES}"
    ):
        load_examples(data, need_captions=False)


@pytest.mark.slow
def test_the_script_reports_a_bad_dataset_as_one_sentence_and_documents_every_flag(tmp_path):
    script = str(ROOT / "lora" / "train.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad = [sys.executable, script, "--target", "prior", "--train_data_dir", str(tmp_path / "nowhere")]
    failed = subprocess.run(
        [*bad, "--output_dir", str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("train.py: The training data folder")
    assert "Traceback" not in failed.stderr

    parser = train.build_parser()
    help_text = parser.format_help()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
        assert all(option in help_text for option in action.option_strings)


# -- the GPU benchmark script -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_training_benchmark_runs_on_the_tiny_model(capsys):
    rows = bench_train.main(["--tiny", "--resolutions", "64", "--steps", "2", "--warmup_steps", "1"])

    assert [(row.resolution, row.gradient_checkpointing) for row in rows] == [(64, False), (64, True)]
    assert all(row.step_ms > 0 for row in rows)
    assert "64² | on |" in capsys.readouterr().out


def test_the_benchmark_builds_the_real_decoder_unet_architecture():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**bench_train.FULL_SIZE_UNET)
    assert sum(parameter.numel() for parameter in unet.parameters()) == bench_train.FULL_SIZE_PARAMETERS
