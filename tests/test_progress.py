"""Relaying a job to the page: positions and steps in words, and each preview sent once."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from mascot.generation.model import KandinskyGenerator
from mascot.generation.worker import GenerationWorker, Job, JobState, ModelState, Submission
from mascot.prompt.request import GenerationRequest
from mascot.ui.progress import progress_message, relay_job
from tests.support.jobs import wait_final, wait_until

REQUEST = GenerationRequest.from_user(prompt="an otter", width=256, height=256)


def url_of(public_id: str) -> str:
    return f"http://127.0.0.1:7860/images/{public_id}.png"


class SilentProgress:
    """Stands in for gr.Progress, remembering what the bar was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, str]] = []

    def __call__(self, value: object, desc: str = "") -> None:
        self.calls.append((value, desc))


def test_each_preview_is_sent_once_and_steps_without_a_new_one_send_none():
    job = Job(Submission(REQUEST, "owner"))
    first, second = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    relay = relay_job(job, SilentProgress(), url_of)

    job.update(state=JobState.RUNNING, stage="decoder", step=1, total=4, preview=first)
    assert next(relay)[0] == [first]
    job.update(step=2)  # same preview still on the snapshot
    assert isinstance(next(relay)[0], type(gr.skip()))
    job.update(step=3, preview=second)
    assert next(relay)[0] == [second]
    job.update(step=4)
    previews, message = next(relay)
    # After the last decoder step the pictures are decoded and saved: said as such, not "step 4 of 4" for seconds.
    assert isinstance(previews, type(gr.skip())) and message == "Finishing…"


def test_the_saved_mascots_are_shown_by_their_checking_route_never_by_their_files(tmp_path):
    job = Job(Submission(REQUEST, "owner"))
    relay = relay_job(job, SilentProgress(), url_of)
    saved = SimpleNamespace(
        image_paths=(tmp_path / "a.png", tmp_path / "b.png"), public_ids=("aaaaaaaaaaaa", "bbbbbbbbbbbb")
    )

    job.update(state=JobState.DONE, outcome=saved)

    shown, message = next(relay)
    assert shown == [url_of("aaaaaaaaaaaa"), url_of("bbbbbbbbbbbb")]
    assert message.startswith("Done: 2 mascots saved")
    # Nobody's idea is public unawares: the line says so, and how to take one out.
    assert "public in the **Gallery**" in message and "untick *Show in the public gallery*" in message


def test_the_message_says_where_the_job_is():
    job = Job(Submission(REQUEST, "owner"))
    job.update(jobs_ahead=2)
    assert progress_message(job.snapshot) == "In the queue: 2 mascots ahead of yours."
    job.update(state=JobState.RUNNING, jobs_ahead=0)
    assert progress_message(job.snapshot) == "Starting…"
    job.update(stage="waiting", step=0, total=0)  # a stage of loading compiled code ends first
    assert progress_message(job.snapshot) == "Getting faster drawing ready; your mascot starts right after…"
    job.update(stage="prior", step=1, total=25)
    assert progress_message(job.snapshot) == "Imagining the idea: step 1 of 25."
    job.update(stage="prior", step=25, total=25)  # the prior's last step is followed by the decoder's, not the end
    assert progress_message(job.snapshot) == "Imagining the idea: step 25 of 25."
    job.update(stage="decoder", step=3, total=10)
    assert progress_message(job.snapshot) == "Drawing: step 3 of 10."
    job.update(step=10)
    assert progress_message(job.snapshot) == "Finishing…"
    job.update(stage="saving")  # the store could not take it: the worker saves it again
    assert progress_message(job.snapshot).startswith("Your mascot is made, but the server cannot save it right now")
    job.update(stage="remaking", step=0, total=0)  # its shared run ran out of GPU memory: made again in a smaller one
    assert progress_message(job.snapshot) == (
        "The server ran short of memory, so your mascot is being made again in a smaller run…"
    )


@pytest.mark.slow
def test_a_job_that_comes_while_compiled_code_loads_says_so_then_is_made(tiny_generator):
    """The real worker and tiny model: a run that must wait for a stage of loading compiled code (which holds the
    models between runs) says why, instead of "Starting…" for as long as the stage lasts."""
    generator = KandinskyGenerator(tiny_generator.prior, tiny_generator.decoder, tiny_generator.info)
    saved = SimpleNamespace(image_paths=(), public_ids=("aaaaaaaaaaaa",))
    worker = GenerationWorker(lambda on_status: generator, lambda job, images, model: saved).start()
    try:
        assert worker.wait_until_loaded(60).state is ModelState.READY
        request = GenerationRequest.from_user(
            prompt="an otter", width=256, height=256, num_inference_steps=2, prior_num_inference_steps=2
        )
        with generator.turn.between_runs():
            job = worker.submit(Submission(request, "owner"))
            waiting = wait_until(job, lambda snapshot: snapshot.stage == "waiting", timeout=60)
        assert waiting.state is JobState.RUNNING
        assert progress_message(waiting) == "Getting faster drawing ready; your mascot starts right after…"
        assert wait_final(job, timeout=120).state is JobState.DONE
    finally:
        worker.stop()


def test_a_queued_job_hears_a_rough_wait_once_there_is_a_guess():
    job = Job(Submission(REQUEST, "owner"))
    job.update(jobs_ahead=3, wait_seconds=None)
    assert progress_message(job.snapshot) == "In the queue: 3 mascots ahead of yours."
    guesses = [(4.0, "a few seconds"), (23.0, "about 25 s"), (95.0, "about 2 min"), (600.0, "about 10 min")]
    for seconds, words in guesses:
        job.update(wait_seconds=seconds)
        assert progress_message(job.snapshot) == f"In the queue: 3 mascots ahead of yours ({words})."


def test_a_skipped_gallery_is_rebuilt_without_making_its_schema_again(monkeypatch):
    """Gradio builds the gallery anew for each gr.skip() a progress message sends it; its API schema is the class's,
    made once, and each rebuilt gallery still holds its own copy of it."""
    from gradio.components.gallery import GalleryData

    from mascot.ui.pictures import PreviewGallery

    made = []
    schema_of = GalleryData.model_json_schema

    def counted(*args, **kwargs):
        made.append(1)
        return schema_of(*args, **kwargs)

    monkeypatch.setattr(GalleryData, "model_json_schema", counted)
    monkeypatch.setattr(PreviewGallery, "_schema", None)
    rebuilt = [PreviewGallery(label="Your mascots", render=False) for _ in range(5)]
    schemas = [gallery.api_info() for gallery in rebuilt]
    assert len(made) == 1
    assert all(schema == gr.Gallery(render=False).api_info() for schema in schemas)
    schemas[0]["changed"] = True  # one gallery's copy is its own
    assert "changed" not in rebuilt[1].api_info() and rebuilt[0].api_info() is schemas[0]
