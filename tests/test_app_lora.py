"""A LoRA adapter trained by lora/train.py, loaded by `python app.py --lora NAME=PATH` and chosen per request."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lora import train
from mascot.store.imaging import read_parameters
from tests.support.app_process import AppProcess, wait_until_model_ready
from tests.support.lora_data import make_dataset, train_args

FAST = {"width": 256, "height": 256, "num_inference_steps": 2, "prior_num_inference_steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("lora-app")
    data = make_dataset(base / "dataset")
    decoder_flags = ("--learning_rate", "2e-2", "--rank", "4")
    train.main(train_args(tiny_model_dir, data, base / "look", "decoder", 15, *decoder_flags))
    process = AppProcess(base / "data", base, extra_args=("--lora", f"look={base / 'look'}")).start()
    yield process
    process.stop()


def pixels_of(images: list[dict]) -> np.ndarray:
    with Image.open(images[0]["image"]) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_chosen_adapter_changes_the_mascot_and_is_stored_with_it(app):
    client = app.browser()
    wait_until_model_ready(client)
    base, _ = client.predict(prompt="an otter", **FAST, api_name="/generate")
    looked, _status = client.predict(
        prompt="an otter", adapter_name="look", lora_scale=1.0, **FAST, api_name="/generate"
    )
    off, _ = client.predict(prompt="an otter", adapter_name="look", lora_scale=0.0, **FAST, api_name="/generate")

    assert np.abs(pixels_of(looked) - pixels_of(base)).max() > 10
    assert np.array_equal(pixels_of(off), pixels_of(base))  # strength 0 is the base model
    embedded = read_parameters(looked[0]["image"])
    assert (embedded["adapter_name"], embedded["lora_scale"]) == ("look", 1.0)

    _gallery, _page, _label, mascots = client.predict(1, api_name="/my_mascots")
    _id, _image, info, *_rest = client.predict(mascots[1]["public_id"], api_name="/mascot")
    assert "style adapter look at strength 1" in info


def test_an_adapter_that_is_not_loaded_is_refused_by_name(app):
    client = app.browser()
    wait_until_model_ready(client)
    with pytest.raises(Exception, match=r"adapter_name 'otter' is not a loaded LoRA adapter \(loaded: look\)"):
        client.predict(prompt="an otter", adapter_name="otter", **FAST, api_name="/generate")
    with pytest.raises(Exception, match="lora_scale must be between 0 and 2"):
        client.predict(prompt="an otter", adapter_name="look", lora_scale=3, **FAST, api_name="/generate")
