"""Injectable time: the connector and the sandboxes ask a clock, never the calendar directly.

Production code uses :data:`SYSTEM_CLOCK`. Tests pass a :class:`SimulatedClock` that
starts at a chosen instant and then runs at real speed (or stands still until advanced), so a
test about "a document edited today" means the same thing next month or next year.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...

    def time(self) -> float:
        """The current instant as Unix seconds."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()

    def __call__(self) -> float:
        return self.time()

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class SimulatedClock:
    """A clock that reads ``start`` when created and then advances with real elapsed time
    (``running=True``, the default) or only through :meth:`advance` (``running=False``).

    Calling the clock returns Unix seconds, so it can be passed wherever a ``Callable[[], float]``
    such as ``time.time`` is expected.
    """

    def __init__(self, start: datetime, *, running: bool = True) -> None:
        self._start = _aware(start).astimezone(UTC)
        self._running = running
        self._origin = time.monotonic()
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            elapsed = timedelta(seconds=time.monotonic() - self._origin) if self._running else timedelta(0)
            return self._start + self._offset + elapsed

    def time(self) -> float:
        return self.now().timestamp()

    def __call__(self) -> float:
        return self.time()

    def advance(self, delta: timedelta | float) -> datetime:
        """Move the clock forward (a float is seconds); returns the new now."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=float(delta))
        if step < timedelta(0):
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._offset += step
        return self.now()

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (not earlier than now)."""
        return self.advance(_aware(when) - self.now())

    def today(self) -> str:
        return self.now().strftime("%Y-%m-%d")

    def __repr__(self) -> str:
        return f"SimulatedClock(now={self.now().isoformat()}, running={self._running})"
