"""Watching AOTInductor packages run (generation/packages.py): which modules' packages a generation called."""

from __future__ import annotations

from mascot.generation.packages import PackagedModels


def count_package_calls(packaged: PackagedModels) -> list[str]:
    """Wrap every loaded package's runner so that each call appends its module's name ("prior", "unet", "decode") to
    the list returned: a generation that ran eager code instead leaves it empty."""
    calls: list[str] = []
    for module in packaged.modules:
        for key, runner in list(module.runners.items()):
            module.runners[key] = lambda *inputs, run=runner, name=module.name: calls.append(name) or run(*inputs)
    return calls
