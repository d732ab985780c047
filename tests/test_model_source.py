"""Choosing the model: --model auto|tiny|kandinsky|PATH, the --prior/--decoder overrides, and never hanging."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from mascot.generation.model import KandinskyGenerator, load_generator
from mascot.generation.sources import (
    DECODER_HUB_ID,
    PRIOR_HUB_ID,
    ModelSourceError,
    answers_within,
    resolve_model_source,
)
from mascot.generation.tiny import TINY_MODEL_FOLDER
from mascot.settings import Settings


class HubProbe:
    """A stand-in for the hub check that records calls and answers, fails, or hangs as told."""

    def __init__(self, answer: bool = True, hang_s: float = 0.0) -> None:
        self.answer, self.hang_s, self.calls = answer, hang_s, 0
        self.released = threading.Event()

    def __call__(self) -> bool:
        self.calls += 1
        self.released.wait(self.hang_s)
        return self.answer


@pytest.fixture
def data_dir(tiny_model_dir: Path) -> Path:
    """A data folder that already holds the tiny model (built once per session)."""
    return tiny_model_dir.parent


@pytest.fixture
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Record (and refuse) every name lookup and connection attempt."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def cache_snapshot(cache: Path, repo_id: str, pipeline: Path, *, with_weights: bool = True) -> Path:
    """Lay out `pipeline` in the Hugging Face cache as the snapshot of `repo_id`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(pipeline, snapshot)
    if not with_weights:
        for weights in snapshot.rglob("*.safetensors"):
            weights.unlink()
    return snapshot


def test_auto_without_cuda_picks_the_tiny_model_and_stays_offline(data_dir, no_network):
    probe = HubProbe()
    source = resolve_model_source(Settings(model="auto", data_dir=data_dir), cuda_available=False, hub_reachable=probe)

    assert source.is_preview_model
    assert source.prior == str(data_dir / TINY_MODEL_FOLDER / "prior")
    assert source.decoder == str(data_dir / TINY_MODEL_FOLDER / "decoder")
    assert "No CUDA GPU" in source.reason and "--model PATH" in source.reason
    assert probe.calls == 0 and no_network == []


def test_auto_with_cuda_and_an_unreachable_hub_falls_back_quickly(data_dir, empty_hub_cache):
    probe = HubProbe(answer=True, hang_s=30)  # a hub that never answers
    settings = Settings(model="auto", data_dir=data_dir, hub_timeout_s=0.3)
    started = time.monotonic()
    try:
        source = resolve_model_source(settings, cuda_available=True, hub_reachable=probe)
    finally:
        probe.released.set()

    assert time.monotonic() - started < 3
    assert probe.calls == 1
    assert source.is_preview_model
    assert "not in the local Hugging Face cache" in source.reason and "CUDA GPU" in source.reason


def test_auto_with_cuda_and_a_failing_hub_check_falls_back(data_dir, empty_hub_cache):
    def offline() -> bool:
        raise ConnectionError("no route to host")

    source = resolve_model_source(Settings(data_dir=data_dir), cuda_available=True, hub_reachable=offline)
    assert source.is_preview_model


def test_auto_with_cuda_and_a_reachable_hub_picks_the_real_model(data_dir, empty_hub_cache):
    source = resolve_model_source(Settings(data_dir=data_dir), cuda_available=True, hub_reachable=HubProbe(True))

    assert (source.prior, source.decoder) == (PRIOR_HUB_ID, DECODER_HUB_ID)
    assert not source.is_preview_model and source.reason == ""


def test_auto_with_cuda_loads_cached_weights_without_asking_the_hub(tiny_model_dir, empty_hub_cache, no_network):
    prior = cache_snapshot(empty_hub_cache, PRIOR_HUB_ID, tiny_model_dir / "prior")
    decoder = cache_snapshot(empty_hub_cache, DECODER_HUB_ID, tiny_model_dir / "decoder")
    probe = HubProbe()

    source = resolve_model_source(Settings(data_dir=tiny_model_dir.parent), cuda_available=True, hub_reachable=probe)

    assert Path(source.prior) == prior.resolve() and Path(source.decoder) == decoder.resolve()
    assert not source.is_preview_model
    assert probe.calls == 0 and no_network == []


def test_auto_does_not_trust_a_cache_without_weights(tiny_model_dir, empty_hub_cache):
    cache_snapshot(empty_hub_cache, PRIOR_HUB_ID, tiny_model_dir / "prior", with_weights=False)
    cache_snapshot(empty_hub_cache, DECODER_HUB_ID, tiny_model_dir / "decoder")
    probe = HubProbe(answer=False)

    source = resolve_model_source(Settings(data_dir=tiny_model_dir.parent), cuda_available=True, hub_reachable=probe)

    assert probe.calls == 1 and source.is_preview_model


def test_tiny_builds_the_model_into_the_data_folder(tmp_path):
    source = resolve_model_source(Settings(model="tiny", data_dir=tmp_path), cuda_available=True)

    assert source.is_preview_model and "--model tiny" in source.reason
    assert (tmp_path / TINY_MODEL_FOLDER / "prior" / "model_index.json").is_file()
    assert source.decoder == str(tmp_path / TINY_MODEL_FOLDER / "decoder")


def test_kandinsky_names_the_hub_repositories_without_touching_the_network(tmp_path, no_network):
    source = resolve_model_source(Settings(model="Kandinsky", data_dir=tmp_path), cuda_available=False)

    assert (source.prior, source.decoder) == (PRIOR_HUB_ID, DECODER_HUB_ID)
    assert not source.is_preview_model
    assert no_network == [] and not (tmp_path / TINY_MODEL_FOLDER).exists()


def test_a_model_folder_is_used_as_it_is(tiny_model_dir, tmp_path):
    source = resolve_model_source(Settings(model=str(tiny_model_dir), data_dir=tmp_path))

    assert source.prior == str(tiny_model_dir.resolve() / "prior")
    assert source.decoder == str(tiny_model_dir.resolve() / "decoder")
    assert not source.is_preview_model


def test_a_missing_model_folder_is_named_in_the_error(tmp_path):
    missing = tmp_path / "models" / "mine"
    with pytest.raises(ModelSourceError, match="does not exist") as error:
        resolve_model_source(Settings(model=str(missing), data_dir=tmp_path))
    assert str(missing) in str(error.value)


def test_a_model_folder_without_a_decoder_is_refused(tiny_model_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model_dir / "prior", partial / "prior")
    with pytest.raises(ModelSourceError, match="no decoder/ pipeline") as error:
        resolve_model_source(Settings(model=str(partial), data_dir=tmp_path))
    assert str(partial) in str(error.value)


def test_an_unknown_model_value_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="Unknown --model value 'tinyy': use auto, tiny, kandinsky, or a folder"):
        resolve_model_source(Settings(model="tinyy", data_dir=tmp_path))


def test_prior_and_decoder_override_either_part(tiny_model_dir, tmp_path):
    prior_only = resolve_model_source(Settings(model="kandinsky", prior=str(tiny_model_dir / "prior")))
    decoder_only = resolve_model_source(Settings(model="kandinsky", decoder="me/my-decoder"))

    assert (prior_only.prior, prior_only.decoder) == (str((tiny_model_dir / "prior").resolve()), DECODER_HUB_ID)
    assert (decoder_only.prior, decoder_only.decoder) == (PRIOR_HUB_ID, "me/my-decoder")
    assert "me/my-decoder" in decoder_only.name


def test_overriding_both_parts_ignores_model(tmp_path, no_network):
    settings = Settings(model="auto", prior="me/prior", decoder="me/decoder", data_dir=tmp_path)
    source = resolve_model_source(settings, cuda_available=False)

    assert (source.prior, source.decoder) == ("me/prior", "me/decoder")
    assert not source.is_preview_model
    assert not (tmp_path / TINY_MODEL_FOLDER).exists() and no_network == []


def test_an_override_folder_without_a_pipeline_is_refused(tmp_path):
    with pytest.raises(ModelSourceError, match=r"--prior folder .* holds no pipeline"):
        resolve_model_source(Settings(model="kandinsky", prior=str(tmp_path)))
    with pytest.raises(ModelSourceError, match="--decoder"):
        resolve_model_source(Settings(model="kandinsky", decoder=str(tmp_path / "missing")))


def test_answers_within_gives_up_on_a_probe_that_hangs():
    probe = HubProbe(answer=True, hang_s=30)
    started = time.monotonic()
    try:
        assert answers_within(probe, 0.2) is False
    finally:
        probe.released.set()
    assert time.monotonic() - started < 2
    assert answers_within(HubProbe(answer=True), 1) is True


def test_load_generator_reports_its_progress_and_loads_the_tiny_model(data_dir):
    messages: list[str] = []
    generator = load_generator(Settings(model="tiny", data_dir=data_dir, preview_every=3), on_status=messages.append)

    assert isinstance(generator, KandinskyGenerator)
    assert generator.info.is_preview_model and generator.info.device in {"cpu", "cuda"}
    assert "--model tiny" in generator.info.reason
    assert generator.preview_every == 3
    assert any("prior" in message for message in messages) and any("decoder" in message for message in messages)
    assert messages[-1].endswith("is ready on cpu.") or messages[-1].endswith("is ready on cuda.")
