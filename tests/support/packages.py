"""Watching AOTInductor packages run (generation/packages.py): which modules' packages a generation called."""

from __future__ import annotations

import functools

from mascot.generation.model import KandinskyGenerator, compile_targets
from mascot.generation.packages import PackagedModels
from mascot.generation.speed import CompileConfig
from mascot.settings import Settings


def count_package_calls(packaged: PackagedModels) -> list[str]:
    """Wrap every loaded package's runner so that each call appends its module's name ("prior", "unet", "decode") to
    the list returned: a generation that ran eager code instead leaves it empty."""
    calls: list[str] = []
    for module in packaged.modules:
        for key, runner in list(module.runners.items()):
            module.runners[key] = lambda *inputs, run=runner, name=module.name: calls.append(name) or run(*inputs)
    return calls


def packages_from_a_child(generator: KandinskyGenerator, settings: Settings) -> PackagedModels:
    """Build the 256x256x1 bucket's AOTInductor packages (C++ for the CPU) in the app's own compile process for
    `settings`, and wait until it ended and they were loaded here: the generator's packaged models."""
    generator.start_compiling(
        CompileConfig(backend="inductor", mode=None, packages=True),
        sizes=[256],
        batch_images=[1],
        build_in_child=functools.partial(compile_targets, settings),
        niceness=0,  # a busy test machine would starve a niced child (nice 10)
    )
    packaged = generator.compiled
    assert isinstance(packaged, PackagedModels) and packaged.thread is not None
    packaged.thread.join(1800)
    (child,) = generator.compile_children
    assert child.process.returncode == 0
    return packaged
