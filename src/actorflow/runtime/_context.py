"""What a running task sees: inputs, earlier outputs, attempt, loop value, logs, metrics, files."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from actorflow.runtime._records import Metric
from actorflow.runtime._template import render, truthy

if TYPE_CHECKING:
    from actorflow.storage import FileStorage


class TaskServices(Protocol):
    """What a task's context needs from the engine that runs it (the engine provides it; this
    module never imports the engine)."""

    files: FileStorage

    def log(self, execution_id: str, task_run_id: str | None, level: str, message: str) -> None:
        """Store one log line of a task run."""

    def observe_metric(
        self, ctx: TaskContext, kind: str, name: str, value: float, tags: dict[str, str]
    ) -> None:
        """Forward a task metric to the observer."""


T = TypeVar("T")
_logger = logging.getLogger("actorflow.task")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class TaskLogger:
    """Logs of one task run: stored with it (and forwarded to the ``actorflow.task`` logger)."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx

    def log(self, level: str, message: str) -> None:
        """Store ``message`` at ``level`` (DEBUG, INFO, WARNING, ERROR, CRITICAL)."""
        level = level.upper()
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {LEVELS}")
        c = self._ctx
        c.engine.log(c.execution_id, c.task_run_id, level, message)
        if _logger.isEnabledFor(logging.DEBUG):
            _logger.log(getattr(logging, level), "[%s/%s] %s", c.execution_id, c.task_id, message)

    def debug(self, message: str) -> None:
        """Store a DEBUG line."""
        self.log("DEBUG", message)

    def info(self, message: str) -> None:
        """Store an INFO line."""
        self.log("INFO", message)

    def warning(self, message: str) -> None:
        """Store a WARNING line."""
        self.log("WARNING", message)

    def error(self, message: str) -> None:
        """Store an ERROR line."""
        self.log("ERROR", message)


def _tag_key(tags: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in tags.items()))


class MetricRecorder:
    """Counters and timers of one task run; the same name and tags are summed (as Kestra)."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx
        self._values: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = {}

    def _add(self, kind: str, name: str, value: float, tags: Mapping[str, Any]) -> None:
        if not name:
            raise ValueError("metric name must not be empty")
        key = (name, kind, _tag_key(tags))
        slot = self._values.get(key)
        if slot is None:
            self._values[key] = [float(value), 1]
        else:
            slot[0] += float(value)
            slot[1] += 1
        self._ctx.engine.observe_metric(self._ctx, kind, name, float(value), dict(key[2]))

    def counter(self, name: str, value: float = 1.0, **tags: Any) -> None:
        """Add ``value`` to the counter ``name`` with ``tags``."""
        self._add("counter", name, value, tags)

    def timer(self, name: str, seconds: float, **tags: Any) -> None:
        """Record a duration of ``seconds`` under ``name`` with ``tags``."""
        self._add("timer", name, seconds, tags)

    @contextmanager
    def timed(self, name: str, **tags: Any) -> Iterator[None]:
        """Time the ``with`` block as a timer metric."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timer(name, time.perf_counter() - start, **tags)

    def snapshot(self) -> tuple[Metric, ...]:
        """The aggregated metrics recorded so far."""
        return tuple(
            Metric(name=n, kind=k, value=v[0], tags=dict(t), count=int(v[1]))
            for (n, k, t), v in self._values.items()
        )


class TaskStorage:
    """Files of a task run in the internal storage, addressed by ``actorflow://`` URIs."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx

    async def put(self, name: str, data: bytes | str) -> str:
        """Store ``data`` as ``name``; returns its URI (put it in your outputs)."""
        c = self._ctx
        raw = data.encode() if isinstance(data, str) else data
        return await c.engine.files.put(
            c.namespace, c.flow_id, c.execution_id, c.task_id, c.task_run_id, name, raw
        )

    async def get(self, uri: str) -> bytes:
        """Read a stored file back."""
        return await self._ctx.engine.files.get(uri)


class TaskContext:
    """Passed to every task: everything it may read or record."""

    __slots__ = (
        "_metric",
        "attempt",
        "engine",
        "execution_id",
        "flow_id",
        "flow_revision",
        "idempotency_key",
        "inputs",
        "iteration",
        "namespace",
        "outputs",
        "task_id",
        "task_run_id",
        "value",
    )

    def __init__(
        self,
        *,
        engine: TaskServices,
        execution_id: str,
        task_run_id: str,
        task_id: str,
        namespace: str,
        flow_id: str,
        flow_revision: int,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        attempt: int,
        value: Any = None,
        iteration: int | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        self.engine = engine
        self.execution_id = execution_id
        self.task_run_id = task_run_id
        #: The same in every attempt of this task run, including one run again after a
        #: crash; new after a restart of the execution (see "Durability and recovery").
        self.idempotency_key = idempotency_key or task_run_id
        self.task_id = task_id
        self.namespace = namespace
        self.flow_id = flow_id
        self.flow_revision = flow_revision
        self.inputs = inputs
        self.outputs = outputs
        self.attempt = attempt
        self.value = value
        self.iteration = iteration
        self._metric: MetricRecorder | None = None

    # Made on first use: most tasks log nothing and record nothing, and a helper pointing
    # back at its context is a cycle only the GC frees.
    @property
    def log(self) -> TaskLogger:
        """Log lines stored with the task run."""
        return TaskLogger(self)

    @property
    def metric(self) -> MetricRecorder:
        """Counters and timers of the task run."""
        recorder = self._metric
        if recorder is None:
            recorder = self._metric = MetricRecorder(self)
        return recorder

    @property
    def storage(self) -> TaskStorage:
        """Files in the internal storage."""
        return TaskStorage(self)

    def metrics(self) -> tuple[Metric, ...]:
        """What the attempt recorded through :attr:`metric`."""
        return () if self._metric is None else self._metric.snapshot()

    @property
    def variables(self) -> dict[str, Any]:
        """What templates see: inputs, outputs, taskrun, execution, flow."""
        return {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "taskrun": {
                "id": self.task_run_id,
                "value": self.value,
                "iteration": self.iteration,
                "attempts_count": self.attempt - 1,
                "attemptsCount": self.attempt - 1,
                "attempt": self.attempt,
            },
            "task": {"id": self.task_id},
            "execution": {"id": self.execution_id},
            "flow": {
                "id": self.flow_id,
                "namespace": self.namespace,
                "revision": self.flow_revision,
            },
        }

    def render(self, value: Any, *, field: str = "") -> Any:
        """Render templates in ``value``; errors name this task and ``field``."""
        return render(value, self.variables, where=f"task {self.task_id!r} field {field!r}")

    @staticmethod
    def truthy(value: Any) -> bool:
        """Kestra's truthiness of a rendered value."""
        return truthy(value)

    async def sleep(self, seconds: float) -> None:
        """Sleep, cancellable by kill and timeout."""
        await anyio.sleep(seconds)

    async def run_sync(self, fn: Callable[[], T]) -> T:
        """Run blocking ``fn`` in a worker thread (a kill abandons the thread)."""
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
