"""The app's overhead per click through the page's own protocol, on the CPU with the tiny model: what a browser
waits for beyond the model.

    python -m bench.page_overhead [--requests 20] [--json page-overhead.json]

Browsers (each with one keep-alive connection, its identity cookie and one Gradio session, as a page keeps for as long
as it is open) take turns, click by click, so a change in the machine's load touches each alike:
- the page's Create click: its two steps as the page sends them, the page's own check, seed and status line
  (start_generation: answered at once, outside the queue) and then /generate, from the first request to the mascots'
  answer;
- an API call: /generate alone, as gradio_client sends it;
- an API call in a new session each time: Gradio builds a session's state (a copy of every component's config, 7 ms
  for this page on this machine) on its first event; a page does that on load, so this is the earlier rounds' way of
  measuring, kept to compare with.
Each request goes through Gradio's queue join and its event stream, read to the final answer. The app is
`python app.py --model tiny`'s own (create_app, the real worker, the SQLite store, PNG + thumbnail written), at
256x256 with 2 + 2 steps as bench/speed.py's `app_overhead` phase. The generator's own seconds are subtracted from
each click's, so the figure is the app's: HTTP, cookie, admission, queue, handler, hand-off to the worker, saving,
answer. Beside it, in the same run and on the same protocol, a Gradio echo of one textbox: the framework's floor,
which no app on Gradio goes below.

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
from dataclasses import dataclass, field
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


def click(http: httpx.Client, session: str, fn_index: int, data: list[Any]) -> str:
    """One event as the page sends it: join the queue, read the event stream to the end; the final message."""
    body = {"data": data, "event_data": None, "fn_index": fn_index, "trigger_id": None, "session_hash": session}
    http.post("gradio_api/queue/join", json=body).raise_for_status()
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if "process_completed" in line:
                if '"success": true' not in line and '"success":true' not in line:
                    raise RuntimeError(f"event {fn_index} failed: {line[:300]}")
                return line
    raise RuntimeError("the event stream ended without an answer")


def ask(http: httpx.Client, session: str, fn_index: int, data: list[Any]) -> str:
    """One event outside the queue (queue=False), as the page sends it: one POST, its answer."""
    body = {"data": data, "event_data": None, "fn_index": fn_index, "trigger_id": None, "session_hash": session}
    answer = http.post("gradio_api/run/predict", json=body)
    answer.raise_for_status()
    return answer.text


def page_inputs(config: dict[str, Any], api_name: str, values: dict[str, Any]) -> tuple[int, list[Any], bool]:
    """An event's index, the values a fresh page sends for it (each input's default), `values` by elem_id, and
    whether it goes through the queue."""
    components = {component["id"]: component.get("props", {}) for component in config["components"]}
    [event] = [event for event in config["dependencies"] if event.get("api_name") == api_name]
    data = [values.get(components[id_].get("elem_id"), components[id_].get("value")) for id_ in event["inputs"]]
    return event["id"], data, event.get("queue") is not False


@dataclass
class Browser:
    """One browser: its connection and cookie, the events one click sends in turn (by api_name), and its session,
    kept from click to click unless `new_session_each_click`."""

    name: str
    steps: Sequence[str]
    new_session_each_click: bool = False
    seconds: list[float] = field(default_factory=list)
    http: httpx.Client = field(init=False)
    config: dict[str, Any] = field(init=False)  # the page's config: its components and events
    session: str = field(init=False)

    def open(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)
        self.http.get("")  # the page: its identity cookie
        self.config = self.http.get("config").json()
        self.session = uuid.uuid4().hex

    def click(self, values: dict[str, Any]) -> float:
        """One click's seconds: each step joined once the one before has answered, as the page does."""
        if self.new_session_each_click:
            self.session = uuid.uuid4().hex
        started = time.perf_counter()
        for api_name in self.steps:
            fn_index, data, queued = page_inputs(self.config, api_name, values)
            (click if queued else ask)(self.http, self.session, fn_index, data)
        return time.perf_counter() - started

    def close(self) -> None:
        self.http.close()


def take_turns(url: str, browsers: Sequence[Browser], values: Callable[[int], dict[str, Any]], requests: int,
               warmup: int, after_click: Callable[[Browser], None] = lambda browser: None) -> None:  # fmt: skip
    """Each browser clicks in turn, `warmup` untimed rounds and then `requests` timed ones (into `seconds`);
    `after_click` sees each click, timed or not."""
    opened: list[Browser] = []
    try:
        for browser in browsers:
            browser.open(url)
            opened.append(browser)
        for index in range(warmup + requests):
            for browser in browsers:
                spent = browser.click(values(index))
                after_click(browser)
                if index >= warmup:
                    browser.seconds.append(spent)
    finally:
        for browser in opened:
            browser.close()


def echo_floor(requests: int, warmup: int) -> list[float]:
    """The same protocol on a Gradio echo of one textbox, in one session: the framework's own time per click."""
    with gr.Blocks() as demo:
        text, echoed = gr.Textbox(elem_id="text"), gr.Textbox()
        gr.Button().click(lambda value: value, text, echoed, api_name="echo")
    demo.queue().launch(server_port=free_port(), prevent_thread_lock=True, quiet=True, _frontend=False)
    browser = Browser("echo", ["echo"])
    try:
        take_turns(demo.local_url or "", [browser], lambda index: {"text": f"hi {index}"}, requests, warmup)
    finally:
        demo.close()
    return browser.seconds


# The page's Create click: its own check, seed and status line (private), then the generation; the seed is given, as
# after a person typed one, so the steps send the same values.
BROWSERS = (
    ("page_click", ["start_generation", "generate"], False),
    ("api_call", ["generate"], False),
    ("api_call_in_a_new_session", ["generate"], True),
)


def app_overhead(folder: Path, requests: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """Through the app, for each kind of browser: each click's seconds, and its generation's."""
    environ = {"MASCOT_SECRET": secrets.token_hex(24), "MASCOT_DAILY_QUOTA": "100000"}
    environ["MASCOT_ADDRESS_DAILY_QUOTA"] = "100000"
    settings = load_settings(["--data-dir", str(folder), "--model", "tiny"], environ)
    generation_s: list[float] = []
    load = kandinsky_loader(settings)
    app = create_app(settings, load_generator=lambda on_status: TimedGenerator(load(on_status), generation_s))
    app.start()
    browsers = [Browser(name, steps, new_session) for name, steps, new_session in BROWSERS]
    generations: dict[str, list[float]] = {browser.name: [] for browser in browsers}

    def note_generation(browser: Browser) -> None:  # each click made exactly one run: the last one recorded
        generations[browser.name].append(generation_s[-1])

    try:
        if app.worker.wait_until_loaded(600).state is not ModelState.READY:
            raise RuntimeError("the tiny model did not load")
        port = free_port()
        # _frontend=False skips only Gradio's 3-second probe of the page, which a busy machine can miss (the server is
        # listening when launch returns; the first click waits as long as it needs).
        app.launch(server_port=port, prevent_thread_lock=True, quiet=True, _frontend=False)
        take_turns(f"http://127.0.0.1:{port}/", browsers, idea, requests, warmup, note_generation)
    finally:
        app.demo.close()
        app.worker.stop()
        app.store.close()
    if len(generation_s) != len(browsers) * (warmup + requests):
        raise RuntimeError(f"expected one run per click, got {len(generation_s)} runs")
    return {
        browser.name: {"click_s": browser.seconds, "generation_s": generations[browser.name][warmup:]}
        for browser in browsers
    }


def idea(index: int) -> dict[str, Any]:
    """What a person types and sets for click `index`: a new idea and seed each time, the small request."""
    return {"idea": f"a cheerful otter mascot {index}", "seed": index, "randomize-seed": False, **SMALL}


def milliseconds(values: Sequence[float]) -> dict[str, float]:
    return {"median_ms": round(1000 * statistics.median(values), 1), "min_ms": round(1000 * min(values), 1)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.page_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20, help="timed clicks of each browser, after --warmup")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        through_app = app_overhead(Path(folder), args.requests, args.warmup)
    floor = echo_floor(args.requests, args.warmup)
    results: dict[str, Any] = {"requests": args.requests}
    for name, timed in through_app.items():
        overhead = [click - made for click, made in zip(timed["click_s"], timed["generation_s"], strict=True)]
        results[f"{name}: app overhead (click to answer, minus generation)"] = milliseconds(overhead)
        results[f"{name}: click to answer"] = milliseconds(timed["click_s"])
    generations = [made for timed in through_app.values() for made in timed["generation_s"]]
    results["generation (tiny model, 256x256, 2 + 2 steps)"] = milliseconds(generations)
    results["gradio_echo_floor (same protocol, one textbox, one session)"] = milliseconds(floor)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
