"""Turns records into storage rows and back; the only place that knows both shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from actorflow._errors import ExecutionCorrupt
from actorflow.runtime._observer import DURATION_METRIC
from actorflow.runtime._records import Execution, StateEntry, TaskRun
from actorflow.runtime._states import TERMINAL
from actorflow.storage import (
    AppendHistory,
    AttemptRow,
    ExecutionRow,
    HistoryRow,
    MetricRow,
    QuarantineExecution,
    QuarantineRow,
    TaskRunRow,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertTaskRun,
)

_enc = msgspec.msgpack.Encoder()
_exec_dec = msgspec.msgpack.Decoder(Execution)
_tr_dec = msgspec.msgpack.Decoder(TaskRun)
_any_dec = msgspec.msgpack.Decoder()


def encode(value: Any) -> bytes:
    """msgpack bytes of a record or plain value."""
    return _enc.encode(value)


def decode_execution(data: bytes) -> Execution:
    """An execution snapshot (without task runs)."""
    return _exec_dec.decode(data)


def decode_task_run(data: bytes) -> TaskRun:
    """A task-run snapshot."""
    return _tr_dec.decode(data)


def decode_tree(row: ExecutionRow, runs: Sequence[TaskRunRow]) -> Execution:
    """The execution of ``row`` with ``runs`` decoded into it; a row or task run that does not
    decode raises :class:`ExecutionCorrupt` naming the execution, the row and why."""
    try:
        ex = _exec_dec.decode(row.data)
    except msgspec.DecodeError as exc:
        raise ExecutionCorrupt(
            f"execution {row.id!r}: its stored snapshot cannot be decoded ({exc})"
        ) from None
    decoded = []
    for r in runs:
        try:
            decoded.append(_tr_dec.decode(r.data))
        except msgspec.DecodeError as exc:
            raise ExecutionCorrupt(
                f"execution {row.id!r}: task run {r.id!r} ({r.task_id}) cannot be decoded ({exc})"
            ) from None
    return msgspec.structs.replace(ex, task_runs=tuple(decoded)) if decoded else ex


def quarantine_op(execution_id: str, reason: str, now: float) -> QuarantineExecution:
    """The op that sets an undecodable execution aside (kept, listed, never recovered)."""
    return QuarantineExecution(QuarantineRow(execution_id, reason, now))


def decode_any(data: bytes) -> Any:
    """Plain msgpack value."""
    return _any_dec.decode(data)


ExecutionItem = tuple[Execution, str | None, int, float | None]
"""What an execution snapshot is written from: (execution, owner, epoch, lease expiry); the
lease is stored only with the row's first write (see ``storage._sql``)."""


def execution_rows(item: ExecutionItem) -> list[Any]:
    """The row of an execution snapshot (``item``: see :data:`ExecutionItem`)."""
    ex, owner, epoch, lease_expiry = item
    snap = msgspec.structs.replace(ex, task_runs=()) if ex.task_runs else ex
    history = ex.history
    row = ExecutionRow(
        id=ex.id,
        namespace=ex.namespace,
        flow_id=ex.flow_id,
        flow_revision=ex.flow_revision,
        state=ex.state,
        created=history[0].date,
        updated=history[-1].date,
        ended=history[-1].date if ex.state in TERMINAL else None,
        parent_execution_id=ex.parent_execution_id,
        owner=owner,
        data=_enc.encode(snap),
        epoch=epoch,
        lease_expiry=lease_expiry,
    )
    return [UpsertExecution(row)]


def task_run_rows(tr: TaskRun) -> list[Any]:
    """Rows of a task-run snapshot: the task run, its attempts and, once it ended, its metrics.

    Outputs are encoded once, inside the snapshot (``data``), which is what every read decodes;
    the ``outputs`` table (in the schema for databases written before) is no longer written.
    """
    history = tr.history
    terminal = tr.state in TERMINAL
    row = TaskRunRow(
        id=tr.id,
        execution_id=tr.execution_id,
        task_id=tr.task_id,
        state=tr.state,
        created=history[0].date,
        updated=history[-1].date,
        ended=history[-1].date if terminal else None,
        parent_task_run_id=tr.parent_task_run_id,
        value=tr.value,
        data=_enc.encode(tr),
    )
    ops: list[Any] = [UpsertTaskRun(row)]
    for a in tr.attempts:
        ops.append(
            UpsertAttempt(
                AttemptRow(tr.execution_id, tr.id, a.number, a.state, a.start, a.end, a.error)
            )
        )
    if terminal:
        for m in tr.metrics:
            ops.append(
                UpsertMetric(
                    MetricRow(tr.execution_id, tr.id, m.name, m.kind, m.tags, m.value, m.count)
                )
            )
    return ops


def execution_rows_timed(item: ExecutionItem) -> list[Any]:
    """:func:`execution_rows` and, once ended, the execution's duration metric (tracing on)."""
    ops = execution_rows(item)
    ex = item[0]
    if ex.state in TERMINAL:
        ops.append(_duration(ex.id, "", f"execution {ex.namespace}.{ex.flow_id}", ex.history))
    return ops


def task_run_rows_timed(tr: TaskRun) -> list[Any]:
    """:func:`task_run_rows` and, once ended, the task run's duration metric (tracing on)."""
    ops = task_run_rows(tr)
    if tr.state in TERMINAL:
        ops.append(_duration(tr.execution_id, tr.id, f"task {tr.task_id}", tr.history))
    return ops


def _duration(execution_id: str, task_run_id: str, span: str, history: Sequence[StateEntry]) -> Any:
    # The span of a record starts and ends at its first and last history dates: the same
    # numbers give the same duration, with no span processor and no write of its own.
    seconds = history[-1].date - history[0].date
    row = MetricRow(execution_id, task_run_id, DURATION_METRIC, "duration", {"span": span}, seconds)
    return UpsertMetric(row)


def history_ops(execution_id: str, task_run_id: str | None, new: Sequence[StateEntry]) -> list[Any]:
    """One append per new state-history entry."""
    return [AppendHistory(HistoryRow(execution_id, task_run_id, e.state, e.date)) for e in new]
