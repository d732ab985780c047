"""The page-overhead benchmark runs end to end: clicks through the app on the tiny model, and Gradio's own floor (a
smoke run: nothing here asserts a time)."""

import json

import httpx
import pytest

from bench import page_overhead

pytestmark = pytest.mark.slow  # the app on the tiny model, through HTTP


def test_the_page_overhead_benchmark_clicks_through_the_app_and_a_gradio_echo(tmp_path):
    out = tmp_path / "page.json"
    results = page_overhead.main(["--requests", "2", "--warmup", "1", "--json", str(out)])
    generation = results["generation (tiny model, 256x256, 2 + 2 steps)"]
    assert generation["median_ms"] > 0
    assert results["gradio_echo_floor (same protocol, one textbox, one session)"]["median_ms"] > 0
    for browser in ("page_click", "api_call", "api_call_in_a_new_session"):
        # Each click's answer is the generation's plus the app's: never less than the quickest generation.
        assert results[f"{browser}: click to answer"]["min_ms"] >= generation["min_ms"], browser
        assert f"{browser}: app overhead (click to answer, minus generation)" in results
    assert json.loads(out.read_text()) == results


def test_a_page_click_sends_its_own_check_then_the_generation_in_one_session(monkeypatch):
    sent: list[tuple[str, int, str]] = []
    monkeypatch.setattr(
        page_overhead, "click", lambda http, session, fn_index, data: sent.append((session, fn_index, "queue"))
    )
    monkeypatch.setattr(
        page_overhead, "ask", lambda http, session, fn_index, data: sent.append((session, fn_index, "at once"))
    )
    config = {
        "components": [{"id": 1, "props": {"elem_id": "idea", "value": ""}}],
        "dependencies": [
            {"id": 7, "api_name": "start_generation", "inputs": [1], "queue": False},
            {"id": 8, "api_name": "generate", "inputs": [1], "queue": None},
        ],
    }
    page = page_overhead.Browser("page_click", ["start_generation", "generate"])
    api = page_overhead.Browser("api_call_in_a_new_session", ["generate"], new_session_each_click=True)
    with httpx.Client() as unused:  # `click` and `ask` are replaced: nothing is sent
        for browser in (page, api):
            browser.http, browser.config, browser.session = unused, config, "first"
            browser.click({"idea": "an otter"})
            browser.click({"idea": "a fox"})

    one_click = [("first", 7, "at once"), ("first", 8, "queue")]
    assert sent[:4] == one_click * 2  # the page keeps its session; its first step skips the queue
    api_sessions = [session for session, _, _ in sent[4:]]
    assert [fn_index for _, fn_index, _ in sent[4:]] == [8, 8]
    assert len(set(api_sessions)) == 2 and "first" not in api_sessions
