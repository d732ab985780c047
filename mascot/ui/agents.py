"""What agents see over MCP (python app.py --mcp): generate, the gallery, my mascots and one mascot, nothing else.

Gradio's MCP server runs a queued event through one loopback client that it shares between all agents, whose queue
session our session binding (mascot.web.sessions) rightly refuses to a second browser. So the two queued tools,
Generate and one mascot, have twins here outside the queue, which Gradio calls with the agent's own request: its
cookie (the one our middleware set on its first MCP response, kept by its HTTP client) is its browser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from mascot.generation.worker import FINAL_STATES, Job, JobSnapshot, JobState
from mascot.service import Refusal, Visitor
from mascot.store.entries import MascotEntry
from mascot.ui.common import DEFAULTS, PageServices, refused, visitor, visitor_or_none
from mascot.ui.create import GENERATE_DOC
from mascot.ui.detail import summary
from mascot.ui.progress import finished_outputs
from mascot.web.images import image_url

# The MCP tools agents are offered: each tool's name and the event (api_name) it calls. The handlers' docstrings
# describe them and their `Args:` describe every parameter (Gradio reads them for the tools' schemas).
AGENT_TOOLS = {
    "generate": "/generate_for_agents",
    "gallery": "/gallery",
    "my_mascots": "/my_mascots",
    "mascot": "/mascot_for_agents",
}
WAIT_SECONDS = 1.0  # how often an agent's Generate looks at its job (it wakes at once on a change)


def wire_agent_tools(demo: gr.Blocks, services: PageServices) -> gr.Blocks:
    """Add the agents' Generate and one-mascot events (outside the queue, see above) to the page's API."""
    with demo:
        gr.api(_agent_generate(services), api_name="generate_for_agents", queue=False)
        gr.api(_agent_mascot(services), api_name="mascot_for_agents", queue=False)
    return demo


def offer_only_agent_tools(demo: gr.Blocks) -> None:
    """After launch: Gradio's MCP server offers AGENT_TOOLS and nothing else, neither listed nor callable: not the
    page's own events nor those that change or delete a mascot, a like, a report or a device link (gradio_client
    still has them all). Gradio 6.31 has no per-event MCP switch: its server's tool table is narrowed instead."""
    server = getattr(demo, "mcp_server_obj", None)
    table = getattr(server, "tool_to_endpoint", None)
    if not isinstance(table, dict) or not set(AGENT_TOOLS.values()) <= set(table.values()):
        raise RuntimeError("This Gradio's MCP server cannot be narrowed to the agents' tools: --mcp needs gradio 6.31.")
    table.clear()
    table.update(AGENT_TOOLS)


def _agent_generate(services: PageServices) -> Callable[..., dict[str, Any]]:
    def generate(
        prompt: str,
        negative_prompt: str = DEFAULTS.negative_prompt,
        seed: int = DEFAULTS.seed,
        width: int = DEFAULTS.width,
        height: int = DEFAULTS.height,
        num_images_per_prompt: int = DEFAULTS.num_images_per_prompt,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float = DEFAULTS.guidance_scale,
        prior_num_inference_steps: int = DEFAULTS.prior_num_inference_steps,
        prior_guidance_scale: float = DEFAULTS.prior_guidance_scale,
        style: str = DEFAULTS.style,
        brand: str = DEFAULTS.brand,
        logo: str = DEFAULTS.logo,
        logo_weight: float = DEFAULTS.logo_weight,
        adapter_name: str = DEFAULTS.adapter_name,
        lora_scale: float = DEFAULTS.lora_scale,
        http_request: gr.Request = None,  # type: ignore[assignment]  # filled in by Gradio
    ) -> dict[str, Any]:
        values = {name: value for name, value in locals().items() if name != "http_request"}
        who = visitor_or_none(services, http_request)
        try:
            job = services.service.submit(values, who)
        except Refusal as error:
            raise refused(error) from None
        assert who is not None  # submit refuses a browser without its cookie
        services.service.run_here(job)  # ZeroGPU: this handler runs it, in @spaces.GPU
        return _made(_final(job), who)

    generate.__doc__ = GENERATE_DOC.replace(
        "returns the saved PNG files and a status line", "waits for them and returns their share ids and URLs"
    )
    return generate


def _final(job: Job) -> JobSnapshot:
    """Wait for the job's end (it always ends: stored, cancelled or failed); the handler is this agent's request."""
    seen = -1
    try:
        while True:
            snapshot = job.wait_for_change(seen, timeout=WAIT_SECONDS)
            if snapshot.state in FINAL_STATES:
                return snapshot
            seen = snapshot.version
    finally:
        job.answered.set()  # a shutdown waits for this answer (GenerationWorker.wait_until_answered)


def _made(snapshot: JobSnapshot, who: Visitor) -> dict[str, Any]:
    """What came of an agent's Generate: the status line, and each saved mascot's share id and picture URL."""
    if snapshot.state is JobState.FAILED:
        raise gr.Error(snapshot.error, print_exception=False)
    _urls, status = finished_outputs(snapshot, lambda public_id: image_url(who.page_url, public_id))
    public_ids = list(snapshot.outcome.public_ids) if snapshot.outcome is not None else []
    return {
        "status": status,
        "mascots": [{"public_id": pid, "image_url": image_url(who.page_url, pid)} for pid in public_ids],
    }


def _agent_mascot(services: PageServices) -> Callable[..., dict[str, Any]]:
    def mascot(public_id: str, http_request: gr.Request = None) -> dict[str, Any]:  # type: ignore[assignment]
        """One mascot by its share id: its prompt and every generation parameter, its likes, its picture's URL
        and its share link.

        Args:
            public_id: the mascot's share id, as generate_for_agents, gallery and my_mascots list it (`public_id`);
                a private mascot opens only for the browser (here: the MCP client) that made it.
        """
        who = visitor(services, http_request)
        try:
            entry = services.service.open(public_id, who)
        except Refusal as error:
            raise refused(error) from None
        return _described(entry, who, services.service.share_link(entry, who))

    return mascot


# What an agent is told of a mascot's making, besides the summary: the request's own names (diffusers' vocabulary).
DESCRIBED_PARAMETERS = (
    "negative_prompt",
    "width",
    "height",
    "num_inference_steps",
    "guidance_scale",
    "prior_num_inference_steps",
    "prior_guidance_scale",
    "style",
    "brand",
    "adapter_name",
    "lora_scale",
)


def _described(entry: MascotEntry, who: Visitor, share_link: str) -> dict[str, Any]:
    """A mascot for an agent: the panel's summary, its generation parameters, where to see it."""
    request = entry.request.as_dict()  # the parameters it was made with (its seed and idea are in the summary)
    parameters = {name: request[name] for name in DESCRIBED_PARAMETERS} | {"model_name": entry.model_name}
    return {
        **summary(entry),
        **parameters,
        "image_url": image_url(who.page_url, entry.public_id),
        "share_link": share_link,
    }
