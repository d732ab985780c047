"""The share card: a share link (?mascot=<id>) opens on the mascot itself, at the top of the page, with its idea, its
likes and "Make your own"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from mascot.store.entries import MascotEntry
from mascot.ui.common import plain, plural
from mascot.ui.pictures import LinkedImage

# "Make your own": the Create tab is selected first; its idea box is drawn a frame later, so look a few times.
FOCUS_IDEA = """() => {
    const focus = (tries) => {
        const idea = document.querySelector("#create-idea textarea, #create-idea input")
            || [...document.querySelectorAll("label")].find((l) => l.textContent.trim().startsWith("Your idea"))
                ?.parentElement?.querySelector("textarea, input");
        if (idea && idea.offsetHeight > 0) {
            idea.scrollIntoView({block: "center"});
            idea.focus();
        } else if (tries > 0) {
            requestAnimationFrame(() => focus(tries - 1));
        }
    };
    focus(30);
}"""


@dataclass(frozen=True)
class ShareCard:
    """Hidden unless the page was opened by a share link."""

    card: gr.Column
    image: gr.Image  # by its checking route's URL (mascot.web.images): Gradio keeps no copy
    words: gr.Markdown  # the idea and its likes
    make_your_own: gr.Button
    open_in_gallery: gr.Button  # the Gallery's panel, open on it: like, sticker, report

    def outputs(self) -> list[gr.blocks.Block]:
        return [self.card, self.image, self.words]


def build_share_card() -> ShareCard:
    """The picture and, beside it (below it on a phone), the idea, the likes and the two ways on."""
    with gr.Column(visible=False, elem_id="share-card") as card, gr.Row(equal_height=False):
        image = LinkedImage(
            type="filepath",
            format="png",
            interactive=False,
            height=340,
            show_label=False,
            buttons=[],
            scale=2,
            min_width=240,
            elem_id="share-card-image",
        )
        with gr.Column(scale=3, min_width=240):
            words = gr.Markdown(elem_id="share-card-words")
            make_your_own = gr.Button("Make your own", variant="primary", elem_id="share-card-make")
            open_in_gallery = gr.Button("Like, sticker, more: open it in the Gallery", elem_id="share-card-gallery")
    return ShareCard(card, image, words, make_your_own, open_in_gallery)


def wire_share_card(share: ShareCard, tabs: gr.Tabs) -> None:
    """Make your own: the Create tab, the card folded away, the cursor in the idea box. Open: the Gallery's panel."""
    share.make_your_own.click(
        lambda: (gr.Column(visible=False), gr.Tabs(selected="create")),
        outputs=[share.card, tabs],
        queue=False,
        api_visibility="private",
    ).then(fn=None, js=FOCUS_IDEA, queue=False, api_visibility="private")
    share.open_in_gallery.click(
        lambda: (gr.Column(visible=False), gr.Tabs(selected="gallery")),
        outputs=[share.card, tabs],
        queue=False,
        api_visibility="private",
    )


def share_card_values(share: ShareCard, entry: MascotEntry, image: str) -> dict[Any, Any]:
    """The card showing `entry`; `image` is its picture's URL (mascot.ui.pictures.picture_url)."""
    return {
        share.card: gr.Column(visible=True),
        share.image: image,
        share.words: f"### {plain(entry.request.prompt)}\n\n♥ {plural(entry.like_count, 'like')} · "
        "Made with Mascot Generator: type an idea, get a mascot.",
    }
