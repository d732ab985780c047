"""The CUDA waits a test allows: its thread's stream, never the whole device (invalid while any stream captures a CUDA
graph, as a stage loading compiled code does beside generations)."""

from __future__ import annotations

import pytest
import torch


def stream_waits_only(monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """Patch torch.cuda so that synchronizing the device or handing its memory back fails the test; returns the
    devices whose current stream was waited for, in order."""
    waited: list[torch.device] = []

    class Stream:
        def __init__(self, device: torch.device) -> None:
            self.device = device

        def synchronize(self) -> None:
            waited.append(self.device)

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the whole device was synchronized or its memory handed back")

    monkeypatch.setattr(torch.cuda, "synchronize", forbidden)
    monkeypatch.setattr(torch.cuda, "empty_cache", forbidden)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    return waited
