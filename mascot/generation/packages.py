"""Compiled code handed from a compile process to the serving one as AOTInductor packages (MASCOT_COMPILE_PACKAGES).

Loading a child's torch.compile work through the compile cache still traces the model with dynamo in the serving
process, and a generation that comes meanwhile waits: 17 to 65 s a stage on the H200 (docs/performance.md). Here the
child runs each bucket's stages once, exports every module call it saw at those shapes (`torch.export`) and compiles
each ahead of time into a package that holds no weights. The serving process loads a package (a shared library: no
tracing, no compiling), points it at its own live weights, and from then on calls it for those shapes; any other
call stays eager. A stage is ready in about the time a library takes to load.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.models.autoencoders.vq_model import VQModel
from diffusers.models.transformers.prior_transformer import PriorTransformerOutput
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2 import KandinskyV22Pipeline
from diffusers.pipelines.kandinsky2_2.pipeline_kandinsky2_2_prior import KandinskyV22PriorPipeline
from torch._functorch._aot_autograd.subclass_parametrization import UnwrapTensorSubclass
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from mascot.generation.adapters import set_adapter_scale
from mascot.generation.generator import ran_out_of_gpu_memory
from mascot.generation.speed import (
    Bucket,
    CompileConfig,
    StagedModels,
    StageKey,
    Turn,
    WarmUpStopped,
    any_time,
    bucket_name,
    run_bucket,
)

logger = logging.getLogger(__name__)

Inputs = tuple[torch.Tensor, ...]
# No weights in the package: the serving process hands it its own (user-managed, so nothing is copied).
# Constants derived from weights (a transposed or fused weight) are folded at load, from the weights handed over:
# folded at compile time they would be the compile process's.
# And eager's casts kept: fused, inductor would skip a value's rounding to fp16 between two operations, and an FP8
# layer's activation scale (its largest value / 448, in fp16 eagerly) would then move values onto the next float8
# step: the package of an FP8 prior differed from its eager model past the check (0.072 of 0.048 allowed, CPU).
PACKAGE_OPTIONS = {
    "aot_inductor.package_constants_in_so": False,
    "aot_inductor.use_runtime_constant_folding": True,
    "emulate_precision_casts": True,
}
FOLDED_PREFIX = "_FOLDED_CONST_"  # the folded constants' names: made by the package, not handed to it
CHECK_TOLERANCE = 0.02  # of the eager output's largest value: compiled kernels round in another order


# ---- the calls that are exported: each module's call as the pipelines make it, reduced to its tensors ----------------
class UNetCall(torch.nn.Module):
    """The decoder pipeline's UNet call: (sample, timestep, image_embeds) -> the noise prediction."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.model = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        added = {"image_embeds": image_embeds}
        return self.model(
            sample=sample, timestep=timestep, encoder_hidden_states=None, added_cond_kwargs=added, return_dict=False
        )[0]


class PriorCall(torch.nn.Module):
    """The prior pipeline's PriorTransformer call -> the predicted image embedding."""

    def __init__(self, prior: torch.nn.Module) -> None:
        super().__init__()
        self.model = prior

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        proj_embedding: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.model(
            hidden_states,
            timestep=timestep,
            proj_embedding=proj_embedding,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
        ).predicted_image_embedding


class DecodeCall(torch.nn.Module):
    """MoVQ's decode of latents to pixels in [-1, 1] (what speed.movq_decoder calls)."""

    def __init__(self, movq: torch.nn.Module) -> None:
        super().__init__()
        self.model = movq

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        movq = cast(VQModel, self.model)
        return movq.decode(latents, force_not_quantize=True).sample


def unet_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Inputs | None:
    """The UNet call's tensors when it is the pipeline's form of it; None for any other (which stays eager)."""
    added = kwargs.get("added_cond_kwargs") or {}
    wanted = (kwargs.get("sample"), kwargs.get("timestep"), added.get("image_embeds"))
    plain = not args and kwargs.get("encoder_hidden_states") is None and kwargs.get("return_dict") is False
    return _tensors(wanted) if plain and set(added) == {"image_embeds"} else None


def prior_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Inputs | None:
    names = ("timestep", "proj_embedding", "encoder_hidden_states", "attention_mask")
    if len(args) != 1 or set(kwargs) != set(names):
        return None
    return _tensors((args[0], *(kwargs[name] for name in names)))


def decode_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Inputs | None:
    return _tensors(args) if len(args) == 1 and not kwargs else None


def _tensors(values: Sequence[Any]) -> Inputs | None:
    return tuple(values) if all(isinstance(value, torch.Tensor) for value in values) else None


def signature(inputs: Inputs) -> str:
    """What a package is compiled for: each input's shape, dtype and device."""
    return "|".join(f"{tuple(tensor.shape)}:{tensor.dtype}:{tensor.device.type}" for tensor in inputs)


# ---- a module that calls packages for the shapes it has them for ----------------------------------------------------
@dataclass(frozen=True)
class Package:
    """One compiled call: which module, for which inputs, in which file."""

    module: str
    signature: str
    file: str
    fingerprint: str


class PackagedModule:
    """`module` (shared: the same weights and submodules) whose calls run a loaded package when one exists for their
    shapes, else eagerly; while `capturing`, it also records each call's inputs (one per signature)."""

    def __init__(
        self,
        name: str,
        module: torch.nn.Module,
        exported: Callable[[torch.nn.Module], torch.nn.Module],
        inputs: Callable[[tuple[Any, ...], dict[str, Any]], Inputs | None],
        output: Callable[[torch.Tensor], Any],
    ) -> None:
        self.name = name
        self.exported = exported(module)  # the call as exported: its parameters' names are the package's
        self._inputs = inputs
        self._output = output
        self._eager = module.forward
        self.runners: dict[str, Callable[..., Any]] = {}
        self.captured: dict[str, Inputs] | None = None
        # A shallow copy shares the parameters and submodules; only its forward is ours (the pipelines call it).
        self.module = copy.copy(module)
        self.module.forward = self._forward

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        inputs = self._inputs(args, kwargs)
        if inputs is not None:
            key = signature(inputs)
            if self.captured is not None:
                self.captured.setdefault(key, inputs)
            runner = self.runners.get(key)
            if runner is not None:
                return self._output(runner(*inputs))
        return self._eager(*args, **kwargs)

    def _base_model(self) -> None:
        """Every LoRA strength 0: a package is built and checked on the base model. With strengths in tensors
        (strengths.py: how StagedModels leave the models) its graph keeps every adapter, each times its strength
        buffer, which is handed over with the weights, so the package serves any adapter at any strength. Each
        generation sets its own adapter state before it runs, so nothing needs restoring."""
        set_adapter_scale(self.exported.get_submodule("model"), None, 0.0)

    @functools.cached_property
    def fingerprint(self) -> str:
        """The exported call's architecture (what a package is compiled for; the weights are handed over at load)."""
        return fingerprint(self.exported)

    def build(self, inputs: Inputs, folder: Path) -> Package:
        """Export the call at `inputs`' shapes and compile it into a package in `folder` (kept when it exists), with
        the example inputs beside it for the serving process's check."""
        key = signature(inputs)
        # The options too: a package built with others (kept in the data folder across versions) is not this one.
        options = json.dumps(PACKAGE_OPTIONS, sort_keys=True)
        digest = hashlib.sha256(f"{self.name}|{key}|{self.fingerprint}|{options}".encode()).hexdigest()[:20]
        path = folder / f"{self.name}-{digest}.pt2"
        if not path.exists():
            self._base_model()
            with torch.no_grad():
                # Clones: tensors made under inference_mode cannot be traced outside it.
                example = tuple(tensor.clone() for tensor in inputs)
                program = torch.export.export(self.exported, example, strict=False)
                # Two children may build one shape (a bucket of 8 decodes one image too), and replicas sharing a
                # data folder may too (with the same process ids, in like containers): each writes files of its own
                # name, and the last rename wins with an equal package.
                partial = unique_file(folder, f"{path.stem}.", PARTIAL_SUFFIXES[0])  # AOTInductor wants .pt2
                extra = unique_file(folder, f"{path.stem}.", PARTIAL_SUFFIXES[1])
                try:
                    torch._inductor.aoti_compile_and_package(
                        program, package_path=str(partial), inductor_configs=PACKAGE_OPTIONS
                    )
                    # Tensors made inside forward are no weights: the package has them nowhere else.
                    constants = {
                        name: value for name, value in program.constants.items() if isinstance(value, torch.Tensor)
                    }
                    torch.save({"inputs": example, "constants": constants}, extra)
                    extra.replace(path.with_suffix(".extra"))  # first: a package whose file exists has its extra
                    partial.replace(path)
                finally:  # a failed build leaves no partial files (a killed one may: remove_abandoned_partials)
                    partial.unlink(missing_ok=True)
                    extra.unlink(missing_ok=True)
        return Package(self.name, key, str(path), self.fingerprint)

    def open(self, package: Package) -> OpenedPackage:
        """Load the package's library and its example inputs: nothing here touches the models, so it needs no turn
        between runs (the first package a process opens also pays AOTInductor's start-up: 1.5 s on torch 2.13 and
        9.2 s on torch 2.11, measured on the CPU). Raises PackageMismatch when it is not for this model."""
        if package.fingerprint != self.fingerprint:
            raise PackageMismatch(f"{package.file} was compiled for another architecture of {self.name}")
        with setting_aside_when_broken(package):
            runner = torch._inductor.aoti_load_package(package.file)
            device = next(self.exported.parameters()).device
            extra = torch.load(Path(package.file).with_suffix(".extra"), map_location=device)
            return OpenedPackage(package, runner, extra["inputs"], extra["constants"])

    def attach(self, opened: OpenedPackage) -> None:
        """Point an opened package at this module's live weights and check it against the eager call on the child's
        example inputs; its shapes run it from now on. Raises PackageMismatch when it computes something else."""
        package, runner = opened.package, opened.runner
        live = handed_over(self.exported)
        wanted = [name for name in runner.get_constant_fqns() if not name.startswith(FOLDED_PREFIX)]
        with setting_aside_when_broken(package):
            constants = {name: live[name] if name in live else opened.constants[name] for name in wanted}
            runner.load_constants(constants, check_full_update=True, user_managed=True)
            self._base_model()
            with torch.inference_mode():  # its constants are folded from ours on this first call
                packaged, eager = runner(*opened.inputs), self.exported(*opened.inputs)
            difference = float((packaged.float() - eager.float()).abs().max())
            if not difference <= CHECK_TOLERANCE * (1 + float(eager.float().abs().max())):
                raise PackageMismatch(f"{package.file} differs from the eager {self.name} by {difference:.3g}")
        self.runners[package.signature] = runner

    def load(self, package: Package) -> None:
        """`open` then `attach`, at once."""
        self.attach(self.open(package))


@dataclass(frozen=True)
class OpenedPackage:
    """A package's loaded library with the example inputs and the made-in-forward constants the child saved beside
    it: ready to be attached to the module's weights."""

    package: Package
    runner: Any  # AOTInductor's loaded package (torch._inductor.package.package.AOTICompiledModel)
    inputs: Inputs
    constants: dict[str, torch.Tensor]


def handed_over(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a package of `module` is handed at load, by the names its constants have: each weight and buffer,
    except that a weight of torchao's own tensor types (lower precision: generation/precision.py) is handed over as
    the plain tensors it is made of (its int8 or float8 data and its scales). Export takes such a weight apart with
    torch's UnwrapTensorSubclass parametrization, which names the parts `<layer>.parametrizations.<weight>.original<i>`
    in the order that same class's `right_inverse` lists them."""
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        if not is_traceable_wrapper_subclass(tensor):
            tensors[name] = tensor
            continue
        owner, _, leaf = name.rpartition(".")
        prefix = f"{owner}.parametrizations.{leaf}" if owner else f"parametrizations.{leaf}"
        parts = UnwrapTensorSubclass().right_inverse(tensor)
        tensors.update({f"{prefix}.original{index}": cast(torch.Tensor, part) for index, part in enumerate(parts)})
    return tensors


class PackageMismatch(Exception):
    """A package that does not compute what this process's module computes: that bucket stays eager."""


REJECTED_SUFFIX = ".rejected"


@contextlib.contextmanager
def setting_aside_when_broken(package: Package) -> Iterator[None]:
    """A package that fails to load or to compute what eager computes is renamed `<name>.pt2.rejected` (with its
    extra) before the error goes on: kept under its own name, the compile process of every later start would find it
    built and skip it, and its size would stay eager for good. Renamed, the next start builds it again; the one
    rejected last is kept beside it, to be looked into. Running out of GPU memory is the moment's, not the package's."""
    try:
        yield
    except Exception as error:
        if not ran_out_of_gpu_memory(error):
            path = Path(package.file)
            try:
                path.replace(path.with_name(path.name + REJECTED_SUFFIX))
                logger.warning("set %s aside: the next start builds it again", path.name)
            except OSError as failure:  # gone already (another replica set it aside), or a read-only folder
                logger.warning("could not set %s aside: %s", path.name, failure)
            extra = path.with_suffix(".extra")
            with contextlib.suppress(OSError):  # its package is what a build looks for: the extra follows it
                extra.replace(extra.with_name(extra.name + REJECTED_SUFFIX))
        raise


def fingerprint(module: torch.nn.Module) -> str:
    """torch's version, the module tree's classes, each weight's name, shape, dtype and device, the GPU's generation
    and the model's config: what must be equal for a package built in one process to compute the same in another."""
    parts: list[str] = [str(torch.__version__)]
    parts += [f"{name}:{type(child).__qualname__}" for name, child in module.named_modules()]
    # The tensors handed over, not the weights: a lowered weight is its own type, made of int8 or float8 parts.
    tensors = handed_over(module)
    parts += [f"{name}:{tuple(tensor.shape)}:{tensor.dtype}:{tensor.device.type}" for name, tensor in tensors.items()]
    devices = {tensor.device for tensor in tensors.values()}
    # A package's kernels are built for one GPU generation: a data folder moved to another card must not load them.
    parts += [f"{device}:sm{torch.cuda.get_device_capability(device)}" for device in devices if device.type == "cuda"]
    config = getattr(getattr(module, "model", module), "config", None)
    if config is not None:
        # Not its bookkeeping ("_name_or_path": where it was loaded from); json writes tuples and lists alike.
        settings = {key: value for key, value in dict(config).items() if not key.startswith("_")}
        parts.append(json.dumps(settings, sort_keys=True, default=str))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class PackagedModels(StagedModels):
    """The UNet, the prior and the MoVQ decode, each calling packages for the shapes a bucket's packages cover: the
    same interface as speed.CompiledModels (`prior`, `decoder`, `decode`, `ready`), filled by `load` from what a
    compile process built with `build`. `config` is taken as CompiledModels takes it; packages are always built with
    AOTInductor's PACKAGE_OPTIONS."""

    def __init__(self, prior: KandinskyV22PriorPipeline, decoder: KandinskyV22Pipeline, config: CompileConfig) -> None:
        del config
        self.unet = PackagedModule("unet", decoder.unet, UNetCall, unet_inputs, lambda noise: (noise,))
        self.prior_model = PackagedModule(
            "prior",
            prior.prior,
            PriorCall,
            prior_inputs,
            lambda embedding: PriorTransformerOutput(predicted_image_embedding=embedding),
        )
        self.movq = PackagedModule("decode", DecodeCall(decoder.movq), lambda call: call, decode_inputs, lambda x: x)
        super().__init__(prior, decoder, self.unet.module, self.prior_model.module)

    @property
    def modules(self) -> tuple[PackagedModule, ...]:
        return (self.unet, self.prior_model, self.movq)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.movq.module(latents)

    # ---- the compile process's side ---------------------------------------------------------------------------------
    def build(
        self, bucket: Bucket, folder: Path, started_another: Callable[[], None] = lambda: None
    ) -> dict[str, list[Package]]:
        """Run the bucket's stages eagerly, capturing each module call, and build a package per call shape: the
        packages each stage needs, by its key (as json). `started_another` is called as each stage and each
        package's build starts (the compile process's sign of progress)."""
        folder.mkdir(parents=True, exist_ok=True)
        needs: dict[str, list[Package]] = {}

        @contextlib.contextmanager
        def capturing() -> Iterator[dict[str, dict[str, Inputs]]]:
            started_another()
            for module in self.modules:
                module.captured = {}
            seen: dict[str, dict[str, Inputs]] = {}
            try:
                yield seen
            finally:
                for module in self.modules:
                    seen[module.name] = module.captured or {}
                    module.captured = None

        with torch.inference_mode():
            stages = run_bucket(self.prior, self.decoder, self.decode, bucket, capturing)
        for key, seen in stages:
            needs[stage_name(key)] = []
            for module in self.modules:
                for inputs in seen.get(module.name, {}).values():
                    started_another()
                    needs[stage_name(key)].append(module.build(inputs, folder))
        return needs

    # ---- the serving process's side --------------------------------------------------------------------------------
    def load(self, bucket: Bucket, needs: dict[str, list[dict[str, str]]], turn: Turn = any_time) -> bool:
        """Load a bucket's packages, stage by stage: each stage's libraries are opened first, while generations go on,
        then attached to our weights and checked inside one `turn`; its stages are ready afterwards. False (the bucket
        stays eager, logged) when a package does not load."""
        started = time.perf_counter()
        by_name = {module.name: module for module in self.modules}
        try:
            for name, entries in needs.items():
                packages = {(entry["module"], entry["signature"]): Package(**entry) for entry in entries}
                # Opened before the turn: a generation that comes meanwhile need not wait for libraries to load.
                opened = [
                    by_name[package.module].open(package)
                    for package in packages.values()
                    if package.signature not in by_name[package.module].runners
                ]
                with self._turn(turn):
                    for package in opened:
                        by_name[package.package.module].attach(package)
                self._mark_ready([stage_key(name)])
        except WarmUpStopped:
            logger.info("loading stopped before %s was ready; it stays eager", bucket_name(bucket))
            self.settle(bucket, "eager")
            return False
        except Exception:
            logger.exception("loading the compiled packages for %s failed; that size stays eager", bucket_name(bucket))
            self.settle(bucket, "eager")
            return False
        seconds = time.perf_counter() - started
        self.seconds[f"{bucket_name(bucket)} loaded"] = round(seconds, 2)
        logger.info("loaded the compiled packages for %dx%d, %d image(s) per run, in %.1f s", *bucket, seconds)
        self.settle(bucket, "ready")
        return True


PARTIAL_SUFFIXES = (".partial.pt2", ".partial-extra")  # a package and its extra, while being written (build)
# A build writes its partial files in its last seconds, once compiled, and renames them at once: older ones are left
# by a build killed between the two (SIGTERM, as a stop sends, and SIGKILL skip its `finally`), replicas or not.
ABANDONED_PARTIAL_S = 3600.0


def remove_abandoned_partials(folder: Path, older_than_s: float = ABANDONED_PARTIAL_S) -> int:
    """Remove the partial files of killed builds from `folder` (kept across restarts, in the data folder); returns
    how many went."""
    removed = 0
    cutoff = time.time() - older_than_s
    for suffix in PARTIAL_SUFFIXES:
        for path in folder.glob(f"*{suffix}"):
            with contextlib.suppress(OSError):  # another replica removed it first
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
    return removed


def unique_file(folder: Path, prefix: str, suffix: str) -> Path:
    """A name in `folder` that no other process or thread is given. Only a name: a file made now (mkstemp) would be
    readable by its owner alone, and so would the package renamed from it, which replicas under other users share."""
    return folder / f"{prefix}{uuid.uuid4().hex}{suffix}"


def stage_name(key: StageKey) -> str:
    return json.dumps(list(key))


def stage_key(name: str) -> StageKey:
    return tuple(json.loads(name))
