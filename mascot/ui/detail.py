"""One mascot, opened from a page of thumbnails: its details, share link, like, sticker, remix, report, privacy,
deletion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import gradio as gr

from mascot.prompt.request import based_on_mascot
from mascot.service import Refusal
from mascot.service.actions import VARIATIONS
from mascot.store.entries import MascotEntry
from mascot.store.moderation import NO_REASON, reason_choices
from mascot.ui.based_on import based_on_note, based_on_values, no_based_on_values
from mascot.ui.common import (
    PUBLIC_CHOICE,
    PageServices,
    answers_in_sentences,
    plain,
    plural,
    refused,
    say,
    visitor,
    visitor_or_none,
)
from mascot.ui.create import CreateForm, dimensions_to_size
from mascot.ui.pictures import LinkedDownload, LinkedFile, LinkedImage, download, picture_url, sticker_download

Listing = Literal["mine", "gallery"]


@dataclass(frozen=True)
class ReportBox:
    """Reporting a mascot to the operator: a reason to pick (or none) and a button; shown on others' mascots only."""

    panel: gr.Accordion
    reason: gr.Dropdown
    button: gr.Button
    status: gr.Markdown  # the sentence that answers the report


@dataclass(frozen=True)
class DetailPanel:
    """One mascot, opened from a page of thumbnails."""

    group: gr.Group
    public_id: gr.Textbox  # hidden: what the buttons act on; API clients pass it themselves
    image: gr.Image  # by its checking route's URL (mascot.web.images): Gradio keeps no copy
    info: gr.Markdown
    share_link: gr.Textbox
    download: gr.DownloadButton  # the same route, as an attachment under the one download name (pictures)
    like: gr.Button
    remix: gr.Button
    vary: gr.Button
    make_sticker: gr.Button
    sticker: gr.DownloadButton  # shown once the sticker is made: its checking route (mascot.web.images)
    sticker_file: gr.File  # hidden: the sticker's URL, what API clients get from /sticker
    summary: gr.JSON  # hidden: the mascot's share id, words and likes, for API clients (buttons are not outputs)
    is_public: gr.Checkbox | None = None
    delete: gr.Button | None = None
    report: ReportBox | None = None

    def outputs(self) -> list[gr.blocks.Block]:
        owned = [self.is_public] if self.is_public is not None else []
        reporting = [self.report.panel, self.report.reason, self.report.status] if self.report is not None else []
        return [
            self.group, self.public_id, self.image, self.info, self.share_link, self.download, self.like, self.summary,
            self.sticker, *owned, *reporting,
        ]  # fmt: skip


def bring_into_view(elem_id: str) -> str:
    """Browser-side: scroll the element into view if it is not (the panel opens below the thumbnails, often below
    the fold, where a click would seem to do nothing)."""
    # The panel is drawn after this runs the first time it is shown: look again a few times, a frame apart.
    return f"""() => {{
        const show = (tries) => {{
            const panel = document.getElementById({elem_id!r});
            if (panel && panel.offsetHeight > 0) {{
                panel.scrollIntoView({{behavior: "smooth", block: "nearest"}});
            }} else if (tries > 0) {{
                requestAnimationFrame(() => show(tries - 1));
            }}
        }};
        show(30);
    }}"""


def detail_panel(listing: Listing) -> DetailPanel:
    """The picture large; beside it (below it on a phone) its words, the main actions first, the share link, then,
    apart in a box marked with a warning, what hides, deletes or reports it."""
    with gr.Column(visible=False, elem_id=f"{listing}-detail", elem_classes="mascot-panel") as group:
        public_id = gr.Textbox(visible=False, label="public_id")
        with gr.Row(equal_height=False):
            image = LinkedImage(
                type="filepath",
                format="png",
                interactive=False,
                height=560,
                label="Picture",  # not shown (show_label=False): the API's name for it
                show_label=False,
                buttons=["fullscreen"],  # its one download is the Download PNG button, under its one file name
                scale=1,
                min_width=300,
                elem_id=f"{listing}-detail-image",
            )
            with gr.Column(scale=1, min_width=300):
                info = gr.Markdown(label="Details", elem_id=f"{listing}-detail-info")  # label: the API's name
                with gr.Row(elem_id=f"{listing}-main-actions", elem_classes="main-actions"):
                    download_button = LinkedDownload(
                        "⬇ Download PNG", variant="primary", min_width=120, elem_id=f"{listing}-download"
                    )
                    like = gr.Button("♡ Like", min_width=90, elem_id=f"{listing}-like")
                    remix = gr.Button("Remix", min_width=90, elem_id=f"{listing}-remix")
                    vary = gr.Button("More like this", min_width=120, elem_id=f"{listing}-vary")
                gr.Markdown(
                    f"Remix puts its settings back into the form. More like this makes {VARIATIONS} new mascots "
                    f"from it, out of today's quota.",
                    elem_classes="action-note",
                )
                with gr.Row():
                    make_sticker = gr.Button("Make a transparent sticker", elem_id=f"{listing}-make-sticker")
                    sticker = LinkedDownload("⬇ Download sticker", visible=False, elem_id=f"{listing}-sticker")
                    sticker_file = LinkedFile(visible=False, label="sticker")
                share_link = gr.Textbox(
                    label="Share link", interactive=False, buttons=["copy"], elem_id=f"{listing}-share"
                )
                is_public, delete, report = _careful_actions(listing)
        summary = gr.JSON(visible=False, label="mascot")
    return DetailPanel(
        group,
        public_id,
        image,
        info,
        share_link,
        download_button,
        like,
        remix,
        vary,
        make_sticker,
        sticker,
        sticker_file,
        summary,
        is_public,
        delete,
        report,
    )


def _careful_actions(listing: Listing) -> tuple[gr.Checkbox | None, gr.Button | None, ReportBox | None]:
    """Apart from the main actions and marked: hiding or deleting your own mascot, reporting someone else's."""
    if listing == "gallery":
        return None, None, report_box()
    with gr.Column(elem_id="mine-careful", elem_classes="careful-actions"):
        gr.Markdown("⚠️ **Privacy and deletion**")
        with gr.Row():
            is_public = gr.Checkbox(label=PUBLIC_CHOICE, elem_id="mine-public")
            delete = gr.Button("Delete for good", variant="stop", min_width=160, elem_id="mine-delete")
    return is_public, delete, None


def report_box() -> ReportBox:
    """Closed until wanted: most people never report anything, and the panel should not shout about it."""
    with gr.Accordion(
        "⚠️ Report this mascot", open=False, elem_id="gallery-report-panel", elem_classes="careful-actions"
    ) as panel:
        with gr.Row():
            reason = gr.Dropdown(
                choices=reason_choices(),
                value=NO_REASON,
                label="Reason (optional)",
                info="The site's operator reviews reported mascots (reason)",
                elem_id="gallery-report-reason",
            )
            button = gr.Button("Report", elem_id="gallery-report")
        status = gr.Markdown(label="Report status", elem_id="gallery-report-status")
    return ReportBox(panel, reason, button, status)


class MascotSummary(TypedDict):
    """One mascot in the panel's JSON (the `mascots` component), in the API's words."""

    public_id: str
    prompt: str
    seed: int
    like_count: int
    liked: bool
    is_public: bool
    moderation_note: str


# What a handler returns to set several components at once: each component's new value or gr.update(...).
ComponentValues = dict[gr.blocks.Block, Any]


def summary(entry: MascotEntry) -> MascotSummary:
    """What an API client needs to act on a mascot: its share id, its words, its likes, and (for its owner) why it
    is out of the gallery."""
    return {
        "public_id": entry.public_id,
        "prompt": entry.request.prompt,
        "seed": entry.seed,
        "like_count": entry.like_count,
        "liked": entry.liked_by_viewer,
        "is_public": entry.is_public,
        "moderation_note": entry.moderation_note,
    }


def wire_detail(
    services: PageServices,
    listing: Listing,
    thumbnails: gr.Gallery,
    mascots: gr.JSON,
    detail: DetailPanel,
    form: CreateForm,
    tabs: gr.Tabs,
    show_page: dict[str, Any],
) -> None:
    """Opening a thumbnail (`mascots` says what each is) and every action of the panel; `show_page` refreshes
    the page after a deletion."""

    # One public name per action: the gallery panel's. My mascots' panel runs the same handlers privately.
    # (Gradio renames a later event whose function has the same name, so private ones get their own names.)
    def api(name: str) -> dict[str, Any]:
        return {"api_name": name} if listing == "gallery" else {"api_name": f"{name}_mine", "api_visibility": "private"}

    show = _show_handler(services, detail)
    # The actions go through the queue (it has no concurrency limit, so they never wait behind the GPU): Gradio's
    # page shows a refusal's sentence (gr.Error) or a notice (gr.Info) only for queued events. Outside the queue a
    # person saw a bare "Error" badge instead of "This mascot is private or was deleted."
    thumbnails.select(
        _select_handler(show),
        inputs=mascots,
        outputs=detail.outputs(),
        api_visibility="private",
    ).then(fn=None, js=bring_into_view(f"{listing}-detail"), queue=False, api_visibility="private")
    detail.public_id.submit(show, detail.public_id, detail.outputs(), **api("mascot"))
    # The API returns the file itself; the page then offers it on a download button.
    detail.make_sticker.click(  # one at a time per browser, refused before a queue slot is taken (service.limits)
        _sticker_handler(services),
        detail.public_id,
        detail.sticker_file,
        validator=_sticker_validator(services),
        **api("sticker"),
    ).success(_offer_sticker(services), detail.public_id, detail.sticker, queue=False, api_visibility="private")
    detail.like.click(
        _like_handler(services),
        detail.public_id,
        [detail.like, detail.info, detail.summary],
        **api("like"),
    ).success(**show_page, api_visibility="private")  # the thumbnail's caption shows the count too
    if detail.report is not None:
        detail.report.button.click(
            _report_handler(services),
            [detail.public_id, detail.report.reason],
            detail.report.status,
            api_name="report",
            preprocess=False,  # the reason is checked by our rule, which names the reasons there are
        )
    remix_outputs = [
        *form.generation_inputs.values(),
        form.randomize_seed,
        form.size,
        form.logo_image,
        form.logo_panel,
        form.based_on.row,
        form.based_on.note,
        form.based_on.picture,
        tabs,
    ]
    detail.remix.click(
        _remix_handler(services, form, tabs, vary=False),
        detail.public_id,
        remix_outputs,
        api_visibility="private",
    )
    # More like this: the same parameters with the mascot itself as the starting point and new seeds, shown in the
    # form as "Based on <mascot>" with what it costs; the person presses Generate (or removes it first). Refused
    # here, with the reason, when today's quota cannot pay for it.
    detail.vary.click(
        _remix_handler(services, form, tabs, vary=True),
        detail.public_id,
        remix_outputs,
        api_visibility="private",
    ).success(fn=None, js=bring_into_view("based-on"), queue=False, api_visibility="private")
    if detail.is_public is not None and detail.delete is not None:
        detail.is_public.input(
            _visibility_handler(services),
            [detail.public_id, detail.is_public],
            detail.info,
            api_name="set_public",
        )
        detail.delete.click(
            _delete_handler(services),
            detail.public_id,
            [detail.group, detail.public_id],
            api_name="delete",
            js="(public_id) => confirm('Delete this mascot for good? Its image and likes go too.') ? public_id : null",
        ).then(**show_page, api_visibility="private")


def detail_values(detail: DetailPanel, entry: MascotEntry, share_link: str, page_url: str) -> ComponentValues:
    """The panel showing `entry`: its picture and its download by the checking route under `page_url` (the page's
    address, Visitor.page_url)."""
    values: ComponentValues = {
        detail.group: gr.update(visible=True),
        detail.public_id: entry.public_id,
        detail.image: picture_url(page_url, entry),
        detail.info: describe(entry),
        detail.share_link: share_link,
        detail.download: download(page_url, entry),
        detail.like: like_label(entry.liked_by_viewer, entry.like_count),
        detail.summary: summary(entry),
        detail.sticker: gr.DownloadButton(visible=False),  # another mascot's sticker must not linger
    }
    if detail.is_public is not None:
        # Under review only the operator can bring it back: the box shows it out of the gallery and stays put.
        values[detail.is_public] = gr.Checkbox(
            value=entry.is_public and not entry.moderation, interactive=not entry.moderation
        )
    if detail.report is not None:
        values[detail.report.panel] = gr.Accordion(visible=not entry.is_owner, open=False)
        values[detail.report.reason] = NO_REASON
        values[detail.report.status] = ""
    return values


def _show_handler(services: PageServices, detail: DetailPanel) -> Callable[..., ComponentValues]:
    def mascot(public_id: str, http_request: gr.Request | None = None) -> ComponentValues:
        """One mascot by its share id: the image, its prompt and parameters, likes and its share link.

        Args:
            public_id: the mascot's share id, as gallery and my_mascots list it (the `public_id` of each entry of
                their `mascots` output); a private mascot opens only for the browser that made it.
        """
        who = visitor(services, http_request)
        try:
            entry = services.service.open(public_id, who)
        except Refusal as error:
            raise refused(error) from None
        return detail_values(detail, entry, services.service.share_link(entry, who), who.page_url)

    return mascot


def _select_handler(show: Callable[..., ComponentValues]) -> Callable[..., ComponentValues]:
    def select(
        mascots: list[MascotSummary] | None, event: gr.SelectData, http_request: gr.Request | None = None
    ) -> ComponentValues:
        listed = mascots or []
        if not isinstance(event.index, int) or not 0 <= event.index < len(listed):
            raise gr.Error("That mascot is no longer on this page. Press Refresh.", print_exception=False)
        return show(listed[event.index]["public_id"], http_request)

    return select


def _sticker_validator(services: PageServices) -> Callable[..., list[Any]]:
    @answers_in_sentences
    def validate_sticker(_public_id: Any, http_request: gr.Request | None = None) -> list[Any]:
        # Raised, not marked on the (hidden) share id: the join's HTTP 400 carries the sentence to the page as a
        # toast (see ui/export.py).
        services.service.admit_sticker(visitor_or_none(services, http_request))
        return [gr.validate(True, "")]

    return validate_sticker


def _sticker_handler(services: PageServices) -> Callable[..., Any]:
    def sticker(public_id: str, http_request: gr.Request | None = None) -> tuple[str, str]:
        """The mascot cut out of its background as a transparent PNG (best on plain backgrounds, like stickers)."""
        who = visitor(services, http_request)
        try:
            return sticker_download(who.page_url, services.service.sticker(public_id, who))
        except Refusal as error:
            raise refused(error) from None

    return sticker


def _offer_sticker(services: PageServices) -> Callable[..., Any]:
    def offer_sticker(public_id: str, http_request: gr.Request | None = None) -> Any:
        """Show the download button for the sticker just made (by the mascot's id: the file component's value, an
        input here, would make Gradio fetch the URL)."""
        who = visitor(services, http_request)
        try:
            entry = services.service.open(public_id, who)
        except Refusal as error:
            raise refused(error) from None
        return gr.update(value=sticker_download(who.page_url, entry), visible=True)

    return offer_sticker


def _like_handler(services: PageServices) -> Callable[..., tuple[str, str, MascotSummary]]:
    def like(public_id: str, http_request: gr.Request | None = None) -> tuple[str, str, MascotSummary]:
        """Like a mascot, or take the like back: one per browser. Returns its details with the new count, which
        takes only a few likes from each network."""
        try:
            state, entry = services.service.like(public_id, visitor(services, http_request))
        except Refusal as error:
            raise refused(error) from None
        return like_label(state.liked, state.like_count), describe(entry), summary(entry)

    return like


def _report_handler(services: PageServices) -> Callable[..., str]:
    def report(public_id: Any, reason: Any = NO_REASON, http_request: gr.Request | None = None) -> str:
        """Report someone else's mascot to the site's operator, once per browser, with a reason ("offensive",
        "sexual", "violence", "spam") or "" for none. Returns a sentence; refused for your own mascots."""
        try:
            return services.service.report(public_id, reason, visitor(services, http_request))
        except Refusal as error:
            raise refused(error) from None

    return report


def _visibility_handler(services: PageServices) -> Callable[..., Any]:
    def set_public(public_id: str, is_public: bool, http_request: gr.Request | None = None) -> Any:
        """Show one of your mascots in the public gallery, or hide it."""
        try:
            notice, entry = services.service.set_public(public_id, is_public, visitor(services, http_request))
        except Refusal as error:
            raise refused(error) from None
        say(notice)
        return gr.skip() if entry is None else describe(entry)  # its line says "public" or "private" as it now is

    return set_public


def _delete_handler(services: PageServices) -> Callable[..., tuple[Any, str]]:
    def delete(public_id: str | None, http_request: gr.Request | None = None) -> tuple[Any, str]:
        """Delete one of your mascots: its image, its likes, everywhere."""
        if not public_id:  # the person said no to "Delete for good?"
            return gr.skip(), gr.skip()
        try:
            say(services.service.delete(public_id, visitor(services, http_request)))
        except Refusal as error:
            raise refused(error) from None
        return gr.update(visible=False), ""

    return delete


def _remix_handler(
    services: PageServices, form: CreateForm, tabs: gr.Tabs, *, vary: bool
) -> Callable[..., ComponentValues]:
    def remix(public_id: str, http_request: gr.Request | None = None) -> ComponentValues:
        """Put a mascot's parameters, seed included, back into the Create form (or, to vary it, the mascot itself,
        by its share id, as the picture to mix in, with new seeds)."""
        who = visitor(services, http_request)
        try:
            remixed = services.service.remix(public_id, who, vary=vary)
        except Refusal as error:
            raise refused(error) from None
        values: ComponentValues = {form.generation_inputs[name]: value for name, value in remixed.values.items()}
        values[form.randomize_seed] = remixed.randomize_seed
        values[form.size] = dimensions_to_size(remixed.values["width"], remixed.values["height"])
        values[tabs] = gr.Tabs(selected="create")
        if remixed.based_on_idea is not None:  # a mascot is the starting point, shown as such, not as a logo
            images = remixed.values["num_images_per_prompt"]
            note = based_on_note(remixed.based_on_idea, images, services.service.mascots_left_today(who))
            values.update(based_on_values(form.based_on, remixed.values["logo"], note))
            values[form.logo_image] = None
            values[form.logo_panel] = gr.Accordion(open=False)
            return values
        values.update(no_based_on_values(form.based_on))
        say(remixed.notice)
        values[form.logo_image] = str(remixed.logo_path) if remixed.logo_path else None
        values[form.logo_panel] = gr.Accordion(open=remixed.logo_path is not None)
        return values

    return remix


def describe(entry: MascotEntry) -> str:
    """The prompt and every parameter, for people."""
    request = entry.request
    lines = [f"**{plain(request.prompt)}**"]
    if entry.moderation_note:
        lines.append(f"⚠️ {entry.moderation_note}")
    if request.negative_prompt:
        lines.append(f"Avoid: {plain(request.negative_prompt)}")
    lines.append(
        f"Seed {entry.seed} · {request.width} × {request.height} · {plural(request.num_inference_steps, 'step')}, "
        f"guidance {request.guidance_scale:g} · prior {plural(request.prior_num_inference_steps, 'step')}, "
        f"guidance {request.prior_guidance_scale:g}"
    )
    looks = [
        f"Style {plain(request.style)}" if request.style else "",
        f"brand {plain(request.brand)}" if request.brand else "",
    ]
    if request.logo:
        picture = "a mascot to vary" if based_on_mascot(request.logo) else "a logo"
        looks.append(f"{picture} mixed in at {request.logo_weight:g}")
    if request.adapter_name:
        looks.append(f"style adapter {plain(request.adapter_name)} at strength {request.lora_scale:g}")
    if any(looks):
        lines.append(" · ".join(look for look in looks if look))
    if entry.moderation:
        visibility = "out of the gallery"
    else:
        visibility = "public" if entry.is_public else "private (only this browser sees it)"
    lines.append(f"{plural(entry.like_count, 'like')} · {visibility} · made {entry.created_at:%Y-%m-%d %H:%M} UTC")
    return "\n\n".join(lines)


def like_label(liked: bool, like_count: int) -> str:
    return f"{'♥ Liked' if liked else '♡ Like'} · {like_count}"
