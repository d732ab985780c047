"""The tiny offline Kandinsky 2.2: the real diffusers and transformers classes with small random weights, built in code.

It lets the app and the tests run the whole pipeline with no download and no GPU. It draws noise-like pictures, not
mascots. The tokenizer files (vocab.json, merges.txt) are generated here from a built-in word list.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TINY_MODEL_FOLDER = "tiny-kandinsky-2-2"
SEED = 20_220_202
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
MODEL_MAX_LENGTH = 77
NUM_MERGES = 400
# The text encoder's hidden size and projection, the prior's embedding_dim and the UNet's encoder_hid_dim must match.
EMBEDDING_DIM = 32

# Words the BPE merges are learned from: enough for common prompts to tokenize into whole words.
WORDS = """
a an the and or of with in on at for to from by as is it its this that my your our cute happy cheerful friendly
smiling funny tiny little big small round soft fluffy shiny bright colorful simple clean bold flat cartoon sticker
mascot logo character illustration vector kawaii plush toy figure style design drawing art portrait icon badge emblem
otter fox cat dog bear panda rabbit bunny owl penguin duck frog turtle lion tiger monkey koala raccoon hedgehog whale
dragon robot unicorn dinosaur bird fish bee octopus squirrel mouse horse cow pig sheep chicken
barista chef coffee cup tea cake pizza burger taco donut cookie fruit apple banana cherry lemon
wearing holding hat glasses scarf apron helmet jacket shirt cape crown bow tie headphones backpack
red orange yellow green blue purple pink brown black white gray gold silver pastel neon
background white studio light shadow outline thick line border sharp detailed high quality resolution render
blurry ugly deformed text watermark signature low bad extra fingers cropped
"""


@cache
def byte_characters() -> tuple[str, ...]:
    """GPT-2/CLIP's printable stand-in for each of the 256 bytes, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return tuple(chr(code) for code in codes)


def learn_merges(words: Iterable[str], num_merges: int) -> list[tuple[str, str]]:
    """Byte-pair merges learned from the words, deterministic: ties go to the alphabetically first pair."""
    corpus: list[list[str]] = [[*word[:-1], word[-1] + END_OF_WORD] for word in sorted(set(words))]
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pairs = Counter(pair for symbols in corpus for pair in itertools.pairwise(symbols))
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        corpus = [_merge_pair(symbols, best) for symbols in corpus]
    return merges


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """The symbols with every occurrence of `pair` joined into one symbol."""
    merged: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            merged.append(symbols[index] + symbols[index + 1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return merged


def build_vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's layout: 256 bytes, the same with `</w>`, one token per merge, then the two special tokens LAST.

    The text encoder pools at the largest token id, which must be `<|endoftext|>`.
    """
    tokens = [*byte_characters(), *(character + END_OF_WORD for character in byte_characters())]
    seen = set(tokens)
    for first, second in merges:
        if first + second not in seen:
            tokens.append(first + second)
            seen.add(first + second)
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_tokenizer_files(folder: Path) -> Path:
    """vocab.json and merges.txt of a small CLIP BPE tokenizer, in the format CLIPTokenizer.from_pretrained reads."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(WORDS.split(), NUM_MERGES)
    (folder / "vocab.json").write_text(json.dumps(build_vocabulary(merges), ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{first} {second}" for first, second in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def build_tokenizer(folder: Path) -> Any:
    """The generated tokenizer, loaded through CLIPTokenizer like the real one."""
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(
        folder,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=MODEL_MAX_LENGTH,
    )


def ensure_tiny_model(data_dir: Path) -> Path:
    """`data_dir/tiny-kandinsky-2-2`, built first if it is missing or incomplete."""
    folder = data_dir / TINY_MODEL_FOLDER
    if not is_complete(folder):
        build_tiny_model(folder)
    return folder


def is_complete(folder: Path) -> bool:
    """Whether both pipelines were saved; a build renames its folder into place only once it is finished."""
    return (folder / "prior" / "model_index.json").is_file() and (folder / "decoder" / "model_index.json").is_file()


def build_tiny_model(folder: Path) -> Path:
    """Build and save the tiny model into `folder` (prior/ and decoder/), replacing what is there.

    It is written to a temporary sibling and renamed into place, so a half-built model is never loaded.
    """
    import torch

    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            build_prior_pipeline(staging / "tokenizer-files").save_pretrained(staging / "prior")
            build_decoder_pipeline().save_pretrained(staging / "decoder")
        # Keep the generated BPE files beside tokenizer.json, as in the hub's repositories.
        for name in ("vocab.json", "merges.txt"):
            shutil.copy2(staging / "tokenizer-files" / name, staging / "prior" / "tokenizer" / name)
        shutil.rmtree(staging / "tokenizer-files")
        _replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Built the tiny model in %s (%.1f s)", folder, time.perf_counter() - started)
    return folder


def _replace_folder(staging: Path, folder: Path) -> None:
    """Move the finished build into place; an older (or half-removed) folder is moved aside first, then deleted."""
    if folder.exists():
        old = folder.with_name(f".{folder.name}-old-{time.time_ns()}")
        folder.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    staging.rename(folder)


def build_prior_pipeline(tokenizer_folder: Path) -> Any:
    """KandinskyV22PriorPipeline: PriorTransformer, CLIP text and image towers, UnCLIPScheduler, generated tokenizer."""
    import torch
    from diffusers.models.transformers.prior_transformer import PriorTransformer
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline
    from diffusers.schedulers.scheduling_unclip import UnCLIPScheduler  # not `from diffusers`: see [tool.mypy]
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    tokenizer = build_tokenizer(tokenizer_folder)
    text_encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=EMBEDDING_DIM,
            projection_dim=EMBEDDING_DIM,
            intermediate_size=2 * EMBEDDING_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MODEL_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # The real image tower's input (224 px, 14 px patches) so that the real image processor's output fits it.
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=EMBEDDING_DIM,
            projection_dim=EMBEDDING_DIM,
            intermediate_size=2 * EMBEDDING_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=14,
        )
    )
    prior = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=EMBEDDING_DIM // 2,
        num_layers=2,
        embedding_dim=EMBEDDING_DIM,
        num_embeddings=MODEL_MAX_LENGTH,
        additional_embeddings=4,
        added_emb_type="prd",
        encoder_hid_proj_type="linear",
        time_embed_act_fn="silu",
    )
    # PriorTransformer starts with clip_std = 0, which would make every output the constant clip_mean.
    with torch.no_grad():
        prior.clip_std.fill_(1.0)
    return KandinskyV22PriorPipeline(
        prior=prior,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=UnCLIPScheduler(**PRIOR_SCHEDULER_CONFIG),
        image_processor=CLIPImageProcessor(**IMAGE_PROCESSOR_CONFIG),
    )


def build_decoder_pipeline() -> Any:
    """KandinskyV22Pipeline: the real UNet and MoVQ architectures, narrowed; latents are image/8 as in the real one."""
    from diffusers.models.autoencoders.vq_model import VQModel
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    unet = UNet2DConditionModel(
        **UNET_ARCHITECTURE,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        attention_head_dim=16,
        cross_attention_dim=EMBEDDING_DIM,
        encoder_hid_dim=EMBEDDING_DIM,
        sample_size=32,
    )
    # Spatial norm uses 32 groups, so every MoVQ level needs a multiple of 32 channels; 4 levels give the real 8x scale.
    movq = VQModel(**MOVQ_ARCHITECTURE, block_out_channels=(32, 32, 32, 32), layers_per_block=1, num_vq_embeddings=256)
    # DDPMScheduler(**config) refuses the real config's set_alpha_to_one; from_config drops what it does not take.
    scheduler = DDPMScheduler.from_config(DECODER_SCHEDULER_CONFIG)
    return KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq)


# The real checkpoints' settings (kandinsky-community/kandinsky-2-2-prior and -decoder), minus their sizes.
UNET_ARCHITECTURE: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 8,
    "down_block_types": (
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
    ),
    "up_block_types": (
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "ResnetUpsampleBlock2D",
    ),
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
    "addition_embed_type": "image",
    "encoder_hid_dim_type": "image_proj",
    "resnet_time_scale_shift": "scale_shift",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "act_fn": "silu",
}
MOVQ_ARCHITECTURE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    "up_block_types": ("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
    "latent_channels": 4,
    "vq_embed_dim": 4,
    "norm_num_groups": 32,
    "norm_type": "spatial",
    "act_fn": "silu",
    "scaling_factor": 0.18215,
}
DECODER_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "thresholding": False,
}
PRIOR_SCHEDULER_CONFIG: dict[str, Any] = {
    "clip_sample": True,
    "clip_sample_range": 10.0,
    "num_train_timesteps": 1000,
    "prediction_type": "sample",
    "variance_type": "fixed_small_log",
}
IMAGE_PROCESSOR_CONFIG: dict[str, Any] = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}
