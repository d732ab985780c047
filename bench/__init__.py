"""Benchmarks of the model and the store, outside the runtime package (no gradio)."""
