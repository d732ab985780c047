"""What the service answers besides values: who asks (Visitor), a refusal (Refusal) and a notice (Notice)."""

from __future__ import annotations

from dataclasses import dataclass

from mascot.prompt.request import Problem
from mascot.web.page_url import DEFAULT_PAGE_URL


@dataclass(frozen=True)
class Visitor:
    """Who is asking, as an entry point read it from its request: the browser's own token hash (its identity
    cookie, before device links resolve it), its network address (proxies considered) and the page's address."""

    token_hash: str
    address: str = ""  # web.clients.client_address; "": unknown (no network quota, no queue cap)
    page_url: str = DEFAULT_PAGE_URL  # web.page_url: where share and device links point


class Refusal(Exception):
    """What a person asked for is refused; `message` is a sentence for them, `parameter` the input it is about
    (a GenerationRequest field), None when it is about no one input. `problems` holds every unusable parameter
    (each worded for the API and for the page), so a form can mark them all at once."""

    def __init__(self, message: str, parameter: str | None = None, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.problems = problems

    @property
    def for_people(self) -> str:
        """The refusal in the page's words: every problem naming its field by the page's label."""
        return " ".join(problem.for_people for problem in self.problems) or self.message


@dataclass(frozen=True)
class Notice:
    """A sentence to show after an action: news (it worked) or a warning (it did not, and nothing broke)."""

    message: str
    warning: bool = False
