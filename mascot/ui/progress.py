"""Relaying a job to the page: its place in the queue, its steps and previews, and what came of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from mascot.generation.generator import GeneratedImages
from mascot.generation.worker import FINAL_STATES, REMAKING, SAVING, Job, JobSnapshot, JobState
from mascot.ui.common import PUBLIC_CHOICE, plain, plural

POLL_SECONDS = 1.0


def relay_job(job: Job, progress: gr.Progress, url_of: Callable[[str], str]) -> Iterator[tuple[Any, str]]:
    """Show a job's queue position, steps and previews until it ends. If the browser leaves, the job goes on.

    A preview is sent once, when it is new, inside the event's message as a data: URL (ui.pictures.PreviewGallery:
    Gradio writes no file of it into its cache, where anyone with the URL could fetch it); sending it again at each
    step would encode it again for nothing. The saved mascots are shown by `url_of` (share id -> the checking
    route's URL, mascot.web.images), never by their files.
    """
    try:
        yield from _relay(job, progress, url_of)
    finally:  # the end was handed on, or the browser left: either way a shutdown need not wait for this one
        job.answered.set()


def _relay(job: Job, progress: gr.Progress, url_of: Callable[[str], str]) -> Iterator[tuple[Any, str]]:
    """relay_job's loop: one update per change of the job."""
    seen_version = -1
    shown_preview: Any = None
    while True:
        snapshot = job.wait_for_change(seen_version, timeout=POLL_SECONDS)
        if snapshot.version == seen_version:
            continue
        seen_version = snapshot.version
        if snapshot.state is JobState.FAILED:
            raise gr.Error(snapshot.error, print_exception=False)
        if snapshot.state in FINAL_STATES:
            yield finished_outputs(snapshot, url_of)
            return
        message = progress_message(snapshot)
        if snapshot.state is JobState.RUNNING and snapshot.total:
            progress((snapshot.step, snapshot.total), desc=message)
        else:
            progress(0.0, desc=message)
        is_new_preview = snapshot.preview is not None and snapshot.preview is not shown_preview
        if is_new_preview:
            shown_preview = snapshot.preview
        yield ([snapshot.preview] if is_new_preview else gr.skip()), message


def progress_message(snapshot: JobSnapshot) -> str:
    """Where the job is, in words."""
    if snapshot.state is JobState.QUEUED and snapshot.jobs_ahead:
        wait = f" ({wait_in_words(snapshot.wait_seconds)})" if snapshot.wait_seconds is not None else ""
        return f"In the queue: {plural(snapshot.jobs_ahead, 'mascot')} ahead of yours{wait}."
    if snapshot.stage == SAVING:  # the store could not take it: the worker tries again (GenerationWorker._save)
        return "Your mascot is made, but the server cannot save it right now: it keeps trying for a few minutes…"
    if snapshot.stage == REMAKING:  # its shared run ran out of GPU memory (GenerationWorker._remake_in_smaller_runs)
        return "The server ran short of memory, so your mascot is being made again in a smaller run…"
    if snapshot.stage == "waiting":  # compiled code is being loaded between runs (generation/turns.py)
        return "Getting faster drawing ready; your mascot starts right after…"
    if snapshot.state is JobState.QUEUED or not snapshot.total:
        return "Starting…"
    if snapshot.stage != "prior" and snapshot.step >= snapshot.total:
        # After the last decoder step the pictures are decoded, saved and thumbnailed: seconds on a CPU.
        return "Finishing…"
    stage = "Imagining the idea" if snapshot.stage == "prior" else "Drawing"
    return f"{stage}: step {snapshot.step} of {snapshot.total}."


def wait_in_words(seconds: float) -> str:
    """A rough wait for people: the guess is only as good as the jobs ahead are alike."""
    if seconds < 10:
        return "a few seconds"
    if seconds < 60:
        return f"about {round(seconds / 5) * 5} s"
    minutes = round(seconds / 60)
    return f"about {minutes} min"


def finished_outputs(snapshot: JobSnapshot, url_of: Callable[[str], str]) -> tuple[Any, str]:
    """The saved mascots by their URLs, which Gradio hands to the browser without copying the files into its cache
    (a copy there is served to anyone with its URL, whatever becomes of the mascot), and the status line."""
    if snapshot.state is JobState.CANCELLED:
        return gr.skip(), snapshot.error or "Cancelled. Nothing was saved and nothing counts against your quota."
    if snapshot.outcome is None:  # a DONE job always carries what on_finished saved
        raise RuntimeError("A finished job carries no saved images.")
    urls = [url_of(public_id) for public_id in snapshot.outcome.public_ids]
    return urls, done_message(len(urls), snapshot.generated)


# New mascots go to the public gallery (the store's default): said each time, so nobody's idea is public unawares.
SHOWN_PUBLICLY = {
    1: " It is public in the **Gallery**: to keep it to yourself, open it in My mascots and untick *{choice}*.",
    2: " They are public in the **Gallery**: to keep one to yourself, open it in My mascots and untick *{choice}*.",
}


def done_message(count: int, generated: GeneratedImages | None) -> str:
    message = f"Done: {plural(count, 'mascot')} saved to **My mascots**."
    message += SHOWN_PUBLICLY[min(count, 2)].format(choice=PUBLIC_CHOICE)
    if generated is None:
        return message
    seeds = ", ".join(str(seed) for seed in generated.seeds)
    message += f" Seed{'s' if len(generated.seeds) != 1 else ''}: {seeds}."
    for label, use in (("prompt", generated.prompt), ("negative prompt", generated.negative_prompt)):
        if use.cut:
            message += f"\n\n✂️ Your {label} was longer than the model reads (77 tokens); this end was left out: "
            message += f"*{plain(use.cut)}*"
    return message
