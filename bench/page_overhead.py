"""The app's overhead per request through the page's own protocol, on the CPU with the tiny model: what a browser
waits for beyond the model.

    python -m bench.page_overhead [--requests 20] [--json page-overhead.json]

A browser (one keep-alive connection and its identity cookie) clicks Create as the page does: Gradio's queue join,
then the event stream read to the final answer. The app is `python app.py --model tiny`'s own (create_app, the real
worker, the SQLite store, PNG + thumbnail written), at 256x256 with 2 + 2 steps as bench/speed.py's `app_overhead`
phase. The generator's own seconds are subtracted from each request's, so the figure is the app's: HTTP, cookie,
admission, queue, handler, hand-off to the worker, saving, answer. Beside it, in the same run and on the same
protocol, a Gradio echo of one textbox: the framework's floor, which no app on Gradio goes below.

bench/speed.py measures the same request through the worker and the store without HTTP, so it runs on a bare GPU
machine without gradio; this one needs the app, and so gradio.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import httpx

from app import create_app, kandinsky_loader
from bench.timing import TimedGenerator
from mascot.generation.worker import ModelState
from mascot.settings import load_settings

# The request's fields by the page's elem_ids: 256x256, 2 decoder steps ("steps") and 2 prior steps ("idea-steps").
SMALL = {"width": 256, "height": 256, "steps": 2, "idea-steps": 2}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def click(http: httpx.Client, fn_index: int, data: list[Any]) -> str:
    """One event as the page sends it: join the queue, read the event stream to the end; the final message."""
    session = uuid.uuid4().hex
    body = {"data": data, "event_data": None, "fn_index": fn_index, "trigger_id": None, "session_hash": session}
    http.post("gradio_api/queue/join", json=body).raise_for_status()
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if "process_completed" in line:
                return line
    raise RuntimeError("the event stream ended without an answer")


def page_inputs(config: dict[str, Any], api_name: str, values: dict[str, Any]) -> tuple[int, list[Any]]:
    """An event's index and the values a fresh page sends for it (each input's default), `values` by elem_id."""
    components = {component["id"]: component.get("props", {}) for component in config["components"]}
    [event] = [event for event in config["dependencies"] if event.get("api_name") == api_name]
    data = [values.get(components[id_].get("elem_id"), components[id_].get("value")) for id_ in event["inputs"]]
    return event["id"], data


def timed_clicks(url: str, api_name: str, values: Callable[[int], dict[str, Any]], requests: int,
                 warmup: int) -> list[float]:  # fmt: skip
    """Seconds per click of a new browser, after `warmup` untimed ones; each answer must be a success."""
    with httpx.Client(base_url=url, timeout=120) as http:
        http.get("")  # the page: its identity cookie
        config = http.get("config").json()
        seconds = []
        for index in range(warmup + requests):
            fn_index, data = page_inputs(config, api_name, values(index))
            started = time.perf_counter()
            answer = click(http, fn_index, data)
            spent = time.perf_counter() - started
            if '"success": true' not in answer and '"success":true' not in answer:
                raise RuntimeError(f"request {index} failed: {answer[:300]}")
            if index >= warmup:
                seconds.append(spent)
    return seconds


def echo_floor(requests: int, warmup: int) -> list[float]:
    """The same protocol on a Gradio echo of one textbox: the framework's own time per click."""
    with gr.Blocks() as demo:
        text, echoed = gr.Textbox(elem_id="text"), gr.Textbox()
        gr.Button().click(lambda value: value, text, echoed, api_name="echo")
    demo.queue().launch(server_port=free_port(), prevent_thread_lock=True, quiet=True, _frontend=False)
    try:
        return timed_clicks(demo.local_url or "", "echo", lambda index: {"text": f"hi {index}"}, requests, warmup)
    finally:
        demo.close()


def app_overhead(folder: Path, requests: int, warmup: int) -> dict[str, Any]:
    """Through the app: each click's seconds, and the same minus its generation's."""
    environ = {"MASCOT_SECRET": secrets.token_hex(24), "MASCOT_DAILY_QUOTA": "100000"}
    environ["MASCOT_ADDRESS_DAILY_QUOTA"] = "100000"
    settings = load_settings(["--data-dir", str(folder), "--model", "tiny"], environ)
    generation_s: list[float] = []
    load = kandinsky_loader(settings)
    app = create_app(settings, load_generator=lambda on_status: TimedGenerator(load(on_status), generation_s))
    app.start()
    try:
        if app.worker.wait_until_loaded(600).state is not ModelState.READY:
            raise RuntimeError("the tiny model did not load")
        port = free_port()
        # _frontend=False skips only Gradio's 3-second probe of the page, which a busy machine can miss (the server is
        # listening when launch returns; the first click waits as long as it needs).
        app.launch(server_port=port, prevent_thread_lock=True, quiet=True, _frontend=False)
        clicks = timed_clicks(f"http://127.0.0.1:{port}/", "generate", idea, requests, warmup)
    finally:
        app.demo.close()
        app.worker.stop()
        app.store.close()
    generations = generation_s[warmup:]
    return {"click_s": clicks, "generation_s": generations}


def idea(index: int) -> dict[str, Any]:
    """What a person types and sets for click `index`: a new idea and seed each time, the small request."""
    return {"idea": f"a cheerful otter mascot {index}", "seed": index, **SMALL}


def milliseconds(values: Sequence[float]) -> dict[str, float]:
    return {"median_ms": round(1000 * statistics.median(values), 1), "min_ms": round(1000 * min(values), 1)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.page_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="timed clicks, after --warmup untimed ones")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        through_app = app_overhead(Path(folder), args.requests, args.warmup)
    floor = echo_floor(args.requests, args.warmup)
    overhead = [click - made for click, made in zip(through_app["click_s"], through_app["generation_s"], strict=True)]
    results = {
        "requests": args.requests,
        "app_overhead_per_request (click to answer, minus generation)": milliseconds(overhead),
        "click_to_answer": milliseconds(through_app["click_s"]),
        "generation (tiny model, 256x256, 2 + 2 steps)": milliseconds(through_app["generation_s"]),
        "gradio_echo_floor (same protocol, one textbox)": milliseconds(floor),
    }
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
