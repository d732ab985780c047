"""Watching AOTInductor packages run (generation/packages.py): which modules' packages a generation called."""

from __future__ import annotations

import functools

from mascot.generation.model import KandinskyGenerator, compile_targets
from mascot.generation.packages import PackagedModels
from mascot.generation.speed import CompileConfig, StagedModels
from mascot.settings import Settings


def count_package_calls(packaged: PackagedModels) -> list[str]:
    """Wrap every loaded package's runner so that each call appends its module's name ("prior", "unet", "decode") to
    the list returned: a generation that ran eager code instead leaves it empty."""
    calls: list[str] = []
    for module in packaged.modules:
        for key, runner in list(module.runners.items()):
            module.runners[key] = lambda *inputs, run=runner, name=module.name: calls.append(name) or run(*inputs)
    return calls


def compiled_in_a_child(generator: KandinskyGenerator, settings: Settings, config: CompileConfig) -> StagedModels:
    """Compile the 256x256x1 bucket with `config` in the app's own compile process for `settings`, and wait until it
    ended and the bucket was loaded here: the generator's compiled models."""
    generator.start_compiling(
        config,
        sizes=[256],
        batch_images=[1],
        build_in_child=functools.partial(compile_targets, settings),
        niceness=0,  # a busy test machine would starve a niced child (nice 10)
    )
    compiled = generator.compiled
    assert compiled is not None and compiled.thread is not None
    compiled.thread.join(1800)
    (child,) = generator.compile_children
    assert child.process.returncode == 0
    return compiled


def packages_from_a_child(generator: KandinskyGenerator, settings: Settings) -> PackagedModels:
    """Build the 256x256x1 bucket's AOTInductor packages (C++ for the CPU) in the app's own compile process for
    `settings`, and wait until they were loaded here: the generator's packaged models."""
    packaged = compiled_in_a_child(generator, settings, CompileConfig(backend="inductor", mode=None, packages=True))
    assert isinstance(packaged, PackagedModels)
    return packaged
