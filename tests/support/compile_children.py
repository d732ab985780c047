"""Builds for compile processes that never get to compile (picklable by reference, as a child's work order needs)."""

from __future__ import annotations

import time


def fails_to_build() -> tuple[object, object]:
    """A child whose models cannot be built (a broken install, say): it exits with an error at once."""
    raise RuntimeError("the models could not be built (in a test)")


def builds_for_a_long_time() -> tuple[object, object]:
    """A child that is still building when the test is done with it (it is ended long before this returns)."""
    time.sleep(600)
    raise RuntimeError("this child should have been ended")
