"""The observer interface: how tracing (and the CLI's progress view) hear of what runs.

Part of the runtime's model: it names the engine only through the small protocols below, so
the engine imports this module and never the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from actorflow.runtime._clock import Clock
    from actorflow.runtime._context import TaskContext
    from actorflow.runtime._flow import Flow
    from actorflow.runtime._records import Execution, TaskRun
    from actorflow.runtime._states import State

#: Name of the stored metric holding each ended record's span duration.
DURATION_METRIC = "actorflow.duration"


class EngineView(Protocol):
    """What an observer may read of the engine it is bound to."""

    @property
    def clock(self) -> Clock:
        """The engine's clock (attempt spans use its dates)."""
        ...


class AttemptScope(Protocol):
    """What an observer may read of the execution an attempt runs in."""

    @property
    def flow(self) -> Flow:
        """The execution's flow."""
        ...

    @property
    def record(self) -> Execution:
        """The execution's current record."""
        ...


class Observer:
    """Hooks for tracing and metrics; this base does nothing (tracing off)."""

    #: Whether it must see a task run's RUNNING as its own change. An observer that reads the
    #: history of ended records instead says False: an attempt that ends in its first step
    #: is then stored with RUNNING and its end in one snapshot, one write less.
    sees_running: bool = True

    def execution_changed(self, ex: Execution) -> None:
        """An execution got a new state."""

    def execution_recovered(self, ex: Execution, task_runs: Sequence[TaskRun]) -> None:
        """A runtime resumes ``ex`` from storage (its process closed or died), with the task
        runs as stored; called before any of them changes again."""

    def task_run_changed(self, tr: TaskRun, ex: Execution | None) -> None:
        """A task run got a new state."""

    def attempt_started(self, scope: AttemptScope, tr: TaskRun, number: int) -> Any:
        """An attempt starts; returns a token for :meth:`attempt_ended`."""
        return None

    def attempt_ended(self, token: Any, state: State, error: BaseException | None) -> None:
        """An attempt ended."""

    def metric(
        self, ctx: TaskContext, kind: str, name: str, value: float, tags: dict[str, str]
    ) -> None:
        """A task recorded a metric."""

    #: Whether ended records are stored with their span duration (``actorflow.duration``).
    stores_durations = False

    def bind(self, engine: EngineView) -> None:
        """Called once by the engine that uses this observer."""

    def execution_traceparent(self, ex: Execution) -> str | None:
        """The trace context to keep in the execution's snapshot."""
        return ex.traceparent

    def current_traceparent(self) -> str | None:
        """The caller's trace context to join, as a W3C traceparent."""
        return None

    def log_ids(self) -> tuple[str | None, str | None]:
        """Trace and span ids to attach to a log line."""
        return None, None

    async def aclose(self) -> None:
        """The runtime closes (its actors have stopped): end what is open, flush."""


__all__ = ["DURATION_METRIC", "AttemptScope", "EngineView", "Observer"]
