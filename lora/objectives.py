"""What a LoRA learns: the adapter config per target and the two training losses (shared by train.py and the benchmark).

Decoder: the UNet predicts the noise added to the MoVQ latents of a training image, conditioned on the CLIP image
embedding of that same image (the decoder never sees text). Prior: the PriorTransformer predicts the (normalised) CLIP
image embedding of a training image from a noised copy and its caption's CLIP text embeddings.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from diffusers.models.transformers.prior_transformer import PriorTransformer  # not `from diffusers`: see [tool.mypy]
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from peft import LoraConfig

from mascot.generation.adapter_files import TARGET_MODULES, Target


def lora_config(target: Target, rank: int, lora_alpha: float) -> LoraConfig:
    """The attention projections of the target, with B starting at zero (so step 0 is the base model exactly)."""
    return LoraConfig(
        r=rank,
        lora_alpha=lora_alpha,  # type: ignore[arg-type]  # peft annotates int, yet only divides it by r: a float works
        init_lora_weights="gaussian",
        target_modules=list(TARGET_MODULES[target]),
    )


def add_lora(model: torch.nn.Module, target: Target, rank: int, lora_alpha: float) -> list[torch.nn.Parameter]:
    """Freeze `model`, add a trainable LoRA named "default" and return its parameters, kept in fp32 for the optimizer
    (the frozen weights may be fp16/bf16)."""
    model.requires_grad_(False)
    model.add_adapter(lora_config(target, rank, lora_alpha))  # type: ignore[operator]  # diffusers' PeftAdapterMixin; Module does not declare it
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    for parameter in parameters:
        parameter.data = parameter.data.float()
    return parameters


def prior_noise_scheduler(num_train_timesteps: int, beta_schedule: str) -> DDPMScheduler:
    """The prior is trained to predict the clean sample, on its own (squared-cosine) noise schedule."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type="sample",
        clip_sample=False,
    )


def noise_and_timesteps(
    sample: torch.Tensor, scheduler: DDPMScheduler, generator: torch.Generator
) -> tuple[torch.Tensor, torch.IntTensor]:
    """Gaussian noise like `sample` and one random timestep per item, drawn from a CPU generator (reproducible on any
    device, and resumable: train.py seeds one generator per step)."""
    noise = torch.randn(sample.shape, generator=generator, dtype=torch.float32).to(sample.device, sample.dtype)
    timesteps = torch.randint(0, scheduler.config["num_train_timesteps"], (sample.shape[0],), generator=generator)
    # int64, as diffusers' schedulers take them; they annotate timesteps with the legacy IntTensor class.
    return noise, cast(torch.IntTensor, timesteps.to(sample.device))


def decoder_loss(
    unet: UNet2DConditionModel | torch.nn.Module,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    image_embeds: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """MSE of the UNet's noise (or v) prediction on noised latents, conditioned on the image embedding."""
    noise, timesteps = noise_and_timesteps(latents, scheduler, generator)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config["prediction_type"] == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    output = unet(noisy, timesteps, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": image_embeds})
    # Kandinsky's UNet also predicts the variance in its extra channels: the loss is on the prediction only.
    prediction = output.sample[:, : latents.shape[1]]
    return F.mse_loss(prediction.float(), target.float())


def prior_loss(
    prior: PriorTransformer | torch.nn.Module,
    scheduler: DDPMScheduler,
    image_targets: torch.Tensor,
    text_embeds: torch.Tensor,
    text_hidden_states: torch.Tensor,
    text_mask: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """MSE of the prior's clean-embedding prediction; `image_targets` are already (embedding - clip_mean) / clip_std,
    the space the prior works in (the pipeline undoes it with post_process_latents)."""
    noise, timesteps = noise_and_timesteps(image_targets, scheduler, generator)
    noisy = scheduler.add_noise(image_targets, noise, timesteps)
    prediction = prior(
        noisy,
        timestep=timesteps,
        proj_embedding=text_embeds,
        encoder_hidden_states=text_hidden_states,
        attention_mask=text_mask,
    ).predicted_image_embedding
    return F.mse_loss(prediction.float(), image_targets.float())
