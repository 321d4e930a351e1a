"""A clock for tests: it moves only when a test advances it or when code sleeps on it."""

from __future__ import annotations

import threading

# 2027-01-15T08:00:00Z: a whole second, far from any date the seed data uses
START = 1_800_000_000.0


class FakeClock:
    """Callable like ``time.time``/``time.monotonic``; ``sleep`` records the wait and advances the clock."""

    def __init__(self, start: float = START) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def set(self, value: float) -> None:
        with self._lock:
            self.now = value

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
