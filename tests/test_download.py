"""Downloading the real model says its progress in bytes for the banner (the hub itself is not reachable in tests)."""

import pytest

from mascot.generation import download as download_module
from mascot.generation.download import DownloadFailed, local_copy, progress_class


def test_a_local_folder_is_used_as_it_is_and_nothing_is_downloaded(tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a local folder must not be downloaded")

    assert local_copy(str(tmp_path), "the prior", print, download=refuse) == str(tmp_path)


def test_a_hub_id_is_fetched_and_its_bytes_are_reported(tmp_path):
    said: list[str] = []

    def snapshot_download(repo_id, tqdm_class):
        files = tqdm_class(total=3, desc="Fetching 3 files")  # a file count: not what the banner reports
        files.update(1)
        received = tqdm_class(total=2_000_000_000, unit="B", desc="Downloading bytes")
        for _ in range(4):
            received.update(500_000_000)
        return tmp_path / repo_id.replace("/", "--")

    folder = local_copy("kandinsky-community/kandinsky-2-2-prior", "the prior", said.append, download=snapshot_download)

    assert folder == str(tmp_path / "kandinsky-community--kandinsky-2-2-prior")
    assert said[0] == "Fetching the prior (kandinsky-community/kandinsky-2-2-prior) from the Hugging Face hub…"
    assert said[1] == "Downloading the prior: 0.5 of 2.0 GB."
    assert all("files" not in message for message in said)


def test_progress_is_said_at_most_every_two_seconds():
    said: list[str] = []
    now = [100.0]
    bar = progress_class("the decoder", said.append, clock=lambda: now[0])(total=10_000_000_000, unit="B")
    bar.update(1_000_000_000)
    bar.update(1_000_000_000)  # same instant: not said again
    now[0] += download_module.SAY_EVERY_SECONDS
    bar.update(1_000_000_000)
    assert said == ["Downloading the decoder: 1.0 of 10.0 GB.", "Downloading the decoder: 3.0 of 10.0 GB."]


def test_the_model_loader_fetches_hub_ids_then_loads_the_fetched_folders(tiny_model_dir, monkeypatch):
    from mascot.generation import model
    from mascot.generation.sources import ModelSource

    fetched: list[str] = []

    def hub(repo_id, tqdm_class):  # the "hub": hands out the tiny model's parts
        fetched.append(repo_id)
        tqdm_class(total=800_000_000, unit="B").update(800_000_000)
        return tiny_model_dir / repo_id.rsplit("-", 1)[-1]

    monkeypatch.setattr(model, "local_copy", lambda location, label, say: local_copy(location, label, say, hub))
    said: list[str] = []
    source = ModelSource("Kandinsky 2.2", "hub/tiny-prior", "hub/tiny-decoder", is_preview_model=False)
    generator = model.KandinskyGenerator.load(source, device="cpu", on_status=said.append)

    assert fetched == ["hub/tiny-prior", "hub/tiny-decoder"]
    assert "Downloading the prior: 0.8 of 0.8 GB." in said and generator.info.name == "Kandinsky 2.2"


def test_a_failed_download_is_a_sentence_for_the_banner():
    def offline(repo_id, tqdm_class):
        raise OSError("[Errno -2] Name or service not known")

    with pytest.raises(
        DownloadFailed, match=r"Could not download kandinsky-community/kandinsky-2-2-prior .*--model tiny"
    ):
        local_copy("kandinsky-community/kandinsky-2-2-prior", "the prior", print, download=offline)
