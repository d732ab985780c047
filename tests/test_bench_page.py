"""The page-overhead benchmark runs end to end: clicks through the app on the tiny model, and Gradio's own floor (a
smoke run: nothing here asserts a time)."""

import json

import pytest

from bench import page_overhead

pytestmark = pytest.mark.slow  # the app on the tiny model, through HTTP


def test_the_page_overhead_benchmark_clicks_through_the_app_and_a_gradio_echo(tmp_path):
    out = tmp_path / "page.json"
    results = page_overhead.main(["--requests", "2", "--warmup", "1", "--json", str(out)])
    for name in (
        "app_overhead_per_request (click to answer, minus generation)",
        "click_to_answer",
        "generation (tiny model, 256x256, 2 + 2 steps)",
        "gradio_echo_floor (same protocol, one textbox)",
    ):
        assert results[name]["median_ms"] > 0, name
    # Each click's answer is the generation's plus the app's: never less than the generation alone.
    assert results["click_to_answer"]["min_ms"] >= results["generation (tiny model, 256x256, 2 + 2 steps)"]["min_ms"]
    assert json.loads(out.read_text()) == results
