"""The GPU's world: the generator protocol, the worker that owns the GPU, the model, its sources and adapters.

Only this package (and `lora/`) imports torch, and only inside `model`, `speed`, `tiny` and `adapters`."""
