"""The Gradio page: `build_demo(PageServices)`. Imports no torch: it is handed a worker and a store."""

from mascot.ui.page import PageServices, build_demo, model_banner

__all__ = ["PageServices", "build_demo", "model_banner"]
