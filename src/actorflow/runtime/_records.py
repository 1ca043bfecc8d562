"""Records of executions, task runs and attempts: frozen msgspec Structs, also the snapshots.

New fields must get defaults so stored snapshots stay readable.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, TypeVar

import msgspec

from actorflow._errors import OutputError
from actorflow.runtime._states import State

T = TypeVar("T")
R = TypeVar("R", covariant=True)


class TypedStep(Protocol[R]):
    """A flow step that knows its result type (a ``@task`` step: a ``Call``)."""

    @property
    def id(self) -> str:
        """The task id."""
        ...

    def result(self, outputs: dict[str, Any]) -> R:
        """Stored outputs as the declared result type."""
        ...


class StateEntry(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One entry of a state history."""

    state: State
    date: float


class Attempt(msgspec.Struct, frozen=True, gc=False, tag="attempt"):
    """One try of a task run."""

    number: int
    state: State
    start: float
    end: float | None = None
    error: str | None = None
    error_type: str | None = None
    #: The URI of the attempt's log lines, for a task with ``log_to_file``.
    log_file: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while running."""
        return None if self.end is None else self.end - self.start


class Metric(msgspec.Struct, frozen=True, gc=False, tag="metric"):
    """An aggregated metric of a task run: counters sum values, timers sum seconds."""

    name: str
    kind: str
    value: float
    tags: dict[str, str] = {}
    count: int = 1


class TaskRun(msgspec.Struct, frozen=True, gc=False, tag="task_run"):
    """One run of one task inside an execution."""

    id: str
    execution_id: str
    task_id: str
    state: State
    history: tuple[StateEntry, ...]
    parent_task_run_id: str | None = None
    value: str | None = None
    iteration: int | None = None
    branch: str = "tasks"
    attempts: tuple[Attempt, ...] = ()
    outputs: dict[str, Any] = {}
    metrics: tuple[Metric, ...] = ()
    due: float | None = None
    child_execution_id: str | None = None
    error: str | None = None

    def outputs_as(self, kind: type[T]) -> T:
        """The outputs converted to ``kind`` (a Struct, dataclass, TypedDict...): OutputError
        naming the task if they do not fit."""
        try:
            return msgspec.convert(self.outputs, kind, strict=False)
        except (msgspec.ValidationError, TypeError) as exc:
            raise OutputError(f"outputs of task run {self.id} ({self.task_id}): {exc}") from exc

    @property
    def start_date(self) -> float:
        """When the task run was created."""
        return self.history[0].date

    @property
    def end_date(self) -> float | None:
        """When it ended (or paused), else None."""
        if self.state.terminal or self.state is State.PAUSED:
            return self.history[-1].date
        return None

    @property
    def duration(self) -> float:
        """Seconds from creation to the last change (to now while running)."""
        end = self.history[-1].date if len(self.history) > 1 else time.time()
        return end - self.history[0].date


class Execution(msgspec.Struct, frozen=True, gc=False, tag="execution"):
    """One run of a flow, with its task runs when read as a tree."""

    id: str
    namespace: str
    flow_id: str
    flow_revision: int
    state: State
    history: tuple[StateEntry, ...]
    inputs: dict[str, Any] = {}
    task_runs: tuple[TaskRun, ...] = ()
    outputs: dict[str, Any] = {}
    parent_execution_id: str | None = None
    parent_task_run_id: str | None = None
    original_execution_id: str | None = None
    attempt_number: int = 1
    labels: dict[str, str] = {}
    traceparent: str | None = None
    flow_source: str | None = None
    error: str | None = None
    manual_pause: bool = False
    #: What started it, when a trigger did (``{{ trigger.* }}``: type, id, date...).
    trigger: dict[str, Any] | None = None
    #: A retry as a new execution: the first execution's start (what ``max_duration``
    #: counts from) and when this one may start.
    original_start: float | None = None
    not_before: float | None = None

    @property
    def start_date(self) -> float:
        """When the execution was created."""
        return self.history[0].date

    @property
    def end_date(self) -> float | None:
        """When it ended, else None."""
        return self.history[-1].date if self.state.terminal else None

    @property
    def duration(self) -> float:
        """Seconds from creation to the last change (to now while running)."""
        end = self.history[-1].date if self.state.terminal else time.time()
        return end - self.history[0].date

    def task_run(self, task_id: str, value: str | None = None) -> TaskRun:
        """The last task run of ``task_id`` (and loop ``value``); KeyError if none."""
        for tr in reversed(self.task_runs):
            if tr.task_id == task_id and (value is None or tr.value == value):
                return tr
        raise KeyError(f"no task run for task {task_id!r} in execution {self.id}")

    def output(self, step: TypedStep[R], value: str | None = None) -> R:
        """The outputs of ``step``'s last task run (and loop ``value``) as its function's
        declared return type: ``done.output(extract)`` is a ``Rows`` if ``extract`` returns one
        (OutputError if they do not fit; KeyError if it has no task run)."""
        return step.result(self.task_run(step.id, value).outputs)

    def metric(self, name: str, **tags: str) -> float:
        """Sum of a metric over every task run, optionally filtered by tags."""
        total = 0.0
        for tr in self.task_runs:
            for m in tr.metrics:
                if m.name == name and all(m.tags.get(k) == v for k, v in tags.items()):
                    total += m.value
        return total
