"""The full-size Kandinsky 2.2 architecture with random weights, for the benchmarks: timed as the real one, no
download."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

# From the defining modules, not `from diffusers`: see [tool.mypy] in pyproject.toml.
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_combined import KandinskyV22CombinedPipeline
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline

from mascot.generation.tiny import build_tokenizer

if TYPE_CHECKING:
    from diffusers.models.autoencoders.vq_model import VQModel
    from diffusers.models.transformers.prior_transformer import PriorTransformer
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

CONFIGS = Path(__file__).resolve().parent.parent / "assets" / "kandinsky-2-2-configs.json"


def build_full_size() -> tuple[KandinskyV22PriorPipeline, KandinskyV22Pipeline]:
    """The real architecture (assets/kandinsky-2-2-configs.json) with random weights, built on the GPU in fp16."""
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
    from diffusers.schedulers.scheduling_unclip import UnCLIPScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    configs = json.loads(CONFIGS.read_text())
    prior_configs, decoder_configs = configs["prior"], configs["decoder"]
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_tokenizer(Path(folder))  # model_max_length 77, as the real one: transformers 5.17 needs it
    prior_model, unet, movq = denoising_models("cuda")
    prior_model.clip_std.data.fill_(1.0)  # random weights: keep the output from collapsing to clip_mean
    with torch.device("cuda"):
        torch.set_default_dtype(torch.float16)
        try:
            text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(**model_config(prior_configs["text_encoder"])))
            image_encoder = CLIPVisionModelWithProjection(
                CLIPVisionConfig(**model_config(prior_configs["image_encoder"]))
            )
        finally:
            torch.set_default_dtype(torch.float32)
    prior = KandinskyV22PriorPipeline(
        prior=prior_model,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=UnCLIPScheduler.from_config(model_config(prior_configs["scheduler"])),
        image_processor=CLIPImageProcessor(**model_config(prior_configs["image_processor"])),
    )
    scheduler = DDPMScheduler.from_config(model_config(decoder_configs["scheduler"]))
    return prior, KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq)


def denoising_models(device: str) -> tuple[PriorTransformer, UNet2DConditionModel, VQModel]:
    """The prior's transformer, the decoder's UNet and the MoVQ of the real architecture, in fp16 with random weights,
    on `device` ("meta" builds them without memory: bench/flops.py counts their arithmetic there)."""
    from diffusers.models.autoencoders.vq_model import VQModel
    from diffusers.models.transformers.prior_transformer import PriorTransformer
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    configs = json.loads(CONFIGS.read_text())
    with torch.device(device):
        torch.set_default_dtype(torch.float16)
        try:
            return (
                PriorTransformer(**model_config(configs["prior"]["prior"])),
                UNet2DConditionModel(**model_config(configs["decoder"]["unet"])),
                VQModel(**model_config(configs["decoder"]["movq"])),
            )
        finally:
            torch.set_default_dtype(torch.float32)


def model_config(config: dict[str, Any]) -> dict[str, Any]:
    """A component's config without the bookkeeping keys (_class_name, _params)."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


def combined_pipeline(prior: KandinskyV22PriorPipeline, decoder: KandinskyV22Pipeline) -> KandinskyV22CombinedPipeline:
    """What a diffusers user writes: the combined pipeline over the same modules (the benchmarks' plain baseline)."""
    combined = KandinskyV22CombinedPipeline(
        unet=decoder.unet,
        scheduler=decoder.scheduler,
        movq=decoder.movq,
        prior_prior=prior.prior,
        prior_image_encoder=prior.image_encoder,
        prior_text_encoder=prior.text_encoder,
        prior_tokenizer=prior.tokenizer,
        prior_scheduler=prior.scheduler,
        prior_image_processor=prior.image_processor,
    )
    combined.set_progress_bar_config(disable=True)
    return combined
