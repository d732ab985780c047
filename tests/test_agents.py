"""The API for agents: gradio_client's view_api types whole numbers as integers and names every output; `--mcp`
serves Gradio's MCP server with four described tools (generate, gallery, my_mascots, mascot), the page-only and
destructive events hidden, and each MCP client its own browser (never another's private mascots)."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Awaitable, Callable
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mascot.prompt.request import INTEGER_RANGES
from mascot.ui.agents import AGENT_TOOLS
from tests.support.raw_gradio import call
from tests.support.site import FAST, make, mine, public

pytestmark = pytest.mark.slow

WHOLE_NUMBERS = {*INTEGER_RANGES, "page"}


def test_view_api_types_whole_numbers_as_integers_and_names_every_output(site):
    endpoints = site.browser().view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/generate", "/gallery", "/my_mascots", "/mascot", "/delete", "/quota"} <= set(endpoints)
    for name, endpoint in endpoints.items():
        for parameter in endpoint["parameters"]:
            expected = "int" if parameter["parameter_name"] in WHOLE_NUMBERS else None
            if expected:
                assert parameter["python_type"]["type"] == expected, (name, parameter["parameter_name"])
        for returned in endpoint["returns"]:
            assert returned["label"] and not returned["label"].startswith("value_"), (name, returned)
    generate = {p["parameter_name"]: p["python_type"]["type"] for p in endpoints["/generate"]["parameters"]}
    assert generate["guidance_scale"] == "float" and generate["num_inference_steps"] == "int"
    assert [r["label"] for r in endpoints["/generate"]["returns"]] == ["Your mascots", "Status"]


def test_a_fraction_for_a_whole_number_is_still_refused_by_name_not_rounded(site):
    from gradio_client.exceptions import AppError

    with pytest.raises((AppError, ValueError), match="num_inference_steps"):
        site.browser().predict(prompt="otter", **{**FAST, "num_inference_steps": 2.5}, api_name="/generate")


def test_the_rest_api_makes_a_mascot_from_the_parameters_its_page_lists_by_position_or_by_name(site):
    """/call/generate as the API page's curl example sends it: the API's own parameters only (not the page's State,
    whose place Gradio fills itself), or, on /call/v2, by name."""
    browser = site.browser()
    parameters = browser.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    values = {"prompt": "an otter on the REST API", "seed": 1, **FAST}
    data = [values.get(p["parameter_name"], p["parameter_default"]) for p in parameters]
    with httpx.Client(base_url=site.url, cookies=dict(browser.cookies), timeout=60) as http:
        by_position = call(http, "generate", {"data": data})
        by_name = call(http, "v2/generate", {**values, "prompt": "an otter by name"})

    assert by_position.success and by_name.success, (by_position, by_name)
    assert {"an otter on the REST API", "an otter by name"} <= {mascot["prompt"] for mascot in mine(browser)}


# ---- the MCP server ------------------------------------------------------------------------------------------------
@pytest.fixture
def agents_site(tmp_path, monkeypatch):
    from tests.support.site import serve

    yield from serve(tmp_path, monkeypatch, ["--mcp", "--daily-quota", "5"])


def over_mcp(url: str, work: Callable[[ClientSession], Awaitable[Any]], *, cookies: bool = True) -> Any:
    """Run `work` in one MCP client session (one HTTP client: its cookie jar is its identity; with `cookies` False
    it keeps none)."""

    async def session() -> Any:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            streamable_http_client(url + "gradio_api/mcp/", http_client=http) as (read, write, _),
            ClientSession(read, write) as client,
        ):
            if not cookies:  # httpx copies a jar handed to it: its own jar is told to keep nothing
                http.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            await client.initialize()
            return await work(client)

    return asyncio.run(session())


def outputs(result: Any) -> list[Any]:
    """A tool call's outputs as values: Gradio's MCP server hands each on as Python's repr (a pydantic RootModel's)."""
    assert not result.isError, result.content
    values = []
    for item in result.content:
        if item.type == "text":
            try:
                values.append(ast.literal_eval(item.text.removeprefix("root=")))
            except (ValueError, SyntaxError):
                continue
    return values


def listed(result: Any) -> list[dict]:
    """The `mascots` output (the share ids and prompts) of a gallery or my_mascots tool call."""
    for value in outputs(result):
        if isinstance(value, list) and all(isinstance(entry, dict) and "public_id" in entry for entry in value):
            return value
    raise AssertionError(f"no mascots list in {result.content}")


def described(result: Any) -> dict:
    """The one-mascot output of a `mascot` tool call."""
    for value in outputs(result):
        if isinstance(value, dict) and "public_id" in value:
            return value
    raise AssertionError(f"no mascot in {result.content}")


def test_mcp_offers_the_four_tools_with_every_parameter_described(agents_site):
    async def tools(client: ClientSession) -> Any:
        return (await client.list_tools()).tools

    offered = {tool.name: tool for tool in over_mcp(agents_site.url, tools)}
    assert set(offered) == set(AGENT_TOOLS) == {"generate", "gallery", "my_mascots", "mascot"}
    for tool in offered.values():
        assert tool.description
        for name, schema in tool.inputSchema["properties"].items():
            assert len(schema.get("description", "")) > 10, (tool.name, name)
    generate = offered["generate"].inputSchema["properties"]
    assert generate["num_inference_steps"]["type"] == "integer" and generate["guidance_scale"]["type"] == "number"
    assert "in_pages_words" not in generate  # the page's State: not the agents' to set


def test_hidden_events_cannot_be_called_as_tools_but_stay_in_the_gradio_client_api(agents_site):
    browser = agents_site.browser()
    make(browser, "an otter mechanic")
    public_id = mine(browser)[0]["public_id"]

    async def delete(client: ClientSession) -> Any:
        return await client.call_tool("delete", {"public_id": public_id})

    result = over_mcp(agents_site.url, delete)
    assert result.isError and "Unknown tool" in result.content[0].text
    assert mine(browser)[0]["public_id"] == public_id  # still there
    assert browser.predict(api_name="/quota")  # the page's events keep their gradio_client API


def test_the_gallery_tool_lists_public_mascots(agents_site):
    make(agents_site.browser(), "a public lighthouse keeper")
    visible = public(agents_site.browser())
    assert visible, "the test needs a public mascot"

    async def gallery(client: ClientSession) -> Any:
        return await client.call_tool("gallery", {"page": 1, "sort": "Newest", "search": ""})

    result = over_mcp(agents_site.url, gallery)
    entries = listed(result)
    assert [entry["public_id"] for entry in entries] == [entry["public_id"] for entry in visible]
    # The thumbnails' URLs are the page's checking image route, not under the MCP server's mount.
    thumbnail = f"{agents_site.url}images/{visible[0]['public_id']}.thumb.webp"
    assert thumbnail in result.content[0].text and "/gradio_api/mcp/images" not in result.content[0].text


def test_an_mcp_client_generates_as_its_own_browser_and_sees_only_its_own_mascots(agents_site):
    browser = agents_site.browser()
    make(browser, "a private badger", seed=3)
    theirs = mine(browser)[0]
    browser.predict(theirs["public_id"], False, api_name="/set_public")  # private now: only its maker may see it

    async def generate_then_list(client: ClientSession) -> Any:
        made = await client.call_tool("generate", {"prompt": "an agent's owl", "seed": 5, **FAST})
        assert not made.isError, made.content
        assert "Done: 1 mascot saved" in made.content[0].text
        mine_now = listed(await client.call_tool("my_mascots", {"page": 1, "search": ""}))
        opened = await client.call_tool("mascot", {"public_id": mine_now[0]["public_id"]})
        assert not opened.isError, opened.content
        other = await client.call_tool("mascot", {"public_id": theirs["public_id"]})
        return mine_now, described(opened), other

    own, opened, other = over_mcp(agents_site.url, generate_then_list)
    assert [entry["prompt"] for entry in own] == ["an agent's owl"]
    # Its own mascot opens with the parameters it was made with, in the API's names.
    assert opened["num_inference_steps"] == FAST["num_inference_steps"] and opened["width"] == FAST["width"]
    assert opened["share_link"].endswith(f"?mascot={own[0]['public_id']}") and opened["model_name"]
    # Another browser's private mascot: refused, as to any stranger.
    assert other.isError and "private or was deleted" in other.content[0].text

    async def fresh_list(client: ClientSession) -> Any:
        return listed(await client.call_tool("my_mascots", {"page": 1, "search": ""}))

    assert over_mcp(agents_site.url, fresh_list) == []  # a new MCP client is a new browser: nothing of the first's


def test_an_mcp_client_without_cookies_is_a_new_browser_at_each_call(agents_site):
    async def try_everything(client: ClientSession) -> Any:
        made = await client.call_tool("generate", {"prompt": "a cookieless crow", **FAST})
        own = listed(await client.call_tool("my_mascots", {"page": 1, "search": ""}))
        gallery = listed(await client.call_tool("gallery", {"page": 1, "sort": "Newest", "search": ""}))
        return made, own, gallery

    make(agents_site.browser(), "a public heron")
    made, own, gallery = over_mcp(agents_site.url, try_everything, cookies=False)
    # Each call without the cookie gets a browser of its own, as a browser that refuses cookies does: the mascot is
    # made (and counted for its network), and the next call, another browser, owns nothing.
    assert not made.isError and "Done: 1 mascot saved" in made.content[0].text
    assert own == [], own
    assert [entry["prompt"] for entry in gallery] == ["a cookieless crow", "a public heron"]


def test_a_real_app_process_with_mcp_offers_the_four_tools_and_still_drains_on_sigterm(tmp_path):
    from tests.support.app_process import AppProcess

    process = AppProcess(tmp_path / "data", tmp_path, ("--mcp",)).start()
    try:

        async def tools_and_gallery(client: ClientSession) -> Any:
            names = {tool.name for tool in (await client.list_tools()).tools}
            return names, await client.call_tool("gallery", {"page": 1, "sort": "Newest", "search": ""})

        names, gallery = over_mcp(process.url, tools_and_gallery)
        assert names == set(AGENT_TOOLS)
        assert listed(gallery) == []
    finally:
        process.stop()
    assert process.process is not None and process.process.returncode == 0, process.log()
    assert "drained in" in process.log()
    assert "gr.State input" not in process.log()  # Gradio's warning about /generate's State would only alarm


@pytest.fixture
def crowded_site(tmp_path, monkeypatch):
    """Agents from as many networks as they like: no cap per network on jobs queued or on the daily quota."""
    from tests.support.site import serve

    environ = {"MASCOT_MAX_QUEUED_PER_CLIENT": "0"}
    yield from serve(tmp_path, monkeypatch, ["--mcp", "--address-daily-quota", "0"], environ)


def test_agents_waiting_for_their_mascots_leave_threads_for_everyone_else(crowded_site):
    # Each agent's Generate holds a thread of Gradio's pool until its mascot is saved: with the pool at Gradio's 40,
    # 45 agents (8 jobs a network, from 6 networks) left none for any other event, picture or page (16 s each on the
    # preview model). The pool has room for every job the worker may hold.
    from app import OTHER_HANDLER_THREADS

    agents = OTHER_HANDLER_THREADS + 5
    worker = crowded_site.app.worker

    async def agent(index: int) -> Any:
        async with (
            httpx.AsyncClient(timeout=120) as http,
            streamable_http_client(crowded_site.url + "gradio_api/mcp/", http_client=http) as (read, write, _),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            return await client.call_tool("generate", {"prompt": f"agent {index}'s otter", **FAST})

    def gallery_while_they_wait() -> int:
        # No job can end while the gate is shut, so before the fix this call could only time out, however long it
        # was given; the generous timeout is for a busy machine, not a speed this test asks for.
        answer = httpx.post(crowded_site.url + "gradio_api/run/gallery", json={"data": [1, "Newest", ""]}, timeout=60)
        return answer.status_code

    async def crowd() -> tuple[int, list[Any]]:
        crowded_site.fake.gate.clear()  # the first job stops after a step; the others wait behind it
        try:
            made = [asyncio.ensure_future(agent(index)) for index in range(agents)]
            while worker.queue_length < OTHER_HANDLER_THREADS:  # Gradio's 40 threads all wait on their jobs
                assert not any(task.done() for task in made), [task.result() for task in made if task.done()]
                await asyncio.sleep(0.05)
            status = await asyncio.to_thread(gallery_while_they_wait)
        finally:
            crowded_site.fake.gate.set()
        return status, await asyncio.gather(*made)

    status, made = asyncio.run(crowd())
    assert status == 200
    assert all(not result.isError for result in made)
