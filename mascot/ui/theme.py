"""The page's look: Gradio's Soft theme in orange, with every text colour dark enough to read (WCAG AA, 4.5:1)."""

from __future__ import annotations

import gradio as gr


def page_theme() -> gr.themes.Base:
    """Soft in orange, its light text darkened: as shipped, its labels were orange-500 on orange-100 (2.44:1), its
    info lines grey-400 on white (2.53:1) and white on its orange buttons 2.8:1; axe-core (tests) counts each one."""
    return gr.themes.Soft(primary_hue="orange").set(
        block_label_text_color="*primary_800",  # 6.8:1 on primary_100
        block_title_text_color="*primary_800",
        block_info_text_color="*neutral_600",  # 7.6:1 on white
        body_text_color_subdued="*neutral_600",
        color_accent="*primary_700",  # the selected tab's text: 4.9:1 on neutral_50
        checkbox_label_background_fill_selected="*primary_700",  # a picked radio choice ("Newest"): white on it
        input_placeholder_color="*neutral_500",  # 4.8:1 on white
        button_primary_background_fill="*primary_700",  # white on it: 5.2:1
        button_primary_background_fill_hover="*primary_800",
        button_primary_border_color="*primary_700",
        button_primary_border_color_hover="*primary_800",
        button_primary_background_fill_dark="*primary_700",
        button_primary_background_fill_hover_dark="*primary_800",
    )
