"""What a running task sees: inputs, earlier outputs, attempt, loop value, logs, metrics, files."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

from actorflow._errors import UnstorableValue
from actorflow.runtime._hostlog import LEVEL_NUMBERS, task_line, task_logger
from actorflow.runtime._records import Execution, Metric
from actorflow.runtime._template import LazyVariables, render, truthy
from actorflow.runtime._template_io import KVFunction
from actorflow.runtime._values import check_text, metric_tags, metric_value
from actorflow.storage import FileScope

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from actorflow.runtime._flow import Flow
    from actorflow.storage import FileReader, FileStorage, Readable, Store


class Controller(Protocol):
    """What tasks acting on other executions call (the Runtime)."""

    async def resume(self, execution_id: str, inputs: Mapping[str, Any] | None = None) -> None:
        """Resume a PAUSED execution."""

    async def wait(self, execution_id: str, *, timeout: float | None = None) -> Execution:
        """The execution once it ended."""


class TaskServices(Protocol):
    """What a task's context needs from the engine that runs it (the engine provides it; this
    module never imports the engine)."""

    files: FileStorage
    store: Store
    controller: Controller | None

    def find_flow(self, namespace: str, flow_id: str, revision: int | None = None) -> Flow | None:
        """A registered flow."""

    async def start_linked(
        self,
        flow: Flow,
        inputs: dict[str, Any],
        *,
        parent_id: str,
        parent_task_run_id: str,
        labels: dict[str, str],
        execution_id: str,
    ) -> bool:
        """Start a child execution of a task run with a given id (False: it exists)."""

    async def load_execution(self, execution_id: str) -> Execution | None:
        """The stored tree of an execution."""

    def log(
        self, execution_id: str, task_run_id: str | None, level: str, message: str
    ) -> tuple[str | None, str | None]:
        """Store one log line of a task run; returns the trace and span ids stored with it."""

    def observe_metric(
        self, ctx: TaskContext, kind: str, name: str, value: float, tags: dict[str, str]
    ) -> None:
        """Forward a task metric to the observer."""


T = TypeVar("T")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_RANK = {name: rank for rank, name in enumerate(LEVELS)}


class TaskLogger:
    """Logs of one task run: stored with it, and forwarded to the host's logging as
    ``actorflow.task.<namespace>.<flow>.<task>`` (see ``actorflow.runtime._hostlog``)."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx

    def log(self, level: str, message: str) -> None:
        """Store ``message`` at ``level`` (DEBUG, INFO, WARNING, ERROR, CRITICAL).

        A message the store cannot keep (not a str, or a str with a lone surrogate) raises
        :class:`~actorflow.UnstorableValue` and fails the attempt, even if the task catches it.
        """
        level = level.upper()
        levelno = LEVEL_NUMBERS.get(level)
        if levelno is None:
            raise ValueError(f"unknown log level {level!r}; use one of {LEVELS}")
        c = self._ctx
        if c.log_level is not None and _RANK[level] < _RANK.get(c.log_level, 0):
            return  # below the task's logLevel: dropped, as Kestra does
        if type(message) is not str or not message.isascii():
            try:
                check_text(message, f"log line (ctx.log.{level.lower()})")
            except UnstorableValue as exc:
                c.reject(exc)
                raise
        if c.log_lines is not None:  # logToFile: kept for the attempt's log file
            c.log_lines.append(f"{time.time():.3f} {level} {message}")
            ids: tuple[str | None, str | None] = (None, None)
        else:
            ids = c.engine.log(c.execution_id, c.task_run_id, level, message)
        logger = task_logger(c.namespace, c.flow_id, c.task_id)
        if logger.isEnabledFor(levelno):
            task_line(
                logger,
                levelno,
                message,
                namespace=c.namespace,
                flow_id=c.flow_id,
                execution_id=c.execution_id,
                task_id=c.task_id,
                task_run_id=c.task_run_id,
                attempt=c.attempt,
                ids=ids,
            )

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


class MetricRecorder:
    """Counters and timers of one task run; the same name and tags are summed (as Kestra)."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx
        self._values: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = {}

    def _add(self, kind: str, name: str, value: float, tags: Mapping[str, Any]) -> None:
        # Checked when recorded: a value the store cannot keep (NaN, inf, a tag that is an
        # object) raises UnstorableValue here and fails the attempt, never the store.
        try:
            check_text(name, "metric name")
            if not name:
                raise UnstorableValue("metric name must not be empty")
            number = metric_value(name, value)
            key = (name, kind, metric_tags(name, tags))
            slot = self._values.get(key)
            total = number if slot is None else slot[0] + number
            metric_value(name, total)  # finite values can still sum to inf
        except UnstorableValue as exc:
            self._ctx.reject(exc)
            raise
        if slot is None:
            self._values[key] = [total, 1]
        else:
            slot[0] = total
            slot[1] += 1
        self._ctx.engine.observe_metric(self._ctx, kind, name, number, dict(key[2]))

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

    async def put_stream(self, name: str, chunks: AsyncIterable[bytes] | Readable) -> str:
        """Store a large file from chunks (an async iterator, or a file object read 1 MiB at a
        time) without holding it whole; returns its URI."""
        c = self._ctx
        return await c.engine.files.put_stream(
            c.namespace, c.flow_id, c.execution_id, c.task_id, c.task_run_id, name, chunks
        )

    def _scope(self) -> FileScope:
        # Kestra's rule: a task reads the files of its own namespace, no other.
        return FileScope(self._ctx.namespace)

    async def get(self, uri: str) -> bytes:
        """Read a stored file of this flow's namespace back (``FileAccessDenied`` otherwise)."""
        return await self._ctx.engine.files.get(uri, scope=self._scope())

    def open(self, uri: str) -> AbstractAsyncContextManager[FileReader]:
        """Read a large file of this namespace in chunks: ``async with ctx.storage.open(uri) as
        f: async for chunk in f: ...``."""
        return self._ctx.engine.files.open_read(uri, scope=self._scope())


#: Keys of the namespace key-value store (Kestra's rule).
KV_KEY = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._/-]*$")
_MISSING: Any = object()


class TaskKV:
    """The key-value store of a namespace (this flow's unless named): JSON values, read back
    at once after a set; ``ttl`` seconds until an entry expires."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx

    def _where(self, namespace: str | None) -> str:
        return namespace or self._ctx.namespace

    async def get(self, key: str, default: Any = None, *, namespace: str | None = None) -> Any:
        """The value of ``key`` (``default`` when absent or expired)."""
        row = await self._ctx.engine.store.kv_get(self._where(namespace), key)
        return default if row is None else json.loads(row.value)

    async def has(self, key: str, *, namespace: str | None = None) -> bool:
        """Whether ``key`` is set (and not expired)."""
        return await self.get(key, _MISSING, namespace=namespace) is not _MISSING

    async def set(
        self, key: str, value: Any, *, namespace: str | None = None, ttl: float | None = None
    ) -> None:
        """Set ``key`` to a JSON-encodable ``value``."""
        if not isinstance(key, str) or not KV_KEY.match(key):
            raise ValueError(
                f"invalid key {key!r}: letters, digits, '.', '_', '-' and '/', "
                "starting with a letter or digit"
            )
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        check_text(text, f"key-value entry {key!r}")
        await self._ctx.engine.store.kv_set(self._where(namespace), key, text, ttl)

    async def delete(self, key: str, *, namespace: str | None = None) -> bool:
        """Remove ``key``; False when it was not set."""
        return await self._ctx.engine.store.kv_delete(self._where(namespace), key)

    async def keys(self, *, namespace: str | None = None) -> list[str]:
        """The keys set in the namespace, sorted."""
        return [r.key for r in await self._ctx.engine.store.kv_keys(self._where(namespace))]


class TaskContext:
    """Passed to every task: everything it may read or record."""

    __slots__ = (
        "_kv",
        "_metric",
        "_trigger",
        "_variables",
        "attempt",
        "engine",
        "execution_id",
        "flow_id",
        "flow_revision",
        "idempotency_key",
        "inputs",
        "iteration",
        "log_level",
        "log_lines",
        "namespace",
        "outputs",
        "rejected",
        "task_id",
        "task_run_id",
        "value",
        "working_dir",
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
        trigger: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        log_level: str | None = None,
        log_to_file: bool = False,
        working_dir: str | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        #: Lines below this level are dropped (the task's ``log_level``).
        self.log_level = log_level
        #: With ``log_to_file``: the attempt's lines, stored as one file when it ends.
        self.log_lines: list[str] | None = [] if log_to_file else None
        #: The directory a WorkingDirectory task shares with the tasks inside it.
        self.working_dir = working_dir
        # What the engine adds to the template variables (start dates, labels, parents...).
        self._variables = variables
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
        self._trigger = trigger or None
        self._metric: MetricRecorder | None = None
        self._kv: KVFunction | None = None
        # The first log line or metric refused as unstorable: the attempt fails with it.
        self.rejected: UnstorableValue | None = None

    @property
    def trigger(self) -> Mapping[str, Any]:
        """What started the execution, when a trigger did (``{{ trigger.* }}``)."""
        trigger = self._trigger
        if trigger is None:  # made on first read: most executions have no trigger
            trigger = self._trigger = {}
        return trigger

    def reject(self, error: UnstorableValue) -> None:
        """Remember a refused log line or metric: the attempt fails with the first one."""
        if self.rejected is None:
            self.rejected = error

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

    @property
    def kv(self) -> TaskKV:
        """The namespace key-value store (Kestra's KV store)."""
        return TaskKV(self)

    @property
    def kv_function(self) -> KVFunction:
        """``kv()`` of this attempt's templates, with the keys read for them."""
        fn = self._kv
        if fn is None:
            fn = self._kv = KVFunction(self.namespace)
        return fn

    def metrics(self) -> tuple[Metric, ...]:
        """What the attempt recorded through :attr:`metric`."""
        return () if self._metric is None else self._metric.snapshot()

    @property
    def variables(self) -> dict[str, Any]:
        """What templates see: inputs, outputs, taskrun, execution, flow (and what the engine
        adds: labels, vars, parents...)."""
        variables: dict[str, Any] = {
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
            "trigger": self.trigger,
            "kv": self.kv_function,
        }
        extra = self._variables
        if extra:
            taskrun = variables["taskrun"]
            variables.update(extra)
            variables["taskrun"] = {**extra.get("taskrun", {}), **taskrun}
            lazy = variables.get("vars")
            if isinstance(lazy, LazyVariables):
                variables["vars"] = lazy.bound(variables)
        return variables

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
