"""The training-memory estimate (lora/memory.py, `lora/bench_train.py --estimate`): its byte counting by hand, against a
real CPU step of the tiny UNet, and at full size."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.utils.checkpoint
from diffusers import UNet2DConditionModel
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.profiler import ProfilerActivity, profile

from lora import bench_train, memory
from lora.objectives import add_lora, decoder_loss
from mascot.generation.tiny import DECODER_SCHEDULER_CONFIG

pytestmark = pytest.mark.slow  # training steps of the tiny UNet

# With batch 1, size-1 dimensions leave strides free, and the fake and real kernels then pick different ones (a few
# .contiguous() copies differ); batch 2 at 128² (16² latents, 2² at the bottom) has no size-1 dimension.
RESOLUTION, BATCH = 128, 2
RNG_STATE_BYTES = torch.get_rng_state().nbytes  # torch.utils.checkpoint keeps one per checkpointed block


def hand_counted_graph(leaf: torch.Tensor) -> torch.Tensor:
    """A graph whose saved storages are known: exp saves its result (a new storage of leaf's size), the two views of
    it that sin and cos save share that storage, and leaf.sin() saves the leaf; sums and adds save nothing."""
    out = leaf.exp()
    first_half = out[:500].sin()
    matrix = out.view(10, 100).cos()
    again = leaf.sin()
    return first_half.sum() + matrix.sum() + again.sum()


@pytest.mark.parametrize("fake", [False, True], ids=["real-tensors", "fake-tensors"])
def test_saved_bytes_count_each_storage_once_while_the_graph_holds_it(fake):
    with FakeTensorMode() if fake else nullcontext():
        leaf = torch.ones(1000, requires_grad=True)  # 4,000 bytes
        with memory.SavedTensorBytes() as saved:
            loss = hand_counted_graph(leaf)
        # exp's result and the leaf, once each; per saved tensor it would be 4,000 + 2,000 + 4,000 + 4,000.
        assert saved.held_bytes() == 8_000
        with memory.SavedTensorBytes(excluded=[leaf]) as without_leaf:
            other = hand_counted_graph(leaf)
        assert without_leaf.held_bytes() == 4_000
        loss.backward()  # frees the graph, and with it exp's result
        assert saved.held_bytes() == 4_000  # the leaf is still alive: this test holds it
        del other


def tiny_config() -> dict:
    return bench_train.unet_config(tiny=True)


def real_tiny_unet(checkpointing: bool) -> UNet2DConditionModel:
    """The tiny UNet with real (random) weights, set up as the estimate sets up its fake one."""
    unet = UNet2DConditionModel.from_config(tiny_config()).to(torch.float16)
    add_lora(unet, "decoder", 4, 4.0)
    if checkpointing:
        memory.enable_gradient_checkpointing(unet, torch.float16)
    return unet.train()


@pytest.mark.parametrize("checkpointing", [False, True], ids=["no-checkpointing", "checkpointing"])
def test_the_estimate_matches_what_a_real_cpu_step_of_the_tiny_unet_keeps(checkpointing, monkeypatch):
    from diffusers import DDPMScheduler

    (estimate,) = memory.estimate_training_memory(tiny_config(), [RESOLUTION], BATCH, 4, [checkpointing], torch.float16)
    unet = real_tiny_unet(checkpointing)
    frozen = [parameter for parameter in unet.parameters() if not parameter.requires_grad]
    lora = [parameter for parameter in unet.parameters() if parameter.requires_grad]
    blocks_with_a_graph = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        output = checkpoint(*args, **kwargs)
        blocks_with_a_graph.append(output.requires_grad)
        return output

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
    side = RESOLUTION // 8
    latents = torch.randn(BATCH, 4, side, side, dtype=torch.float16)
    image_embeds = torch.randn(BATCH, unet.config.encoder_hid_dim, dtype=torch.float16)
    scheduler = DDPMScheduler.from_config(DECODER_SCHEDULER_CONFIG)
    with (
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler,
        memory.SavedTensorBytes(excluded=unet.parameters()) as saved,
        memory.gpu_autocast(torch.float16),
    ):
        loss = decoder_loss(unet, scheduler, latents, image_embeds, torch.Generator().manual_seed(0))
    # The CPU allocator's own count, independent of the hooks: bytes the forward pass allocated and did not free.
    # Everything autograd keeps for backward is in it, and so is anything else the step keeps; what is not saved
    # tensors is the loss (this test holds it), checkpoint's copy of the CPU RNG state for each block that kept a
    # graph, and a few hundred bytes of small tensors (616 on torch 2.13).
    allocated = sum(event.self_cpu_memory_usage for event in profiler.key_averages())
    not_saved_tensors = allocated - loss.untyped_storage().nbytes() - estimate.saved_bytes
    assert 0 <= not_saved_tensors - RNG_STATE_BYTES * sum(blocks_with_a_graph) <= 1024
    # The fake tensors have the real ones' sizes, dtypes and strides: the same hooks count the same bytes.
    assert saved.held_bytes() == estimate.saved_bytes
    assert estimate.weight_bytes == 2 * sum(parameter.numel() for parameter in frozen)  # fp16
    assert estimate.lora_bytes == 4 * 4 * sum(parameter.numel() for parameter in lora)  # fp32: weight, grad, 2 moments


def test_checkpointing_keeps_less_for_backward_in_the_tiny_unet():
    off, on = memory.estimate_training_memory(tiny_config(), [RESOLUTION], BATCH, 4, [False, True], torch.float16)
    assert on.saved_bytes < 0.8 * off.saved_bytes
    assert (on.weight_bytes, on.lora_bytes) == (off.weight_bytes, off.lora_bytes)


def test_the_full_size_estimate_runs_on_a_cpu_and_prints_an_estimate_not_a_measurement(capsys):
    off, on = bench_train.main(["--estimate", "--resolutions", "512"])

    with torch.device("meta"):
        unet = UNet2DConditionModel(**bench_train.FULL_SIZE_UNET)
        lora = add_lora(unet, "decoder", 4, 4.0)
    assert off.weight_bytes == on.weight_bytes == 2 * bench_train.FULL_SIZE_PARAMETERS  # fp16
    assert off.lora_bytes == 16 * sum(parameter.numel() for parameter in lora)
    assert on.saved_bytes < off.saved_bytes
    printed = capsys.readouterr().out
    assert "not measured on a GPU" in printed and "Lower bound" in printed
    assert "512² | on |" in printed
