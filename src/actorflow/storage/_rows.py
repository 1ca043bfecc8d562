"""Rows the store keeps and the write operations that carry them.

Rows have indexed columns plus ``data``: an opaque msgspec snapshot only the runtime reads.
"""

from __future__ import annotations

import msgspec


class ExecutionRow(msgspec.Struct, frozen=True, gc=False):
    """One execution (indexed columns + snapshot).

    ``owner``, ``epoch`` and ``lease_expiry`` are the worker's lease (see ``_store``): an
    upsert sets them only when it inserts the row; afterwards only a claim or a release
    changes them. ``waiting`` says why no worker runs the execution yet.
    """

    id: str
    namespace: str
    flow_id: str
    flow_revision: int
    state: str
    created: float
    updated: float
    ended: float | None = None
    parent_execution_id: str | None = None
    owner: str | None = None
    data: bytes = b""
    epoch: int = 0
    lease_expiry: float | None = None
    waiting: str | None = None


class TaskRunRow(msgspec.Struct, frozen=True, gc=False):
    """One task run (indexed columns + snapshot)."""

    id: str
    execution_id: str
    task_id: str
    state: str
    created: float
    updated: float
    ended: float | None = None
    parent_task_run_id: str | None = None
    value: str | None = None
    data: bytes = b""


class AttemptRow(msgspec.Struct, frozen=True, gc=False):
    """One attempt of a task run."""

    execution_id: str
    task_run_id: str
    number: int
    state: str
    start: float
    end: float | None = None
    error: str | None = None


class HistoryRow(msgspec.Struct, frozen=True, gc=False):
    """One state change; ``task_run_id`` None is the execution's own."""

    execution_id: str
    task_run_id: str | None
    state: str
    ts: float


class MetricRow(msgspec.Struct, frozen=True, gc=False):
    """An aggregated metric of a task run (kind: counter, timer or duration).

    Execution-level metrics use ``task_run_id == ""``.
    """

    execution_id: str
    task_run_id: str
    name: str
    kind: str
    tags: dict[str, str]
    value: float
    count: int = 1


class LogRow(msgspec.Struct, frozen=True, gc=False):
    """One log line of a task run (or of the execution when ``task_run_id`` is None)."""

    execution_id: str
    task_run_id: str | None
    ts: float
    level: str
    message: str
    trace_id: str | None = None
    span_id: str | None = None


class OutputRow(msgspec.Struct, frozen=True, gc=False):
    """The outputs of a task run (msgpack)."""

    execution_id: str
    task_run_id: str
    data: bytes


class CommandRow(msgspec.Struct, frozen=True, gc=False):
    """A control command for an execution owned by another process.

    ``status`` goes from ``pending`` to ``applied`` or ``rejected`` once, written by the
    process that consumed it; ``answer`` says what it did or why not. ``target`` is what the
    sender saw (opaque to the store), so the command cannot act on a later step. ``error``
    names the error class of a rejection (``InputError``, ``IllegalOperation``...), which the
    sender raises again with ``answer`` as its message.
    """

    id: int
    execution_id: str
    kind: str
    payload: bytes
    created: float
    status: str = "pending"
    answer: str | None = None
    target: bytes = b""
    answered: float | None = None
    error: str | None = None


class FlowRow(msgspec.Struct, frozen=True, gc=False):
    """A deployed revision of a flow: its source, which the flow language loads."""

    namespace: str
    id: str
    revision: int
    source: str
    created: float


class KVRow(msgspec.Struct, frozen=True, gc=False):
    """One entry of a namespace's key-value store: ``value`` is JSON text; ``expires`` the
    time after which it reads as absent (None: never)."""

    namespace: str
    key: str
    value: str
    updated: float
    expires: float | None = None


class QuarantineRow(msgspec.Struct, frozen=True, gc=False):
    """An execution set aside (its rows kept as they are) and why; recovery skips it."""

    execution_id: str
    reason: str
    ts: float


class RejectedOp(msgspec.Struct, frozen=True, gc=False):
    """A write the store could not take (a value it cannot encode, a constraint it breaks).

    The rest of its transaction committed; only this row was left out. ``execution_id`` is
    None when the row could not even be built (a ``write_latest`` builder raised); ``key``
    then is the ``repr`` of the ``write_latest`` key.
    """

    execution_id: str | None
    table: str
    key: str
    error: str


class PurgeProgress(msgspec.Struct, frozen=True, gc=False):
    """One committed batch of a purge: its ids, and the counts so far."""

    ids: tuple[str, ...]
    deleted: int
    total: int
    batches: int


class UpsertExecution(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Insert or replace an execution row."""

    row: ExecutionRow


class UpsertTaskRun(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Insert or replace a task-run row."""

    row: TaskRunRow


class UpsertAttempt(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Insert or replace an attempt (key: task run, number)."""

    row: AttemptRow


class AppendHistory(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Append a state-history entry."""

    row: HistoryRow


class UpsertMetric(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Insert or replace a metric (key: task run, name, kind, tags)."""

    row: MetricRow


class AppendLog(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Append a log line."""

    row: LogRow


class UpsertOutput(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Insert or replace the outputs of a task run."""

    row: OutputRow


class DeleteTaskRuns(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Delete task runs (and their attempts, outputs, metrics) of an execution."""

    execution_id: str
    task_run_ids: tuple[str, ...]


class DeleteExecution(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Delete an execution with everything it owns."""

    execution_id: str


class QuarantineExecution(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Set an execution aside: its rows stay, recovery and claims skip it until released."""

    row: QuarantineRow


class ReleaseQuarantine(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Let a quarantined execution be recovered (and claimed) again."""

    execution_id: str


class ClaimExecution(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Give an existing execution to ``owner`` with fencing token ``epoch`` (None owner: to
    the queue, for any worker); clears ``waiting``."""

    execution_id: str
    owner: str | None
    epoch: int
    lease_expiry: float | None


Op = (
    UpsertExecution
    | UpsertTaskRun
    | UpsertAttempt
    | AppendHistory
    | UpsertMetric
    | AppendLog
    | UpsertOutput
    | DeleteTaskRuns
    | DeleteExecution
    | QuarantineExecution
    | ReleaseQuarantine
    | ClaimExecution
)
