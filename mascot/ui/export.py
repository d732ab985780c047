"""My mascots' "Download all (ZIP)": a button, the API event `/export_mascots` that returns the ZIP, and the
download button that offers it (the ZIP itself is mascot.store.export's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from mascot.service import Refusal
from mascot.store.export import EXPORT_CAP, INDEX_NAME
from mascot.ui.common import PageServices, answers_in_sentences, refused, say, visitor, visitor_or_none
from mascot.ui.pictures import LinkedDownload, LinkedFile, zip_download

EXPORT_INFO = (
    f"Every mascot you made (here and on your linked devices), up to the newest {EXPORT_CAP:,}: the PNGs with their "
    f"parameters embedded, and {INDEX_NAME} listing them."
)
EXPORTS_AT_ONCE = 2  # writing ZIPs is disk work: a few at a time, so browsing stays quick on a small machine


@dataclass(frozen=True)
class ExportRow:
    """The button that builds the ZIP, the download button that offers it, and the ZIP itself for API clients."""

    build: gr.Button
    download: gr.DownloadButton  # shown once the ZIP is made: its route, for this browser alone (mascot.web.images)
    zip_file: gr.File  # hidden: the ZIP's URL, what API clients get from /export_mascots


def build_export_row(services: PageServices) -> ExportRow:
    """Lay out "Download all (ZIP)" and wire it: the public event returns the file, a private one offers it."""
    with gr.Row():
        build = gr.Button("Download all (ZIP)", size="sm", scale=0, elem_id="mine-export")
        download = LinkedDownload("Save the ZIP", size="sm", scale=0, visible=False, elem_id="mine-export-download")
        gr.Markdown(EXPORT_INFO, elem_id="mine-export-info")
        zip_file = LinkedFile(visible=False, label="mascots ZIP")
    # In the queue (unlike browsing) so that gr.Progress reaches the page; its own small limit keeps it off the GPU's.
    build.click(
        _export_handler(services),
        None,
        zip_file,
        api_name="export_mascots",
        # One ZIP at a time per browser and a few per 10 minutes, refused before a queue slot is taken: one browser
        # cannot fill the queue (service.limits).
        validator=_export_validator(services),
        concurrency_limit=EXPORTS_AT_ONCE,
        concurrency_id="export_mascots",
    ).success(_offer_zip(services), None, download, queue=False, api_visibility="private")
    return ExportRow(build, download, zip_file)


def _export_validator(services: PageServices) -> Callable[..., list[Any]]:
    @answers_in_sentences
    def validate_export(http_request: gr.Request | None = None) -> list[Any]:
        # No inputs to mark, so the refusal is raised: Gradio answers the join with HTTP 400 and the exception's text
        # as its detail, which the page shows. The Refusal itself, as gr.Error's text would come quoted.
        services.service.admit_export(visitor_or_none(services, http_request))
        return []

    return validate_export


def _export_handler(services: PageServices) -> Callable[..., tuple[str, str]]:
    def export_mascots_zip(
        http_request: gr.Request | None = None,
        progress: Any = gr.Progress(),  # noqa: B008
    ) -> tuple[str, str]:
        """Every mascot this browser made (newest first, at most EXPORT_CAP) as one ZIP: the PNGs as stored, with
        their parameters, named <date>_<idea>_<share id>.png, plus mascots.json indexing them."""
        who = visitor(services, http_request)
        try:
            made = services.service.export(
                who,
                on_progress=lambda done, total: progress((done, total), desc="Writing the ZIP", unit="mascots"),
            )
        except Refusal as error:
            raise refused(error) from None
        say(made.warning)
        return zip_download(who.page_url, made.path)

    return export_mascots_zip


def _offer_zip(services: PageServices) -> Callable[..., Any]:
    def offer_zip(http_request: gr.Request | None = None) -> Any:
        """Show the download button for the ZIP just made (asked of the service: the file component's value, an
        input here, would make Gradio fetch the URL)."""
        who = visitor(services, http_request)
        made = services.service.last_export(who)
        if made is None:
            return gr.update(visible=False)
        return gr.update(value=zip_download(who.page_url, made.path), visible=True)

    return offer_zip
