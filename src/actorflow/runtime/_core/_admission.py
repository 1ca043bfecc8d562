"""Admission: how many executions run at once, and what waits for a turn.

An execution that is submitted while ``max_active`` executions are running is stored as
CREATED (durable, like any other) and *parked*: no actor yet, only its record in a FIFO. It
starts as soon as a running one ends or goes idle (PAUSED, or QUEUED behind its flow's
concurrency limit: idle executions hold no slot, so a thousand paused approvals never stop new
work). When ``max_queued`` executions are parked, ``submit`` itself waits: the caller feels the
backpressure instead of a queue growing without bound.

Why bound at all: memory, and the cycle collector, whose full passes cost time in proportion
to every live object; ten thousand live executions made it the largest cost of a run.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Sized
from typing import Any

from actorflow.runtime._records import Execution
from actorflow.storage import new_future

Parked = tuple[Any, Execution, list[Any], str, Any]
"""(flow, record, task runs, mode, first message): what ``spawn_execution`` takes."""


def check_limits(max_active: int | None, max_queued: int | None) -> None:
    """ValueError unless both limits are positive integers or None."""
    for name, value in (("max_active", max_active), ("max_queued", max_queued)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, not {value!r}")


class Admission:
    """The running count, the parked FIFO, and submitters waiting for room in it."""

    def __init__(self, max_active: int | None, max_queued: int | None) -> None:
        check_limits(max_active, max_queued)
        self.max_active = max_active
        self.max_queued = max_queued
        self.idle: set[str] = set()  # live executions that are PAUSED or QUEUED
        self.parked: OrderedDict[str, Parked] = OrderedDict()
        self._room: deque[asyncio.Future[None]] = deque()
        self._promised = 0  # places in the FIFO held for woken submitters not back yet

    def has_room(self, live: Sized) -> bool:
        """Whether one more execution may start now, with ``live`` execution actors."""
        return self.max_active is None or len(live) - len(self.idle) < self.max_active

    def must_park(self, live: Sized) -> bool:
        """Whether a new execution waits its turn (FIFO: behind any already parked)."""
        return bool(self.parked) or not self.has_room(live)

    def admit(self, live: Sized, spawn: Callable[..., Any]) -> None:
        """Start parked executions while there is room (``spawn`` adds to ``live``); wake
        submitters as the FIFO shrinks."""
        parked = self.parked
        while parked and self.has_room(live):
            _, entry = parked.popitem(last=False)
            spawn(*entry)
        self._wake_submitters()

    def _full(self) -> bool:
        return self.max_queued is not None and len(self.parked) + self._promised >= self.max_queued

    def _wake_submitters(self) -> None:
        # One place, one submitter: waking them all would have each re-check and wait again.
        room = self._room
        while room and not self._full():
            waiter = room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._promised += 1

    def fail_waiting(self, error: Callable[[], BaseException]) -> None:
        """Wake every submitter waiting for room with ``error()`` (storage failed)."""
        room, self._room = self._room, deque()
        for waiter in room:
            if not waiter.done():
                waiter.set_exception(error())

    def must_wait(self) -> bool:
        """Whether :meth:`wait_for_room` would wait (submit skips its coroutine otherwise)."""
        return bool(self._room) or self._full()

    async def wait_for_room(self) -> None:
        """Until the FIFO has a place (``max_queued``), in submission order: submit's
        backpressure. Returns with the place held until the caller parks, synchronously."""
        if not self.must_wait():
            return
        waiter: asyncio.Future[None] = new_future()
        self._room.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._promised -= 1  # woken but leaving: pass the place on
                self._wake_submitters()
            raise
        self._promised -= 1
