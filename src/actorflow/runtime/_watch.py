"""Change notices: what runs in this process tells its watchers (the HTTP API's live streams)
as it changes, so they need not poll the store.

A watcher reads notices from a bounded queue of its own. The engine never waits for it: a
watcher that falls ``maxsize`` notices behind loses them all and gets one ``resync`` notice
instead (read the store again). Only executions this process runs are heard of; the store
holds no change notifications for the others (its doorbells and LISTEN/NOTIFY carry commands
to an execution's owner), so a watcher of those reads the store itself.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Literal

import anyio
import msgspec

from actorflow.runtime._records import Execution, TaskRun
from actorflow.runtime._states import State

if TYPE_CHECKING:
    from typing import Self

#: Notices a watcher may fall behind before it is told to resync (see :class:`ChangeWatch`).
DEFAULT_BACKLOG = 256


class Change(msgspec.Struct, frozen=True):
    """A state change in this process, or ``resync`` when notices were dropped.

    ``execution`` is the execution's record (no task runs) for an ``execution`` change,
    ``task_run`` the task run for a ``task_run`` change. ``stored`` is true when the change
    is already committed (an end); other changes are queued for storage when heard of.
    """

    kind: Literal["execution", "task_run", "resync"]
    execution_id: str = ""
    state: State | None = None
    execution: Execution | None = None
    task_run: TaskRun | None = None
    stored: bool = False


RESYNC = Change("resync")


@dataclasses.dataclass(frozen=True)
class Listeners:
    """The engine's hook lists a hub attaches to (while it has watchers)."""

    state: list[Callable[[Execution], None]]
    end: list[Callable[[Execution], None]]
    task_run: list[Callable[[TaskRun], None]]


class ChangeHub:
    """Fans the engine's changes out to watchers; attached to the engine only while one
    watches, so an unwatched runtime pays nothing."""

    def __init__(self, listeners: Listeners) -> None:
        self._listeners = listeners
        self._watches: set[ChangeWatch] = set()

    def watch(self, execution_id: str | None, maxsize: int) -> ChangeWatch:
        """A new watcher of one execution (or of all when ``execution_id`` is None)."""
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        w = ChangeWatch(self, execution_id, maxsize)
        if not self._watches:
            self._listeners.state.append(self._execution)
            self._listeners.end.append(self._ended)
            self._listeners.task_run.append(self._task_run)
        self._watches.add(w)
        return w

    def _drop(self, w: ChangeWatch) -> None:
        self._watches.discard(w)
        if not self._watches:
            hooks = self._listeners
            for ex_hooks, fn in ((hooks.state, self._execution), (hooks.end, self._ended)):
                if fn in ex_hooks:
                    ex_hooks.remove(fn)
            if self._task_run in hooks.task_run:
                hooks.task_run.remove(self._task_run)

    def _execution(self, ex: Execution) -> None:
        self._offer(Change("execution", ex.id, ex.state, execution=ex))

    def _ended(self, ex: Execution) -> None:
        self._offer(Change("execution", ex.id, ex.state, execution=ex, stored=True))

    def _task_run(self, tr: TaskRun) -> None:
        self._offer(Change("task_run", tr.execution_id, tr.state, task_run=tr))

    def _offer(self, change: Change) -> None:
        for w in tuple(self._watches):
            if w.execution_id is None or w.execution_id == change.execution_id:
                w._offer(change)


class ChangeWatch:
    """An async iterator of :class:`Change` notices; close it (or use ``with``) when done.

    Must be read on the runtime's event loop.
    """

    def __init__(self, hub: ChangeHub, execution_id: str | None, maxsize: int) -> None:
        self.execution_id = execution_id
        self.maxsize = maxsize
        self._hub = hub
        self._queue: deque[Change] = deque()
        self._wakeup: anyio.Event | None = None
        self._closed = False

    def _offer(self, change: Change) -> None:
        queue = self._queue
        if len(queue) >= self.maxsize:
            # Behind: whatever it missed, it must read again; never make the engine wait.
            queue.clear()
            change = RESYNC
        queue.append(change)
        if self._wakeup is not None:
            self._wakeup.set()

    def pending(self) -> list[Change]:
        """The notices queued now, taken without waiting (coalesce a burst in one read)."""
        out = list(self._queue)
        self._queue.clear()
        return out

    def close(self) -> None:
        """Stop watching: the iterator ends once its queued notices are read."""
        if not self._closed:
            self._closed = True
            self._hub._drop(self)
            if self._wakeup is not None:
                self._wakeup.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Change:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return self._queue.popleft()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["DEFAULT_BACKLOG", "RESYNC", "Change", "ChangeHub", "ChangeWatch", "Listeners"]
