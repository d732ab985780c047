"""The app as a user runs it: a real `python app.py --model tiny` process, driven by gradio_client browsers."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from tests.support.app_process import (
    ROOT,
    refused_start,
    running_app,
    wait_drawing,
    wait_until_model_ready,
)

pytestmark = pytest.mark.slow  # real `python app.py` processes

# How long a step that takes seconds on an idle machine may take on one busy with other work (bounds, not waits).
BUSY_MACHINE_S = 180
FAST = {"width": 256, "height": 256, "num_inference_steps": 2, "prior_num_inference_steps": 2}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # Requests share runs on a GPU by default; here on the CPU too, so that sharing is tested end to end.
    yield from running_app(tmp_path_factory, "app", ("--max-batch-images", "4"))


def history_captions(client: Client) -> list[str]:
    """The prompts of this browser's mascots on the first page of My mascots, newest first."""
    _gallery, page, _label, mascots = client.predict(api_name="/my_mascots")
    assert page == 1
    return [mascot["prompt"] for mascot in mascots]  # the thumbnails' captions also carry the likes


def generate(client: Client, prompt: str, **overrides):
    return client.predict(prompt=prompt, **{"seed": 7, **FAST, **overrides}, api_name="/generate")


def test_the_page_says_the_preview_model_is_loaded_and_why(app):
    print(f"page served {app.seconds_to_page:.1f} s after `python app.py`")
    banner = wait_until_model_ready(app.browser())
    # One line for people, the details folded; what the operator can do about it is in the log (and the README).
    assert "Preview mode: pictures are placeholders" in banner and "<summary>Why?</summary>" in banner
    assert "--model" not in banner
    assert "--model PATH" in app.log(tail=None)


def test_a_start_is_quiet_no_torchvision_notice_no_progress_bars_no_http_chatter(app):
    wait_until_model_ready(app.browser())
    log = app.log(tail=None)
    assert "is ready on cpu" in log
    assert "torchvision" not in log  # the PIL image processor is named outright
    assert "Loading pipeline components" not in log and "Loading weights" not in log and "Writing model" not in log
    assert "HTTP Request:" not in log  # Gradio's own start-up requests, logged by httpx


def test_generate_returns_saved_pngs_with_their_parameters(app):
    client = app.browser()
    wait_until_model_ready(client)
    images, status = generate(client, "a cheerful otter barista", num_images_per_prompt=2, seed=11)
    assert len(images) == 2
    assert "Seeds: 11, 12" in status
    for entry in images:
        with Image.open(entry["image"]) as picture:
            assert picture.format == "PNG" and picture.size == (256, 256)
            assert "a cheerful otter barista" in picture.info["parameters"]


def test_two_browsers_never_see_each_others_history_and_it_survives_a_restart(app, tmp_path):
    alice, bob = app.browser(), app.browser()
    wait_until_model_ready(alice)
    generate(alice, "alice's purple dragon")
    generate(bob, "bob's green frog")
    assert history_captions(alice) == ["alice's purple dragon"]
    assert history_captions(bob) == ["bob's green frog"]
    assert alice.cookies and alice.cookies != bob.cookies

    app.stop()
    app.start()
    alice_again = app.browser(cookies=alice.cookies)
    assert history_captions(alice_again) == ["alice's purple dragon"]
    stranger = app.browser()
    assert history_captions(stranger) == []


def test_bad_input_gets_a_sentence_naming_the_parameter_and_the_app_keeps_serving(app):
    client = app.browser()
    wait_until_model_ready(client)
    for overrides, expected in [
        ({"width": 300}, "width must be a multiple of 64"),
        ({"num_inference_steps": 2.5}, "num_inference_steps must be a whole number"),
        ({"guidance_scale": 50}, "guidance_scale must be between 1 and 20"),
        ({"seed": -1}, "seed must be between 0 and 4294967295"),
        ({"num_images_per_prompt": 5}, "num_images_per_prompt must be between 1 and 4"),
    ]:
        with pytest.raises(Exception) as caught:
            generate(client, "an otter", **overrides)
        assert expected in str(caught.value)
    with pytest.raises(Exception, match="prompt is empty"):
        generate(client, "\u200b  ")
    images, _ = generate(client, "still works")
    assert len(images) == 1


def test_newest_mascots_come_first_in_history(app):
    client = app.browser()
    wait_until_model_ready(client)
    generate(client, "first idea")
    generate(client, "second idea")
    assert history_captions(client) == ["second idea", "first idea"]


def test_nothing_outside_the_images_folder_is_served(app):
    secret_file = app.data_dir / "secret.key"
    for path in (
        f"gradio_api/file={secret_file}",
        f"gradio_api/file={app.data_dir / 'mascots.db'}",
        "gradio_api/file=/etc/passwd",
        f"gradio_api/file={ROOT / 'app.py'}",
    ):
        with pytest.raises(OSError):
            urllib.request.urlopen(app.url + path, timeout=5)


def test_nothing_runs_around_the_queue(app):
    # All of /generate's 17 inputs, the page's State last (with fewer, mascot.web.events answers 400 before Gradio is
    # asked: only /call/<name> may leave the State's place out, as Gradio fills it in there).
    body = json.dumps({"data": ["an otter", "", 1, 256, 256, 1, 2, 4.0, 2, 1.0, "", "", "", 0.3, "", 1.0, None]})
    request = urllib.request.Request(
        app.url + "gradio_api/run/generate",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code in (403, 404)


def test_cancel_stops_a_generation_and_nothing_is_saved(app):
    client = app.browser()
    wait_until_model_ready(client)
    job = client.submit(
        prompt="a slow one",
        seed=1,
        width=512,
        height=512,
        num_inference_steps=150,
        prior_num_inference_steps=2,
        api_name="/generate",
    )
    deadline = time.monotonic() + BUSY_MACHINE_S
    while not any("step" in str(output) for output in job.outputs()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.predict(api_name="/cancel") == "Cancelling…"
    _, status = job.result(timeout=BUSY_MACHINE_S)
    assert status.startswith("Cancelled")
    assert history_captions(client) == []


def test_a_generation_goes_on_and_is_saved_when_the_browser_leaves(app):
    client = app.browser()
    wait_until_model_ready(client)
    job = client.submit(prompt="left behind", seed=3, api_name="/generate", **{**FAST, "num_inference_steps": 40})
    deadline = time.monotonic() + BUSY_MACHINE_S
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.1)
    job.cancel()  # the client hangs up, as a closed tab does
    cookies = dict(client.cookies)
    client.close()
    returning = app.browser(cookies=cookies)
    app.wait_until_idle()  # the job runs on without its browser; on a busy machine that takes minutes, not seconds
    assert history_captions(returning) == ["left behind"]


def test_a_style_preset_changes_the_mascot_on_the_real_pipeline(app):
    client = app.browser()
    wait_until_model_ready(client)
    (plain_image,), _ = generate(client, "a fox", seed=21)
    (styled_image,), _ = generate(client, "a fox", seed=21, style="Kawaii 3D")
    with Image.open(plain_image["image"]) as plain, Image.open(styled_image["image"]) as styled:
        assert plain.tobytes() != styled.tobytes()
        # Other tools see the prompt the model was given (the idea first, then the style's words) and the style by name.
        assert styled.info["parameters"].startswith("a fox, ")
        assert "Style: Kawaii 3D" in styled.info["parameters"] and "Sampler: DDPMScheduler" in styled.info["parameters"]
        assert "Kawaii 3D" in styled.info["mascot"]


def test_a_logo_mixed_in_changes_the_mascot_on_the_real_pipeline(app, tmp_path):
    from gradio_client import handle_file

    logo_file = tmp_path / "logo.png"
    Image.new("RGBA", (200, 200), (10, 120, 220, 255)).save(logo_file)
    client = app.browser()
    wait_until_model_ready(client)
    logo_id = client.predict(handle_file(str(logo_file)), api_name="/upload_logo")
    (plain_image,), _ = generate(client, "a fox", seed=33)
    (mixed_image,), _ = generate(client, "a fox", seed=33, logo=logo_id, logo_weight=0.6)
    with Image.open(plain_image["image"]) as plain, Image.open(mixed_image["image"]) as mixed:
        assert plain.tobytes() != mixed.tobytes()
        assert logo_id in mixed.info["mascot"]


def test_browsers_asking_at_once_share_a_run_and_each_gets_what_it_would_get_alone(app):
    first, *visitors = [app.browser() for _ in range(3)]
    wait_until_model_ready(first)
    # A long job runs first, so that the two visitors' requests arrive while it runs and wait together.
    long = {**FAST, "width": 1024, "height": 1024, "num_inference_steps": 30}  # a few seconds on the tiny model
    long_job = first.submit(prompt="a long job", seed=1, **long, api_name="/generate")
    wait_drawing(long_job, BUSY_MACHINE_S)
    jobs = [
        visitor.submit(prompt=f"visitor {index}'s mascot", seed=100 + index, **FAST, api_name="/generate")
        for index, visitor in enumerate(visitors)
    ]
    results = [job.result(timeout=300) for job in jobs]
    long_job.result(timeout=300)

    log = app.log(tail=None)
    assert "share one run" in log
    assert "Content-Length" not in log  # no preview file rewritten while it was being downloaded
    for index, (_images, status) in enumerate(results):
        assert f"Seed: {100 + index}." in status
    images, _ = generate(app.browser(), "visitor 1's mascot", seed=101)
    with Image.open(results[1][0][0]["image"]) as shared, Image.open(images[0]["image"]) as alone:
        difference = np.abs(np.asarray(shared, dtype=np.int16) - np.asarray(alone, dtype=np.int16)).max()
    # Within 1/255, as for any batch at few steps (batched arithmetic rounds differently, and the gap grows with
    # the number of steps).
    assert difference <= 1


def test_a_missing_blocked_words_file_stops_the_app_with_a_sentence_naming_it(tmp_path):
    started = refused_start(tmp_path, "--blocked-words", "missing.txt")
    assert started.returncode != 0
    assert f"did not start. The blocked-words file {ROOT / 'missing.txt'} does not exist" in started.stderr
    assert "Traceback" not in started.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_the_health_check_answers_200_once_the_model_is_ready(app):
    wait_until_model_ready(app.browser())
    with urllib.request.urlopen(app.url + "healthz", timeout=10) as response:
        report = json.loads(response.read())
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
    assert report["status"] == "ready" and report["preview_model"] is True and report["database"] == "ok"
