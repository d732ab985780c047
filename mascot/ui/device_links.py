"""My mascots' "Use my mascots on another device": the one-time link (text and QR code), and what opening it does
(the page load with ?device=<code>; the rules are mascot.store.device_links')."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import qrcode
from PIL import Image

from mascot.service import DevicesAnswer, Refusal, Visitor
from mascot.service.sentences import (
    ALREADY,
    EXPIRED,
    JOIN_MOVING,
    JOIN_PLAIN,
    JOINED,
    KEPT_APART,
    NO_OPEN_LINKS,
    NO_OTHER_DEVICES,
    NOT_NOW,
    NOTE,
    TOO_MANY,
    must_be_boolean,
)
from mascot.ui.common import PageServices, refused, say, visitor
from mascot.web.page_url import DEVICE_PARAMETER

# The sentences live with the service (mascot.service.sentences); named here too for the page's tests.
__all__ = [
    "ALREADY",
    "EXPIRED",
    "JOINED",
    "KEPT_APART",
    "NOTE",
    "NO_OPEN_LINKS",
    "NO_OTHER_DEVICES",
    "TOO_MANY",
    "build_device_prompt",
    "build_device_row",
    "qr_image",
]

INTRO = (
    "Open My mascots on your phone or another browser: make a link here, open it there, and both show the same "
    "mascots, likes and daily quota."
)
CONFIRM_MOVE = (
    "() => confirm('Move the mascots made in this browser to the device that made the link? Whoever made the link "
    "can then see, download and delete them.')"
)
# Each button asks first; the answer reaches the handler as its `confirmed` input (API callers pass True).
CONFIRM_DISCONNECT = "() => confirm('Disconnect every other device? They will no longer show your mascots.')"
CONFIRM_STOP_HERE = "() => confirm('Stop showing these mascots in this browser? Your other device keeps them.')"
# After the link was opened, the address bar forgets the code: a reload or a bookmark must not carry it around.
FORGET_CODE = f"""() => {{
    const url = new URL(window.location.href);
    if (url.searchParams.has("{DEVICE_PARAMETER}")) {{
        url.searchParams.delete("{DEVICE_PARAMETER}");
        window.history.replaceState(window.history.state, "", url);
    }}
}}"""


@dataclass(frozen=True)
class DeviceRow:
    """The button that makes a link, the link to copy, its QR code, and what to know about it; how many other
    devices show these mascots, and the two ways to stop that."""

    panel: gr.Accordion
    make: gr.Button
    link: gr.Textbox
    qr_code: gr.Image
    note: gr.Markdown
    others: gr.Markdown
    disconnect: gr.Button
    stop_here: gr.Button
    revoke: gr.Button
    confirmed: gr.Checkbox  # hidden: what the person answered to the button's question


def build_device_row(services: PageServices) -> DeviceRow:
    """Lay out "Use my mascots on another device" and wire its button (public API: `/device_link`)."""
    with gr.Accordion("Use my mascots on another device", open=False, elem_id="mine-device") as panel:
        gr.Markdown(INTRO)
        make = gr.Button("Make a link for another device", size="sm", elem_id="mine-device-make")
        with gr.Row():
            link = gr.Textbox(
                label="Link for your other device",
                interactive=False,
                buttons=["copy"],
                visible=False,
                elem_id="mine-device-link",
            )
            qr_code = gr.Image(
                label="Or scan it with your phone",
                type="pil",
                format="png",
                interactive=False,
                visible=False,
                height=240,
                buttons=["download", "fullscreen"],  # no "share": the link is a credential, not something to post
                elem_id="mine-device-qr",
            )
        note = gr.Markdown(visible=False, label="How to use the link", elem_id="mine-device-note")
        others = gr.Markdown(label="Linked devices", elem_id="mine-device-others")
        with gr.Row():
            disconnect = gr.Button("Disconnect the other devices", size="sm", elem_id="mine-device-disconnect")
            stop_here = gr.Button("Stop showing my mascots here", size="sm", elem_id="mine-device-stop")
            revoke = gr.Button("Revoke the open links", size="sm", elem_id="mine-device-revoke")
        confirmed = gr.Checkbox(False, visible=False, label="confirmed")
    shown = [link, qr_code, note]
    # Queued, so that the page shows TOO_MANY as a sentence (see ui/detail.py); the queue has no concurrency limit,
    # so it never waits behind the GPU. API clients get the plain values; the page then shows the three.
    make.click(_make_link_handler(services), None, shown, api_name="device_link").success(
        _reveal, None, shown, queue=False, api_visibility="private"
    )
    return DeviceRow(panel, make, link, qr_code, note, others, disconnect, stop_here, revoke, confirmed)


def _reveal() -> tuple[Any, ...]:
    return gr.Textbox(visible=True), gr.Image(visible=True), gr.Markdown(visible=True)


def _make_link_handler(services: PageServices) -> Callable[..., tuple[Any, ...]]:
    def device_link(http_request: gr.Request | None = None) -> tuple[Any, ...]:
        """A one-time link that makes another browser (your phone) show this browser's mascots, and its QR code;
        it works once, within 15 minutes."""
        try:
            url = services.service.make_device_link(visitor(services, http_request))
        except Refusal as error:
            raise refused(error) from None
        return url, qr_image(url), NOTE

    return device_link


def qr_image(url: str) -> Image.Image:
    """The link as a QR code, black on white, with the quiet zone scanners need."""
    return qrcode.make(url, box_size=8, border=4).get_image().convert("RGB")


@dataclass(frozen=True)
class DevicePrompt:
    """Shown at the top of a page opened with ?device=<code>: what opening the link does, and the choices."""

    group: gr.Group
    question: gr.Markdown
    not_now: gr.Button
    join: gr.Button
    join_moving: gr.Button
    confirmed: gr.Checkbox  # hidden: what the person answered to the question "move" asks


def build_device_prompt() -> DevicePrompt:
    """Lay out the question a device link asks; hidden until a page opens with a code."""
    with gr.Group(visible=False, elem_id="device-prompt") as group:
        question = gr.Markdown(elem_id="device-prompt-question")
        with gr.Row():
            # The safe choice first and most prominent: nothing changes.
            not_now = gr.Button(NOT_NOW, variant="primary", elem_id="device-prompt-not-now")
            join = gr.Button(JOIN_PLAIN, elem_id="device-prompt-join")
            join_moving = gr.Button(JOIN_MOVING, variant="stop", visible=False, elem_id="device-prompt-move")
        confirmed = gr.Checkbox(False, visible=False, label="move confirmed")
    return DevicePrompt(group, question, not_now, join, join_moving, confirmed)


def wire_device_links(
    services: PageServices,
    demo: gr.Blocks,
    row: DeviceRow,
    prompt: DevicePrompt,
    refresh: Sequence[dict[str, Any]],
) -> None:
    """Opening a link is the page load with ?device=<code>: it asks first (`prompt`), and only the person's choice
    opens it, never a public API event. Afterwards the events in `refresh` show what this browser now is (its
    mascots, its quota), and the address bar forgets the code. The panel's buttons refresh the same way."""
    row.panel.expand(_others_handler(services), outputs=row.others, api_visibility="private", queue=False)
    # Queued, so that their notices and refusals are shown (see ui/detail.py).
    disconnected = row.disconnect.click(
        _disconnect_handler(services),
        row.confirmed,
        row.others,
        api_name="disconnect_other_devices",
        js=CONFIRM_DISCONNECT,
    )
    stopped = row.stop_here.click(
        _stop_here_handler(services), row.confirmed, row.others, api_name="stop_showing_here", js=CONFIRM_STOP_HERE
    )
    revoked = row.revoke.click(_revoke_handler(services), None, row.others, api_name="revoke_device_links")
    for changed in (disconnected, stopped, revoked):
        for event in refresh:
            changed.success(**{**event, "api_visibility": "private"})
    _wire_prompt(services, demo, prompt, refresh)


def _wire_prompt(
    services: PageServices, demo: gr.Blocks, prompt: DevicePrompt, refresh: Sequence[dict[str, Any]]
) -> None:
    """The question at page load (outside the queue: a quick look at the store), then the person's choice. The
    choices are queued events, so that their notices are shown (gr.Info reaches the page only from the queue)."""
    asked = [prompt.group, prompt.question, prompt.join, prompt.join_moving]
    demo.load(_question_handler(services), None, asked, queue=False, api_visibility="private")
    private: dict[str, Any] = {"api_visibility": "private"}
    hide = {"fn": _hide_prompt, "outputs": prompt.group, "queue": False, **private}
    prompt.not_now.click(**hide).then(None, js=FORGET_CODE)
    opened_keeping = prompt.join.click(
        _open_link_handler(services, move_mascots=False), None, None, api_name="open_device_link", **private
    )
    opened_moving = prompt.join_moving.click(
        _open_link_handler(services, move_mascots=True),
        prompt.confirmed,
        None,
        api_name="open_device_link_moving_mine",
        js=CONFIRM_MOVE,
        **private,
    )
    for opened in (opened_keeping, opened_moving):
        opened.then(**hide)
        for event in refresh:
            opened.then(**{**event, "api_visibility": "private"})
        opened.then(None, js=FORGET_CODE)


def _hide_prompt() -> Any:
    return gr.Group(visible=False)


def _question_handler(services: PageServices) -> Callable[..., tuple[Any, ...]]:
    def device_question(http_request: gr.Request | None = None) -> tuple[Any, ...]:
        """What opening the page's device link would do, in words, and the buttons that make sense."""
        code = device_code(http_request)
        if code is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        asked = services.service.device_question(visitor(services, http_request), code)
        return (
            gr.Group(visible=True),
            asked.text,
            gr.Button(asked.join or JOIN_PLAIN, visible=asked.join is not None),
            gr.Button(asked.join_moving or JOIN_MOVING, visible=asked.join_moving is not None),
        )

    return device_question


def device_code(http_request: gr.Request | None) -> str | None:
    """The page's ?device=<code>, if it has one."""
    query = getattr(http_request, "query_params", None) or {}
    code = query.get(DEVICE_PARAMETER)
    return None if code is None else str(code)


def _revoke_handler(services: PageServices) -> Callable[..., str]:
    def revoke_device_links(http_request: gr.Request | None = None) -> str:
        """Every device link of your mascots that was not opened yet stops working."""
        return _act(services, http_request, services.service.revoke_device_links)

    return revoke_device_links


def _others_handler(services: PageServices) -> Callable[..., str]:
    def other_devices(http_request: gr.Request | None = None) -> str:
        return services.service.other_devices(visitor(services, http_request))

    return other_devices


def _disconnect_handler(services: PageServices) -> Callable[..., Any]:
    def disconnect_other_devices(confirmed: bool, http_request: gr.Request | None = None) -> Any:
        """Only this browser shows your mascots from now on: every other device linked to them stops, also the
        browser that made them first when this one was linked to it. `confirmed` must be true."""
        if not confirmed_by_person(confirmed):
            return gr.skip()  # the person answered "Cancel"
        return _act(services, http_request, services.service.disconnect_other_devices)

    return disconnect_other_devices


def _stop_here_handler(services: PageServices) -> Callable[..., Any]:
    def stop_showing_here(confirmed: bool, http_request: gr.Request | None = None) -> Any:
        """This browser stops showing the mascots of the device it was linked to, and starts afresh. `confirmed`
        must be true."""
        if not confirmed_by_person(confirmed):
            return gr.skip()  # the person answered "Cancel"
        return _act(services, http_request, services.service.stop_showing_here)

    return stop_showing_here


def _act(services: PageServices, http_request: gr.Request | None, action: Callable[[Visitor], DevicesAnswer]) -> str:
    """One of the panel's actions for this browser: its notice shown, the line about the other devices returned, a
    refusal raised as the sentence it is."""
    try:
        answer = action(visitor(services, http_request))
    except Refusal as error:
        raise refused(error) from None
    say(answer.notice)
    return answer.others


def confirmed_by_person(confirmed: Any) -> bool:
    """The page's confirm() answer: true or false. Anything else ("false", 1, null) is refused with a sentence, never
    read as a yes or a no."""
    if not isinstance(confirmed, bool):
        raise gr.Error(must_be_boolean("confirmed"), print_exception=False)
    return confirmed


def _open_link_handler(services: PageServices, *, move_mascots: bool) -> Callable[..., None]:
    def open_device_link(confirmed: bool = True, http_request: gr.Request | None = None) -> None:
        """Open the page's device link: this browser shows the mascots of the device that made it. Its own mascots
        move there only from the button that says so, after the person confirmed."""
        if move_mascots and not confirmed_by_person(confirmed):
            return  # the person answered "Cancel"
        code = device_code(http_request)
        if code is not None:
            who = visitor(services, http_request)
            say(services.service.open_device_link(who, code, move_mascots=move_mascots))

    return open_device_link
