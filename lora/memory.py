"""Decoder LoRA training memory estimated from exact tensor sizes: one training step of the UNet on fake tensors
(shapes, dtypes and strides without data), so the full-size model costs neither RAM nor compute.

It counts the frozen weights, the LoRA with its gradients and AdamW's two moments, and the tensors autograd keeps
from the forward pass for the backward pass, each storage once. It cannot see the CUDA caching allocator's rounding
and fragmentation, cuDNN and attention workspaces, or the transient buffers of the backward pass (activation
gradients and, with checkpointing, the block being recomputed): the total is a lower bound on a GPU's peak.

The dtypes follow CUDA autocast, as the benchmark and train.py run on a GPU. The fake tensors are CPU tensors, and
CPU autocast casts the same matrix products and convolutions to fp16/bf16; CUDA autocast also runs GroupNorm,
LayerNorm, softmax and pow in fp32 (PyTorch's autocast op reference) where CPU autocast leaves them alone, so
`gpu_autocast` upcasts those itself.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel  # not `from diffusers`: see [tool.mypy]
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode

from lora.objectives import add_lora, decoder_loss
from mascot.generation.tiny import DECODER_SCHEDULER_CONFIG

GIB = 2**30
# The functions this UNet and its loss call that CUDA autocast runs in fp32 and CPU autocast does not.
_CUDA_FP32_FUNCTIONS = frozenset(
    {
        F.group_norm,
        F.layer_norm,
        F.softmax,
        torch.softmax,
        torch.Tensor.softmax,
        torch.pow,
        torch.Tensor.pow,
        torch.Tensor.__pow__,
    }
)


@dataclass(frozen=True)
class MemoryEstimate:
    """One configuration's bytes: what a training step keeps in memory, by kind."""

    resolution: int
    train_batch_size: int
    gradient_checkpointing: bool
    weight_bytes: int  # the frozen weights and buffers
    lora_bytes: int  # the LoRA weights, their gradients and AdamW's two moments
    saved_bytes: int  # what autograd keeps from the forward pass for the backward pass

    @property
    def total_bytes(self) -> int:
        """All three together: about what is held when the backward pass starts, a lower bound on the step's peak."""
        return self.weight_bytes + self.lora_bytes + self.saved_bytes


def storage_ref(tensor: torch.Tensor) -> StorageWeakRef:
    """A weak reference to the tensor's storage. Its `cdata` (the address of the storage object) names the storage:
    views share it, and a meta or fake storage has no memory to compare by (their data_ptr() is 0 for all of them).
    Holding the reference keeps that address from being reused by a later storage."""
    return StorageWeakRef(tensor.untyped_storage())


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors`."""
    sizes = {storage_ref(tensor).cdata: tensor.untyped_storage().nbytes() for tensor in tensors}
    return sum(sizes.values())


class SavedTensorBytes(torch.autograd.graph.saved_tensors_hooks):
    """While active, notes every tensor autograd saves for the backward pass (non-reentrant checkpointing's saved
    block inputs included); `held_bytes` then counts each storage still held once, skipping the `excluded` tensors'
    storages (the weights, counted on their own)."""

    def __init__(self, excluded: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {storage_ref(tensor).cdata for tensor in excluded}
        self._saved: dict[int, tuple[StorageWeakRef, int]] = {}
        super().__init__(self._pack, self._unpack)

    def __enter__(self) -> SavedTensorBytes:  # type: ignore[override]  # torch's gives None; `as saved` needs self
        super().__enter__()
        return self

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        ref = storage_ref(tensor)
        if ref.cdata not in self._excluded and ref.cdata not in self._saved:
            self._saved[ref.cdata] = (ref, tensor.untyped_storage().nbytes())
        return tensor  # saved as it is: the graph holds exactly what it would hold without the hooks

    @staticmethod
    def _unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def held_bytes(self) -> int:
        """Bytes of the saved storages that are still alive: a storage saved by a part of the graph that was dropped
        (a checkpointed block with nothing to differentiate) is no longer held."""
        gc.collect()
        return sum(size for ref, size in self._saved.values() if not ref.expired())


class _CudaFp32Ops(TorchFunctionMode):
    """Runs the functions in `_CUDA_FP32_FUNCTIONS` on fp32 copies of their fp16/bf16 tensors, as CUDA autocast does.
    The copies are made above autograd, as autocast makes them, so autograd saves the fp32 copies as a GPU would."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in _CUDA_FP32_FUNCTIONS:
            args = tuple(_to_fp32(value) for value in args)
            kwargs = {name: _to_fp32(value) for name, value in kwargs.items()}
        return func(*args, **kwargs)


def _to_fp32(value: Any) -> Any:
    """fp16/bf16 tensors as fp32 copies; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


@contextmanager
def gpu_autocast(dtype: torch.dtype | None) -> Iterator[None]:
    """CUDA autocast's dtypes on CPU tensors: CPU autocast for the matrix products and convolutions, plus the fp32 ops
    that only CUDA autocast has. None: full precision, no autocast."""
    with ExitStack() as stack:
        if dtype is not None:
            stack.enter_context(torch.autocast("cpu", dtype=dtype))
            stack.enter_context(_CudaFp32Ops())
        yield


def enable_gradient_checkpointing(unet: UNet2DConditionModel, autocast_dtype: torch.dtype | None) -> None:
    """diffusers' default checkpointing (non-reentrant torch.utils.checkpoint of each block), with the fp32 ops of
    `gpu_autocast` around each recomputation too: torch restores the forward pass's autocast when it recomputes a
    block during backward, but not a TorchFunctionMode, and the recomputed tensors must match the saved ones."""
    if autocast_dtype is None:
        unet.enable_gradient_checkpointing()
        return

    def checkpoint(block: torch.nn.Module, *args: Any) -> Any:
        return torch.utils.checkpoint.checkpoint(
            block.__call__, *args, use_reentrant=False, context_fn=_fp32_ops_on_recomputation
        )

    unet.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint)


def _fp32_ops_on_recomputation() -> tuple[AbstractContextManager[Any], AbstractContextManager[Any]]:
    """checkpoint's context_fn: nothing more for the forward pass (the outer mode is on), the fp32 ops for the
    recomputation."""
    return nullcontext(), _CudaFp32Ops()


def fake_unet(config: Mapping[str, Any], rank: int, dtype: torch.dtype, mode: FakeTensorMode) -> UNet2DConditionModel:
    """The UNet in `dtype` with the trainer's LoRA (fp32), every parameter a fake CPU tensor. It is built on the meta
    device and converted parameter by parameter: Module.to() cannot swap fake parameters in place."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(config)).to(dtype)
        add_lora(unet, "decoder", rank, float(rank))
    converter, cpu = mode.fake_tensor_converter, torch.device("cpu")
    for module in unet.modules():
        for name, parameter in module.named_parameters(recurse=False):
            fake = converter.from_meta_and_device(mode, parameter.data, cpu)
            module._parameters[name] = torch.nn.Parameter(fake, requires_grad=parameter.requires_grad)
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = converter.from_meta_and_device(mode, buffer, cpu)
    return unet.train()


def estimate_step(
    unet: UNet2DConditionModel,
    resolution: int,
    train_batch_size: int,
    gradient_checkpointing: bool,
    autocast_dtype: torch.dtype | None,
) -> MemoryEstimate:
    """One training step as the benchmark runs it (the decoder loss, backward, AdamW), counting bytes on the way; call
    it inside the FakeTensorMode of the UNet's fake tensors. The gradient scaler and clipping hold nothing lasting."""
    if gradient_checkpointing:
        enable_gradient_checkpointing(unet, autocast_dtype)
    else:
        unet.disable_gradient_checkpointing()
    frozen = [*(p for p in unet.parameters() if not p.requires_grad), *unet.buffers()]
    lora = [parameter for parameter in unet.parameters() if parameter.requires_grad]
    side = resolution // 8
    latents = torch.randn(train_batch_size, 4, side, side, dtype=unet.dtype)
    image_embeds = torch.randn(train_batch_size, unet.config["encoder_hid_dim"], dtype=unet.dtype)
    scheduler = DDPMScheduler.from_config(DECODER_SCHEDULER_CONFIG)
    with SavedTensorBytes(excluded=[*frozen, *lora]) as saved, gpu_autocast(autocast_dtype):
        loss = decoder_loss(unet, scheduler, latents, image_embeds, torch.Generator().manual_seed(0))
    saved_bytes = saved.held_bytes()
    loss.backward()
    optimizer = torch.optim.AdamW(lora, lr=1e-4)
    optimizer.step()
    missing = [parameter.shape for parameter in lora if parameter.grad is None]
    if missing:
        raise RuntimeError(f"{len(missing)} LoRA parameters got no gradient: the step did not reach them.")
    moments = [state[key] for state in optimizer.state.values() for key in ("exp_avg", "exp_avg_sq")]
    lora_bytes = storage_bytes([*lora, *(parameter.grad for parameter in lora if parameter.grad is not None), *moments])
    optimizer.zero_grad(set_to_none=True)
    return MemoryEstimate(
        resolution=resolution,
        train_batch_size=train_batch_size,
        gradient_checkpointing=gradient_checkpointing,
        weight_bytes=storage_bytes(frozen),
        lora_bytes=lora_bytes,
        saved_bytes=saved_bytes,
    )


def estimate_training_memory(
    config: Mapping[str, Any],
    resolutions: Iterable[int],
    train_batch_size: int,
    rank: int,
    checkpointing: Iterable[bool],
    autocast_dtype: torch.dtype | None,
) -> list[MemoryEstimate]:
    """Each resolution with each checkpointing setting, on one fake UNet of `config` (weights in the autocast dtype,
    as the benchmark holds them; fp32 without autocast)."""
    mode = FakeTensorMode()
    unet = fake_unet(config, rank, autocast_dtype or torch.float32, mode)
    settings = list(checkpointing)
    with mode:
        return [
            estimate_step(unet, resolution, train_batch_size, checkpointed, autocast_dtype)
            for resolution in resolutions
            for checkpointed in settings
        ]
