"""What every tab's handlers share: the services they are handed and who is asking."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import gradio as gr
from gradio import route_utils
from starlette.requests import Request as StarletteRequest

from mascot.generation.worker import GenerationWorker
from mascot.prompt.logos import LogoLibrary
from mascot.prompt.presets import Presets
from mascot.prompt.request import FLOAT_RANGES, INTEGER_RANGES, GenerationRequest
from mascot.prompt.wordfilter import BlockedWords
from mascot.store.store import MascotStore, StoreUnavailable

OwnerOf = Callable[[Any], str | None]
AddressHashOf = Callable[[str], str | None]  # a client address -> its network's keyed hash (clients.AddressKeys)
DEFAULTS = GenerationRequest(prompt="")  # the page's and the API's defaults: one source
Clock = Callable[[], datetime]


P = ParamSpec("P")
R = TypeVar("R")


def utc_now() -> datetime:
    return datetime.now(UTC)


def says_store_failures(handler: Callable[P, R]) -> Callable[P, R]:
    """A handler whose write cannot be saved (disk full, read-only or locked database) answers with that sentence,
    not Gradio's bare "Error". Its signature stays the handler's (functools.wraps), as Gradio reads it."""

    @functools.wraps(handler)
    def answering(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return handler(*args, **kwargs)
        except StoreUnavailable as error:
            raise gr.Error(str(error), print_exception=False) from None

    return answering


@dataclass(frozen=True)
class PageServices:
    """What the page needs: the GPU worker, the store, who is asking, and the house rules."""

    worker: GenerationWorker
    store: MascotStore
    owner_of: OwnerOf  # the owner hash the asking browser stands for (store.device_links resolves links)
    # The asking browser's own token hash, before that resolution (opening a device link needs it); None: owner_of.
    token_hash_of: OwnerOf | None = None
    examples: Sequence[str] = ()
    presets: Presets = field(default_factory=lambda: Presets({}, {}))
    logos: LogoLibrary | None = None  # where uploaded logos are kept; None: no logo mixing
    daily_quota: int = 10
    address_daily_quota: int = 0  # per network address, all its browsers together; 0: no cap
    address_hash_of: AddressHashOf = lambda address: None  # no network known: none is capped
    trusted_proxies: int = 0  # see mascot.web.clients
    reports_to_hide: int = 3  # networks whose reports take a mascot out of the gallery (0: never); see moderation
    likes_per_network: int = 3  # likes of a mascot from one network that count (0: all); see mascot.store.likes
    blocked_words: BlockedWords = field(default_factory=BlockedWords)  # words refused in ideas; none by default
    clock: Clock = utc_now  # tests move it across a day boundary
    # The request as the model is given it (presets, logo colours): the worker's own `prepare`; None: the presets.
    prepare_request: Callable[[GenerationRequest], GenerationRequest] | None = None

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        return self.prepare_request(request) if self.prepare_request else self.presets.apply(request)


def owner(services: PageServices, http_request: gr.Request | None) -> str:
    """The asking browser's owner hash; the cookie middleware gives every browser one."""
    owner_hash = services.owner_of(http_request)
    if owner_hash is None:
        raise gr.Error("Your browser did not send its identity cookie. Allow cookies for this site and reload.")
    return owner_hash


def browser_token(services: PageServices, http_request: gr.Request | None) -> str:
    """The asking browser's own token hash, whichever browser it stands for."""
    token_of = services.token_hash_of or services.owner_of
    token_hash = token_of(http_request)
    if token_hash is None:
        raise gr.Error("Your browser did not send its identity cookie. Allow cookies for this site and reload.")
    return token_hash


def page_url(http_request: gr.Request | None) -> str:
    """The page's public address, without a trailing slash, worked out as Gradio works out its own root URL: behind
    a proxy (a Space, a share link) from X-Forwarded-Host and -Proto, else from the request, under the app's root
    path."""
    raw = getattr(http_request, "request", None)
    if isinstance(raw, StarletteRequest):
        root_path = getattr(raw.scope.get("app"), "root_path", None)
        return route_utils.get_root_url(request=raw, route_path=raw.url.path, root_path=root_path)
    return "http://127.0.0.1:7860"  # no HTTP request (a direct call): the default address


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-!|~])")


def plain(text: str) -> str:
    """User text shown inside Markdown as typed, never as formatting or HTML."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def range_info(name: str, extra: str = "") -> str:
    """A field's info text: its range for people, its API name in parentheses."""
    low, high = INTEGER_RANGES.get(name) or FLOAT_RANGES[name]
    suffix = f", {extra}" if extra else ""
    return f"{low:g} to {high:g}{suffix} ({name})"
