"""The fast path on the tiny model: each part gives the plain path's images (bit-equal where the maths is unchanged)."""

import contextlib
import dataclasses
import functools
import threading
import types
from collections.abc import Callable

import numpy as np
import pytest
import torch
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
from PIL import Image

from mascot.generation import model as model_module
from mascot.generation import speed
from mascot.generation.compile_process import split_buckets
from mascot.generation.generator import BatchItem, CompileProgress, GenerationCancelled, LogoOutOfMemory, StepUpdate
from mascot.generation.model import KandinskyGenerator
from mascot.generation.packages import Package, PackagedModels, PackageMismatch, signature, stage_name
from mascot.generation.speed import (
    CompileConfig,
    CompiledModels,
    HostStepDDPMScheduler,
    HostStepUnCLIPScheduler,
    compile_cache_lookups,
    decode_key,
    decoder_key,
    host_step_scheduler,
    pixels_to_pil,
    prior_key,
    use_compile_cache,
)
from mascot.generation.tiny import build_decoder_pipeline
from mascot.prompt.request import GenerationRequest
from mascot.settings import SettingsError, SpeedOptions, speed_options
from tests.support.cuda_waits import stream_waits_only
from tests.support.packages import count_package_calls

pytestmark = pytest.mark.slow  # the fast path against the plain one on the tiny pipeline

FAST = SpeedOptions(compile=False)  # every part the CPU can run: the app's defaults there


def small_request(**overrides) -> GenerationRequest:
    values = dict(
        prompt="an otter mascot",
        negative_prompt="blurry",
        seed=11,
        width=256,
        height=256,
        num_inference_steps=3,
        prior_num_inference_steps=2,
    )
    return GenerationRequest.from_user(**{**values, **overrides})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def max_difference(first: Image.Image, second: Image.Image) -> int:
    return int(np.abs(pixels(first) - pixels(second)).max())


def with_speed(generator: KandinskyGenerator, speed: SpeedOptions, preview_every: int = 0) -> KandinskyGenerator:
    return KandinskyGenerator(
        generator.prior, generator.decoder, generator.info, preview_every=preview_every, speed=speed
    )


@pytest.fixture(scope="module")
def fast_generator(tiny_generator):
    return with_speed(tiny_generator, FAST, preview_every=2)


def test_the_fast_path_makes_the_plain_paths_images_bit_for_bit(tiny_generator, fast_generator):
    request = small_request(num_images_per_prompt=2)
    plain = tiny_generator.generate(request)
    fast = fast_generator.generate(request)
    assert fast.seeds == plain.seeds
    assert [max_difference(a, b) for a, b in zip(fast.images, plain.images, strict=True)] == [0, 0]


def on_the_meta_device(timestep: torch.Tensor | None) -> torch.Tensor | None:
    """A timestep that holds no value: a scheduler that reads it (to index, compare or convert it) raises."""
    return None if timestep is None else torch.empty_like(timestep, device="meta")


def test_the_host_step_scheduler_steps_exactly_like_ddpm_without_reading_the_device_timestep(tiny_generator):
    stock = tiny_generator.decoder.scheduler
    host = host_step_scheduler(stock)
    assert isinstance(host, HostStepDDPMScheduler)
    stock.set_timesteps(4)
    host.set_timesteps(4)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    for t in stock.timesteps:
        output = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(int(t)))
        a = stock.step(output, t, sample, generator=torch.Generator().manual_seed(2)).prev_sample
        b = host.step(output, on_the_meta_device(t), sample, generator=torch.Generator().manual_seed(2)).prev_sample
        assert torch.equal(a, b)
        sample = a
    with pytest.raises((NotImplementedError, RuntimeError)):  # the stock one reads it: the check above can fail
        stock.step(output, on_the_meta_device(stock.timesteps[0]), sample)


def test_the_prior_host_step_scheduler_steps_exactly_like_unclip_without_reading_the_device_timestep(tiny_generator):
    """The prior pipeline's calls (each timestep in order, the next as `prev_timestep`, None at the last), with
    timesteps that hold no value, as device tensors the CPU never reads: the same samples as the stock scheduler."""
    stock = tiny_generator.prior.scheduler
    host = host_step_scheduler(stock)
    assert isinstance(host, HostStepUnCLIPScheduler)
    assert {**host.config, "_class_name": ""} == {**stock.config, "_class_name": ""}  # the same configuration
    stock.set_timesteps(5)
    host.set_timesteps(5, device="meta")
    assert host.timesteps.device.type == "meta" and host.timesteps.shape == stock.timesteps.shape
    timesteps = list(stock.timesteps)
    sample = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    for index, t in enumerate(timesteps):
        following = timesteps[index + 1] if index + 1 < len(timesteps) else None
        output = torch.randn(2, 32, generator=torch.Generator().manual_seed(int(t)))
        a = stock.step(output, t, sample, prev_timestep=following, generator=torch.Generator().manual_seed(2))
        b = host.step(output, on_the_meta_device(t), sample, prev_timestep=on_the_meta_device(following),
                      generator=torch.Generator().manual_seed(2))  # fmt: skip
        assert torch.equal(a.prev_sample, b.prev_sample)
        sample = a.prev_sample
    with pytest.raises((NotImplementedError, RuntimeError)):  # the stock one reads it: the check above can fail
        stock.step(output, on_the_meta_device(timesteps[0]), sample, prev_timestep=on_the_meta_device(timesteps[1]))


def test_the_fast_path_runs_both_host_step_schedulers_and_leaves_the_plain_pipelines_stock(tiny_generator):
    generator = with_speed(tiny_generator, FAST)
    assert isinstance(generator.fast_prior.scheduler, HostStepUnCLIPScheduler)
    assert isinstance(generator.fast_decoder.scheduler, HostStepDDPMScheduler)
    assert generator.fast_prior.prior is tiny_generator.prior.prior  # the same models: only the scheduler is its own
    assert type(tiny_generator.prior.scheduler).__name__ == "UnCLIPScheduler"
    assert type(tiny_generator.decoder.scheduler).__name__ == "DDPMScheduler"
    generator.start_compiling(CompileConfig(backend="eager"), sizes=[256], batch_images=[1])
    generator.compiled.thread.join(300)  # nothing left running for later tests
    assert isinstance(generator.compiled.prior.scheduler, HostStepUnCLIPScheduler)
    plain = with_speed(tiny_generator, SpeedOptions.plain())
    assert plain.fast_prior is tiny_generator.prior and plain.fast_decoder is tiny_generator.decoder


def test_a_run_cancelled_in_the_prior_leaves_the_next_ones_steps_as_the_plain_paths(tiny_generator, fast_generator):
    """The prior's host-step scheduler counts its steps: a run stopped after the first prior step must not leave the
    count behind for the next run (each prior call starts with set_timesteps, which resets it)."""

    def stop_in_the_prior(update: StepUpdate) -> None:
        if update.stage == "prior":
            raise GenerationCancelled

    request = small_request(prior_num_inference_steps=4)
    with pytest.raises(GenerationCancelled):
        fast_generator.generate(request, stop_in_the_prior)
    assert fast_generator.fast_prior.scheduler._step_calls == 1  # stopped mid-way: the count was left at 1
    assert max_difference(fast_generator.generate(request).images[0], tiny_generator.generate(request).images[0]) == 0


def test_image_i_of_a_fast_batch_is_seed_plus_i_run_alone(fast_generator):
    batch = fast_generator.generate(small_request(num_images_per_prompt=2, seed=40))
    alone = fast_generator.generate(small_request(seed=41)).images[0]
    assert batch.seeds == [40, 41]
    assert max_difference(batch.images[1], alone) <= 1  # batched and single runs agree within 1/255


def test_decoding_one_image_at_a_time_gives_the_same_images(tiny_generator):
    one_by_one = with_speed(tiny_generator, dataclasses.replace(FAST, decode_at_once=1))
    request = small_request(num_images_per_prompt=2, seed=5)
    plain = tiny_generator.generate(request).images
    assert max(max_difference(a, b) for a, b in zip(one_by_one.generate(request).images, plain, strict=True)) <= 1


@pytest.mark.parametrize(
    "out_of_memory",
    [
        lambda: torch.OutOfMemoryError("CUDA out of memory (in a test)"),
        lambda: RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    ],
    ids=["torch", "cublas"],
)
def test_a_decode_that_runs_out_of_memory_with_several_images_decodes_them_one_at_a_time(tiny_generator, out_of_memory):
    """The free-memory check before a decode is an estimate; when several images at once do not fit after all, the
    run's images are decoded one by one rather than the whole run failing."""
    generator = with_speed(tiny_generator, FAST)
    request = small_request()
    latents = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(4))
    movq, calls = speed.movq_decoder(generator.decoder.movq), []

    def decoding_at_most(images: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def decode(part: torch.Tensor) -> torch.Tensor:
            calls.append(len(part))
            if len(part) > images:
                raise out_of_memory()
            return movq(part)

        return decode

    generator.compiled = types.SimpleNamespace(
        ready=lambda key: True, serves_adapters=True, decode=decoding_at_most(1), replays_cuda_graphs=False
    )
    pixels = generator._decode(latents, request)
    assert calls == [3, 1, 1, 1]
    assert torch.equal(pixels, torch.cat([movq(latents[index : index + 1]) for index in range(3)]))

    generator.compiled.decode, calls[:] = decoding_at_most(0), []
    with pytest.raises(type(out_of_memory())):  # one image that does not fit: the run fails as it would have
        generator._decode(latents, request)
    with pytest.raises(type(out_of_memory())):  # a single image: nothing smaller to try
        generator._decode(latents[:1], request)
    assert calls == [3, 1, 1]


def test_a_decode_in_chunks_that_runs_out_of_memory_keeps_the_chunks_it_decoded(tiny_generator):
    """Decoding 2 at a time (MASCOT_DECODE_AT_ONCE=2), the second chunk runs out of memory: the first chunk's images
    are kept and only the rest are decoded again, one at a time."""
    generator = with_speed(tiny_generator, dataclasses.replace(FAST, decode_at_once=2))
    latents = torch.randn(5, 4, 32, 32, generator=torch.Generator().manual_seed(6))
    movq, calls = speed.movq_decoder(generator.decoder.movq), []

    def decode(part: torch.Tensor) -> torch.Tensor:
        calls.append(len(part))
        if len(calls) == 2:  # the second call of two images: memory has run short since the first
            raise torch.OutOfMemoryError("CUDA out of memory (in a test)")
        return movq(part)

    generator.compiled = types.SimpleNamespace(
        ready=lambda key: True, serves_adapters=True, decode=decode, replays_cuda_graphs=False
    )
    pixels = generator._decode(latents, small_request())
    assert calls == [2, 2, 1, 1, 1]  # images 0-1 once; 2 and 3 failed together, then 2, 3 and 4 alone
    expected = torch.cat([movq(latents[:2]), *(movq(latents[index : index + 1]) for index in range(2, 5))])
    assert torch.equal(pixels, expected)  # the first two as decoded together, the rest one by one


@pytest.mark.parametrize(
    ("replays_cuda_graphs", "warm_for", "calls_expected"),
    [(True, {1, 3}, [3]), (False, {1, 3}, [1, 1, 1]), (True, {1}, [1, 1, 1])],
)
def test_a_warm_decode_that_replays_a_cuda_graph_decodes_every_image_at_once_whatever_memory_is_free(
    tiny_generator, monkeypatch, replays_cuda_graphs, warm_for, calls_expected
):
    """A CUDA graph's replay runs in its own pool's memory, reserved when it was recorded: the free-memory check,
    which would say one image at a time here, is for the eager decode and for loaded packages, which allocate."""
    generator = with_speed(tiny_generator, FAST)
    latents = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(model_module, "decode_chunk_size", lambda count, pixels, device, setting: 1)
    movq, calls = speed.movq_decoder(generator.decoder.movq), []

    def decode(part: torch.Tensor) -> torch.Tensor:
        calls.append(len(part))
        return movq(part)

    generator.compiled = types.SimpleNamespace(
        ready=lambda key: key[0] == "decode" and key[-1] in warm_for,
        serves_adapters=True,
        decode=decode,
        replays_cuda_graphs=replays_cuda_graphs,
    )
    generator._decode(latents, small_request())
    assert calls == calls_expected


def test_waiting_for_a_run_waits_for_this_threads_stream_not_the_device(monkeypatch):
    """A device-wide synchronize is invalid while another thread captures a CUDA graph (the compile's warm-up on a
    thread of the serving process): the prior's timing waits on the current stream alone."""
    waited = stream_waits_only(monkeypatch)
    speed.wait_for_queued_work(torch.device("cuda", 0))
    speed.wait_for_queued_work(torch.device("cpu"))  # nothing queued elsewhere: no wait
    assert waited == [torch.device("cuda", 0)]


def test_parking_the_image_encoder_hands_its_memory_back_inside_the_models_turn(fast_generator, monkeypatch):
    """Handing memory back to the device is invalid while one of its streams captures a CUDA graph, as a stage loading
    compiled code does between runs: the park's empty_cache holds the models' turn, which such stages take too."""
    held: list[bool] = []
    monkeypatch.setattr(type(fast_generator.decoder), "device", property(lambda _pipeline: torch.device("cuda")))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: held.append(fast_generator.turn._lock.locked()))
    fast_generator.park_image_encoder()
    assert held == [True] and fast_generator.prior.image_encoder.device.type == "cpu"


def test_a_decode_counts_the_memory_torch_holds_unused_as_free_except_in_cuda_graph_pools(monkeypatch):
    """After a run the allocator keeps the step loop's memory for reuse: the driver calls it taken, the decode may
    use it. Memory a CUDA graph's private pool holds unused is no use to the decode's eager tensors, though
    `memory_reserved()` counts it. 8 images at 768² need about 14.5 GB of activations."""
    gib = 2**30
    segments: list[dict] = []

    def segment(pool: tuple[int, int], total: int, active: int, device: int = 0) -> dict:
        return {"device": device, "segment_pool_id": pool, "total_size": total, "active_size": active}

    # A consistent stand-in allocator: what it reserves and what its tensors use are its segments' sums.
    snapshots: list[bool] = []

    def memory_snapshot(include_traces: bool = True) -> list[dict]:
        snapshots.append(include_traces)
        return segments

    monkeypatch.setattr(torch.cuda, "memory_snapshot", memory_snapshot)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: sum(s["total_size"] for s in segments))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: sum(s["active_size"] for s in segments))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * gib, 80 * gib))
    cuda = torch.device("cuda", 0)
    weights = segment((0, 0), 10 * gib, 10 * gib)

    segments[:] = [weights, segment((0, 0), 20 * gib, 0)]  # the step loop's 20 GiB, freed
    assert speed.decode_chunk_size(8, 768 * 768, cuda, 0) == 8
    segments[:] = [weights, segment((0, 0), 1 * gib, 0)]  # 1 GiB held unused: 3 GiB in all
    assert speed.decode_chunk_size(8, 768 * 768, cuda, 0) == 1
    assert speed.decode_chunk_size(8, 768 * 768, cuda, 2) == 2  # MASCOT_DECODE_AT_ONCE decides when set
    # Compiled: 20 GiB unused in a graph's pool, 1 GiB in the default one; another card's memory is not this one's.
    segments[:] = [weights, segment((0, 1), 20 * gib, 2 * gib), segment((0, 0), 1 * gib, 0)]
    segments.append(segment((0, 0), 20 * gib, 0, device=1))
    assert speed.decode_chunk_size(8, 768 * 768, cuda, 0) == 1
    segments[:] = [weights, segment((0, 1), 20 * gib, 2 * gib), segment((0, 0), 20 * gib, 0)]
    assert speed.decode_chunk_size(8, 768 * 768, cuda, 0) == 8
    # Taken without an operator's recorded history (and not for the 1 GiB case: too little in any pool).
    assert snapshots == [False] * 3

    # The snapshot walks every block: it is taken only when the driver's and the allocator's counts leave it open.
    snapshots.clear()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (20 * gib, 80 * gib))
    assert speed.decode_chunk_size(8, 768 * 768, cuda, 0) == 8  # the driver's free memory is enough
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * gib, 80 * gib))
    segments[:] = [weights, segment((0, 1), 4 * gib, 2 * gib), segment((0, 0), 1 * gib, 0)]
    assert speed.decode_chunk_size(8, 768 * 768, cuda, 0) == 1  # not enough even with every pool's
    assert snapshots == []
    # A torch whose memory_snapshot takes no include_traces still answers.
    monkeypatch.setattr(torch.cuda, "memory_snapshot", lambda: segments)
    segments[:] = [weights, segment((0, 0), 20 * gib, 0)]
    assert speed.decode_chunk_size(8, 768 * 768, cuda, 0) == 8


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_a_decode_in_chunks_keeps_each_chunk_when_the_next_call_reuses_its_output_memory(chunk):
    """Compiled with CUDA graphs, each call of the decode writes into the same memory (the graph's); its outputs must
    be copied out before the next call, or every chunk reads as the last one."""
    latents = torch.arange(5 * 4 * 2 * 2, dtype=torch.float32).reshape(5, 4, 2, 2)
    graph_memory: dict[int, torch.Tensor] = {}

    def replayed_decode(part: torch.Tensor) -> torch.Tensor:  # like a CUDA graph replay: one output buffer per shape
        output = graph_memory.setdefault(part.shape[0], torch.empty(part.shape[0], 3, 4, 4))
        output.copy_(part[:, :3].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
        return output

    pixels = speed.decode_to_pixels(replayed_decode, latents, chunk)

    expected = latents[:, :3].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert pixels.shape == (5, 3, 4, 4) and torch.equal(pixels, expected)
    assert all(pixels.data_ptr() != buffer.data_ptr() for buffer in graph_memory.values())  # not the graph's memory


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_pixels_become_the_pipelines_own_pil_images_bit_for_bit(dtype):
    """The fast path's rounding on the pixels' device equals the pipeline's post-processing on the host (scale,
    clamp, float32, x 255, round half to even, cast), out-of-range values and every 0-255 boundary included."""
    generator = torch.Generator().manual_seed(3)
    pixels = torch.rand(3, 3, 64, 96, generator=generator) * 2.4 - 1.2  # beyond [-1, 1] too: clamped
    pixels[0, 0, 0, :6] = torch.tensor([-1.0, 1.0, 0.0, -2.0, 2.0, -0.0])
    pixels[1, 0] = (torch.arange(64 * 96).reshape(64, 96) % 512) / 255.5 - 1  # near each k + 0.5 of 0-255
    pixels = pixels.to(dtype)
    stock = (pixels * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()  # KandinskyV22Pipeline's own

    images = pixels_to_pil(pixels)

    expected = KandinskyV22Pipeline.numpy_to_pil(stock)
    assert [image.mode for image in images] == ["RGB"] * 3 and images[0].size == (96, 64)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(images, expected, strict=True))


def test_the_linear_preview_keeps_its_weight_where_previews_are_made_and_follows_each_refit():
    """The weight is copied to the previews' device once per fit (after a run), not at each preview (on a GPU a copy
    from the host makes the CPU wait in the step loop); a preview after a refit uses the new weight."""
    torch.manual_seed(0)
    preview = speed.LinearPreview(4)
    latents = torch.randn(1, 4, 8, 8)
    preview.observe(latents, torch.rand(1, 3, 64, 64) * 2 - 1, 8)
    first = preview.rgb(latents)
    kept = preview._on_devices[latents.device]
    assert preview.rgb(latents).equal(first) and preview._on_devices[latents.device] is kept  # no new copy

    preview.observe(latents, -torch.ones(1, 3, 64, 64), 8)  # a fit towards black: the map changes
    refit = preview.rgb(latents)
    expected = speed.pixels_to_bytes(speed._with_bias(latents) @ preview.weight)
    assert refit.equal(expected) and not refit.equal(first)


def test_a_decode_with_a_non_finite_pixel_leaves_the_linear_preview_as_it_was():
    """One overflowed decode (fp16) folded into the running sums would make every later preview black until a
    restart; such a pair is skipped and later runs go on refining the map."""
    torch.manual_seed(0)
    preview = speed.LinearPreview(4)
    latents = torch.randn(2, 4, 8, 8)
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    preview.observe(latents, pixels, 8)
    fitted = preview.weight.clone()
    overflowed = pixels.clone()
    overflowed[0, 0, 0, 0] = float("nan")
    overflowed[1, 2, 5, 5] = float("inf")

    preview.observe(latents, overflowed, 8)

    assert preview.weight.equal(fitted)
    preview.observe(latents, -torch.ones(2, 3, 64, 64), 8)
    assert torch.isfinite(preview.weight).all() and not preview.weight.equal(fitted)


def test_linear_previews_arrive_every_few_steps_and_look_like_the_movq_decode(tiny_generator, fast_generator):
    updates: list[StepUpdate] = []
    latents: list[torch.Tensor] = []
    fast_generator.generate(small_request(width=320, num_inference_steps=4), updates.append)
    previews = {update.step: update.preview for update in updates if update.stage == "decoder"}
    assert [step for step, preview in previews.items() if preview is not None] == [2]
    assert previews[2].size == (320, 256) and previews[2].mode == "RGB"

    # A latent from a real run, mid-way: the linear map and the MoVQ decode of it correlate strongly.
    def keep(pipeline, index, timestep, tensors):
        latents.append(tensors["latents"].clone())
        return {}

    with torch.inference_mode():
        tiny_generator.decoder(
            image_embeds=torch.randn(1, 32, generator=torch.Generator().manual_seed(3)),
            negative_image_embeds=torch.zeros(1, 32),
            height=256,
            width=256,
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(3),
            output_type="latent",
            callback_on_step_end=keep,
        )
        middle = latents[1]
        decoded = tiny_generator.decoder.movq.decode(middle, force_not_quantize=True).sample
    pooled = torch.nn.functional.avg_pool2d(decoded, 8).permute(0, 2, 3, 1).numpy() * 127.5 + 127.5
    linear = fast_generator.linear_preview.rgb(middle).float().numpy()
    assert np.corrcoef(linear.ravel(), pooled.ravel())[0, 1] > 0.5


def test_a_logos_embedding_is_computed_once_and_lands_on_the_prior_device(tiny_generator):
    generator = with_speed(tiny_generator, FAST)
    logo = Image.new("RGB", (64, 48), (200, 30, 30))
    first = generator.image_embedding(logo)
    again = generator.image_embedding(logo.copy())
    other = generator.image_embedding(Image.new("RGB", (64, 48), (30, 30, 200)))
    assert generator.logos.encoder_runs == 2  # the copy hit the cache; a new picture did not
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.device == tiny_generator.decoder.device
    expected = tiny_generator.image_embedding(logo)  # the plain path computes the same embedding
    assert torch.allclose(first, expected)


def test_an_image_encoder_that_runs_out_of_memory_on_its_way_in_is_moved_back(tiny_generator):
    """The parked image encoder (3.4 GiB at full size) is the largest move of a run. When the move to the GPU runs out
    of memory, it may have moved some weights: the encoder is moved back whole, or it would stay split over two
    devices and fail every later logo."""
    generator = with_speed(tiny_generator, FAST)
    encoder = generator.prior.image_encoder
    gpu = torch.device("meta")  # a device other than the CPU to move to; the move there fails before any weight goes
    logos = speed.LogoEmbeddings(generator.prior, gpu, cache=False)
    move, moves = encoder.to, []

    def out_of_memory_on_the_way_in(device: torch.device) -> torch.nn.Module:
        moves.append(torch.device(device).type)
        if torch.device(device) == gpu:
            raise torch.OutOfMemoryError("CUDA out of memory (in a test)")
        return move(device)

    encoder.to = out_of_memory_on_the_way_in
    try:
        with pytest.raises(LogoOutOfMemory) as raised:
            logos.embedding(Image.new("RGB", (64, 48), (200, 30, 30)))
    finally:
        del encoder.to  # the module's own method again
    assert moves == ["meta", "cpu"]
    # Told apart from a run too large: the encoder needs its own size in any run (the worker learns nothing from it).
    assert isinstance(raised.value.__cause__, torch.OutOfMemoryError)


def test_the_compiled_path_gives_the_eager_images_and_is_used_only_once_warm(tiny_generator):
    generator = with_speed(tiny_generator, FAST)
    request = small_request(num_images_per_prompt=1, seed=21)
    eager = generator.generate(request).images[0]
    generator.start_compiling(CompileConfig(backend="eager"), sizes=[256], batch_images=[1])
    generator.compiled.thread.join(300)
    assert generator.compile_progress() == CompileProgress({"256x256x1": "ready"})
    assert generator.compiled.ready(decoder_key(256, 256, 1, True))
    assert generator.compiled.ready(prior_key(1, False, True)) and generator.compiled.ready(decode_key(256, 256, 1))
    calls: list[int] = []
    decode = generator.compiled.decode
    generator.compiled.decode = lambda latents: calls.append(1) or decode(latents)
    compiled = generator.generate(request).images[0]
    assert calls == [1]  # the compiled decode ran (its bucket is warm)
    assert max_difference(compiled, eager) <= 1
    generator.generate(small_request(width=320, seed=21))  # a size not warmed runs eager: nothing waits
    assert calls == [1]


def test_a_warm_up_on_its_own_thread_compiles_past_dynamos_default_of_eight_versions(tiny_generator):
    """torch 2.13 keeps dynamo's settings per thread, so the warm-up thread sets its own limit: five buckets compile
    the prior's forward about ten times, past the default 8, and every bucket is warm."""
    generator = with_speed(tiny_generator, FAST)
    generator.start_compiling(CompileConfig(backend="eager"), sizes=[256], batch_images=[1, 2, 3, 4, 5])
    generator.compiled.thread.join(900)
    assert sorted(generator.compiled.seconds) == [f"256x256x{images}" for images in range(1, 6)]


def test_a_bucket_that_fails_to_compile_is_reported_eager_and_the_others_ready(tiny_generator, monkeypatch):
    generator = with_speed(tiny_generator, FAST)
    assert generator.compile_progress() is None  # compiling is off: nothing to wait for
    run_bucket = speed.run_bucket

    def fail_for_two_images(prior, decoder, decode, bucket, stage, decode_counts=None):
        if bucket[2] == 2:
            raise RuntimeError("out of memory while compiling")
        return run_bucket(prior, decoder, decode, bucket, stage, decode_counts)

    monkeypatch.setattr(speed, "run_bucket", fail_for_two_images)
    generator.start_compiling(CompileConfig(backend="eager"), sizes=[256], batch_images=[1, 2])
    generator.compiled.thread.join(300)
    progress = generator.compile_progress()
    assert progress == CompileProgress({"256x256x1": "ready", "256x256x2": "eager"})
    assert not progress.compiling
    assert not generator.compiled.ready(decoder_key(256, 256, 2, True))


def test_a_bucket_the_warm_up_never_finished_is_not_waited_for(tiny_generator):
    """Stopped (or ended by a failure nothing caught) before a bucket was ready: it says "eager", not "compiling",
    so a health check waiting for compiled code does not wait forever."""
    generator = with_speed(tiny_generator, FAST)
    compiled = CompiledModels(generator.prior, generator.fast_decoder, CompileConfig(backend="eager"))
    compiled.plan([(256, 256, 1), (512, 512, 1)])
    compiled.settle((256, 256, 1), "ready")
    assert compiled.progress().buckets == {"256x256x1": "ready", "512x512x1": "compiling"}  # no thread yet: to come
    compiled.thread = threading.Thread(target=lambda: None)
    assert compiled.progress().buckets["512x512x1"] == "compiling"  # made, not yet started: still to come
    compiled.thread.start()
    compiled.thread.join()
    assert compiled.progress() == CompileProgress({"256x256x1": "ready", "512x512x1": "eager"})


def test_speed_options_come_from_the_environment_and_plain_turns_everything_off():
    assert speed_options({}) == SpeedOptions()
    assert speed_options({"MASCOT_PLAIN": "1"}) == SpeedOptions.plain()
    chosen = speed_options({"MASCOT_LINEAR_PREVIEWS": "0", "MASCOT_COMPILE": "1", "MASCOT_COMPILE_SIZES": "512,768"})
    assert (chosen.linear_previews, chosen.compile, chosen.compile_sizes) == (False, True, (512, 768))
    # A size no request can have would compile for minutes and never serve; one named twice is compiled once.
    with pytest.raises(SettingsError, match=r"MASCOT_COMPILE_SIZES=700,768 cannot be used.*multiples of 64"):
        speed_options({"MASCOT_COMPILE_SIZES": "700,768"})
    assert speed_options({"MASCOT_COMPILE_SIZES": "768, 512,768"}).compile_sizes == (768, 512)
    assert speed_options({"MASCOT_COMPILE_BATCH_IMAGES": "1,8,1"}).compile_batch_images == (1, 8)
    assert (
        not SpeedOptions().ready_when_compiled
        and speed_options({"MASCOT_READY_WHEN_COMPILED": "yes"}).ready_when_compiled
    )
    with pytest.raises(SettingsError, match="MASCOT_READY_WHEN_COMPILED=later cannot be used"):
        speed_options({"MASCOT_READY_WHEN_COMPILED": "later"})
    assert not SpeedOptions().compiles_on("cpu") and SpeedOptions().compiles_on("cuda")


def test_lower_precision_is_off_unless_asked_and_needs_torchao(monkeypatch):
    assert SpeedOptions().lower_precision == SpeedOptions.plain().lower_precision == ""
    assert speed_options({"MASCOT_LOWER_PRECISION": " FP8 "}).lower_precision == "fp8"
    assert speed_options({"MASCOT_LOWER_PRECISION": "off"}).lower_precision == ""
    assert speed_options({"MASCOT_LOWER_PRECISION": "None"}).lower_precision == ""
    both = speed_options({"MASCOT_LOWER_PRECISION": "int8", "MASCOT_COMPILE_PACKAGES": "1"})
    assert (both.lower_precision, both.compile_packages) == ("int8", True)  # packages take lowered weights
    monkeypatch.setattr("mascot.settings.importlib.util.find_spec", lambda name: None)  # torchao not installed
    with pytest.raises(SettingsError, match=r"MASCOT_LOWER_PRECISION=int8 cannot be used.*pip install torchao"):
        speed_options({"MASCOT_LOWER_PRECISION": "int8"})
    assert speed_options({}).lower_precision == ""  # off needs nothing


def test_compiling_in_a_child_process_gives_the_eager_images_and_loads_each_stage_between_runs(tiny_generator):
    from bench.speed import compile_targets

    generator = with_speed(tiny_generator, FAST)
    request = small_request(num_images_per_prompt=1, seed=23)
    eager = generator.generate(request).images[0]
    generator.start_compiling(
        CompileConfig(backend="eager"),
        sizes=[256],
        batch_images=[1],
        build_in_child=functools.partial(compile_targets, "tiny", 0),
        niceness=0,  # a busy test machine would starve a niced child (nice 10)
    )
    with generator.turn.wanting_a_run():  # a generation running: no stage can be loaded here, however fast the child
        assert generator.compile_progress() == CompileProgress({"256x256x1": "compiling"})
    generator.compiled.thread.join(600)
    assert generator.compile_progress() == CompileProgress({"256x256x1": "ready"})
    (child,) = generator.compile_children
    assert child.process.returncode == 0
    assert not child.work.report.parent.exists()  # its work order and report are gone once the bucket loaded
    assert set(child.report()["compiled"]) == {"256x256x1"}  # what it reported, as read before (the benchmark's row)
    assert "256x256x1 in a child process" in generator.compiled.seconds  # compiled there, then loaded here
    assert generator.compiled.ready(decoder_key(256, 256, 1, True)) and generator.compiled.ready(
        decode_key(256, 256, 1)
    )
    assert generator.compiled.longest_turn_s > 0  # the stages here ran in turns between generations
    assert max_difference(generator.generate(request).images[0], eager) <= 1


def test_the_compile_cache_is_the_given_folder_though_inductor_already_chose_its_own(tmp_path, monkeypatch):
    """Importing torch._inductor.config (diffusers does) writes inductor's /tmp default into TORCHINDUCTOR_CACHE_DIR;
    the data folder's cache must win over it, or a restart and the serving process never see what was compiled."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # as after that import; restored afterwards
    use_compile_cache(tmp_path / "compile-cache")

    assert cache_dir() == str(tmp_path / "compile-cache")


def test_a_bucket_a_compile_process_compiled_is_loaded_here_from_the_cache_without_compiling_again(
    tiny_model_dir, tmp_path, monkeypatch
):
    """The torch.compile hand-over for real (inductor, C++ on the CPU), with the app's own models on both sides: its
    compile process fills the data folder's cache, and this process then finds each graph of the bucket there, none
    compiled again inside a turn."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from mascot.settings import Settings
    from tests.support.packages import compiled_in_a_child
    from tests.support.tiny import load_tiny

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", cache_dir())  # the test's compile cache is put back afterwards
    generator = load_tiny(tiny_model_dir, speed=FAST)
    request = small_request(num_images_per_prompt=1, seed=31)
    eager = generator.generate(request).images[0]
    looked_up = compile_cache_lookups()
    settings = Settings(model="tiny", data_dir=tiny_model_dir.parent)
    config = CompileConfig(backend="inductor", mode=None, cache_dir=tmp_path / "compile-cache")
    compiled = compiled_in_a_child(generator, settings, config)
    assert isinstance(compiled, CompiledModels)

    lookups = compile_cache_lookups() - looked_up
    print(f"\nloaded here: {compiled.seconds}, longest stage {compiled.longest_turn_s} s, {lookups}")
    assert lookups["fxgraph_cache_hit"] > 0 and lookups["autograd_cache_hit"] > 0
    assert lookups["fxgraph_cache_miss"] == 0 and lookups["autograd_cache_miss"] == 0  # nothing compiled again here
    assert compiled.cache_lookups["256x256x1"] == dict(lookups)  # what the benchmark and the log report
    assert compiled.ready(decoder_key(256, 256, 1, True))
    assert max_difference(generator.generate(request).images[0], eager) <= 2  # compiled C++ rounds in another order


def test_packages_compiled_in_a_child_give_the_eager_images_and_load_without_compiling_here(tiny_generator):
    from bench.speed import compile_targets

    generator = with_speed(tiny_generator, FAST)
    request = small_request(num_images_per_prompt=1, seed=29)
    eager = generator.generate(request).images[0]
    generator.start_compiling(
        CompileConfig(backend="inductor", mode=None, packages=True),  # AOTInductor compiles C++ for the CPU
        sizes=[256],
        batch_images=[1],
        build_in_child=functools.partial(compile_targets, "tiny", 0),
        niceness=0,
    )
    generator.compiled.thread.join(1800)
    (child,) = generator.compile_children
    assert child.process.returncode == 0
    assert child.report()["stages"] > len(child.report()["packages"]["256x256x1"])  # stages and packages counted
    packaged = generator.compiled
    assert isinstance(packaged, PackagedModels)
    for key in (prior_key(1, True, True), prior_key(1, False, False), decoder_key(256, 256, 1, True)):
        assert packaged.ready(key), key
    assert packaged.ready(decode_key(256, 256, 1))
    assert "256x256x1 loaded" in packaged.seconds and "256x256x1 in a child process" in packaged.seconds
    print(f"\npackages: {packaged.seconds}; longest stage loaded here: {packaged.longest_turn_s} s")
    calls = count_package_calls(packaged)  # the generation below must run the packages, not eager code
    packaged_image = generator.generate(request).images[0]
    assert {"prior", "unet", "decode"} <= set(calls)
    assert calls.count("unet") == request.num_inference_steps
    assert max_difference(packaged_image, eager) <= 2  # compiled C++ rounds floats in another order
    calls.clear()
    generator.generate(small_request(width=320, seed=29))  # a size without packages runs eager
    assert "unet" not in calls and "decode" not in calls


def test_a_package_for_another_architecture_or_computing_otherwise_is_not_used(tiny_generator, tmp_path, monkeypatch):
    packaged = PackagedModels(tiny_generator.prior, tiny_generator.fast_decoder, CompileConfig(packages=True))
    decode = packaged.movq
    latents = torch.randn(1, 4, 32, 32)
    torch.save({"inputs": (latents,), "constants": {}}, tmp_path / "decode.extra")
    package = Package("decode", signature((latents,)), str(tmp_path / "decode.pt2"), decode.fingerprint)
    with pytest.raises(PackageMismatch, match="another architecture"):
        decode.load(dataclasses.replace(package, fingerprint="0" * 32))
    other = PackagedModels(with_speed(tiny_generator, FAST).prior, build_decoder_pipeline(), CompileConfig())
    assert other.movq.fingerprint == decode.fingerprint  # the same architecture, other weights: the same package fits

    class Runner:  # what aoti_load_package gives, computing something else than the module
        def __init__(self, offset: float) -> None:
            self.offset = offset

        def get_constant_fqns(self) -> list[str]:
            return [name for name, _ in decode.exported.named_parameters()] + ["_FOLDED_CONST_0"]

        def load_constants(self, constants, *, check_full_update, user_managed) -> None:
            assert "_FOLDED_CONST_0" not in constants  # made by the package from the weights handed over
            assert check_full_update and user_managed  # every weight given; ours, shared, not copied

        def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
            return decode.exported(inputs) + self.offset

    (tmp_path / "decode.pt2").write_bytes(b"a package")
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda _file: Runner(offset=5.0))
    with pytest.raises(PackageMismatch, match="differs from the eager decode"):
        decode.load(package)
    assert not decode.runners
    # Set aside: the next start's compile process, finding no package of that name, builds it again.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["decode.extra.rejected", "decode.pt2.rejected"]
    (tmp_path / "decode.pt2.rejected").rename(tmp_path / "decode.pt2")
    (tmp_path / "decode.extra.rejected").rename(tmp_path / "decode.extra")
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda _file: Runner(offset=1e-4))
    decode.load(package)
    assert list(decode.runners) == [package.signature]


def test_a_package_is_set_aside_only_when_it_is_at_fault(tiny_generator, tmp_path, monkeypatch):
    """One that does not load is built again at the next start; one for another architecture (not this file's fault:
    another model loaded) and one that met a GPU short of memory for the moment are kept."""
    packaged = PackagedModels(tiny_generator.prior, tiny_generator.fast_decoder, CompileConfig(packages=True))
    decode = packaged.movq
    latents = torch.randn(1, 4, 32, 32)
    package = Package("decode", signature((latents,)), str(tmp_path / "decode.pt2"), decode.fingerprint)
    files = {"decode.pt2", "decode.extra"}
    for name in files:
        (tmp_path / name).write_bytes(b"kept")

    def names() -> set[str]:
        return {path.name for path in tmp_path.iterdir()}

    with pytest.raises(PackageMismatch, match="another architecture"):
        decode.open(dataclasses.replace(package, fingerprint="0" * 32))
    assert names() == files

    def short_of_memory(_file: str) -> object:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (in a test)")

    monkeypatch.setattr(torch._inductor, "aoti_load_package", short_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        decode.open(package)
    assert names() == files

    def broken(_file: str) -> object:
        raise RuntimeError("Failed to load the package's library (in a test)")

    monkeypatch.setattr(torch._inductor, "aoti_load_package", broken)
    assert packaged.load((256, 256, 1), {stage_name(decode_key(256, 256, 1)): [vars(package)]}) is False
    assert names() == {"decode.pt2.rejected", "decode.extra.rejected"}


def test_a_package_library_is_opened_outside_the_turn_that_attaches_it(tiny_generator, tmp_path, monkeypatch):
    """Opening a package (loading its library; the first in a process also starts AOTInductor, 9 s on torch 2.11)
    touches no model, so generations need not wait for it: only attaching our weights and the check take the turn."""
    packaged = PackagedModels(tiny_generator.prior, tiny_generator.fast_decoder, CompileConfig(packages=True))
    decode = packaged.movq
    latents = torch.randn(1, 4, 32, 32)
    torch.save({"inputs": (latents,), "constants": {}}, tmp_path / "decode.extra")
    entry = vars(Package("decode", signature((latents,)), str(tmp_path / "decode.pt2"), decode.fingerprint))
    in_turn: list[bool] = []
    events: list[tuple[str, bool]] = []

    class Runner:  # what aoti_load_package gives: the module's own computation
        def get_constant_fqns(self) -> list[str]:
            return [name for name, _ in decode.exported.named_parameters()]

        def load_constants(self, constants, *, check_full_update, user_managed) -> None:
            events.append(("weights handed over", bool(in_turn)))

        def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
            return decode.exported(inputs)

    def open_library(_file: str) -> Runner:
        events.append(("library opened", bool(in_turn)))
        return Runner()

    @contextlib.contextmanager
    def turn():
        in_turn.append(True)
        try:
            yield
        finally:
            in_turn.pop()

    monkeypatch.setattr(torch._inductor, "aoti_load_package", open_library)
    stage = stage_name(decode_key(256, 256, 1))
    assert packaged.load((256, 256, 1), {stage: [entry, entry]}, turn)  # listed twice: opened once
    assert events == [("library opened", False), ("weights handed over", True)]
    assert packaged.ready(decode_key(256, 256, 1))


class InterruptedBackend:
    """A fast tokenizer's backend that runs `interrupt` once, just before its next padded encoding (a pipeline's:
    measuring a prompt pads nothing), after the caller set its padding: where another thread's call would come in.
    It interleaves two calls without threads."""

    def __init__(self, backend, interrupt) -> None:
        self._backend, self._interrupt = backend, interrupt

    def encode_batch(self, *args, **kwargs):
        if self._backend.padding is not None and self._interrupt is not None:
            interrupt, self._interrupt = self._interrupt, None
            interrupt()
        return self._backend.encode_batch(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._backend, name)


@pytest.mark.parametrize("speed", [FAST, dataclasses.replace(FAST, host_scheduler=False)], ids=["fast", "stock-prior"])
def test_a_prompt_measured_while_a_run_encodes_one_leaves_that_runs_padding_alone(tiny_generator, monkeypatch, speed):
    """The worker measures the next prompts (outside the lock) while a run's prior encodes its own: a shared fast
    tokenizer would be set to no padding in between, and the prior would fail on an 8-token prompt. With the stock
    prior scheduler the run encodes through the loaded prior pipeline itself."""
    generator = with_speed(tiny_generator, speed)
    request = small_request(seed=31)
    alone = generator.generate(request).images[0]
    tokenizer = generator.fast_prior.tokenizer
    measured = []
    interrupt = lambda: measured.extend(generator._plans([BatchItem(small_request(prompt="a fox in a scarf"))]))  # noqa: E731
    monkeypatch.setattr(tokenizer, "_tokenizer", InterruptedBackend(tokenizer._tokenizer, interrupt))
    interleaved = generator.generate(request).images[0]
    assert measured and measured[0].prompt.used == "a fox in a scarf"  # the measuring happened mid-encoding
    assert max_difference(interleaved, alone) == 0


def test_a_warm_up_beside_generations_has_a_scheduler_and_a_tokenizer_of_its_own(tiny_generator, monkeypatch):
    """Compiling on a thread here runs warm-up stages beside generations: a generation that encodes in the middle of
    a stage's encoding must not change the stage's padding (nor its timesteps)."""
    generator = with_speed(tiny_generator, FAST)
    compiled = CompiledModels(generator.fast_prior, generator.fast_decoder, CompileConfig(backend="eager"))
    for warming, serving in ((compiled.warming_prior, compiled.prior), (compiled.warming_decoder, compiled.decoder)):
        assert warming.scheduler is not serving.scheduler and type(warming.scheduler) is type(serving.scheduler)
    assert compiled.warming_prior.tokenizer is not generator.fast_prior.tokenizer
    request = small_request(seed=33)
    alone = generator.generate(request).images[0]
    beside: list[Image.Image] = []
    tokenizer = compiled.warming_prior.tokenizer
    interrupt = lambda: beside.extend(generator.generate(request).images)  # noqa: E731
    monkeypatch.setattr(tokenizer, "_tokenizer", InterruptedBackend(tokenizer._tokenizer, interrupt))
    assert compiled.warm([(256, 256, 1)]) == [(256, 256, 1)]
    assert beside and max_difference(beside[0], alone) == 0


def test_a_warm_up_turn_waits_for_the_generations_that_run_or_wait(tiny_generator):
    generator = with_speed(tiny_generator, FAST)
    entered = threading.Event()

    def take_a_turn() -> None:
        with generator.turn.between_runs():
            entered.set()

    with generator.turn.wanting_a_run():
        thread = threading.Thread(target=take_a_turn, daemon=True)
        thread.start()
        assert not entered.wait(0.3)
    assert entered.wait(30)
    thread.join(30)


def run_during_a_load_stage(generator: KandinskyGenerator, items: list[BatchItem], told: threading.Event) -> list:
    """Run `items` while a stage of loading compiled code holds the turn; the stage ends once `told` is set."""
    results: list = []
    with generator.turn.between_runs():
        thread = threading.Thread(target=lambda: results.append(generator.generate_batch(items)), daemon=True)
        thread.start()
        assert told.wait(60), "the run was not told that it waits"
    thread.join(120)
    assert not thread.is_alive()
    return results[0]


def test_a_run_that_comes_during_a_load_stage_is_told_it_waits_then_runs_as_alone(tiny_generator):
    generator = with_speed(tiny_generator, FAST)
    request = small_request()
    alone = generator.generate(request).images[0]
    updates: list[StepUpdate] = []
    told = threading.Event()
    seen_while_the_stage_ran: list[StepUpdate] = []

    def on_step(update: StepUpdate) -> None:
        updates.append(update)
        if update.stage == "waiting":
            seen_while_the_stage_ran.extend(updates)
            told.set()

    (result,) = run_during_a_load_stage(generator, [BatchItem(request, on_step)], told)

    assert seen_while_the_stage_ran == [StepUpdate("waiting", 0, 0)]
    assert [(update.stage, update.step) for update in updates] == [
        ("waiting", 0),
        ("prior", 1),
        ("prior", 2),
        ("decoder", 1),
        ("decoder", 2),
        ("decoder", 3),
    ]
    assert max_difference(result.images[0], alone) == 0


def test_a_person_who_cancels_during_a_load_stage_costs_the_others_nothing(tiny_generator):
    generator = with_speed(tiny_generator, FAST)
    staying = small_request(seed=12)
    alone = generator.generate(staying).images[0]
    told = threading.Event()
    leaving_updates: list[StepUpdate] = []

    def leaving(update: StepUpdate) -> None:
        leaving_updates.append(update)
        told.set()
        raise GenerationCancelled

    items = [BatchItem(small_request(), leaving), BatchItem(staying)]
    results = run_during_a_load_stage(generator, items, told)

    assert results[0] is None and leaving_updates == [StepUpdate("waiting", 0, 0)]
    assert max_difference(results[1].images[0], alone) == 0


def test_a_run_that_finds_the_turn_free_is_not_told_to_wait(tiny_generator):
    generator = with_speed(tiny_generator, FAST)
    updates: list[StepUpdate] = []
    generator.generate(small_request(), updates.append)
    assert updates[0].stage == "prior"


def test_each_warm_up_stage_runs_inside_one_turn(tiny_generator):
    generator = with_speed(tiny_generator, FAST)
    compiled = CompiledModels(generator.prior, generator.fast_decoder, CompileConfig(backend="eager"))
    turns: list[str] = []

    @contextlib.contextmanager
    def turn():
        turns.append("start")
        yield
        turns.append("end")

    assert compiled.warm([(256, 256, 2)], turn) == [(256, 256, 2)]
    # four prior calls (guidance and negative prompt on and off), the decoder, and the decodes of 1 and of 2 images
    assert turns == ["start", "end"] * 7


def test_each_compiled_decode_runs_twice_in_its_warm_up_so_its_cuda_graph_is_recorded_there(tiny_generator):
    """CUDA graph trees run a compiled function's first call as a warm-up and record its graph at the second: the
    prior and the UNet run two steps in their stages, and each decode is called twice in its own, so no graph is
    recorded in someone's run."""
    generator = with_speed(tiny_generator, FAST)
    compiled = CompiledModels(generator.prior, generator.fast_decoder, CompileConfig(backend="eager"))
    decode, calls = compiled.decode, []
    compiled.decode = lambda latents: calls.append(latents.shape[0]) or decode(latents)
    assert compiled.warm([(256, 256, 2)]) == [(256, 256, 2)]
    assert calls == [1, 1, 2, 2]


def test_a_decode_in_chunks_calls_compiled_code_only_at_chunk_shapes_a_warm_up_ran(tiny_generator):
    """Three images per MoVQ call (MASCOT_DECODE_AT_ONCE=3) for five: 3 + 2. The 3-image decode is warm, the 2-image
    tail is not, so the tail runs eager instead of compiling (and recording a CUDA graph) in the middle of the run."""
    generator = with_speed(tiny_generator, dataclasses.replace(FAST, decode_at_once=3))
    request = small_request()
    latents = torch.randn(5, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    eager = generator._decode(latents, request)
    warm, shapes = {decode_key(256, 256, 3), decode_key(256, 256, 1)}, []
    movq = speed.movq_decoder(generator.decoder.movq)
    generator.compiled = types.SimpleNamespace(
        ready=lambda key: key in warm, serves_adapters=True, decode=lambda part: shapes.append(len(part)) or movq(part)
    )
    assert torch.equal(generator._decode(latents, request), eager)
    assert shapes == [3]  # the first chunk compiled; the tail of 2 eager


def test_a_warm_up_beside_generations_serves_no_bucket_before_all_are_warm(tiny_generator, monkeypatch):
    """On a thread here (no compile process), each bucket's compiled code shares one CUDA graph tree and memory pool
    with the next bucket's warm-up (torch 2.11), so no run uses the first while the second still warms."""
    generator = with_speed(tiny_generator, FAST)
    run_bucket, second_warming, go_on = speed.run_bucket, threading.Event(), threading.Event()
    seen_while_warming: list[CompileProgress | None] = []

    def waiting_in_the_second(prior, decoder, decode, bucket, stage, decode_counts=None):
        if bucket[2] == 2:
            seen_while_warming.append(generator.compile_progress())
            second_warming.set()
            go_on.wait(60)
        return run_bucket(prior, decoder, decode, bucket, stage, decode_counts)

    monkeypatch.setattr(speed, "run_bucket", waiting_in_the_second)
    generator.start_compiling(CompileConfig(backend="eager"), sizes=[256], batch_images=[1, 2])
    assert second_warming.wait(300)
    assert not generator.compiled.ready(decoder_key(256, 256, 1, True))  # warm, yet not used while the next warms
    go_on.set()
    generator.compiled.thread.join(300)
    assert seen_while_warming == [CompileProgress({"256x256x1": "compiling", "256x256x2": "compiling"})]
    assert generator.compile_progress() == CompileProgress({"256x256x1": "ready", "256x256x2": "ready"})
    assert generator.compiled.ready(decoder_key(256, 256, 1, True))


def test_buckets_loaded_in_turns_each_serve_as_soon_as_loaded(tiny_generator):
    """After compile processes, buckets load here one stage per turn between runs: nothing else warms meanwhile, so
    each serves as soon as it is loaded, not after the last."""
    generator = with_speed(tiny_generator, FAST)
    compiled = CompiledModels(generator.prior, generator.fast_decoder, CompileConfig(backend="eager"))
    first_ready_in_a_turn_of_the_second: list[bool] = []

    @contextlib.contextmanager
    def turn():
        first_ready_in_a_turn_of_the_second.append(compiled.ready(decoder_key(256, 256, 1, True)))
        yield

    assert compiled.warm([(256, 256, 1), (256, 256, 2)], turn) == [(256, 256, 1), (256, 256, 2)]
    # the first bucket's 6 stages, then the second's: it serves from the second's first turn on
    assert first_ready_in_a_turn_of_the_second[:6] == [False] * 6 and all(first_ready_in_a_turn_of_the_second[6:])


def test_a_stopped_warm_up_ends_at_its_next_stage_and_serves_what_was_warm(tiny_generator, monkeypatch):
    """Stopping waits for one stage, not for the bucket being warmed: the warm-up ends as its next stage would start,
    the buckets already warm serve, the one it was warming stays eager."""
    generator = with_speed(tiny_generator, FAST)
    run_bucket, second_started = speed.run_bucket, threading.Event()

    def stopped_in_the_second(prior, decoder, decode, bucket, stage, decode_counts=None):
        if bucket[2] == 2:
            second_started.set()
            assert generator._stop_compiling.wait(300)  # stopped while this bucket warms
        return run_bucket(prior, decoder, decode, bucket, stage, decode_counts)

    monkeypatch.setattr(speed, "run_bucket", stopped_in_the_second)
    generator.start_compiling(CompileConfig(backend="eager"), sizes=[256], batch_images=[1, 2])
    assert second_started.wait(300)
    generator.stop_compiling(timeout=300)
    assert not generator.compiled.thread.is_alive()
    assert generator.compile_progress() == CompileProgress({"256x256x1": "ready", "256x256x2": "eager"})
    assert generator.compiled.ready(decoder_key(256, 256, 1, True))


def test_loading_in_turns_stops_between_two_stages(tiny_generator):
    generator = with_speed(tiny_generator, FAST)
    compiled = CompiledModels(generator.prior, generator.fast_decoder, CompileConfig(backend="eager"))
    compiled.plan([(256, 256, 1)])
    stopped, stages = threading.Event(), []

    @contextlib.contextmanager
    def turn():
        stages.append(1)
        if len(stages) == 3:
            stopped.set()  # asked to stop during the third stage
        yield

    assert compiled.warm([(256, 256, 1)], turn, stopped) == []
    assert len(stages) == 3 and compiled.progress().buckets == {"256x256x1": "eager"}
    assert not compiled.ready(prior_key(1, False, False))


def test_buckets_are_dealt_to_the_compile_processes_in_turn():
    buckets = [(768, 768, 1), (512, 512, 1), (768, 768, 8)]
    assert split_buckets(buckets, 2) == [((768, 768, 1), (768, 768, 8)), ((512, 512, 1),)]
    assert split_buckets(buckets, 1) == [tuple(buckets)]
    assert split_buckets(buckets[:1], 4) == [((768, 768, 1),)]


def test_compiling_apart_is_chosen_by_setting_or_by_the_gpu():
    assert speed_options({"MASCOT_COMPILE_PROCESS": "0", "MASCOT_COMPILE_THREADS": "4"}).compile_threads == 4
    assert speed_options({"MASCOT_COMPILE_PROCESS": "0"}).compile_process is False
    assert speed_options({"MASCOT_COMPILE_PROCESS": "auto"}).compile_process is None
    auto = SpeedOptions()
    assert auto.compiles_apart("cuda", child_fits=True) and not auto.compiles_apart("cuda", child_fits=False)
    assert not auto.compiles_apart("cpu", child_fits=True)
    assert SpeedOptions(compile_process=True).compiles_apart("cpu", child_fits=False)
    with pytest.raises(SettingsError, match="MASCOT_COMPILE_THREADS=many"):
        speed_options({"MASCOT_COMPILE_THREADS": "many"})
