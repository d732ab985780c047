"""A LoRA adapter trained by lora/train.py, loaded by `python app.py --lora NAME=PATH` and chosen per request."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from PIL import Image

from lora import train
from mascot.store.imaging import read_parameters
from tests.support.app_process import AppProcess, refused_start, wait_until_model_ready
from tests.support.lora_data import make_dataset, train_args

pytestmark = pytest.mark.slow  # a training run, then a real `python app.py` process

FAST = {"width": 256, "height": 256, "num_inference_steps": 2, "prior_num_inference_steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def look(tiny_model_dir, tmp_path_factory):
    """A decoder adapter trained once for the module's apps."""
    base = tmp_path_factory.mktemp("lora-look")
    data = make_dataset(base / "dataset")
    decoder_flags = ("--learning_rate", "2e-2", "--rank", "4")
    train.main(train_args(tiny_model_dir, data, base / "look", "decoder", 15, *decoder_flags))
    return base / "look"


@pytest.fixture(scope="module")
def app(look, tmp_path_factory):
    base = tmp_path_factory.mktemp("lora-app")
    process = AppProcess(base / "data", base, extra_args=("--lora", f"look={look}")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def house_app(look, tmp_path_factory):
    """The company event's app: its look on by default, at strength 0.8."""
    base = tmp_path_factory.mktemp("house-app")
    flags = ("--lora", f"look={look}", "--default-lora", "look", "--default-lora-strength", "0.8")
    process = AppProcess(base / "data", base, extra_args=flags).start()
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


def test_the_house_look_is_on_by_default_and_a_person_can_switch_it_off(house_app, app):
    house, plain = house_app.browser(), app.browser()
    wait_until_model_ready(house)
    wait_until_model_ready(plain)
    by_default, _ = house.predict(prompt="an otter", **FAST, api_name="/generate")  # no adapter named
    switched_off, _ = house.predict(prompt="an otter", adapter_name="", **FAST, api_name="/generate")
    looked, _ = plain.predict(prompt="an otter", adapter_name="look", lora_scale=0.8, **FAST, api_name="/generate")
    base, _ = plain.predict(prompt="an otter", **FAST, api_name="/generate")

    assert np.array_equal(pixels_of(by_default), pixels_of(looked))  # the same adapter at the same strength
    assert np.array_equal(pixels_of(switched_off), pixels_of(base))
    assert np.abs(pixels_of(by_default) - pixels_of(base)).max() > 10
    embedded = read_parameters(by_default[0]["image"])
    assert (embedded["adapter_name"], embedded["lora_scale"]) == ("look", 0.8)
    # The page says so beside the styles, outside the folded panels, with the switch that turns it off.
    page = json.dumps(httpx.get(f"{house_app.url}config").json(), ensure_ascii=False)
    assert "Use the house look “look”" in page
    assert "**Look:** the house look “look” at strength 0.8" in page


def test_a_default_look_that_is_not_loaded_stops_the_app_with_one_sentence(look, tmp_path):
    started = refused_start(tmp_path, "--lora", f"look={look}", "--default-lora", "otter")
    assert started.returncode == 1
    assert started.stderr.strip().splitlines()[-1] == (
        "Mascot Generator did not start. --default-lora=otter cannot be used: the default LoRA adapter "
        "(--default-lora or MASCOT_DEFAULT_LORA) must be the name of an adapter loaded with --lora or MASCOT_LORA "
        "(loaded: look)."
    )


def test_a_broken_adapter_file_stops_the_app_before_it_serves(tmp_path):
    """A damaged --lora file is found before the page opens, not by the model's load minutes later (which would leave
    a page that makes nothing)."""
    broken = tmp_path / "look"
    broken.mkdir()
    (broken / "pytorch_lora_weights.safetensors").write_bytes(b"not a tensor file")
    started = refused_start(tmp_path, "--lora", f"look={broken}")
    assert started.returncode == 1
    last_line = started.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        f"Mascot Generator did not start. '{broken / 'pytorch_lora_weights.safetensors'}' is not a readable "
        "safetensors file:"
    ), last_line
    assert "Running on" not in started.stdout + started.stderr
