"""My mascots and the public Gallery: pages of thumbnails, newest or most liked, searchable by their words; a picked
one opens in ui/detail."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from mascot.store.entries import MAX_PAGE, GallerySort, MascotEntry, MascotPage
from mascot.store.search import search_words
from mascot.ui.common import PageServices, WholeNumber, plain, plural, visitor
from mascot.ui.create import CreateForm
from mascot.ui.detail import DetailPanel, Listing, detail_panel, summary, wire_detail
from mascot.web.images import thumbnail_url

PER_PAGE = 24
SORTS: dict[str, GallerySort] = {
    "Newest": "newest",
    "Top this week": "week",  # most liked in the last 7 days: a new mascot can rise, unlike in "Most liked"
    "Most liked": "top",
    "Liked by me": "liked",
}
NOTHING_YET = "Nothing here yet."
NOTHING_LIKED = "You have not liked any mascots yet — press ♡ on one you like."


@dataclass(frozen=True)
class BrowseTab:
    """A page of thumbnails, its paging buttons, and the detail panel of the mascot picked from it."""

    gallery: gr.Gallery
    page: gr.Number
    page_label: gr.Markdown
    previous: gr.Button
    next: gr.Button
    refresh: gr.Button
    mascots: gr.JSON  # hidden: what each thumbnail shown is (share id, prompt, likes), in order; API clients read it
    sort: gr.Radio | None
    detail: DetailPanel
    search_box: gr.Textbox  # what the person types; Enter or its Search button searches
    search: gr.Textbox  # hidden: the search shown, kept while paging; the API's `search`


def build_browse_tab(
    services: PageServices, listing: Listing, *, tab: gr.Tab, demo: gr.Blocks, form: CreateForm, tabs: gr.Tabs
) -> BrowseTab:
    """Lay out My mascots or the Gallery (inside its `gr.Tab`) and wire its events."""
    with gr.Row(elem_classes="browse-controls"):  # stacked on phones (style.css)
        search_box = gr.Textbox(
            label="Search",
            placeholder="otter, robot, sticker…",
            info="Words of the idea, its style or brand; an empty box shows everything (search)",
            submit_btn="Search",
            scale=2,
            elem_id=f"{listing}-search",
        )
        sort = (
            gr.Radio(list(SORTS), value="Newest", label="Sort", scale=1, elem_id="gallery-sort")
            if listing == "gallery"
            else None
        )
    gallery = gr.Gallery(
        label="Your mascots" if listing == "mine" else "Everyone's public mascots",
        columns=6,
        height=420,
        allow_preview=False,
        fit_columns=False,  # a page with one mascot shows a thumbnail, not a banner
        object_fit="cover",
        elem_id=f"{listing}-gallery",
        elem_classes="browse-gallery",  # three columns on phones (style.css), not six to scroll sideways
        # No toolbar: its "download all" saved a page of thumbnails and its Share needs a Space ("Must be on
        # Spaces"); a mascot is downloaded from its panel, under its one file name.
        buttons=[],
    )
    with gr.Row():
        previous = gr.Button("← Previous page", size="sm", elem_id=f"{listing}-previous")
        page_label = gr.Markdown(label="Page summary", elem_id=f"{listing}-page")  # label: the API's name
        next_ = gr.Button("Next page →", size="sm", elem_id=f"{listing}-next")
        refresh = gr.Button("Refresh", size="sm", elem_id=f"{listing}-refresh")
    page = WholeNumber(value=1, label="Page", visible=False)
    search = gr.Textbox(value="", label="search", visible=False)
    mascots = gr.JSON(visible=False, label="mascots")
    browse = BrowseTab(
        gallery,
        page,
        page_label,
        previous,
        next_,
        refresh,
        mascots,
        sort,
        detail_panel(listing),
        search_box,
        search,
    )
    show_page = _wire_listing(services, listing, browse, tab, demo)
    wire_detail(services, listing, browse.gallery, browse.mascots, browse.detail, form, tabs, show_page)
    return browse


# ---- pages of thumbnails -----------------------------------------------------------------------------------------
def _wire_listing(
    services: PageServices, listing: Listing, browse: BrowseTab, tab: gr.Tab, demo: gr.Blocks
) -> dict[str, Any]:
    """Wire paging, sorting, searching and refreshing; returns the event arguments that show the current page."""
    show = page_event(services, listing, browse)
    # The public API event first: Gradio names later events after the same function "<name>_1", "<name>_2".
    gr.on(
        [browse.refresh.click, tab.select, demo.load], **show, api_name="my_mascots" if listing == "mine" else "gallery"
    )
    browse.previous.click(previous_page, browse.page, browse.page, queue=False, api_visibility="private").then(
        **show, api_visibility="private"
    )
    browse.next.click(next_page, browse.page, browse.page, queue=False, api_visibility="private").then(
        **show, api_visibility="private"
    )
    if browse.sort is not None:
        browse.sort.change(first_page, None, browse.page, queue=False, api_visibility="private").then(
            **show, api_visibility="private"
        )
    # A refused search stops the chain, so the search shown (and paged through) stays the last one that worked.
    # Queued, so that a refused search's sentence is shown (see ui/detail.py).
    browse.search_box.submit(
        start_search, browse.search_box, [browse.search, browse.page], api_visibility="private"
    ).success(**show, api_visibility="private")
    # Emptying the box shows everything again at once (its Search button submits it), without a round trip for
    # every other keystroke. `change`, not `input`: Gradio 6 sends `input` of a box filled by a script only on Enter.
    button = f"#{listing}-search button"
    browse.search_box.change(
        fn=None,
        inputs=browse.search_box,
        js=f"(typed) => {{ if (!(typed || '').trim()) document.querySelector('{button}')?.click(); }}",
    )
    return show


def page_event(services: PageServices, listing: Listing, browse: BrowseTab) -> dict[str, Any]:
    """The event arguments that show the tab's current page (with its sort and search)."""
    # Listing runs outside the queue: browsing never waits behind the GPU. The handlers check the raw values
    # themselves (requested_page, checked_sort, checked_search): Gradio's own checks answer in Python's words.
    return {
        "fn": _mine_page(services) if listing == "mine" else _gallery_page(services),
        "inputs": [browse.page, browse.search] if browse.sort is None else [browse.page, browse.sort, browse.search],
        "outputs": [browse.gallery, browse.page, browse.page_label, browse.mascots, browse.previous, browse.next],
        "queue": False,
        "preprocess": False,
    }


def previous_page(page: float | None) -> int:
    return max(1, int(page or 1) - 1)


def next_page(page: float | None) -> int:
    return int(page or 1) + 1  # clamped to the last page when the page is listed


def first_page() -> int:
    return 1


def start_search(typed: str | None) -> tuple[str, int]:
    """The search to show from its first page: the words typed, each once; refused with a sentence when too long."""
    return " ".join(checked_search(typed)), 1


def checked_search(search: Any) -> tuple[str, ...]:
    """The words of `search` (None is no search), or a gr.Error that says why they cannot be searched for."""
    try:
        return search_words(search or "")
    except ValueError as error:
        raise gr.Error(str(error), print_exception=False) from None


def checked_sort(sort: Any) -> GallerySort:
    """The gallery's order for a sort's name, or a gr.Error naming the ones there are."""
    if not isinstance(sort, str) or sort not in SORTS:
        names = ", ".join(f"“{name}”" for name in SORTS)
        raise gr.Error(f"sort must be one of {names}.", print_exception=False)
    return SORTS[sort]


def _page_outputs(
    page_url: str,
    items: Sequence[MascotEntry],
    page: int,
    total: int,
    per_page: int,
    words: Sequence[str],
    empty: str = NOTHING_YET,
) -> tuple[Any, ...]:
    """The thumbnails, the page shown, its label, what each thumbnail is, and which page buttons make sense."""
    pages = max(1, -(-total // per_page))
    label = page_label(page, pages, total, words, empty)
    # The checking route's URLs, never file paths: Gradio would copy each file into its cache, served to anyone.
    thumbnails = [(thumbnail_url(page_url, item.public_id), caption(item)) for item in items]
    previous, next_ = gr.Button(interactive=page > 1), gr.Button(interactive=page < pages)
    return thumbnails, page, label, [summary(item) for item in items], previous, next_


def page_label(page: int, pages: int, total: int, words: Sequence[str], empty: str = NOTHING_YET) -> str:
    """What the page shows, in a sentence: how many mascots (match the search), and which page of how many; `empty`
    when there are none and no search."""
    if not words:
        return f"Page {page} of {pages} · {plural(total, 'mascot')}" if total else empty
    quoted = f"“{plain(' '.join(words))}”"
    if not total:
        return f"No mascots match {quoted}."
    return f"{plural(total, 'mascot')} {'matches' if total == 1 else 'match'} {quoted} · page {page} of {pages}"


def caption(item: MascotEntry) -> str:
    """A thumbnail's caption: its likes and its prompt, marked when moderation keeps it out of the gallery (its
    owner sees that)."""
    liked = f"♥ {item.like_count} · "
    return f"⚠️ Hidden · {liked}{item.caption}" if item.moderation else f"{liked}{item.caption}"


def _mine_page(services: PageServices) -> Callable[..., tuple[Any, ...]]:
    def my_mascots(page: Any = 1, search: Any = "", http_request: gr.Request | None = None) -> tuple[Any, ...]:
        """This browser's mascots, newest first, a page of thumbnails with their prompts as captions; with a
        `search`, only those whose idea, style or brand holds every one of its words (any case).

        Args:
            page: which page of thumbnails, from 1 (a page past the end gives the last one).
            search: words every listed mascot's idea, style or brand holds ("" lists them all).
        """
        who, words = visitor(services, http_request), checked_search(search)
        owner_hash = services.service.owner(who)
        query = " ".join(words)
        result = listed_page(
            lambda number: services.service.store.history_page(
                owner_hash, page=number, per_page=PER_PAGE, search=query
            ),
            page,
        )
        return _page_outputs(who.page_url, result.items, result.page, result.total, PER_PAGE, words)

    return my_mascots


def _gallery_page(services: PageServices) -> Callable[..., tuple[Any, ...]]:
    def gallery(
        page: Any = 1, sort: Any = "Newest", search: Any = "", http_request: gr.Request | None = None
    ) -> tuple[Any, ...]:
        """Everyone's public mascots, newest first, most liked in the last 7 days ("Top this week") or ever ("Most
        liked"), or those this browser liked ("Liked by me", latest like first), a page of thumbnails; with a
        `search`, only those whose idea, style or brand holds every one of its words (any case).

        Args:
            page: which page of thumbnails, from 1 (a page past the end gives the last one).
            sort: the order: "Newest", "Top this week", "Most liked" or "Liked by me".
            search: words every listed mascot's idea, style or brand holds ("" lists them all).
        """
        who, words = visitor(services, http_request), checked_search(search)
        viewer = services.service.owner(who)
        order, query = checked_sort(sort), " ".join(words)
        result = listed_page(
            lambda number: services.service.store.gallery(
                viewer,
                page=number,
                per_page=PER_PAGE,
                sort=order,
                search=query,
                now=services.service.clock(),
            ),
            page,
        )
        empty = NOTHING_LIKED if order == "liked" else NOTHING_YET
        return _page_outputs(who.page_url, result.items, result.page, result.total, PER_PAGE, words, empty)

    return gallery


def listed_page(fetch: Callable[[int], MascotPage], page: float | None) -> MascotPage:
    """The page asked for, or the last one when it is past the end: one query and one count in the usual case
    (the total comes with the page, so it is not counted first)."""
    result = fetch(requested_page(page))
    last = max(1, -(-result.total // PER_PAGE))
    return result if result.page <= last else fetch(last)


def requested_page(page: Any) -> int:
    """A page number the store accepts: 1 for nonsense, at most MAX_PAGE."""
    try:
        number = int(page or 1)
    except (TypeError, ValueError, OverflowError):
        number = 1
    return min(max(1, number), MAX_PAGE)
