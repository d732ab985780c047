"""What every tab's handlers share: the services they are handed and who is asking."""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import gradio as gr

from mascot.prompt.request import FLOAT_RANGES, INTEGER_RANGES, GenerationRequest
from mascot.service import MascotService, Notice, Refusal, Visitor
from mascot.service.sentences import CHECK_FAILED, NO_COOKIE, plural
from mascot.store.faults import StoreUnavailable
from mascot.ui.pictures import no_interface_files
from mascot.web.clients import ProxyTrust, client_address
from mascot.web.public_url import PublicAddress

__all__ = [
    "DEFAULTS",
    "PageServices",
    "answers_in_sentences",
    "owner",
    "plain",
    "plural",
    "range_info",
    "refused",
    "say",
    "store_faults_in_sentences",
    "visitor",
]

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

TokenHashOf = Callable[[Any], str | None]  # a request -> its browser's own token hash (web.identity)
DEFAULTS = GenerationRequest(prompt="")  # the page's and the API's defaults: one source


@dataclass(frozen=True)
class PageServices:
    """What the page needs: the service (what a person can do) and what only the page reads from a request."""

    service: MascotService
    token_hash_of: TokenHashOf  # the asking browser's own token hash; the service resolves device links
    trusted_proxies: ProxyTrust = field(default_factory=ProxyTrust)  # see mascot.web.clients
    public_address: PublicAddress = field(default_factory=PublicAddress)  # the page's address for links and images
    examples: Sequence[str] = ()
    default_lora: str | None = None  # the house look (--default-lora): chosen on the form until a person unticks it
    default_lora_strength: float = 1.0


def visitor_or_none(services: PageServices, http_request: gr.Request | None) -> Visitor | None:
    """Who is asking, from the request: None when the browser sent no identity cookie."""
    token_hash = services.token_hash_of(http_request)
    if token_hash is None:
        return None
    return Visitor(
        token_hash=token_hash,
        address=client_address(http_request, services.trusted_proxies),
        page_url=services.public_address.root_url(http_request),
    )


def visitor(services: PageServices, http_request: gr.Request | None) -> Visitor:
    """Who is asking; the cookie middleware gives every browser an identity, so a request without one is refused."""
    found = visitor_or_none(services, http_request)
    if found is None:
        raise gr.Error(NO_COOKIE, print_exception=False)
    return found


def owner(services: PageServices, http_request: gr.Request | None) -> str:
    """The owner hash the asking browser stands for (device links resolved)."""
    return services.service.owner(visitor(services, http_request))


def refused(error: Refusal) -> gr.Error:
    """The service's refusal as the page shows it: its sentence, no traceback."""
    return gr.Error(error.message, print_exception=False)


def answers_in_sentences(validator: Callable[P, R]) -> Callable[P, R]:
    """An event's validator whose every failure reaches the asker as a sentence. Gradio answers the queue's join with
    the text of whatever a validator raised, show_error or not (gradio/queueing.py), so a bug's or a database
    driver's text (a file path, SQL, the database server's address) would reach whoever asked: that becomes
    CHECK_FAILED, and the cause goes to the log. A Refusal's text is a sentence already, and gr.Error is Gradio's."""

    @functools.wraps(validator)
    def validating(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return validator(*args, **kwargs)
        except (Refusal, gr.Error):
            raise
        except Exception:
            log.exception("the check before an event failed")
            raise Refusal(CHECK_FAILED) from None

    return validating


def store_faults_in_sentences(demo: gr.Blocks) -> gr.Blocks:
    """Every event of the page says the store's sentence when its database or disk is out of reach, instead of
    Gradio's bare "Error" (show_error is off): the gallery, My mascots and the quota line read the store without a
    check of their own first (a resilience walkthrough saw "Error" while PostgreSQL was down)."""
    for block_fn in demo.fns.values():
        if block_fn.fn is not None:
            block_fn.fn = store_fault_as_sentence(block_fn.fn)
    return demo


def store_fault_as_sentence(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler` raising gr.Error with the store's sentence where it raised StoreUnavailable. Of the same kind (plain,
    generator, coroutine, async generator): Gradio calls each kind its own way. functools.wraps keeps what Gradio
    reads from the signature (gr.Request, gr.Progress, the API's parameters)."""

    def said(error: StoreUnavailable) -> gr.Error:
        return gr.Error(str(error), print_exception=False)

    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def streaming_async(*args: Any, **kwargs: Any) -> Any:
            try:
                async for update in handler(*args, **kwargs):
                    yield update
            except StoreUnavailable as error:
                raise said(error) from None

        return streaming_async
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def streaming(*args: Any, **kwargs: Any) -> Any:
            try:
                return (yield from handler(*args, **kwargs))
            except StoreUnavailable as error:
                raise said(error) from None

        return streaming
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def answering_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await handler(*args, **kwargs)
            except StoreUnavailable as error:
                raise said(error) from None

        return answering_async

    @functools.wraps(handler)
    def answering(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except StoreUnavailable as error:
            raise said(error) from None

    return answering


def say(notice: Notice | None) -> None:
    """Show the service's notice: news or a warning (only queued events reach the page with one)."""
    if notice is not None:
        (gr.Warning if notice.warning else gr.Info)(notice.message)


# The choice, under a mascot of My mascots, that keeps it in the public gallery or out of it.
PUBLIC_CHOICE = "Show in the public gallery"

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-!|~])")
# What the page's Markdown turns into a link by itself: there a backslash escape is shown, not read as one.
_WEB_ADDRESS = re.compile(r"(?:(?:https?|ftp)://|www\.)\S+", re.IGNORECASE)


def plain(text: str) -> str:
    """User text shown inside Markdown as typed, never as formatting or HTML; a web address as code, which needs no
    escapes and is not made a link (an idea is not a place to advertise)."""
    parts, shown = _WEB_ADDRESS.split(text), _WEB_ADDRESS.findall(text)
    escaped = [_MARKDOWN_SPECIAL.sub(r"\\\1", part) for part in parts]
    return escaped[0] + "".join(_code(address) + rest for address, rest in zip(shown, escaped[1:], strict=True))


def _code(text: str) -> str:
    """A Markdown code span around `text`, fenced with more backticks than any run inside it."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


with no_interface_files():  # Gradio would write a .pyi next to this module (see there)

    class WholeNumber(gr.Number):
        """A number box the API describes as an integer (gradio_client's view_api, the MCP tools' schemas), passed on
        as it was typed: precision=0 would round 2.5 steps to 2 without a word, while the request class refuses a
        fraction naming the parameter."""

        is_template = True  # the page draws it with Gradio's own Number

        def api_info(self) -> dict[str, str]:  # type: ignore[override]
            return {"type": "integer"}


def range_info(name: str, extra: str = "") -> str:
    """A field's info text: its range, in people's words (the API's names stay in the API)."""
    low, high = INTEGER_RANGES.get(name) or FLOAT_RANGES[name]
    suffix = f", {extra}" if extra else ""
    return f"{low:g} to {high:g}{suffix}"
