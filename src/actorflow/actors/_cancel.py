"""Interruptible regions: work inside ``receive`` that a system message can cancel at once.

On asyncio the region cancels the actor's own task and takes the cancellation back when it
leaves the region (the way ``asyncio.timeout`` does), which costs a fraction of an anyio
cancel scope; on other backends it is an anyio cancel scope.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

import anyio


class Interruptible:
    """``with region:`` runs a block that :meth:`cancel` interrupts; ``cancelled_caught``
    tells afterwards whether the block ended because of it.

    Use one instance per block. ``cancel`` must come from outside the block's task (another
    task or a callback, e.g. ``on_interrupt`` called by a sender), as with any cancel scope.
    """

    __slots__ = ("_cancelling", "_known", "_requested", "_scope", "_task", "cancelled_caught")

    def __init__(self, task: asyncio.Task[Any] | None = None) -> None:
        self._task: asyncio.Task[Any] | None = None
        self._known = task  # the task that will enter, when the caller knows it already
        self._scope: anyio.CancelScope | None = None
        self._requested = False
        self._cancelling = 0
        self.cancelled_caught = False

    def __enter__(self) -> Interruptible:
        task = self._known
        if task is None:
            with contextlib.suppress(RuntimeError):  # no running asyncio loop: another backend
                task = asyncio.current_task()
        if task is None:
            self._scope = anyio.CancelScope()
            self._scope.__enter__()
        else:
            self._task = task
            self._cancelling = task.cancelling()
        return self

    def cancel(self) -> None:
        """Interrupt the block (no effect once it has ended or was already interrupted)."""
        if self._scope is not None:
            self._scope.cancel()
        elif self._task is not None and not self._requested:
            self._requested = True
            self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scope = self._scope
        if scope is not None:
            swallowed = bool(scope.__exit__(exc_type, exc, tb))
            self.cancelled_caught = scope.cancelled_caught
            return swallowed
        task, self._task = self._task, None
        # Our cancellation, and no other one pending on top of it: take it back.
        if (
            self._requested
            and task is not None
            and task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            self.cancelled_caught = True
            return True
        return False
