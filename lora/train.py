"""Train a LoRA adapter for Kandinsky 2.2: on the decoder (the look of your images) or on the prior (your words -> that
look). Data: an image folder with metadata.jsonl (see lora/README.md).

The decoder only ever sees CLIP image embeddings, so a decoder run ignores the captions and learns the look of the
images. Train it on one GPU (fp16, about 1,000-2,000 steps for a few dozen mascots):

    accelerate launch lora/train.py --target decoder \
        --train_data_dir data/mascots --output_dir loras/mascot-decoder \
        --resolution 512 --train_batch_size 2 --gradient_checkpointing --mixed_precision fp16 \
        --max_train_steps 2000 --learning_rate 1e-4 --rank 8 --checkpointing_steps 500 \
        --validation_prompts "a cheerful otter barista mascot" "a fox mascot holding a coffee cup"

The prior learns text -> image embedding, so every image needs a caption:

    accelerate launch lora/train.py --target prior \
        --train_data_dir data/mascots --output_dir loras/mascot-prior \
        --train_batch_size 8 --mixed_precision fp16 --max_train_steps 2000 --learning_rate 1e-4 --rank 8 \
        --validation_prompts "a cheerful otter barista mascot"

Continue an interrupted run from its last checkpoint: the same command plus `--resume latest`.
A smoke test on a CPU with the tiny offline model (`python app.py --model tiny` builds it into data/):

    python lora/train.py --target decoder \
        --pretrained_prior_model_name_or_path data/tiny-kandinsky-2-2/prior \
        --pretrained_decoder_model_name_or_path data/tiny-kandinsky-2-2/decoder \
        --train_data_dir data/mascots --output_dir /tmp/tiny-lora --resolution 64 --max_train_steps 10

Out comes output_dir/pytorch_lora_weights.safetensors (PEFT) with lora_card.json, checkpoint-N/ folders (each also a
loadable adapter, with its validation images), validation/ and loss.jsonl. Use it: `python app.py --lora mascot=DIR`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python lora/train.py` from anywhere

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler  # not `from diffusers`: see [tool.mypy]
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from tqdm.auto import tqdm

from lora.dataset import MIN_IMAGES, DatasetError, Example, decoder_pixels, load_examples, load_rgb
from lora.objectives import add_lora, decoder_loss, prior_loss, prior_noise_scheduler
from mascot.generation.adapter_files import BASE_MODELS, TARGETS, WEIGHT_NAME, AdapterCard, Target

logger = get_logger("lora.train")

STATE_FILE = "trainer_state.json"
LOSS_LOG = "loss.jsonl"
DEFAULT_VALIDATION_PROMPT = "a cute mascot"
ENCODE_BATCH = 8
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


# -- flags ------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Every flag, named as in diffusers' training scripts."""
    parser = argparse.ArgumentParser(
        description="Train a PEFT LoRA on Kandinsky 2.2's decoder UNet or prior.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--target",
        choices=TARGETS,
        required=True,
        help="decoder: the UNet learns the look of the images (captions unused); prior: captions -> that look",
    )
    add(
        "--pretrained_prior_model_name_or_path",
        default=BASE_MODELS["prior"],
        help="prior pipeline: hub id or folder (save_pretrained layout)",
    )
    add(
        "--pretrained_decoder_model_name_or_path",
        default=BASE_MODELS["decoder"],
        help="decoder pipeline: hub id or folder (save_pretrained layout)",
    )
    add("--train_data_dir", type=Path, required=True, help="image folder with metadata.jsonl (file_name, text)")
    add("--caption_column", default="text", help="metadata.jsonl field holding the caption (prior runs)")
    add("--output_dir", type=Path, required=True, help="where the adapter, checkpoints and validation images go")
    add(
        "--resolution",
        type=int,
        default=512,
        help="training size of the decoder's images (a multiple of 64), and the validation images' size",
    )
    add("--train_batch_size", type=int, default=1, help="images per device per step")
    add("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    add("--gradient_checkpointing", action="store_true", help="recompute activations: less memory, slower (decoder)")
    add("--max_train_steps", type=int, default=1000, help="optimizer steps in total")
    add("--learning_rate", type=float, default=1e-4, help="AdamW learning rate")
    add("--lr_scheduler", choices=LR_SCHEDULERS, default="constant", help="learning-rate schedule")
    add("--lr_warmup_steps", type=int, default=0, help="warm-up steps of the schedule")
    add("--adam_beta1", type=float, default=0.9, help="AdamW beta1")
    add("--adam_beta2", type=float, default=0.999, help="AdamW beta2")
    add("--adam_weight_decay", type=float, default=0.0, help="AdamW weight decay")
    add("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon")
    add("--max_grad_norm", type=float, default=1.0, help="gradient clipping norm")
    add("--rank", type=int, default=4, help="LoRA rank")
    add("--lora_alpha", type=float, default=None, help="LoRA alpha (default: the rank, so the LoRA scale is 1)")
    add("--seed", type=int, default=0, help="seed for the LoRA init, data order, noise and validation images")
    add(
        "--mixed_precision",
        choices=("no", "fp16", "bf16"),
        default=None,
        help="frozen weights in this dtype, LoRA in fp32 (default: accelerate's config, else no)",
    )
    add("--allow_tf32", action="store_true", help="allow TF32 matmuls on Ampere and newer GPUs")
    add("--checkpointing_steps", type=int, default=500, help="save a resumable checkpoint every N steps")
    add("--checkpoints_total_limit", type=int, default=None, help="keep at most this many checkpoints")
    add(
        "--resume",
        "--resume_from_checkpoint",
        dest="resume",
        default=None,
        help="'latest' (the newest checkpoint-N in output_dir) or a checkpoint folder to continue from",
    )
    add(
        "--validation_prompts",
        nargs="+",
        default=None,
        help="prompts of the fixed-seed validation images (default: the first caption, else 'a cute mascot')",
    )
    add("--num_validation_images", type=int, default=2, help="images per validation prompt (0: no validation)")
    add("--validation_num_inference_steps", type=int, default=30, help="decoder steps of the validation images")
    add("--validation_prior_num_inference_steps", type=int, default=25, help="prior steps of the validation images")
    add("--validation_guidance_scale", type=float, default=4.0, help="decoder guidance of the validation images")
    add("--validation_prior_guidance_scale", type=float, default=1.0, help="prior guidance of the validation images")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags, with the checks argparse cannot express."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resolution < 64 or args.resolution % 64:
        parser.error(f"--resolution must be a multiple of 64 (64 or more), not {args.resolution}.")
    for flag in ("train_batch_size", "gradient_accumulation_steps", "max_train_steps", "rank", "checkpointing_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1.")
    if args.num_validation_images < 0:
        parser.error("--num_validation_images must be 0 or more.")
    if args.lora_alpha is None:
        args.lora_alpha = float(args.rank)
    return args


# -- models and data --------------------------------------------------------------------------------------------------


@dataclass
class Models:
    """Both pipelines (frozen, kept on the CPU between uses) and the model the LoRA is trained on, one of theirs."""

    prior_pipe: KandinskyV22PriorPipeline
    decoder_pipe: KandinskyV22Pipeline
    trained: torch.nn.Module

    def frozen_modules(self) -> list[torch.nn.Module]:
        """Every module of both pipelines except the trained one."""
        components = [*self.prior_pipe.components.values(), *self.decoder_pipe.components.values()]
        return [item for item in components if isinstance(item, torch.nn.Module) and item is not self.trained]


def weight_dtype(accelerator: Accelerator) -> torch.dtype:
    """The frozen weights' dtype: that of the mixed precision (the LoRA itself stays fp32)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def load_models(args: argparse.Namespace, dtype: torch.dtype) -> Models:
    """Both pipelines with from_pretrained, on the CPU; the LoRA goes onto the target's model."""
    prior_pipe = KandinskyV22PriorPipeline.from_pretrained(args.pretrained_prior_model_name_or_path, dtype=dtype)
    decoder_pipe = KandinskyV22Pipeline.from_pretrained(args.pretrained_decoder_model_name_or_path, dtype=dtype)
    for pipe in (prior_pipe, decoder_pipe):
        pipe.set_progress_bar_config(disable=True)
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
    trained = decoder_pipe.unet if args.target == "decoder" else prior_pipe.prior
    return Models(prior_pipe, decoder_pipe, trained)


@contextmanager
def on_device(modules: Sequence[torch.nn.Module], device: torch.device) -> Iterator[None]:
    """Put frozen modules on the accelerator for a while (encoding, validation), then back on the CPU to leave the
    GPU's memory to training."""
    if device.type == "cpu":
        yield
        return
    for module in modules:
        module.to(device)
    try:
        yield
    finally:
        for module in modules:
            module.to("cpu")
        torch.cuda.empty_cache()


@dataclass
class EncodedData:
    """What the frozen encoders make of each example, computed once: tensors of N rows each, on the CPU."""

    tensors: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def batch(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        """The rows `indices` of every tensor, on `device`."""
        rows = torch.tensor(indices)
        return {key: value[rows].to(device) for key, value in self.tensors.items()}


def encode_examples(
    models: Models, examples: list[Example], args: argparse.Namespace, device: torch.device
) -> EncodedData:
    """Run the frozen encoders over the data once: training then only runs the trained model."""
    prior_pipe = models.prior_pipe
    with torch.no_grad():
        if args.target == "decoder":
            modules = [models.decoder_pipe.movq, prior_pipe.image_encoder]
            with on_device(modules, device):
                chunks = [_encode_decoder_chunk(models, chunk, args.resolution, device) for chunk in _chunks(examples)]
        else:
            modules = [prior_pipe.image_encoder, prior_pipe.text_encoder]
            with on_device(modules, device):
                chunks = [_encode_prior_chunk(models, chunk, device) for chunk in _chunks(examples)]
    return EncodedData({key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]})


def _chunks(examples: list[Example]) -> Iterator[list[Example]]:
    """The examples in groups small enough for the encoders."""
    for start in range(0, len(examples), ENCODE_BATCH):
        yield examples[start : start + ENCODE_BATCH]


def _image_embeds(prior_pipe: KandinskyV22PriorPipeline, images: list[Any], device: torch.device) -> torch.Tensor:
    """CLIP image embeddings, through the prior pipeline's own image processor and encoder."""
    encoder = prior_pipe.image_encoder
    pixels = prior_pipe.image_processor(images=images, return_tensors="pt").pixel_values
    return encoder(pixels.to(device, encoder.dtype)).image_embeds


def _encode_decoder_chunk(
    models: Models, chunk: list[Example], resolution: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """MoVQ latents of each image at resolution² and the CLIP image embedding the UNet is conditioned on."""
    images = [load_rgb(example.path) for example in chunk]
    movq = models.decoder_pipe.movq
    pixels = torch.stack([decoder_pixels(image, resolution) for image in images]).to(device, movq.dtype)
    return {
        "latents": movq.encode(pixels).latents.cpu(),
        "image_embeds": _image_embeds(models.prior_pipe, images, device).cpu(),
    }


def _encode_prior_chunk(models: Models, chunk: list[Example], device: torch.device) -> dict[str, torch.Tensor]:
    """The caption's CLIP text embeddings (as the prior pipeline makes them) and the image's normalised embedding."""
    pipe = models.prior_pipe
    tokens = pipe.tokenizer(
        [example.text for example in chunk],
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    text = pipe.text_encoder(tokens.input_ids.to(device))
    embeds = _image_embeds(pipe, [load_rgb(example.path) for example in chunk], device)
    prior = cast(Any, pipe.prior)
    mean, std = prior.clip_mean.to(embeds), prior.clip_std.to(embeds)
    return {
        "image_targets": ((embeds - mean) / std).cpu(),
        "text_embeds": text.text_embeds.cpu(),
        "text_hidden_states": text.last_hidden_state.cpu(),
        "text_mask": tokens.attention_mask.bool(),
    }


# -- data order and noise: functions of (seed, step), so a resumed run sees what an uninterrupted one would ----------


@lru_cache(maxsize=4)
def epoch_order(num_examples: int, seed: int, epoch: int) -> tuple[int, ...]:
    """A fresh shuffle of the examples for each pass over them."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return tuple(torch.randperm(num_examples, generator=generator).tolist())


def batch_indices(
    num_examples: int, batch_size: int, batch_number: int, seed: int, process_index: int = 0, num_processes: int = 1
) -> list[int]:
    """This process's share of global batch `batch_number`: consecutive positions in the epochs' shuffles."""
    start = (batch_number * num_processes + process_index) * batch_size
    positions = range(start, start + batch_size)
    return [
        epoch_order(num_examples, seed, position // num_examples)[position % num_examples] for position in positions
    ]


def step_generator(seed: int, batch_number: int, process_index: int) -> torch.Generator:
    """The CPU generator of one micro-batch's noise and timesteps."""
    return torch.Generator().manual_seed((seed * 1_000_003 + batch_number) * 1_009 + process_index)


# -- one run ----------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a training run holds once it is set up."""

    args: argparse.Namespace
    accelerator: Accelerator
    models: Models
    data: EncodedData
    noise_scheduler: DDPMScheduler
    model: torch.nn.Module  # the trained model as accelerate prepared it (wrapped when distributed)
    parameters: list[torch.nn.Parameter]
    optimizer: Any
    lr_scheduler: Any
    validation_prompts: list[str]


@dataclass(frozen=True)
class TrainingResult:
    """What a call of `main` did: steps start_step+1 .. final_step, their losses, and where the adapter is."""

    output_dir: Path
    adapter_path: Path
    start_step: int
    final_step: int
    losses: list[tuple[int, float]]


def main(argv: Sequence[str] | None = None) -> TrainingResult:
    """Parse the flags, set up, train (or continue), save the adapter and its card."""
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    run = set_up(args, accelerator)
    start_step = resume(run) if args.resume else 0
    losses = train(run, start_step)
    final_step = max(start_step, args.max_train_steps)
    adapter_path = save_final(run, final_step)
    accelerator.end_training()
    return TrainingResult(args.output_dir, adapter_path, start_step, final_step, losses)


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    """accelerate for devices and mixed precision; logging and seeds set for every process."""
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.gradient_accumulation_steps
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_local_main_process:
        logging.getLogger("diffusers").setLevel(logging.ERROR)
        logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    set_seed(args.seed)
    return accelerator


def set_up(args: argparse.Namespace, accelerator: Accelerator) -> Run:
    """Check the data, load the models, encode the data, add the LoRA and prepare it with its optimizer."""
    examples = load_examples(
        args.train_data_dir, caption_column=args.caption_column, need_captions=args.target == "prior"
    )
    logger.info(f"{len(examples)} training images in {args.train_data_dir} (at least {MIN_IMAGES} are needed)")
    models = load_models(args, weight_dtype(accelerator))
    data = encode_examples(models, examples, args, accelerator.device)
    parameters = add_lora(models.trained, args.target, args.rank, args.lora_alpha)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(models.trained)
    optimizer = torch.optim.AdamW(
        parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    # accelerate steps a prepared scheduler once per process per step: count the schedule in those units.
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(models.trained, optimizer, lr_scheduler)
    register_checkpoint_hooks(accelerator)
    return Run(
        args=args,
        accelerator=accelerator,
        models=models,
        data=data,
        noise_scheduler=noise_scheduler(models, args.target),
        model=model,
        parameters=parameters,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        validation_prompts=args.validation_prompts or [_first_caption(examples)],
    )


def _first_caption(examples: list[Example]) -> str:
    """The default validation prompt: the first caption there is, else a generic one."""
    return next((example.text for example in examples if example.text), DEFAULT_VALIDATION_PROMPT)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Trade compute for memory where the model supports it (the UNet does; the prior does not need it)."""
    if not getattr(model, "_supports_gradient_checkpointing", False):
        logger.warning(f"{type(model).__name__} does not support gradient checkpointing; training without it.")
        return
    cast(Any, model).enable_gradient_checkpointing()


def noise_scheduler(models: Models, target: Target) -> DDPMScheduler:
    """The decoder's own DDPM schedule; for the prior, DDPM on the prior scheduler's betas, predicting the sample."""
    if target == "decoder":
        return DDPMScheduler.from_config(models.decoder_pipe.scheduler.config)
    config = models.prior_pipe.scheduler.config
    return prior_noise_scheduler(config.num_train_timesteps, config.get("beta_schedule", "squaredcos_cap_v2"))


# -- training ---------------------------------------------------------------------------------------------------------


def train(run: Run, start_step: int) -> list[tuple[int, float]]:
    """Optimizer steps start_step+1 .. max_train_steps, with a progress bar, the loss log and checkpoints."""
    args, accelerator = run.args, run.accelerator
    progress = tqdm(
        total=args.max_train_steps,
        initial=start_step,
        desc=f"LoRA ({args.target})",
        disable=not accelerator.is_local_main_process,
    )
    losses = []
    run.model.train()
    for step in range(start_step + 1, args.max_train_steps + 1):
        loss = optimization_step(run, step)
        learning_rate = run.lr_scheduler.get_last_lr()[0]
        losses.append((step, loss))
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.4f}", lr=f"{learning_rate:.2e}")
        if accelerator.is_main_process:
            append_loss(args.output_dir, step, loss, learning_rate)
        if step % args.checkpointing_steps == 0:
            save_checkpoint(run, step)
    progress.close()
    return losses


def optimization_step(run: Run, step: int) -> float:
    """One optimizer step over gradient_accumulation_steps micro-batches; returns the mean loss over all processes."""
    args, accelerator = run.args, run.accelerator
    total = 0.0
    for micro in range(args.gradient_accumulation_steps):
        batch_number = (step - 1) * args.gradient_accumulation_steps + micro
        indices = batch_indices(
            len(run.data), args.train_batch_size, batch_number, args.seed,
            accelerator.process_index, accelerator.num_processes,
        )  # fmt: skip
        batch = run.data.batch(indices, accelerator.device)
        generator = step_generator(args.seed, batch_number, accelerator.process_index)
        with accelerator.accumulate(run.model):
            loss = compute_loss(run, batch, generator)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(run.parameters, args.max_grad_norm)
            run.optimizer.step()
            run.lr_scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
        total += accelerator.gather(loss.detach()).mean().item()
    return total / args.gradient_accumulation_steps


def compute_loss(run: Run, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """The target's loss on one micro-batch."""
    if run.args.target == "decoder":
        return decoder_loss(run.model, run.noise_scheduler, batch["latents"], batch["image_embeds"], generator)
    return prior_loss(
        run.model,
        run.noise_scheduler,
        batch["image_targets"],
        batch["text_embeds"],
        batch["text_hidden_states"],
        batch["text_mask"],
        generator,
    )


def append_loss(output_dir: Path, step: int, loss: float, learning_rate: float) -> None:
    """One line of output_dir/loss.jsonl."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / LOSS_LOG).open("a", encoding="utf-8") as log:
        log.write(json.dumps({"step": step, "loss": loss, "lr": learning_rate}) + "\n")


# -- checkpoints and resuming -----------------------------------------------------------------------------------------


def register_checkpoint_hooks(accelerator: Accelerator) -> None:
    """accelerate's save_state/load_state keep the optimizer, LR schedule, grad scaler and RNG states; these hooks make
    them store the LoRA weights alone (PEFT safetensors) instead of the whole frozen model."""

    def save_hook(models: list[torch.nn.Module], weights: list[Any], output_dir: str) -> None:
        if accelerator.is_main_process:
            for model in models:
                cast(Any, accelerator.unwrap_model(model)).save_lora_adapter(output_dir, adapter_name="default")
        weights.clear()

    def load_hook(models: list[torch.nn.Module], input_dir: str) -> None:
        while models:
            load_lora_weights(accelerator.unwrap_model(models.pop()), Path(input_dir) / WEIGHT_NAME)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def load_lora_weights(model: torch.nn.Module, path: Path) -> None:
    """Put a checkpoint's LoRA tensors into the model's "default" adapter; every tensor must find its place."""
    result = set_peft_model_state_dict(model, load_file(path), adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"The checkpoint {path} has LoRA tensors this model does not: {', '.join(unexpected[:3])}.")


def save_checkpoint(run: Run, step: int) -> Path:
    """checkpoint-N: LoRA, optimizer, schedule, RNG states, trainer_state.json, a card and the validation images."""
    args, accelerator = run.args, run.accelerator
    folder = args.output_dir / f"checkpoint-{step}"
    if accelerator.is_main_process:
        prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        state = {"global_step": step, **run_identity(args, len(run.data))}
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        write_card(folder, args, step, len(run.data))
        save_validation_images(run, folder / "validation")
        logger.info(f"Saved {folder}")
    accelerator.wait_for_everyone()
    return folder


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of each checkpoint-N in output_dir, oldest first."""
    found = []
    for folder in output_dir.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
        if match and (folder / STATE_FILE).is_file():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def prune_checkpoints(output_dir: Path, limit: int | None) -> None:
    """Make room for one more checkpoint under --checkpoints_total_limit, oldest out first."""
    if limit is None:
        return
    existing = checkpoints(output_dir)
    for _, folder in existing[: max(0, len(existing) - limit + 1)]:
        logger.info(f"Removing {folder} (--checkpoints_total_limit {limit})")
        shutil.rmtree(folder)


def run_identity(args: argparse.Namespace, train_images: int) -> dict[str, Any]:
    """What a checkpoint must share with the run that continues it."""
    return {"target": args.target, "rank": args.rank, "lora_alpha": args.lora_alpha, "train_images": train_images}


def resume(run: Run) -> int:
    """Load the checkpoint --resume names and return its step (0 when 'latest' finds none)."""
    args = run.args
    folder = find_checkpoint(args.output_dir, args.resume)
    if folder is None:
        logger.info(f"No checkpoint in {args.output_dir} to resume from: starting a new run.")
        return 0
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    expected = run_identity(args, len(run.data))
    differing = [
        f"{key} {state.get(key)!r} there, {value!r} now" for key, value in expected.items() if state.get(key) != value
    ]
    if differing:
        raise SystemExit(f"Cannot resume from {folder}: it was made by a different run ({'; '.join(differing)}).")
    run.accelerator.load_state(str(folder))
    step = int(state["global_step"])
    if run.accelerator.is_main_process:
        truncate_loss_log(args.output_dir, step)
    logger.info(f"Resumed from {folder} at step {step}")
    return step


def find_checkpoint(output_dir: Path, resume: str) -> Path | None:
    """'latest' -> the newest checkpoint in output_dir (None if there is none); else the named folder, which must be
    a checkpoint."""
    if resume == "latest":
        found = checkpoints(output_dir)
        return found[-1][1] if found else None
    folder = Path(resume)
    if not (folder / STATE_FILE).is_file():
        raise SystemExit(f"--resume {resume}: {folder} is not a checkpoint folder (it has no {STATE_FILE}).")
    return folder


def truncate_loss_log(output_dir: Path, step: int) -> None:
    """Forget logged steps after the checkpoint: they are about to be trained again."""
    log = output_dir / LOSS_LOG
    if log.is_file():
        lines = log.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        log.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# -- outputs ----------------------------------------------------------------------------------------------------------


def write_card(folder: Path, args: argparse.Namespace, steps: int, train_images: int) -> Path:
    """lora_card.json beside the weights: what the app and people need to know about the adapter."""
    base_model = (
        args.pretrained_decoder_model_name_or_path
        if args.target == "decoder"
        else args.pretrained_prior_model_name_or_path
    )
    card = AdapterCard(
        target=args.target,
        base_model=str(base_model),
        rank=args.rank,
        lora_alpha=args.lora_alpha,
        steps=steps,
        resolution=args.resolution if args.target == "decoder" else None,
        train_images=train_images,
        learning_rate=args.learning_rate,
        extra={
            "train_batch_size": args.train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "seed": args.seed,
            "mixed_precision": args.mixed_precision or "no",
            "trainer": "lora/train.py",
        },
    )
    return card.write(folder)


def save_final(run: Run, step: int) -> Path:
    """The adapter (PEFT safetensors via save_lora_adapter), its card and the final validation images."""
    args, accelerator = run.args, run.accelerator
    accelerator.wait_for_everyone()
    path = args.output_dir / WEIGHT_NAME
    if accelerator.is_main_process:
        model = cast(Any, accelerator.unwrap_model(run.model))
        model.save_lora_adapter(str(args.output_dir), adapter_name="default")
        write_card(args.output_dir, args, step, len(run.data))
        save_validation_images(run, args.output_dir / "validation")
        logger.info(f"Saved the {args.target} LoRA to {path}")
    accelerator.wait_for_everyone()
    return path


def save_validation_images(run: Run, folder: Path) -> list[Path]:
    """The fixed-seed validation set: for each prompt, images with seeds seed, seed+1, ... through the real prior and
    decoder pipelines, the trained model carrying its LoRA."""
    args = run.args
    if args.num_validation_images == 0:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    # Under mixed precision, accelerate's prepare makes the trained UNet return fp32 while the frozen MoVQ keeps
    # fp16/bf16 weights: outside the training's autocast, decoding the fp32 latents fails on the dtype mismatch.
    autocast = run.accelerator.autocast()
    with on_device(run.models.frozen_modules(), run.accelerator.device), torch.no_grad(), autocast:
        for prompt_index, prompt in enumerate(run.validation_prompts):
            for image_index in range(args.num_validation_images):
                path = folder / f"{prompt_index:02d}-{image_index:02d}.png"
                validation_image(run, prompt, args.seed + image_index).save(path)
                paths.append(path)
    (folder / "prompts.json").write_text(json.dumps(run.validation_prompts, indent=2) + "\n", encoding="utf-8")
    run.model.train()
    return paths


def validation_image(run: Run, prompt: str, seed: int) -> Any:
    """One image: the prior's embedding of the prompt, then the decoder, both from one seeded generator."""
    args, models = run.args, run.models
    generator = torch.Generator().manual_seed(seed)
    embeds = models.prior_pipe(
        prompt,
        num_inference_steps=args.validation_prior_num_inference_steps,
        guidance_scale=args.validation_prior_guidance_scale,
        generator=generator,
    )
    return models.decoder_pipe(
        image_embeds=embeds.image_embeds,
        negative_image_embeds=embeds.negative_image_embeds,
        height=args.resolution,
        width=args.resolution,
        num_inference_steps=args.validation_num_inference_steps,
        guidance_scale=args.validation_guidance_scale,
        generator=generator,
    ).images[0]


if __name__ == "__main__":
    try:
        main()
    except DatasetError as error:
        sys.exit(f"train.py: {error}")
