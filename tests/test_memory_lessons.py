"""A shared run that ran out of GPU memory teaches the worker smaller runs at its size, for a while."""

import pytest

from mascot.generation.memory_lessons import MemoryLessons

SMALL, LARGE, LARGER = 512 * 512, 768 * 768, 1024 * 1024


class StandInClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@pytest.fixture
def clock():
    return StandInClock()


def test_without_a_lesson_the_configured_limit_holds_and_the_clock_is_not_read(clock):
    lessons = MemoryLessons(clock, kept_s=600)
    assert [lessons.limit(pixels, 8) for pixels in (SMALL, LARGE)] == [8, 8]
    assert clock.reads == 0


def test_a_run_that_ran_out_halves_runs_of_its_size_and_larger_ones_only(clock):
    lessons = MemoryLessons(clock, kept_s=600)
    assert lessons.ran_out(LARGE, 8, configured=8) == 4
    assert [lessons.limit(pixels, 8) for pixels in (SMALL, LARGE, LARGER)] == [8, 4, 4]
    assert lessons.ran_out(LARGE, 4, configured=8) == 2  # the smaller run ran out too
    assert [lessons.limit(pixels, 8) for pixels in (SMALL, LARGE, LARGER)] == [8, 2, 2]
    assert lessons.limit(LARGE, 1) == 1  # a lesson never raises the configured limit


def test_one_persons_run_above_the_limit_teaches_nothing_new(clock):
    """A request of more images than runs may share runs alone (no limit splits it): that it ran out says nothing
    about runs of the size the limit allows. Nor does a smaller size's lesson loosen for a larger run's."""
    lessons = MemoryLessons(clock, kept_s=600)
    assert lessons.ran_out(LARGE, 4, configured=2) is None
    assert lessons.limit(LARGE, 2) == 2
    assert lessons.ran_out(SMALL, 2, configured=8) == 1
    assert lessons.ran_out(LARGE, 4, configured=8) is None
    assert lessons.limit(LARGE, 8) == 1
    assert lessons.ran_out(LARGE, 2, configured=2) is None  # a run above the limit a smaller size's lesson set
    assert lessons.ran_out(LARGE, 1, configured=2) is None  # one image is as few as runs go


def test_a_lesson_is_forgotten_after_its_time(clock):
    lessons = MemoryLessons(clock, kept_s=600)
    lessons.ran_out(LARGE, 8, configured=8)
    clock.now = 599.0
    assert lessons.limit(LARGE, 8) == 4
    clock.now = 601.0
    assert lessons.limit(LARGE, 8) == 8
    assert lessons.ran_out(LARGE, 8, configured=8) == 4  # learned again when it runs out again
