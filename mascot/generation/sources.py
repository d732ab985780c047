"""Where Kandinsky 2.2 comes from: `--model` (auto, tiny, kandinsky or a folder) and the `--prior`/`--decoder`
overrides, decided without waiting on the network for long, and without touching it at all on a machine with no
GPU."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mascot.generation.tiny import ensure_tiny_model
from mascot.settings import Settings

logger = logging.getLogger(__name__)

PRIOR_HUB_ID = "kandinsky-community/kandinsky-2-2-prior"
DECODER_HUB_ID = "kandinsky-community/kandinsky-2-2-decoder"
REAL_MODEL_NAME = "Kandinsky 2.2"
TINY_MODEL_NAME = "Tiny Kandinsky 2.2 (offline preview model)"
MODEL_KEYWORDS = ("auto", "tiny", "kandinsky")

PREVIEW_EXPLAINED = "The offline preview model is loaded: it makes noise-like pictures, not mascots."
HOW_TO_GET_THE_REAL_MODEL = (
    "To use Kandinsky 2.2, run on a machine with a CUDA GPU and internet access once (the weights, about 20 GB, are "
    "then cached), or pass --model PATH with a folder holding its prior/ and decoder/ pipelines."
)
NO_GPU_REASON = f"No CUDA GPU was found. {PREVIEW_EXPLAINED} {HOW_TO_GET_THE_REAL_MODEL}"
NO_WEIGHTS_REASON = (
    f"The Kandinsky 2.2 weights are not in the local Hugging Face cache and the hub did not answer. "
    f"{PREVIEW_EXPLAINED} {HOW_TO_GET_THE_REAL_MODEL}"
)
TINY_ASKED_REASON = f"{PREVIEW_EXPLAINED} It was asked for with --model tiny. {HOW_TO_GET_THE_REAL_MODEL}"


class ModelSourceError(ValueError):
    """`--model`, `--prior` or `--decoder` names nothing loadable; the message is a sentence for whoever runs it."""


@dataclass(frozen=True)
class ModelSource:
    """Where the two pipelines come from: hub ids or folders, passed as they are to `from_pretrained`."""

    name: str
    prior: str
    decoder: str
    is_preview_model: bool
    reason: str = ""


def resolve_model_source(
    settings: Settings,
    *,
    cuda_available: bool | None = None,
    hub_reachable: Callable[[], bool] | None = None,
) -> ModelSource:
    """Decide what to load from `--model` and the `--prior`/`--decoder` overrides. Never waits on the network for
    longer than `settings.hub_timeout_s`, and does not touch it at all without CUDA."""
    if settings.prior and settings.decoder:
        prior, decoder = (
            _override_location(settings.prior, "--prior"),
            _override_location(settings.decoder, "--decoder"),
        )
        return ModelSource(
            name=f"prior {prior}, decoder {decoder}", prior=prior, decoder=decoder, is_preview_model=False
        )
    base = _base_source(settings, cuda_available, hub_reachable)
    if settings.prior:
        prior = _override_location(settings.prior, "--prior")
        return replace(base, name=f"{base.name}, prior {prior}", prior=prior)
    if settings.decoder:
        decoder = _override_location(settings.decoder, "--decoder")
        return replace(base, name=f"{base.name}, decoder {decoder}", decoder=decoder)
    return base


def _base_source(
    settings: Settings, cuda_available: bool | None, hub_reachable: Callable[[], bool] | None
) -> ModelSource:
    """The source `--model` names on its own."""
    keyword = settings.model.strip().lower()
    if keyword == "tiny":
        return tiny_source(settings.data_dir, TINY_ASKED_REASON)
    if keyword == "kandinsky":
        return hub_source()
    if keyword == "auto":
        return _auto_source(settings, cuda_available, hub_reachable)
    return folder_source(settings.model)


def tiny_source(data_dir: Path, reason: str) -> ModelSource:
    """The tiny offline model, built into the data folder the first time."""
    folder = ensure_tiny_model(data_dir)
    return ModelSource(TINY_MODEL_NAME, str(folder / "prior"), str(folder / "decoder"), True, reason)


def hub_source() -> ModelSource:
    """The real checkpoints by hub id: `from_pretrained` downloads them on first use."""
    return ModelSource(REAL_MODEL_NAME, PRIOR_HUB_ID, DECODER_HUB_ID, is_preview_model=False)


def folder_source(value: str) -> ModelSource:
    """A folder holding `prior/` and `decoder/` pipelines (each saved with `save_pretrained`)."""
    folder = Path(value).expanduser()
    if not folder.is_dir():
        if not _looks_like_path(value):
            raise ModelSourceError(
                f"Unknown --model value {value!r}: use {', '.join(MODEL_KEYWORDS)}, or a folder that holds prior/ "
                "and decoder/ pipelines."
            )
        raise ModelSourceError(f"The model folder {str(folder)!r} does not exist.")
    for part in ("prior", "decoder"):
        if not (folder / part / "model_index.json").is_file():
            raise ModelSourceError(
                f"The model folder {str(folder)!r} has no {part}/ pipeline: "
                f"{str(folder / part / 'model_index.json')!r} is missing."
            )
    resolved = folder.resolve()
    return ModelSource(f"{REAL_MODEL_NAME} from {resolved}", str(resolved / "prior"), str(resolved / "decoder"), False)


def _looks_like_path(value: str) -> bool:
    """Whether a value was meant as a folder rather than a keyword (so a typo of 'tiny' is not 'folder not found')."""
    return "/" in value or "\\" in value or value.startswith(("~", "."))


def _override_location(value: str, flag: str) -> str:
    """A `--prior`/`--decoder` value: an existing pipeline folder (resolved) or else a hub id."""
    folder = Path(value).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ModelSourceError(f"{flag} folder {str(folder)!r} holds no pipeline (no model_index.json in it).")
        return str(folder.resolve())
    if value.startswith(("~", ".", "/", "\\")) or value.count("/") > 1:
        raise ModelSourceError(f"{flag} {value!r} is neither an existing folder nor a hub id like owner/name.")
    return value


def _auto_source(
    settings: Settings, cuda_available: bool | None, hub_reachable: Callable[[], bool] | None
) -> ModelSource:
    """The real model with a GPU and its weights (cached, else downloadable), otherwise the tiny one with a reason."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        return tiny_source(settings.data_dir, NO_GPU_REASON)
    prior_folder, decoder_folder = cached_snapshot(PRIOR_HUB_ID), cached_snapshot(DECODER_HUB_ID)
    if prior_folder and decoder_folder:
        # Load the cached snapshots by path, so that loading makes no network call either.
        return ModelSource(REAL_MODEL_NAME, str(prior_folder), str(decoder_folder), is_preview_model=False)
    probe = hub_reachable or (lambda: hub_answers(settings.hub_timeout_s))
    if answers_within(probe, settings.hub_timeout_s):
        return hub_source()
    return tiny_source(settings.data_dir, NO_WEIGHTS_REASON)


def cached_snapshot(repo_id: str) -> Path | None:
    """The folder of `repo_id` in the local Hugging Face cache if every component's files are there (no network)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except OSError:  # LocalEntryNotFoundError: not cached
        return None
    return folder if _has_all_components(folder) else None


def _has_all_components(folder: Path) -> bool:
    """Whether every component model_index.json lists is there, with weights where it has a model config."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        return False
    index = json.loads(index_file.read_text(encoding="utf-8"))
    for name, entry in index.items():
        if not isinstance(entry, list) or entry[0] is None:
            continue
        part = folder / name
        if not part.is_dir() or not any(part.iterdir()):
            return False
        has_weights = any(part.glob("*.safetensors")) or any(part.glob("*.bin"))
        if (part / "config.json").is_file() and not has_weights:
            return False
    return True


def hub_answers(timeout_s: float) -> bool:
    """Whether the hub knows both repositories right now."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.model_info(PRIOR_HUB_ID, timeout=timeout_s)
    api.model_info(DECODER_HUB_ID, timeout=timeout_s)
    return True


def answers_within(probe: Callable[[], bool], timeout_s: float) -> bool:
    """Run `probe` in a daemon thread and give up after `timeout_s`: DNS lookups ignore HTTP timeouts."""
    answer: list[bool] = []

    def run() -> None:
        try:
            answer.append(bool(probe()))
        except Exception as error:  # any failure (offline, DNS, HTTP error) means "not reachable"
            logger.info("The Hugging Face hub is not reachable: %s", error)

    thread = threading.Thread(target=run, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(answer and answer[0])
