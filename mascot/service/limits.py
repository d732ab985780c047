"""Per-browser and per-network limits on work that costs the server but no quota: uploads, pictures read, exports,
stickers. Kept in this process, not in the database.

Why in-process: what these limits protect is this process's own memory, CPU, disk and queue, which a replica does
not share with another; counting them in the database would make every upload and every sticker a write (which
fails on a full disk, exactly when refusing work matters most) and a query on the way in. A restart forgets the
counts, and N replicas allow N times as much in all: both fine for a guard against one client flooding one process.
The daily mascot quotas, which are about fairness across replicas, stay in the database (store.quota).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Monotonic = Callable[[], float]
# Keys seen in a window are forgotten once it has passed; a sweep at this many keys keeps a flood of fresh cookies
# from growing the tables without bound.
SWEEP_AT_KEYS = 10_000


class RateWindow:
    """At most `limit` events per key within any `window_s` seconds (a sliding window, thread-safe)."""

    def __init__(self, limit: int, window_s: float, clock: Monotonic = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, key: str) -> float:
        """Seconds until `key` may have another event; 0 when it may now."""
        with self._lock:
            return self._wait_s(key, self._clock())

    def take(self, key: str) -> float:
        """Count an event for `key` if it is allowed now (returns 0); otherwise count nothing and return the wait."""
        with self._lock:
            now = self._clock()
            wait = self._wait_s(key, now)
            if wait == 0:
                self._events.setdefault(key, deque()).append(now)
            return wait

    def _wait_s(self, key: str, now: float) -> float:
        if len(self._events) >= SWEEP_AT_KEYS:
            self._sweep(now)
        events = self._events.get(key)
        if events is None:
            return 0.0
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if not events:
            del self._events[key]
            return 0.0
        return 0.0 if len(events) < self.limit else events[0] + self.window_s - now

    def _sweep(self, now: float) -> None:
        for key in [key for key, events in self._events.items() if not events or events[-1] <= now - self.window_s]:
            del self._events[key]


class Leases:
    """At most `limit` running things per key ("one export at a time"). A lease ends when released, or after
    `ttl_s` at the latest, so a request Gradio dropped from its queue (the browser left) cannot hold one forever."""

    def __init__(self, limit: int, ttl_s: float, clock: Monotonic = time.monotonic) -> None:
        self.limit = limit
        self.ttl_s = ttl_s
        self._clock = clock
        self._held: dict[str, list[float]] = {}  # key -> when each of its leases expires
        self._lock = threading.Lock()

    def acquire(self, key: str) -> bool:
        """Take a lease for `key`; False when it already holds `limit` of them."""
        with self._lock:
            now = self._clock()
            if len(self._held) >= SWEEP_AT_KEYS:
                self._held = {k: live for k, held in self._held.items() if (live := [t for t in held if t > now])}
            live = [expires for expires in self._held.get(key, []) if expires > now]
            if len(live) >= self.limit:
                self._held[key] = live
                return False
            self._held[key] = [*live, now + self.ttl_s]
            return True

    def release(self, key: str) -> None:
        """End one of `key`'s leases (the oldest); nothing when it holds none."""
        with self._lock:
            held = self._held.get(key, [])
            if held:
                held.pop(0)
            if not held:
                self._held.pop(key, None)


@dataclass(frozen=True)
class Limit:
    """One kind of work's limits: per browser and per network, `per_window` in `window_s`, `at_once` running."""

    per_window: int
    window_s: float
    at_once: int = 0  # 0: not limited (uploads and pictures last a moment)
    network_factor: int = 4  # a network (a household, an office behind NAT) may do this many browsers' worth


class KeyedLimit:
    """A Limit applied to a browser key and a network key at once: both must allow the work."""

    def __init__(self, limit: Limit, lease_ttl_s: float = 600.0, clock: Monotonic = time.monotonic) -> None:
        factor = limit.network_factor
        self.limit = limit
        self._browsers = RateWindow(limit.per_window, limit.window_s, clock)
        self._networks = RateWindow(limit.per_window * factor, limit.window_s, clock)
        self._running_browsers = Leases(limit.at_once, lease_ttl_s, clock) if limit.at_once else None
        self._running_networks = Leases(limit.at_once * factor, lease_ttl_s, clock) if limit.at_once else None

    def wait_s(self, browser: str, network: str) -> float:
        """How long until both may do another (0: now), counting nothing."""
        return max(self._browsers.wait_s(browser), self._networks.wait_s(network) if network else 0.0)

    def take(self, browser: str, network: str) -> float:
        """Count one for both when both allow it (returns 0); otherwise count nothing and return the wait."""
        wait = self.wait_s(browser, network)
        if wait:
            return wait
        wait = self._browsers.take(browser)
        if wait == 0 and network:
            wait = self._networks.take(network)  # a race lost between the two: the browser's event stays counted
        return wait

    def start(self, browser: str, network: str) -> str | None:
        """Take a running lease for both: None when taken, else which one ("browser", "network") runs its `at_once`
        already (then nothing is taken)."""
        if self._running_browsers is None or self._running_networks is None:
            return None
        if not self._running_browsers.acquire(browser):
            return "browser"
        if network and not self._running_networks.acquire(network):
            self._running_browsers.release(browser)
            return "network"
        return None

    def finish(self, browser: str, network: str) -> None:
        """End the running leases `start` took."""
        if self._running_browsers is None or self._running_networks is None:
            return
        self._running_browsers.release(browser)
        if network:
            self._running_networks.release(network)


def seconds_phrase(seconds: float) -> str:
    """A wait in people's words: "a few seconds", "40 seconds", "3 minutes"."""
    if seconds < 10:
        return "a few seconds"
    if seconds < 90:
        return f"{math.ceil(seconds / 10) * 10} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


@dataclass(frozen=True)
class HouseLimits:
    """The limits the service applies; tests make smaller ones."""

    uploads: Limit = Limit(per_window=20, window_s=600.0)  # raw uploads (web.uploads): files in the temp folder
    pictures: Limit = Limit(per_window=20, window_s=600.0)  # logos and dropped PNGs decoded
    exports: Limit = Limit(per_window=3, window_s=600.0, at_once=1)  # a reused, unchanged ZIP does not count
    stickers: Limit = Limit(per_window=10, window_s=60.0, at_once=1)
    # Each like and report is a row kept for good, and a fresh cookie (a browser row too) costs nothing: a person
    # browsing the gallery likes far fewer than this.
    likes: Limit = Limit(per_window=60, window_s=600.0)
    reports: Limit = Limit(per_window=10, window_s=600.0)


class Limiters:
    """The running counters of one process, one KeyedLimit per kind of work."""

    def __init__(self, limits: HouseLimits | None = None, clock: Monotonic = time.monotonic) -> None:
        limits = limits or HouseLimits()
        self.uploads = KeyedLimit(limits.uploads, clock=clock)
        self.pictures = KeyedLimit(limits.pictures, clock=clock)
        self.exports = KeyedLimit(limits.exports, clock=clock)
        self.stickers = KeyedLimit(limits.stickers, clock=clock)
        self.likes = KeyedLimit(limits.likes, clock=clock)
        self.reports = KeyedLimit(limits.reports, clock=clock)
