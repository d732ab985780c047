"""Requests that share one run of the real tiny pipeline: each gets what it would get alone, and cancels alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from mascot.generation.generator import BatchItem, GenerationCancelled, StepUpdate, batch_key
from mascot.generation.model import KandinskyGenerator
from mascot.generation.worker import GenerationWorker, JobState, ModelState, Submission
from mascot.prompt.request import GenerationRequest
from mascot.settings import SpeedOptions
from tests.support.jobs import wait_final

pytestmark = pytest.mark.slow  # the tiny pipeline, several requests at once

LOGO = Image.new("RGB", (90, 60), (30, 160, 220))


def request(**overrides) -> GenerationRequest:
    values = {
        "prompt": "a cheerful otter barista",
        "seed": 3,
        "width": 256,
        "height": 320,
        "num_inference_steps": 3,
        "prior_num_inference_steps": 2,
        "guidance_scale": 4,
    }
    return GenerationRequest.from_user(**{**values, **overrides})


# Three browsers' requests with the same batch key but everything else of their own: prompts, seeds, image counts,
# negative prompts, prior settings and a logo. The first and third share a prior run; the second has its own.
OTTERS = request(num_images_per_prompt=2, negative_prompt="blurry", prior_guidance_scale=2)
FOX = request(prompt="a fox mascot, flat vector", seed=90, prior_num_inference_steps=3)
ROBOT = request(prompt="a tiny robot", seed=5, negative_prompt="text", prior_guidance_scale=2, logo="cd" * 32)
ROBOT_LOGO_WEIGHT = 0.5


def items(*on_steps) -> list[BatchItem]:
    robot = dataclasses.replace(ROBOT, logo_weight=ROBOT_LOGO_WEIGHT)
    requests_and_logos = [(OTTERS, None), (FOX, None), (robot, LOGO)]
    return [
        BatchItem(req, on_step, logo) for (req, logo), on_step in zip(requests_and_logos, on_steps, strict=False)
    ] + [BatchItem(req, None, logo) for req, logo in requests_and_logos[len(on_steps) :]]


def max_difference(first: Image.Image, second: Image.Image) -> int:
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())


def alone(generator: KandinskyGenerator, item: BatchItem) -> list[Image.Image]:
    return generator.generate(item.request, logo=item.logo).images


def test_the_requests_share_one_batch_key():
    assert batch_key(OTTERS) == batch_key(FOX) == batch_key(ROBOT)
    assert batch_key(OTTERS) != batch_key(dataclasses.replace(OTTERS, width=320))
    assert batch_key(OTTERS) != batch_key(dataclasses.replace(OTTERS, num_inference_steps=4))
    assert batch_key(OTTERS) != batch_key(dataclasses.replace(OTTERS, adapter_name="mascot"))
    # A run uses its first request's guidance and look strength for every image: requests differing there never share.
    assert batch_key(OTTERS) != batch_key(dataclasses.replace(OTTERS, guidance_scale=7))
    look = dataclasses.replace(OTTERS, adapter_name="mascot", lora_scale=1.0)
    assert batch_key(look) != batch_key(dataclasses.replace(look, lora_scale=0.5))
    assert batch_key(OTTERS) == batch_key(dataclasses.replace(OTTERS, lora_scale=0.5))  # no look: no strength to differ


def test_on_the_fast_path_each_request_of_a_shared_run_gets_what_it_gets_alone(tiny_generator):
    """The app's default path (noise drawn on the model's device, host-step schedulers, linear previews): the other
    tests here run the plain one."""
    fast = KandinskyGenerator(
        tiny_generator.prior, tiny_generator.decoder, tiny_generator.info, preview_every=1,
        speed=SpeedOptions(compile=False),
    )  # fmt: skip

    shared = fast.generate_batch(items())

    for item, result in zip(items(), shared, strict=True):
        differences = [max_difference(a, b) for a, b in zip(result.images, alone(fast, item), strict=True)]
        assert differences and max(differences) <= 1


def test_each_request_of_a_shared_run_gets_exactly_what_it_gets_alone(tiny_generator):
    shared = tiny_generator.generate_batch(items())

    assert [result.seeds for result in shared] == [[3, 4], [90], [5]]
    assert [len(result.images) for result in shared] == [2, 1, 1]
    for item, result in zip(items(), shared, strict=True):
        for together, by_itself in zip(result.images, alone(tiny_generator, item), strict=True):
            assert together.size == (256, 320)
            assert max_difference(together, by_itself) <= 1  # within 1/255, as for a batch of one request
    assert max_difference(shared[0].images[0], shared[1].images[0]) > 10


def test_the_prior_runs_once_per_group_of_equal_prior_settings(tiny_generator):
    prior_runs: list[int] = []
    hook = tiny_generator.prior.prior.register_forward_hook(lambda module, args, output: prior_runs.append(1))
    try:
        tiny_generator.generate_batch(items())
    finally:
        hook.remove()
    # Otters and robot: one run of 2 steps; the fox: one run of 3 steps. One forward pass per step.
    assert len(prior_runs) == 2 + 3


def test_cancelling_one_request_leaves_the_others_untouched(tiny_generator):
    def cancel_in_decoder(update: StepUpdate) -> None:
        if update.stage == "decoder" and update.step == 2:
            raise GenerationCancelled

    otters_seen: list[StepUpdate] = []
    results = tiny_generator.generate_batch(items(otters_seen.append, cancel_in_decoder))

    assert results[1] is None
    for item, result in [(items()[0], results[0]), (items()[2], results[2])]:
        assert result is not None
        assert all(max_difference(a, b) <= 1 for a, b in zip(result.images, alone(tiny_generator, item), strict=True))
    expected_steps = [("prior", 1), ("prior", 2), ("decoder", 1), ("decoder", 2), ("decoder", 3)]
    assert [(update.stage, update.step) for update in otters_seen] == expected_steps


@pytest.mark.parametrize("stage", ["prior", "decoder"])
def test_when_every_request_cancels_the_run_stops_and_the_generator_works_on(tiny_generator, stage):
    seen: list[StepUpdate] = []

    def cancel(update: StepUpdate) -> None:
        seen.append(update)
        if update.stage == stage:
            raise GenerationCancelled

    assert tiny_generator.generate_batch(items(cancel, cancel, cancel)) == [None, None, None]
    # The prior group of otters and robot stops at its first step, the fox's never gets past its own first one.
    assert max(update.step for update in seen if update.stage == stage) == 1
    if stage == "prior":
        assert all(update.stage == "prior" for update in seen)
    again = tiny_generator.generate(FOX).images[0]
    assert max_difference(again, alone(tiny_generator, items()[1])[0]) == 0


def test_each_request_sees_a_preview_of_its_own_first_image(tiny_generator):
    previewing = KandinskyGenerator(tiny_generator.prior, tiny_generator.decoder, tiny_generator.info, preview_every=2)
    updates: list[list[StepUpdate]] = [[], [], []]
    previewing.generate_batch(items(*(seen.append for seen in updates)))

    for item, seen in zip(items(), updates, strict=True):
        preview = next(update.preview for update in seen if update.preview is not None)
        by_itself: list[StepUpdate] = []
        previewing.generate(item.request, by_itself.append, logo=item.logo)
        assert max_difference(preview, next(u.preview for u in by_itself if u.preview is not None)) <= 1


def test_requests_that_cannot_share_a_run_are_refused(tiny_generator):
    with pytest.raises(ValueError, match="same batch_key"):
        tiny_generator.generate_batch([BatchItem(OTTERS), BatchItem(dataclasses.replace(FOX, width=512))])


def test_a_shared_run_short_of_gpu_memory_is_made_again_person_by_person(tiny_generator):
    """The tiny pipeline on a "card" whose UNet takes one image (with its unguided twin) at a time: two people's
    shared run raises torch's out-of-memory error, and the worker makes each person's mascot in a run of its own,
    the same pictures as alone."""
    rows_asked: list[int] = []

    def one_image_at_most(module, args, kwargs) -> None:
        sample = args[0] if args else kwargs["sample"]
        rows_asked.append(sample.shape[0])
        if sample.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (in a test)")

    made: dict[str, list[Image.Image]] = {}

    def store(job, images, model):
        made[job.submission.owner_hash] = images.images
        return {"saved": len(images.images)}

    fox_again = dataclasses.replace(FOX, prompt="a fox mascot, round and friendly", seed=91)
    short_of_memory = tiny_generator.decoder.unet.register_forward_pre_hook(one_image_at_most, with_kwargs=True)
    worker = GenerationWorker(lambda on_status: tiny_generator, store, max_batch_images=4).start()
    try:
        assert worker.wait_until_loaded(60).state is ModelState.READY
        with worker._lock:  # both queued before the worker takes a run: they share it
            jobs = [worker.submit(Submission(req, owner)) for req, owner in [(FOX, "fox"), (fox_again, "again")]]
        assert [wait_final(job, timeout=300).state for job in jobs] == [JobState.DONE, JobState.DONE]
    finally:
        worker.stop()
        short_of_memory.remove()
    assert rows_asked[0] == 4 and set(rows_asked[1:]) == {2}  # the shared run's first step ran out; then each alone
    for owner, req in [("fox", FOX), ("again", fox_again)]:
        assert max_difference(made[owner][0], tiny_generator.generate(req).images[0]) <= 1
