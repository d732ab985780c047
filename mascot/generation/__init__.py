"""The GPU's world: the generator protocol, the worker that owns the GPU, the model, its sources and adapters.

Only this package (and `lora/`) imports torch, and only inside `model`, `speed`, `tiny` and `adapters`."""

import logging


class _PilImageProcessorNotice(logging.Filter):
    """Drops transformers' notice that CLIPImageProcessor falls back to its PIL implementation without torchvision.

    We use the PIL implementation on purpose (model.pil_image_processor): torchvision's wheel must match torch's exact
    build and adds nothing here. diffusers imports the plain name at import time, so the notice cannot be avoided by
    naming the PIL class ourselves; without this filter every start would warn about a choice we made."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_PilImageProcessorNotice())
