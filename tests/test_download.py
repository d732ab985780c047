"""Downloading the real model says its progress in bytes for the banner (the hub itself is not reachable in tests)."""

import fnmatch
import shutil

import pytest

from mascot.generation import download as download_module
from mascot.generation.download import DownloadFailed, hub_files, local_copy, progress_class, unread_files


def test_a_local_folder_is_used_as_it_is_and_nothing_is_downloaded(tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a local folder must not be downloaded")

    assert local_copy(str(tmp_path), "the prior", print, download=refuse) == str(tmp_path)


def test_a_hub_id_is_fetched_and_its_bytes_are_reported(tmp_path):
    said: list[str] = []

    def snapshot_download(repo_id, tqdm_class, ignore_patterns):
        assert ignore_patterns is None  # the repo holds only what from_pretrained reads
        files = tqdm_class(total=3, desc="Fetching 3 files")  # a file count: not what the banner reports
        files.update(1)
        received = tqdm_class(total=2_000_000_000, unit="B", desc="Downloading bytes")
        for _ in range(4):
            received.update(500_000_000)
        return tmp_path / repo_id.replace("/", "--")

    folder = local_copy(
        "kandinsky-community/kandinsky-2-2-prior",
        "the prior",
        said.append,
        download=snapshot_download,
        list_files=lambda repo_id: [
            "model_index.json",
            "prior/config.json",
            "prior/diffusion_pytorch_model.safetensors",
        ],
    )

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

    def hub(repo_id, tqdm_class, ignore_patterns):  # the "hub": hands out the tiny model's parts
        fetched.append(repo_id)
        tqdm_class(total=800_000_000, unit="B").update(800_000_000)
        return tiny_model_dir / repo_id.rsplit("-", 1)[-1]

    monkeypatch.setattr(
        model, "local_copy", lambda location, label, say: local_copy(location, label, say, hub, lambda repo_id: [])
    )
    said: list[str] = []
    source = ModelSource("Kandinsky 2.2", "hub/tiny-prior", "hub/tiny-decoder", is_preview_model=False)
    generator = model.KandinskyGenerator.load(source, device="cpu", on_status=said.append)

    assert fetched == ["hub/tiny-prior", "hub/tiny-decoder"]
    assert "Downloading the prior: 0.8 of 0.8 GB." in said and generator.info.name == "Kandinsky 2.2"


def test_a_failed_download_is_a_sentence_for_the_banner():
    def offline(repo_id, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    with pytest.raises(
        DownloadFailed, match=r"Could not download kandinsky-community/kandinsky-2-2-prior .*--model tiny"
    ):
        local_copy("kandinsky-community/kandinsky-2-2-prior", "the prior", print, offline, list_files=offline)


# Part of a hub repo that keeps each model in both formats, with a Flax copy and a model only pickled.
BOTH_FORMATS = [
    ".gitattributes",
    "README.md",
    "model_index.json",
    "image_encoder/config.json",
    "image_encoder/model.safetensors",
    "image_encoder/pytorch_model.bin",
    "text_encoder/flax_model.msgpack",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "text_encoder/model.safetensors.index.json",
    "text_encoder/pytorch_model-00001-of-00002.bin",
    "text_encoder/pytorch_model-00002-of-00002.bin",
    "text_encoder/pytorch_model.bin.index.json",
    "prior/config.json",
    "prior/diffusion_pytorch_model.bin",
    "tokenizer/tokenizer.json",
]


class RecordingDownload:
    """A hub download that only notes which files it was told to leave out."""

    ignore_patterns: list[str] | None = None

    def __call__(self, repo_id, tqdm_class, ignore_patterns):
        self.ignore_patterns = ignore_patterns
        return "/cache/" + repo_id


def test_a_hub_repo_is_fetched_without_the_weights_from_pretrained_does_not_read():
    snapshot_download = RecordingDownload()

    local_copy("owner/model", "the prior", print, snapshot_download, list_files=lambda repo_id: BOTH_FORMATS)

    assert snapshot_download.ignore_patterns == [
        "image_encoder/pytorch_model.bin",
        "text_encoder/flax_model.msgpack",
        "text_encoder/pytorch_model-00001-of-00002.bin",
        "text_encoder/pytorch_model-00002-of-00002.bin",
        "text_encoder/pytorch_model.bin.index.json",
    ]  # the prior, only pickled, is fetched: from_pretrained reads it there


def test_a_repo_whose_files_cannot_be_listed_is_fetched_whole():
    snapshot_download = RecordingDownload()

    def unreachable(repo_id):
        raise OSError("offline")

    assert local_copy("owner/model", "the prior", print, snapshot_download, unreachable) == "/cache/owner/model"
    assert snapshot_download.ignore_patterns is None


def test_a_name_with_glob_characters_skips_only_itself():
    snapshot_download = RecordingDownload()

    files = ["unet/diffusion_pytorch_model.safetensors", "unet/weights[ema].bin"]
    local_copy("owner/model", "the decoder", print, snapshot_download, list_files=lambda repo_id: files)
    [pattern] = snapshot_download.ignore_patterns
    assert fnmatch.fnmatch("unet/weights[ema].bin", pattern) and not fnmatch.fnmatch("unet/weightse.bin", pattern)


@pytest.mark.slow
def test_from_pretrained_loads_a_pipeline_without_the_files_left_out(tiny_model_dir, tmp_path):
    """The rule checked against diffusers' and transformers' own loading: beside each safetensors file, a pickled copy
    that could not be read (garbage) is never touched, and it is exactly what the download leaves out."""
    from mascot.generation.model import KandinskyGenerator
    from mascot.generation.sources import ModelSource

    folder = tmp_path / "hub"
    shutil.copytree(tiny_model_dir, folder)
    garbage = []
    for weights in sorted(folder.rglob("*.safetensors")):
        pickled = weights.with_name(
            "pytorch_model.bin" if weights.name == "model.safetensors" else weights.stem + ".bin"
        )
        pickled.write_bytes(b"not a pickle")
        garbage.append(pickled.relative_to(folder).as_posix())
    listing = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]

    assert unread_files(listing) == sorted(garbage) and len(garbage) == 5
    source = ModelSource("Kandinsky 2.2", str(folder / "prior"), str(folder / "decoder"), is_preview_model=False)
    generator = KandinskyGenerator.load(source, device="cpu")
    assert generator.info.name == "Kandinsky 2.2"


def test_the_hub_listing_is_the_paths_of_the_repo_info_the_hub_answers(monkeypatch):
    import huggingface_hub
    from huggingface_hub.hf_api import ModelInfo

    answer = {"id": "owner/model", "siblings": [{"rfilename": "model_index.json"}, {"rfilename": "unet/a.bin"}]}
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo_id: ModelInfo(**answer))
    assert hub_files("owner/model") == ["model_index.json", "unet/a.bin"]
    monkeypatch.setattr(huggingface_hub, "model_info", lambda repo_id: ModelInfo(id="owner/model"))
    assert hub_files("owner/model") == []  # the hub said nothing of its files: nothing is left out
