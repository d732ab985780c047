"""The model: loading Kandinsky 2.2's prior and decoder pipelines (from where `sources` says), and generating."""

from __future__ import annotations

import atexit
import copy
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline, downscale_height_and_width
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from mascot.generation.adapter_files import AdapterError
from mascot.generation.adapters import (
    AdapterSpec,
    load_adapter,
    loaded_adapters,
    parse_adapter_specs,
    set_adapter_scale,
)
from mascot.generation.compile_process import (
    CHILD_NICENESS,
    BuildTargets,
    Child,
    ChildCompile,
    split_buckets,
    start_child,
    stop_children,
    warm_after_children,
)
from mascot.generation.download import local_copy
from mascot.generation.generator import (
    BatchItem,
    CompileProgress,
    GeneratedImages,
    GenerationCancelled,
    ModelInfo,
    PromptUse,
    Stage,
    StepCallback,
    StepUpdate,
    batch_key,
    ran_out_of_gpu_memory,
)
from mascot.generation.packages import PackagedModels
from mascot.generation.precision import PrecisionUnsupported, lower_precision
from mascot.generation.sources import ModelSource, resolve_model_source
from mascot.generation.speed import (
    CompileConfig,
    CompiledModels,
    DecodedSoFar,
    LinearPreview,
    LogoEmbeddings,
    PreviewStream,
    StagedModels,
    buckets_for,
    decode_chunk_size,
    decode_key,
    decode_to_pixels,
    decoder_key,
    host_step_scheduler,
    image_generators,
    movq_decoder,
    pixels_to_pil,
    prior_key,
    twin,
    wait_for_queued_work,
)
from mascot.generation.turns import ModelsTurn
from mascot.prompt.request import MAX_SEED, GenerationRequest
from mascot.settings import Settings, SpeedOptions

logger = logging.getLogger(__name__)


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


def latents_to_pil_images(
    decoder: KandinskyV22Pipeline, latents: torch.Tensor, max_latent_side: int | None = None
) -> list[Image.Image]:
    """`latents` decoded by MoVQ in one call, post-processed like the pipeline's own output.

    With `max_latent_side`, larger latents are shrunk first: a rough preview costs a fraction of a full decode
    (the MoVQ decode dominates a preview, and on a CPU it costs more than the denoising steps it shows).
    """
    if max_latent_side is not None and max(latents.shape[-2:]) > max_latent_side:
        scale = max_latent_side / max(latents.shape[-2:])
        latents = torch.nn.functional.interpolate(latents, scale_factor=scale, mode="bilinear", antialias=True)
    return pixels_to_pil(decoder.movq.decode(latents, force_not_quantize=True).sample)


class KandinskyGenerator:
    """Kandinsky 2.2 as a `Generator`: the prior and the decoder pipelines, called separately."""

    def __init__(
        self,
        prior: KandinskyV22PriorPipeline,
        decoder: KandinskyV22Pipeline,
        info: ModelInfo,
        *,
        preview_every: int = 5,
        adapters: Sequence[AdapterSpec] = (),
        speed: SpeedOptions | None = None,
    ) -> None:
        self.prior = prior
        self.decoder = decoder
        self.info = info
        self.preview_every = preview_every
        self.adapters = tuple(adapters)  # loaded into the pipelines' models already (see `load`)
        self.speed = speed or SpeedOptions.plain()  # the plain path unless asked: what the fast parts are checked on
        # One generation at a time on the models; loading compiled code only between generations.
        self.turn = ModelsTurn()
        # Prompts are measured before a run takes the lock (`_plan`), while another run or a warm-up stage may be
        # encoding one. A fast tokenizer's padding and truncation are settings that each call writes: shared between
        # threads, one call pads the other's way and the prior fails ("Expected size 77 but got size 8"). So the
        # measuring has a tokenizer of its own, one thread at a time (handlers that run their own runs, as in the
        # ZeroGPU mode off ZeroGPU hardware, plan side by side).
        self._prompt_tokenizer = copy.deepcopy(prior.tokenizer)
        self._prompt_tokenizer_lock = threading.Lock()
        self._adapter_on = False
        # Pipelines of their own for the fast schedulers, so the plain ones (and anyone sharing them) are unchanged.
        if self.speed.host_scheduler:
            self._fast_decoder = twin(decoder, scheduler=host_step_scheduler(decoder.scheduler))
            self._fast_prior = twin(prior, scheduler=host_step_scheduler(prior.scheduler))
        else:
            self._fast_decoder, self._fast_prior = decoder, prior
            decoder.set_progress_bar_config(disable=True)
        self.linear_preview = (
            LinearPreview.fitted_to(decoder.movq, decoder.movq_scale_factor) if self.speed.linear_previews else None
        )
        self.logos = LogoEmbeddings(prior, decoder.device, cache=self.speed.cache_logo_embeddings)
        self.compiled: StagedModels | None = None
        self.compile_children: list[Child] = []  # the processes compiling for us, when compiling is done apart
        self._stop_compiling = threading.Event()

    @property
    def fast_decoder(self) -> KandinskyV22Pipeline:
        """The decoder pipeline the fast path runs (its own scheduler): what gets compiled."""
        return self._fast_decoder

    @property
    def fast_prior(self) -> KandinskyV22PriorPipeline:
        """The prior pipeline the fast path runs (its own scheduler): what gets compiled."""
        return self._fast_prior

    def park_image_encoder(self) -> None:
        """Keep the image encoder (1.8 B parameters) on the CPU; it visits the GPU only to embed a new logo."""
        with self.turn.alone():
            self.prior.image_encoder.to("cpu")
            if self.decoder.device.type == "cuda":
                # Inside the turn: returning memory to the device is invalid while one of its streams captures a
                # CUDA graph, as a stage loading compiled code here does (its turns exclude this one).
                torch.cuda.empty_cache()

    def start_compiling(
        self,
        config: CompileConfig,
        sizes: Sequence[int],
        batch_images: Sequence[int],
        *,
        build_in_child: BuildTargets | None = None,
        processes: int = 1,
        niceness: int = CHILD_NICENESS,
    ) -> None:
        """Compile the models for each size and images-per-run bucket in the background; until a bucket is warm its
        runs stay eager.

        With `build_in_child`, the compiling happens in `processes` child processes (each builds the models with it)
        that fill the persistent cache; each bucket is then loaded from the cache here, one stage at a time between
        generations (`ModelsTurn.between_runs`), so a generation never shares this process with a compile. Without
        it, a thread here compiles while generations run (dynamo holds the GIL, so they slow down meanwhile)."""
        buckets = buckets_for(sizes, batch_images)
        if build_in_child is None:
            with self.turn.alone():  # making them switches the models' LoRA strengths to tensors: not during a run
                compiled = CompiledModels(self._fast_prior, self._fast_decoder, replace(config, packages=False))
                compiled.plan(buckets)
                self.compiled = compiled
            compiled.warm_in_background(buckets, self._stop_compiling)
            return
        # Packages only come from a child: compiled here, they would be traced here all the same.
        models = PackagedModels if config.packages else CompiledModels
        with self.turn.alone():
            staged = models(self._fast_prior, self._fast_decoder, config)
            staged.plan(buckets)
            self.compiled = staged
        folder = Path(tempfile.mkdtemp(prefix="compile-", dir=_work_folder(config)))
        # At exit too: a drain does not wait for the warm-up thread, which removes it when it ends.
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        try:
            for index, part in enumerate(split_buckets(buckets, processes)):
                work = ChildCompile(build_in_child, config, part, folder / f"report-{index}.json", niceness)
                self.compile_children.append(start_child(work, folder))  # each kept as it starts: stoppable
        except BaseException:  # the children started so far are stopped by the caller (speed_up: stop_compiling)
            shutil.rmtree(folder, ignore_errors=True)  # a work order half written holds the settings
            raise
        self.compiled.thread = threading.Thread(
            target=warm_after_children,
            args=(self.compiled, self.compile_children, self.turn.between_runs, self._stop_compiling, folder),
            name="compile-warm-up",
            daemon=True,
        )
        self.compiled.thread.start()

    def compile_progress(self) -> CompileProgress | None:
        """How far compiling is, per bucket (the health check's "compiled"); None when compiling is off."""
        compiled = self.compiled
        return compiled.progress() if compiled is not None else None

    def stop_compiling(self, timeout: float = 10.0) -> None:
        """End the compile children and the warm-up thread (a stage being compiled or loaded finishes first, within
        `timeout` seconds)."""
        self._stop_compiling.set()
        stop_children([child.process for child in self.compile_children])
        if self.compiled is not None and self.compiled.thread is not None:
            self.compiled.thread.join(timeout)

    @classmethod
    def load(
        cls,
        source: ModelSource,
        *,
        device: str | None = None,
        preview_every: int = 5,
        on_status: Callable[[str], None] | None = None,
        adapters: Sequence[AdapterSpec] = (),
        speed: SpeedOptions | None = None,
        compile_cache: Path | None = None,
        build_in_child: BuildTargets | None = None,
    ) -> KandinskyGenerator:
        """Load both pipelines with `from_pretrained`: fp16 on CUDA, fp32 on CPU; then the LoRA `adapters`, each checked
        to have really loaded, and all left off until `select_adapter` picks one."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        say = _status_reporter(on_status)
        prior_folder = local_copy(source.prior, "the prior", say)
        decoder_folder = local_copy(source.decoder, "the decoder", say)
        quiet_loading()
        say(f"Loading the prior {_where(source.prior)}…")
        prior = ZeroEmbedCachingPriorPipeline.from_pretrained(
            prior_folder, dtype=dtype, image_processor=pil_image_processor(prior_folder)
        ).to(device)
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
            sampler=type(decoder.scheduler).__name__,
        )
        generator = cls(prior, decoder, info, preview_every=preview_every, adapters=adapters, speed=speed)
        generator.speed_up(device, compile_cache, build_in_child, on_status=say)
        say(f"{source.name} is ready on {device}.")
        return generator

    def speed_up(
        self,
        device: str,
        compile_cache: Path | None = None,
        build_in_child: BuildTargets | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        """The fast parts that act on the loaded models: lower their precision when asked, park the image encoder,
        start compiling (both GPU only unless asked), in a child process when `build_in_child` is given and the
        settings and the GPU allow it."""
        if self.speed.lower_precision:
            self.lower_precision(self.speed.lower_precision, device, _status_reporter(on_status))
        if self.speed.offload_image_encoder and device.startswith("cuda"):
            self.park_image_encoder()
        if not self.speed.compiles_on(device):
            return
        threads = self.speed.compile_threads or max(1, (os.cpu_count() or 2) // 2)
        packages = self.speed.compile_packages
        if device.startswith("cuda"):
            config = CompileConfig(cache_dir=compile_cache, threads=threads, packages=packages)
        else:
            config = CompileConfig("aot_eager", threads=threads, packages=packages)
        in_child = build_in_child if self.speed.compiles_apart(device, child_fits(device)) else None
        try:
            self.start_compiling(
                config, self.speed.compile_sizes, self.speed.compile_batch_images, build_in_child=in_child
            )
        except Exception:  # a cache folder that is a file or another's, a full disk: the eager path serves all the same
            logger.exception("compiling could not start; every size stays eager")
            self.stop_compiling(timeout=0)  # the compile processes started before the failure
            self.compiled = None

    def lower_precision(self, precision: str, device: str, say: Callable[[str], None]) -> None:
        """The UNet's and the prior's linear layers in `precision` (generation/precision.py), before anything is
        compiled; where this GPU cannot run it, the model keeps its precision and the log says why."""
        say(f"Lowering the model's precision to {precision}…")
        try:
            lowered = lower_precision([self.decoder.unet, self.prior.prior], precision, device)
        except PrecisionUnsupported as unsupported:
            logger.warning("%s The model keeps its precision.", unsupported)
            return
        logger.info("%d linear layers lowered to %s in %.1f s", lowered.layers, precision, lowered.seconds)

    @property
    def adapter_names(self) -> tuple[str, ...]:
        """The names of the loaded LoRA adapters (a name may stand for a decoder and a prior adapter together)."""
        return adapter_names(self.adapters)

    def select_adapter(self, name: str | None, scale: float = 1.0) -> None:
        """Use LoRA adapter `name` at `scale` for the next generations, in the decoder, the prior or both (wherever an
        adapter of that name is loaded); `None` or scale 0 gives the base model's output exactly."""
        with self.turn.alone():
            self._use_adapter(name, scale)

    def _use_adapter(self, name: str | None, scale: float) -> None:
        """`select_adapter` without the lock, for use inside a generation."""
        if name is not None and name not in self.adapter_names:
            loaded = ", ".join(repr(item) for item in self.adapter_names) or "none"
            raise AdapterError(f"There is no LoRA adapter named {name!r} (loaded: {loaded}).")
        for model in (self.decoder.unet, self.prior.prior):
            set_adapter_scale(model, name if name in loaded_adapters(model) else None, scale)
        self._adapter_on = name is not None and scale != 0

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None, logo: Image.Image | None = None
    ) -> GeneratedImages:
        """One request: its images' embeddings from one prior call, then all of its images in one decoder call.

        With a `logo`, each image's embedding is mixed with the logo's CLIP image embedding, weighted by
        `request.logo_weight`: what diffusers' `prior.interpolate` does with weights (1 - w, w), without its extra
        prior run for a negative embedding we already have. `on_step` may raise GenerationCancelled to stop.
        """
        (result,) = self.generate_batch([BatchItem(request, on_step, logo)])
        if result is None:
            raise GenerationCancelled
        return result

    def generate_batch(self, items: Sequence[BatchItem]) -> list[GeneratedImages | None]:
        """Several requests with one `batch_key` in one decoder run (image i of each still starts from its own seed's
        noise, so it matches the request run alone); the prior runs once per group of equal prior settings.

        A step callback that raises GenerationCancelled drops its own item (result `None`); the run stops early only
        when every item has been cancelled.
        """
        if len({batch_key(item.request) for item in items}) > 1:
            raise ValueError("generate_batch needs requests with the same batch_key (size, steps, guidance, LoRA).")
        plans = self._plans(items)
        with self.turn.for_run(functools.partial(_tell_waiting, plans)), torch.inference_mode():
            first = items[0].request
            self._use_adapter(first.adapter_name or None, first.lora_scale)
            for group in _prior_groups([plan for plan in plans if not plan.cancelled]):  # some left while waiting
                self._run_prior(group)
            live = [plan for plan in plans if not plan.cancelled]
            if live:
                self._run_decoder(live)
        return [plan.result() for plan in plans]

    def _plans(self, items: Sequence[BatchItem]) -> list[_Plan]:
        """Each item's plan, made before the run takes the lock (with the measuring tokenizer: see __init__)."""
        noise_device = self.decoder.device if self.speed.device_noise else torch.device("cpu")
        with self._prompt_tokenizer_lock:
            return [_plan(self._prompt_tokenizer, item, noise_device) for item in items]

    def image_embedding(self, image: Image.Image) -> torch.Tensor:
        """The CLIP image embedding of `image` (the prior's image encoder), shape [1, D], on the prior's device."""
        return self.logos.embedding(image)

    def _compiled_for(self, key: tuple[Any, ...]) -> StagedModels | None:
        """The compiled models when they are warm for `key` and can run the chosen LoRA adapter, if any (they can
        unless an adapter is of a kind whose strength cannot be a tensor: strengths.py)."""
        compiled = self.compiled
        if compiled is None or (self._adapter_on and not compiled.serves_adapters) or not compiled.ready(key):
            return None
        return compiled

    def _run_prior(self, group: list[_Plan]) -> None:
        """The embeddings of every image of `group` (equal prior settings) from one prior call, logos mixed in.

        Each image has its own generator. With a negative prompt the prior also denoises the negative's rows
        (prompts first, then negatives): image i's generator is listed for both of its rows, so it draws its prompt
        row's noise and then its negative row's, in the order a call for that image alone draws them.
        """
        request = group[0].item.request
        prompts = [plan.prompt.used for plan in group for _ in plan.seeds]
        negatives = [plan.negative_prompt.used for plan in group for _ in plan.seeds]
        generators = [generator for plan in group for generator in plan.generators]
        with_negative = bool(group[0].negative_prompt.used)
        compiled = self._compiled_for(prior_key(len(prompts), request.prior_guidance_scale > 1, with_negative))
        prior = compiled.prior if compiled is not None else self._fast_prior
        started = time.perf_counter()
        try:
            output = prior(
                prompt=prompts,
                negative_prompt=negatives if with_negative else None,
                num_images_per_prompt=1,
                num_inference_steps=request.prior_num_inference_steps,
                generator=generators + generators if with_negative else generators,
                guidance_scale=request.prior_guidance_scale,
                callback_on_step_end=_progress_callback(group, "prior", request.prior_num_inference_steps),
            )
        except GenerationCancelled:  # everyone in this group cancelled; other groups go on
            return
        wait_for_queued_work(self.decoder.device)  # so the prior's time is not counted as the decoder's
        seconds = time.perf_counter() - started
        offset = 0
        for plan in group:
            rows = slice(offset, offset + len(plan.seeds))
            offset = rows.stop
            image_embeds = output.image_embeds[rows]
            if plan.item.logo is not None:
                logo_embed = self.image_embedding(plan.item.logo).to(image_embeds.device)
                image_embeds = mix_embeddings(image_embeds, logo_embed, plan.item.request.logo_weight)
            plan.image_embeds, plan.negative_image_embeds = image_embeds, output.negative_image_embeds[rows]
            plan.prior_seconds = seconds

    def _run_decoder(self, plans: list[_Plan]) -> None:
        """All images of `plans` in one decoder call, each image starting from its own generator's noise."""
        speed = self.speed
        if not (speed.host_scheduler or speed.linear_previews or speed.decode_at_once or self.compiled is not None):
            self._run_plain_decoder(plans)
        else:
            self._run_fast_decoder(plans)

    def _run_plain_decoder(self, plans: list[_Plan]) -> None:
        """The decoder as plain diffusers runs it: MoVQ decodes every image in the pipeline, previews by MoVQ."""
        request = plans[0].item.request
        device, dtype = self.decoder.device, self.decoder.unet.dtype
        height, width = downscale_height_and_width(request.height, request.width, self.decoder.movq_scale_factor)
        shape = (1, self.decoder.unet.config.in_channels, height, width)
        generators = [generator for plan in plans for generator in plan.generators]
        latents = torch.cat(
            [randn_tensor(shape, generator=generator, device=device, dtype=dtype) for generator in generators]
        )
        started = time.perf_counter()
        try:
            output = self.decoder(
                image_embeds=torch.cat([plan.embeds()[0] for plan in plans]).to(device, dtype),
                negative_image_embeds=torch.cat([plan.embeds()[1] for plan in plans]).to(device, dtype),
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
                callback_on_step_end=_progress_callback(
                    plans, "decoder", request.num_inference_steps, self._previewer(request.num_inference_steps)
                ),
            )
        except GenerationCancelled:  # every item cancelled
            return
        _hand_out(plans, output.images, request, time.perf_counter() - started)

    def _run_fast_decoder(self, plans: list[_Plan]) -> None:
        """The decoder with the fast parts on: the compiled UNet once warm, host-side scheduler steps, linear
        previews, and MoVQ decoding outside the pipeline (compiled, and one image at a time when memory is tight)."""
        request = plans[0].item.request
        generators = [generator for plan in plans for generator in plan.generators]
        guided = request.guidance_scale > 1
        compiled = self._compiled_for(decoder_key(request.height, request.width, len(generators), guided))
        pipeline = compiled.decoder if compiled is not None else self._fast_decoder
        device, dtype = self.decoder.device, self.decoder.unet.dtype
        height, width = downscale_height_and_width(request.height, request.width, self.decoder.movq_scale_factor)
        shape = (1, self.decoder.unet.config.in_channels, height, width)
        latents = torch.cat(
            [randn_tensor(shape, generator=generator, device=device, dtype=dtype) for generator in generators]
        )
        started = time.perf_counter()
        try:
            latents = pipeline(
                image_embeds=torch.cat([plan.embeds()[0] for plan in plans]).to(device, dtype),
                negative_image_embeds=torch.cat([plan.embeds()[1] for plan in plans]).to(device, dtype),
                height=request.height,
                width=request.width,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale,
                num_images_per_prompt=1,  # as in the plain path (diffusers issue #13596)
                generator=generators,
                latents=latents,
                output_type="latent",
                callback_on_step_end=_progress_callback(
                    plans, "decoder", request.num_inference_steps, self._fast_previewer(request)
                ),
            ).images
        except GenerationCancelled:  # every item cancelled
            return
        pixels = self._decode(latents, request)
        if self.linear_preview is not None:
            self.linear_preview.observe(latents, pixels, self.decoder.movq_scale_factor)  # a free, real fitting pair
        _hand_out(plans, pixels_to_pil(pixels), request, time.perf_counter() - started)

    def _decode(self, latents: torch.Tensor, request: GenerationRequest) -> torch.Tensor:
        """MoVQ's pixels of `latents`: compiled once warm for the chunk size, one image at a time when memory is
        tight, or when decoding several at once ran out of it (the free-memory check is an estimate: losing a whole
        run's steps to it would lose every person's mascots in the run)."""
        count = latents.shape[0]
        warm = self._compiled_for(decode_key(request.height, request.width, count))
        if self.speed.decode_at_once <= 0 and warm is not None and warm.replays_cuda_graphs:
            chunk = count  # a warm compiled decode of them all replays in its CUDA graph's own memory: no check
        else:
            chunk = decode_chunk_size(count, request.width * request.height, latents.device, self.speed.decode_at_once)
        eager = movq_decoder(self.decoder.movq)

        def decode(part: torch.Tensor) -> torch.Tensor:
            # Chosen per call: the last chunk may be smaller, a shape of its own that no warm-up may have run (the
            # compiled decode would compile, and record a CUDA graph, in the middle of this run).
            compiled = self._compiled_for(decode_key(request.height, request.width, part.shape[0]))
            return (compiled.decode if compiled is not None else eager)(part)

        so_far = DecodedSoFar()
        try:
            return decode_to_pixels(decode, latents, chunk, so_far)
        except Exception as error:
            if min(chunk, count) <= 1 or not ran_out_of_gpu_memory(error):
                raise
            logger.warning(
                "decoding %d images %d at a time ran out of GPU memory: decoding the %d left one at a time",
                count,
                chunk,
                count - so_far.images,
            )
        # Retried outside the `except`: its traceback would keep the failed attempt's tensors alive. The chunks
        # already decoded are kept: only the rest are decoded again.
        return decode_to_pixels(decode, latents, 1, so_far)

    def _previewer(self, total: int) -> Previewer | None:
        """Every `preview_every` decoder steps (not the last), rough previews of chosen rows of the latents."""
        if self.preview_every <= 0:
            return None

        def previews(step: int, latents: torch.Tensor, rows: list[int]) -> list[Image.Image] | None:
            if step % self.preview_every or step >= total:
                return None
            return latents_to_pil_images(self.decoder, latents[rows], PREVIEW_MAX_LATENT_SIDE)

        return previews

    def _fast_previewer(self, request: GenerationRequest) -> Previewer | None:
        """Previews from the linear latent-to-RGB map, handed over without waiting for the GPU; MoVQ when it is off."""
        if self.linear_preview is None:
            return self._previewer(request.num_inference_steps)
        if self.preview_every <= 0:
            return None
        linear, total = self.linear_preview, request.num_inference_steps
        scale = self.decoder.movq_scale_factor
        side = max(request.width, request.height) // scale
        shrink = min(1.0, PREVIEW_MAX_LATENT_SIDE / side)
        size = (round(request.width * shrink), round(request.height * shrink))
        stream = PreviewStream(size)

        def previews(step: int, latents: torch.Tensor, rows: list[int]) -> list[Image.Image] | None:
            if step % self.preview_every == 0 and step < total:
                stream.push(linear.rgb(latents[rows]))
            return stream.pop_ready()

        return previews


@dataclass(eq=False)
class _Plan:
    """One request's part of a run: what its prompts became, its images' generators, and what it has got so far."""

    item: BatchItem
    prompt: PromptUse
    negative_prompt: PromptUse
    seeds: list[int]
    generators: list[torch.Generator]
    cancelled: bool = False
    image_embeds: torch.Tensor | None = None
    negative_image_embeds: torch.Tensor | None = None
    images: list[Image.Image] = field(default_factory=list)
    prior_seconds: float = 0.0
    decoder_seconds: float = 0.0

    def embeds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The image and negative embeddings the prior gave this plan; the decoder runs only on plans it filled."""
        if self.image_embeds is None or self.negative_image_embeds is None:
            raise RuntimeError("The decoder ran before the prior filled this plan's embeddings.")
        return self.image_embeds, self.negative_image_embeds

    def report(self, update: StepUpdate) -> None:
        """Pass a step on to the request's callback; one that raises GenerationCancelled cancels this plan only."""
        if self.cancelled or self.item.on_step is None:
            return
        try:
            self.item.on_step(update)
        except GenerationCancelled:
            self.cancelled = True

    def result(self) -> GeneratedImages | None:
        """The finished images, or None when the request was cancelled."""
        if self.cancelled or not self.images:
            return None
        return GeneratedImages(
            images=self.images,
            seeds=self.seeds,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            prior_seconds=self.prior_seconds,
            decoder_seconds=self.decoder_seconds,
        )


def _tell_waiting(plans: list[_Plan]) -> None:
    """Tell each person of a run that it waits for a stage of loading compiled code (stage "waiting"): a stage can
    take seconds, and "Starting…" would look stuck meanwhile."""
    for plan in plans:
        plan.report(StepUpdate("waiting", 0, 0))


def _plan(tokenizer: Any, item: BatchItem, noise_device: torch.device | None = None) -> _Plan:
    """A request's prompts as the text encoder will see them, and one generator per image: on the CPU by default
    (the same seed gives the same noise on any device), on `noise_device` for the fast path (no per-step copies)."""
    seeds = seeds_for(item.request)
    return _Plan(
        item=item,
        prompt=truncate_prompt(tokenizer, item.request.prompt),
        negative_prompt=truncate_prompt(tokenizer, item.request.negative_prompt),
        seeds=seeds,
        generators=image_generators(seeds, noise_device or torch.device("cpu")),
    )


def _prior_groups(plans: list[_Plan]) -> list[list[_Plan]]:
    """Plans that can share a prior call: equal prior steps and guidance, and all with or all without a negative
    prompt (without one, the negative embedding is the zero image's rather than the prior's)."""
    groups: dict[tuple[int, float, bool], list[_Plan]] = {}
    for plan in plans:
        request = plan.item.request
        key = (request.prior_num_inference_steps, request.prior_guidance_scale, bool(plan.negative_prompt.used))
        groups.setdefault(key, []).append(plan)
    return list(groups.values())


PipelineCallback = Callable[[Any, int, Any, dict[str, torch.Tensor]], dict[str, Any]]
Previewer = Callable[[int, torch.Tensor, list[int]], "list[Image.Image] | None"]


def pil_image_processor(prior_folder: str) -> Any:
    """The prior's CLIP image processor, its PIL implementation named outright. By its plain name transformers looks
    for torchvision, which we do not install (its wheel must match torch's exact build), warns at every start and
    falls back to this same class."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil.from_pretrained(prior_folder, subfolder="image_processor")


def quiet_loading() -> None:
    """No per-file progress bars in the log while the pipelines load: the banner and the log say each step once."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _progress_callback(
    plans: list[_Plan], stage: Stage, total: int, previewer: Previewer | None = None
) -> PipelineCallback:
    """A pipeline's step callback that reports to every plan still wanted (with a preview of its first image when
    `previewer` makes them), and stops the pipeline once none is."""

    first_rows = _first_rows(plans)

    def callback(pipeline: Any, index: int, timestep: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        step = index + 1
        live = [plan for plan in plans if not plan.cancelled]
        previews = previewer(step, tensors["latents"], [first_rows[id(plan)] for plan in live]) if previewer else None
        if previews is not None and len(previews) != len(live):  # a late preview from before someone cancelled
            previews = None
        for position, plan in enumerate(live):
            plan.report(StepUpdate(stage, step, total, previews[position] if previews else None))
        if all(plan.cancelled for plan in plans):
            raise GenerationCancelled
        return {}

    return callback


def _first_rows(plans: list[_Plan]) -> dict[int, int]:
    """The row of each plan's first image in the latents of a run over `plans` (keyed by id(plan))."""
    rows, offset = {}, 0
    for plan in plans:
        rows[id(plan)] = offset
        offset += len(plan.seeds)
    return rows


def _hand_out(plans: list[_Plan], images: list[Image.Image], request: GenerationRequest, seconds: float) -> None:
    """Give each plan its images, in order, at exactly the requested size."""
    images = [_exact_size(image, request.width, request.height) for image in images]
    for plan in plans:
        plan.images, images = images[: len(plan.seeds)], images[len(plan.seeds) :]
        plan.decoder_seconds = seconds


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


def child_fits(device: str) -> bool:
    """Whether a second copy of the loaded model, compiling, fits beside this one: the GPU's free memory is at least
    three times what this process holds (its weights, and room for the child's activations and our own runs')."""
    if not device.startswith("cuda"):
        return True
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return free >= 3 * torch.cuda.memory_allocated(torch.device(device))


def _work_folder(config: CompileConfig) -> Path:
    """Where the children's work orders and reports go: beside the compile cache (the data folder), else /tmp."""
    folder = config.cache_dir / "work" if config.cache_dir is not None else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def compile_targets(settings: Settings) -> tuple[KandinskyV22PriorPipeline, KandinskyV22Pipeline]:
    """In a compile process: the models as `load_generator(settings)` gives the serving process, without compiling
    there too (the same modules, adapters and devices, so the cache's keys are the same)."""
    speed = replace(settings.speed, compile=False)
    generator = load_generator(replace(settings, speed=speed))
    return generator.fast_prior, generator.fast_decoder


def load_generator(settings: Settings, on_status: Callable[[str], None] | None = None) -> KandinskyGenerator:
    """Decide which model to load and load it: what app.py runs in a background thread."""
    _status_reporter(on_status)("Choosing the model…")
    quiet_loading()  # before the tiny model may be built: its save_pretrained draws bars too
    source = resolve_model_source(settings)
    if source.reason:
        logger.warning(source.reason)
    adapters = parse_adapter_specs(settings.lora)
    if settings.default_lora and settings.default_lora not in adapter_names(adapters):
        # The settings checked the name a folder gives; torch alone knows the few names PEFT renames (eval_lora).
        loaded = ", ".join(adapter_names(adapters))
        raise AdapterError(f"--default-lora {settings.default_lora!r} is not a loaded adapter (loaded: {loaded}).")
    return KandinskyGenerator.load(
        source,
        preview_every=settings.preview_every,
        on_status=on_status,
        adapters=adapters,
        speed=settings.speed,
        compile_cache=settings.data_dir / "compile-cache",
        build_in_child=functools.partial(compile_targets, settings),
    )
