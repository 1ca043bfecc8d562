"""Wall clock and the one timer task that serves every delay (retries, pauses).

One heap and one task for all timers, instead of a sleeping task per waiting task run; a
:class:`FakeClock` lets tests move time by hand.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import re
import time
from collections.abc import Callable

import anyio

from actorflow._errors import FlowError

#: The longest duration a flow may name (timeouts, delays, retry intervals): 100 years.
MAX_DURATION = 100 * 365 * 86400.0

_log = logging.getLogger("actorflow.clock")


def check_duration(value: object, what: str) -> float:
    """``value`` as seconds, if it is a finite number in ``[0, MAX_DURATION]``; else FlowError.

    A NaN would stop every timer of the runtime (it compares false with everything), an
    infinite or huge one overflows dates; both are refused where durations enter.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FlowError(f"{what} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DURATION:
        raise FlowError(
            f"{what} must be a finite number of seconds between 0 and {MAX_DURATION:.0f} "
            f"(100 years), got {value!r}"
        )
    return seconds


_ISO_DURATION = re.compile(
    r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?"
    r"(?:(\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_SHORT_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_text(value: object) -> float:
    """Seconds from a rendered duration: a number, ISO-8601 (``PT1M30S``) or ``5s``/``2m``.

    For durations known only when a task runs (templates); files' literal durations are
    parsed by the loader. Raises FlowError naming the value.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    iso = _ISO_DURATION.match(text)
    if iso and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
        d, h, m, sec = (float(g) if g else 0.0 for g in iso.groups())
        return d * 86400 + h * 3600 + m * 60 + sec
    if text and not _SHORT_DURATION.sub("", text).strip():
        return sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in _SHORT_DURATION.findall(text))
    try:
        return float(text)
    except ValueError:
        raise FlowError(
            f"invalid duration {text[:60]!r}; use seconds, ISO-8601 (PT1M30S) or 5s/2m/1h"
        ) from None


class Clock:
    """Real time: epoch seconds."""

    def __init__(self) -> None:
        if type(self).now is Clock.now:
            # The builtin itself: read about seven times per task run, a Python frame each.
            self.now = time.time  # type: ignore[method-assign]

    def now(self) -> float:
        """Current time in epoch seconds."""
        return time.time()

    async def wait(self, deadline: float | None, wake: anyio.Event) -> None:
        """Return at ``deadline`` or when ``wake`` is set, whichever comes first."""
        if deadline is None or deadline != deadline:  # None or NaN: no deadline
            await wake.wait()
            return
        with anyio.move_on_after(max(0.0, deadline - self.now())):
            await wake.wait()

    def subscribe(self, poke: Callable[[], None]) -> None:
        """Real time needs no pokes."""


class FakeClock(Clock):
    """Time that moves only when a test calls :meth:`advance`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._pokes: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    async def wait(self, deadline: float | None, wake: anyio.Event) -> None:
        await wake.wait()

    def subscribe(self, poke: Callable[[], None]) -> None:
        self._pokes.append(poke)

    def advance(self, seconds: float) -> None:
        """Move time forward and fire every timer that is now due."""
        self._now += seconds
        for poke in self._pokes:
            poke()


class TimerHandle:
    """A scheduled callback; :meth:`cancel` before it fires to drop it."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Never fire."""
        self.cancelled = True


class Timers:
    """Callbacks due at wall-clock times, fired by one long-lived task."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._wake = anyio.Event()
        clock.subscribe(self._poke)

    def _poke(self) -> None:
        self._wake.set()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (synchronously, in the timer task) at ``when``.

        A NaN ``when`` fires at once (and is logged): kept as is, it would compare false with
        every other time, break the heap order and stop every timer behind it.
        """
        if when != when:
            _log.warning("timer for %r due at NaN: firing it now", callback)
            when = self.clock.now()
        handle = TimerHandle(when, callback)
        first = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        if first is None or when < first:
            self._wake.set()
        return handle

    def pending(self) -> int:
        """Timers not yet fired or cancelled."""
        return sum(1 for _, _, h in self._heap if not h.cancelled)

    async def run(self) -> None:
        """Fire timers forever (run it in a task group)."""
        while True:
            now = self.clock.now()
            while self._heap and (self._heap[0][2].cancelled or self._heap[0][0] <= now):
                _, _, handle = heapq.heappop(self._heap)
                if not handle.cancelled:
                    handle.cancelled = True
                    handle.callback()
            if self._wake.is_set():
                self._wake = anyio.Event()
                continue
            deadline = self._heap[0][0] if self._heap else None
            await self.clock.wait(deadline, self._wake)
