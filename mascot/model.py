"""The model: where Kandinsky 2.2 comes from (`--model`), loading its prior and decoder pipelines, and generating."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import downscale_height_and_width
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from mascot.adapters import (
    AdapterError,
    AdapterSpec,
    load_adapter,
    loaded_adapters,
    parse_adapter_specs,
    set_adapter_scale,
)
from mascot.download import local_copy
from mascot.generator import GeneratedImages, ModelInfo, PromptUse, StepCallback, StepUpdate
from mascot.request import MAX_SEED, GenerationRequest
from mascot.settings import Settings
from mascot.tiny import ensure_tiny_model

logger = logging.getLogger(__name__)

PRIOR_HUB_ID = "kandinsky-community/kandinsky-2-2-prior"
DECODER_HUB_ID = "kandinsky-community/kandinsky-2-2-decoder"
REAL_MODEL_NAME = "Kandinsky 2.2"
TINY_MODEL_NAME = "Tiny Kandinsky 2.2 (offline preview model)"
MODEL_KEYWORDS = ("auto", "tiny", "kandinsky")

PREVIEW_EXPLAINED = "The offline preview model is loaded: it makes noise-like pictures, not mascots."
HOW_TO_GET_THE_REAL_MODEL = (
    "To use Kandinsky 2.2, run on a machine with a CUDA GPU and internet access once (the weights, about 20 GB, are "
    "then cached), or pass --model PATH with a folder holding its prior/ and decoder/ pipelines."
)
NO_GPU_REASON = f"No CUDA GPU was found. {PREVIEW_EXPLAINED} {HOW_TO_GET_THE_REAL_MODEL}"
NO_WEIGHTS_REASON = (
    f"The Kandinsky 2.2 weights are not in the local Hugging Face cache and the hub did not answer. "
    f"{PREVIEW_EXPLAINED} {HOW_TO_GET_THE_REAL_MODEL}"
)
TINY_ASKED_REASON = f"{PREVIEW_EXPLAINED} It was asked for with --model tiny. {HOW_TO_GET_THE_REAL_MODEL}"


class ModelSourceError(ValueError):
    """`--model`, `--prior` or `--decoder` names nothing loadable; the message is a sentence for whoever runs it."""


@dataclass(frozen=True)
class ModelSource:
    """Where the two pipelines come from: hub ids or folders, passed as they are to `from_pretrained`."""

    name: str
    prior: str
    decoder: str
    is_preview_model: bool
    reason: str = ""


def resolve_model_source(
    settings: Settings,
    *,
    cuda_available: bool | None = None,
    hub_reachable: Callable[[], bool] | None = None,
) -> ModelSource:
    """Decide what to load from `--model` and the `--prior`/`--decoder` overrides. Never waits on the network for
    longer than `settings.hub_timeout_s`, and does not touch it at all without CUDA."""
    if settings.prior and settings.decoder:
        prior, decoder = (
            _override_location(settings.prior, "--prior"),
            _override_location(settings.decoder, "--decoder"),
        )
        return ModelSource(
            name=f"prior {prior}, decoder {decoder}", prior=prior, decoder=decoder, is_preview_model=False
        )
    base = _base_source(settings, cuda_available, hub_reachable)
    if settings.prior:
        prior = _override_location(settings.prior, "--prior")
        return replace(base, name=f"{base.name}, prior {prior}", prior=prior)
    if settings.decoder:
        decoder = _override_location(settings.decoder, "--decoder")
        return replace(base, name=f"{base.name}, decoder {decoder}", decoder=decoder)
    return base


def _base_source(
    settings: Settings, cuda_available: bool | None, hub_reachable: Callable[[], bool] | None
) -> ModelSource:
    """The source `--model` names on its own."""
    keyword = settings.model.strip().lower()
    if keyword == "tiny":
        return tiny_source(settings.data_dir, TINY_ASKED_REASON)
    if keyword == "kandinsky":
        return hub_source()
    if keyword == "auto":
        return _auto_source(settings, cuda_available, hub_reachable)
    return folder_source(settings.model)


def tiny_source(data_dir: Path, reason: str) -> ModelSource:
    """The tiny offline model, built into the data folder the first time."""
    folder = ensure_tiny_model(data_dir)
    return ModelSource(TINY_MODEL_NAME, str(folder / "prior"), str(folder / "decoder"), True, reason)


def hub_source() -> ModelSource:
    """The real checkpoints by hub id: `from_pretrained` downloads them on first use."""
    return ModelSource(REAL_MODEL_NAME, PRIOR_HUB_ID, DECODER_HUB_ID, is_preview_model=False)


def folder_source(value: str) -> ModelSource:
    """A folder holding `prior/` and `decoder/` pipelines (each saved with `save_pretrained`)."""
    folder = Path(value).expanduser()
    if not folder.is_dir():
        if not _looks_like_path(value):
            raise ModelSourceError(
                f"Unknown --model value {value!r}: use {', '.join(MODEL_KEYWORDS)}, or a folder that holds prior/ "
                "and decoder/ pipelines."
            )
        raise ModelSourceError(f"The model folder {str(folder)!r} does not exist.")
    for part in ("prior", "decoder"):
        if not (folder / part / "model_index.json").is_file():
            raise ModelSourceError(
                f"The model folder {str(folder)!r} has no {part}/ pipeline: "
                f"{str(folder / part / 'model_index.json')!r} is missing."
            )
    resolved = folder.resolve()
    return ModelSource(f"{REAL_MODEL_NAME} from {resolved}", str(resolved / "prior"), str(resolved / "decoder"), False)


def _looks_like_path(value: str) -> bool:
    """Whether a value was meant as a folder rather than a keyword (so a typo of 'tiny' is not 'folder not found')."""
    return "/" in value or "\\" in value or value.startswith(("~", "."))


def _override_location(value: str, flag: str) -> str:
    """A `--prior`/`--decoder` value: an existing pipeline folder (resolved) or else a hub id."""
    folder = Path(value).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ModelSourceError(f"{flag} folder {str(folder)!r} holds no pipeline (no model_index.json in it).")
        return str(folder.resolve())
    if value.startswith(("~", ".", "/", "\\")) or value.count("/") > 1:
        raise ModelSourceError(f"{flag} {value!r} is neither an existing folder nor a hub id like owner/name.")
    return value


def _auto_source(
    settings: Settings, cuda_available: bool | None, hub_reachable: Callable[[], bool] | None
) -> ModelSource:
    """The real model with a GPU and its weights (cached, else downloadable), otherwise the tiny one with a reason."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        return tiny_source(settings.data_dir, NO_GPU_REASON)
    prior_folder, decoder_folder = cached_snapshot(PRIOR_HUB_ID), cached_snapshot(DECODER_HUB_ID)
    if prior_folder and decoder_folder:
        # Load the cached snapshots by path, so that loading makes no network call either.
        return ModelSource(REAL_MODEL_NAME, str(prior_folder), str(decoder_folder), is_preview_model=False)
    probe = hub_reachable or (lambda: hub_answers(settings.hub_timeout_s))
    if answers_within(probe, settings.hub_timeout_s):
        return hub_source()
    return tiny_source(settings.data_dir, NO_WEIGHTS_REASON)


def cached_snapshot(repo_id: str) -> Path | None:
    """The folder of `repo_id` in the local Hugging Face cache if every component's files are there (no network)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except OSError:  # LocalEntryNotFoundError: not cached
        return None
    return folder if _has_all_components(folder) else None


def _has_all_components(folder: Path) -> bool:
    """Whether every component model_index.json lists is there, with weights where it has a model config."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        return False
    index = json.loads(index_file.read_text(encoding="utf-8"))
    for name, entry in index.items():
        if not isinstance(entry, list) or entry[0] is None:
            continue
        part = folder / name
        if not part.is_dir() or not any(part.iterdir()):
            return False
        has_weights = any(part.glob("*.safetensors")) or any(part.glob("*.bin"))
        if (part / "config.json").is_file() and not has_weights:
            return False
    return True


def hub_answers(timeout_s: float) -> bool:
    """Whether the hub knows both repositories right now."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.model_info(PRIOR_HUB_ID, timeout=timeout_s)
    api.model_info(DECODER_HUB_ID, timeout=timeout_s)
    return True


def answers_within(probe: Callable[[], bool], timeout_s: float) -> bool:
    """Run `probe` in a daemon thread and give up after `timeout_s`: DNS lookups ignore HTTP timeouts."""
    answer: list[bool] = []

    def run() -> None:
        try:
            answer.append(bool(probe()))
        except Exception as error:  # any failure (offline, DNS, HTTP error) means "not reachable"
            logger.info("The Hugging Face hub is not reachable: %s", error)

    thread = threading.Thread(target=run, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(answer and answer[0])


class ZeroEmbedCachingPriorPipeline(KandinskyV22PriorPipeline):
    """The prior pipeline, except that the zero-image embedding (the decoder's negative when there is no negative
    prompt) is computed once: the stock pipeline runs the whole image encoder on a black image on every call."""

    _zero_image_embeds: torch.Tensor | None = None

    def get_zero_embed(self, batch_size: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
        """The image encoder's embedding of an all-zero image, repeated `batch_size` times."""
        if self._zero_image_embeds is None:
            self._zero_image_embeds = super().get_zero_embed(1, device)
        return self._zero_image_embeds.to(device or self.device).repeat(batch_size, 1)


def truncate_prompt(tokenizer: Any, text: str) -> PromptUse:
    """Split `text` into what fits the text encoder (model_max_length tokens with BOS and EOS) and what is cut.

    The cut falls after the last whole word that fits, so `used` tokenizes to exactly the tokens that are encoded.
    """
    if not text:
        return PromptUse(used="")
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    limit = tokenizer.model_max_length - 2
    if len(encoding.input_ids) <= limit:
        return PromptUse(used=text)
    tokens = tokenizer.convert_ids_to_tokens(encoding.input_ids[:limit])
    suffix = getattr(tokenizer.backend_tokenizer.model, "end_of_word_suffix", None)
    # CLIP marks the last token of each word with "</w>"; without such a suffix any token boundary will do.
    word_ends = [k for k, token in enumerate(tokens) if not suffix or token.endswith(suffix)]
    # A first "word" longer than the limit (a pasted URL, say) is cut inside, rather than leaving nothing.
    end = encoding.offset_mapping[word_ends[-1] if word_ends else limit - 1][1]
    return PromptUse(used=text[:end].rstrip(), cut=text[end:].strip())


def adapter_names(adapters: Sequence[AdapterSpec]) -> tuple[str, ...]:
    """Each adapter name once, in loading order (a decoder and a prior adapter may share one)."""
    return tuple(dict.fromkeys(spec.name for spec in adapters))


def mix_embeddings(image_embeds: torch.Tensor, logo_embed: torch.Tensor, logo_weight: float) -> torch.Tensor:
    """Each image's embedding moved toward the logo's: (1 - w) * image + w * logo."""
    return (1 - logo_weight) * image_embeds + logo_weight * logo_embed.to(image_embeds.dtype)


def seeds_for(request: GenerationRequest) -> list[int]:
    """Image i's seed: request.seed + i, wrapped so that every seed stays a valid request seed."""
    return [(request.seed + index) % (MAX_SEED + 1) for index in range(request.num_images_per_prompt)]


PREVIEW_MAX_LATENT_SIDE = 48  # a 384-pixel preview: enough to see it coming, a quarter of the decode at 768²


def latents_to_pil(
    decoder: KandinskyV22Pipeline, latents: torch.Tensor, max_latent_side: int | None = None
) -> Image.Image:
    """The first image of `latents` decoded by MoVQ, post-processed like the pipeline's own output.

    With `max_latent_side`, larger latents are shrunk first: a rough preview costs a fraction of a full decode
    (the MoVQ decode dominates a preview, and on a CPU it costs more than the denoising steps it shows).
    """
    latents = latents[:1]
    if max_latent_side is not None and max(latents.shape[-2:]) > max_latent_side:
        scale = max_latent_side / max(latents.shape[-2:])
        latents = torch.nn.functional.interpolate(latents, scale_factor=scale, mode="bilinear", antialias=True)
    pixels = decoder.movq.decode(latents, force_not_quantize=True).sample
    pixels = (pixels * 0.5 + 0.5).clamp(0, 1)
    return decoder.numpy_to_pil(pixels.cpu().permute(0, 2, 3, 1).float().numpy())[0]


class KandinskyGenerator:
    """Kandinsky 2.2 as a `mascot.generator.Generator`: the prior and the decoder pipelines, called separately."""

    def __init__(
        self,
        prior: KandinskyV22PriorPipeline,
        decoder: KandinskyV22Pipeline,
        info: ModelInfo,
        *,
        preview_every: int = 5,
        adapters: Sequence[AdapterSpec] = (),
    ) -> None:
        self.prior = prior
        self.decoder = decoder
        self.info = info
        self.preview_every = preview_every
        self.adapters = tuple(adapters)  # loaded into the pipelines' models already (see `load`)
        # The pipelines keep per-call state (timesteps, guidance scale): one generation at a time.
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        source: ModelSource,
        *,
        device: str | None = None,
        preview_every: int = 5,
        on_status: Callable[[str], None] | None = None,
        adapters: Sequence[AdapterSpec] = (),
    ) -> KandinskyGenerator:
        """Load both pipelines with `from_pretrained`: fp16 on CUDA, fp32 on CPU; then the LoRA `adapters`, each checked
        to have really loaded, and all left off until `select_adapter` picks one."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        say = _status_reporter(on_status)
        prior_folder = local_copy(source.prior, "the prior", say)
        decoder_folder = local_copy(source.decoder, "the decoder", say)
        say(f"Loading the prior {_where(source.prior)}…")
        prior = ZeroEmbedCachingPriorPipeline.from_pretrained(prior_folder, dtype=dtype).to(device)
        say(f"Loading the decoder {_where(source.decoder)}…")
        decoder = KandinskyV22Pipeline.from_pretrained(decoder_folder, dtype=dtype).to(device)
        for pipeline in (prior, decoder):
            pipeline.set_progress_bar_config(disable=True)
        for spec in adapters:
            say(f"Loading the LoRA adapter {spec.name!r} into the {spec.target} from {spec.path}…")
            load_adapter(decoder.unet if spec.target == "decoder" else prior.prior, spec)
        say("Preparing the model…")
        with torch.inference_mode():
            prior.get_zero_embed()  # computed once now, so the first generation is not the slow one
        info = ModelInfo(
            name=source.name,
            is_preview_model=source.is_preview_model,
            device=device,
            reason=source.reason,
            adapters=adapter_names(adapters),
        )
        say(f"{source.name} is ready on {device}.")
        return cls(prior, decoder, info, preview_every=preview_every, adapters=adapters)

    @property
    def adapter_names(self) -> tuple[str, ...]:
        """The names of the loaded LoRA adapters (a name may stand for a decoder and a prior adapter together)."""
        return adapter_names(self.adapters)

    def select_adapter(self, name: str | None, scale: float = 1.0) -> None:
        """Use LoRA adapter `name` at `scale` for the next generations, in the decoder, the prior or both (wherever an
        adapter of that name is loaded); `None` or scale 0 gives the base model's output exactly."""
        with self._lock:
            self._use_adapter(name, scale)

    def _use_adapter(self, name: str | None, scale: float) -> None:
        """`select_adapter` without the lock, for use inside a generation."""
        if name is not None and name not in self.adapter_names:
            loaded = ", ".join(repr(item) for item in self.adapter_names) or "none"
            raise AdapterError(f"There is no LoRA adapter named {name!r} (loaded: {loaded}).")
        for model in (self.decoder.unet, self.prior.prior):
            set_adapter_scale(model, name if name in loaded_adapters(model) else None, scale)

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None, logo: Image.Image | None = None
    ) -> GeneratedImages:
        """Run the prior once per image, then the decoder on all images at once; `on_step` may cancel.

        With a `logo`, each image's embedding is mixed with the logo's CLIP image embedding, weighted by
        `request.logo_weight`: what diffusers' `prior.interpolate` does with weights (1 - w, w), without its extra
        prior run for a negative embedding we already have.
        """
        with self._lock, torch.inference_mode():
            self._use_adapter(request.adapter_name or None, request.lora_scale)
            prompt = truncate_prompt(self.prior.tokenizer, request.prompt)
            negative_prompt = truncate_prompt(self.prior.tokenizer, request.negative_prompt)
            seeds = seeds_for(request)
            # CPU generators: the same seed gives the same noise on any device.
            generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
            started = time.perf_counter()
            image_embeds, negative_image_embeds = self._run_prior(
                request, prompt.used, negative_prompt.used, generators, on_step
            )
            if logo is not None:
                image_embeds = mix_embeddings(image_embeds, self.image_embedding(logo), request.logo_weight)
            self._synchronize()
            prior_done = time.perf_counter()
            images = self._run_decoder(request, image_embeds, negative_image_embeds, generators, on_step)
            finished = time.perf_counter()
        return GeneratedImages(
            images=images,
            seeds=seeds,
            prompt=prompt,
            negative_prompt=negative_prompt,
            prior_seconds=prior_done - started,
            decoder_seconds=finished - prior_done,
        )

    def image_embedding(self, image: Image.Image) -> torch.Tensor:
        """The CLIP image embedding of `image` (the prior's image encoder), shape [1, D]."""
        encoder = self.prior.image_encoder
        pixels = self.prior.image_processor(image.convert("RGB"), return_tensors="pt").pixel_values
        return encoder(pixels.to(device=encoder.device, dtype=encoder.dtype))["image_embeds"]

    def _run_prior(
        self,
        request: GenerationRequest,
        prompt: str,
        negative_prompt: str,
        generators: list[torch.Generator],
        on_step: StepCallback | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's embedding and negative embedding, one prior call per image.

        One call per image keeps image i independent of the batch; it is also the only way to give each image its
        own generator with a negative prompt (the prior doubles its batch for it, and a generator list then fails).
        """
        steps = request.prior_num_inference_steps
        image_embeds, negative_image_embeds = [], []
        for index, generator in enumerate(generators):
            output = self.prior(
                prompt=prompt,
                negative_prompt=negative_prompt or None,
                num_images_per_prompt=1,
                num_inference_steps=steps,
                generator=generator,
                guidance_scale=request.prior_guidance_scale,
                callback_on_step_end=_prior_callback(on_step, index * steps, steps * len(generators)),
            )
            image_embeds.append(output.image_embeds)
            negative_image_embeds.append(output.negative_image_embeds)
        return torch.cat(image_embeds), torch.cat(negative_image_embeds)

    def _run_decoder(
        self,
        request: GenerationRequest,
        image_embeds: torch.Tensor,
        negative_image_embeds: torch.Tensor,
        generators: list[torch.Generator],
        on_step: StepCallback | None,
    ) -> list[Image.Image]:
        """All images in one decoder call, image i starting from its own generator's noise."""
        device, dtype = self.decoder.device, self.decoder.unet.dtype
        height, width = downscale_height_and_width(request.height, request.width, self.decoder.movq_scale_factor)
        shape = (1, self.decoder.unet.config.in_channels, height, width)
        latents = torch.cat(
            [randn_tensor(shape, generator=generator, device=device, dtype=dtype) for generator in generators]
        )
        output = self.decoder(
            image_embeds=image_embeds.to(device, dtype),
            negative_image_embeds=negative_image_embeds.to(device, dtype),
            height=request.height,
            width=request.width,
            num_inference_steps=request.num_inference_steps,
            guidance_scale=request.guidance_scale,
            # One embedding per image is passed already; this also avoids the crash at guidance_scale <= 1 with
            # num_images_per_prompt > 1 (diffusers issue #13596).
            num_images_per_prompt=1,
            generator=generators,
            latents=latents,
            output_type="pil",
            callback_on_step_end=self._decoder_callback(on_step, request.num_inference_steps),
        )
        return [_exact_size(image, request.width, request.height) for image in output.images]

    def _decoder_callback(self, on_step: StepCallback | None, total: int) -> PipelineCallback | None:
        """Report each decoder step, with a preview of the first image every `preview_every` steps (not the last)."""
        if on_step is None:
            return None

        def callback(pipeline: Any, index: int, timestep: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
            step = index + 1
            wants_preview = self.preview_every > 0 and step % self.preview_every == 0 and step < total
            preview = (
                latents_to_pil(self.decoder, tensors["latents"], PREVIEW_MAX_LATENT_SIDE) if wants_preview else None
            )
            on_step(StepUpdate("decoder", step, total, preview))
            return {}

        return callback

    def _synchronize(self) -> None:
        """Wait for queued GPU work, so the prior's time is not counted as the decoder's."""
        if self.decoder.device.type == "cuda":
            torch.cuda.synchronize(self.decoder.device)


PipelineCallback = Callable[[Any, int, Any, dict[str, torch.Tensor]], dict[str, Any]]


def _prior_callback(on_step: StepCallback | None, done_before: int, total: int) -> PipelineCallback | None:
    """Report prior steps counted over all images' prior calls, so the step number only grows."""
    if on_step is None:
        return None

    def callback(pipeline: Any, index: int, timestep: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        on_step(StepUpdate("prior", done_before + index + 1, total))
        return {}

    return callback


def _exact_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """The image in RGB at exactly width x height (the pipeline rounds sizes up to multiples of 64)."""
    image = image.convert("RGB")
    return image if image.size == (width, height) else image.resize((width, height), Image.Resampling.LANCZOS)


def _where(location: str) -> str:
    """Where a pipeline loads from, said for the banner: a hub id may mean a long first download."""
    if Path(location).is_dir():
        return f"from {location}"
    return f"({location}, from the local cache)"


def _status_reporter(on_status: Callable[[str], None] | None) -> Callable[[str], None]:
    """Log a loading step and pass it to `on_status` (the page's banner)."""

    def say(message: str) -> None:
        logger.info(message)
        if on_status is not None:
            on_status(message)

    return say


def load_generator(settings: Settings, on_status: Callable[[str], None] | None = None) -> KandinskyGenerator:
    """Decide which model to load and load it: what app.py runs in a background thread."""
    _status_reporter(on_status)("Choosing the model…")
    source = resolve_model_source(settings)
    if source.reason:
        logger.warning(source.reason)
    adapters = parse_adapter_specs(settings.lora)
    return KandinskyGenerator.load(source, preview_every=settings.preview_every, on_status=on_status, adapters=adapters)
