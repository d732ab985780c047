"""What shared runs that ran out of GPU memory teach the worker: how many images a run of a size may share, for now.

The worker shares a run among as many queued people as `max_batch_images` allows (8 on a GPU). On a smaller card, or
while something else holds memory (a compile process warming up, the image encoder moved over for a logo), a run of
8 large images may not fit. Without a lesson every shared run at that size would fail first and then be made again,
each time; with one, runs at that size, and at larger ones, share at most half the images that failed, until the
lesson is forgotten (memory may be free again by then: one failed run tells).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# How long a lesson holds. It is then forgotten whole: a size that still does not fit costs the failed runs of
# learning it again (8 images, then 4, where 2 fit) once per ten minutes.
LESSON_KEPT_S = 600.0


@dataclass(frozen=True)
class Lesson:
    pixels: int  # per image of the run that ran out: runs of images this large or larger heed the lesson
    images: int  # the most images such a run may make
    until: float  # when it is forgotten, on the worker's clock


class MemoryLessons:
    """The lessons of runs that ran out of GPU memory, by the pixels of their images. Only the thread whose run it is
    uses them (the worker's, or on ZeroGPU the handler whose turn it is: one at a time), so they hold no lock."""

    def __init__(self, clock: Callable[[], float], kept_s: float = LESSON_KEPT_S) -> None:
        self._clock = clock  # the worker's; read only while a lesson is held
        self._kept_s = kept_s
        self._lessons: dict[int, Lesson] = {}

    def ran_out(self, pixels: int, images: int, configured: int) -> int | None:
        """A run of `images` images of `pixels` pixels each ran out of memory: such runs make at most half as many
        from now on. Returns that new limit; None when the run taught nothing new: one larger than the limit (one
        person's own request, which no limit splits), or the limit is one image already."""
        held = self.limit(pixels, configured)
        allowed = max(1, images // 2)
        if images > held or allowed >= held:
            return None
        self._lessons[pixels] = Lesson(pixels, allowed, self._clock() + self._kept_s)
        return allowed

    def limit(self, pixels: int, configured: int) -> int:
        """The most images a run of `pixels` per image may share: `configured`, unless a lesson still held says less."""
        if not self._lessons:
            return configured
        now = self._clock()
        self._lessons = {size: lesson for size, lesson in self._lessons.items() if lesson.until > now}
        heeded = [lesson.images for lesson in self._lessons.values() if lesson.pixels <= pixels]
        return min([configured, *heeded])
