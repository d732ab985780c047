"""HTTP around Gradio: the identity cookie, the client's network, health, link previews and image routes."""
