"""Turns records into storage rows and back; the only place that knows both shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from actorflow.runtime._records import Attempt, Execution, StateEntry, TaskRun
from actorflow.storage import (
    AppendHistory,
    AttemptRow,
    ExecutionRow,
    HistoryRow,
    MetricRow,
    OutputRow,
    TaskRunRow,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertOutput,
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


def decode_any(data: bytes) -> Any:
    """Plain msgpack value."""
    return _any_dec.decode(data)


def execution_ops(ex: Execution, owner: str | None, new: Sequence[StateEntry]) -> list[Any]:
    """Ops that persist an execution snapshot and its new history entries."""
    snap = msgspec.structs.replace(ex, task_runs=()) if ex.task_runs else ex
    row = ExecutionRow(
        id=ex.id,
        namespace=ex.namespace,
        flow_id=ex.flow_id,
        flow_revision=ex.flow_revision,
        state=ex.state.value,
        created=ex.history[0].date,
        updated=ex.history[-1].date,
        ended=ex.end_date,
        parent_execution_id=ex.parent_execution_id,
        owner=owner,
        data=_enc.encode(snap),
    )
    ops: list[Any] = [UpsertExecution(row)]
    ops.extend(AppendHistory(HistoryRow(ex.id, None, e.state.value, e.date)) for e in new)
    return ops


def task_run_ops(
    tr: TaskRun,
    new: Sequence[StateEntry],
    *,
    attempt: Attempt | None = None,
    final: bool = False,
) -> list[Any]:
    """Ops that persist a task-run snapshot, its new history, an attempt and, when final,
    its outputs and metrics."""
    row = TaskRunRow(
        id=tr.id,
        execution_id=tr.execution_id,
        task_id=tr.task_id,
        state=tr.state.value,
        created=tr.history[0].date,
        updated=tr.history[-1].date,
        ended=tr.end_date if tr.state.terminal else None,
        parent_task_run_id=tr.parent_task_run_id,
        value=tr.value,
        data=_enc.encode(tr),
    )
    ops: list[Any] = [UpsertTaskRun(row)]
    ops.extend(
        AppendHistory(HistoryRow(tr.execution_id, tr.id, e.state.value, e.date)) for e in new
    )
    if attempt is not None:
        ops.append(
            UpsertAttempt(
                AttemptRow(
                    execution_id=tr.execution_id,
                    task_run_id=tr.id,
                    number=attempt.number,
                    state=attempt.state.value,
                    start=attempt.start,
                    end=attempt.end,
                    error=attempt.error,
                )
            )
        )
    if final:
        if tr.outputs:
            ops.append(UpsertOutput(OutputRow(tr.execution_id, tr.id, _enc.encode(tr.outputs))))
        ops.extend(
            UpsertMetric(
                MetricRow(
                    execution_id=tr.execution_id,
                    task_run_id=tr.id,
                    name=m.name,
                    kind=m.kind,
                    tags=m.tags,
                    value=m.value,
                    count=m.count,
                )
            )
            for m in tr.metrics
        )
    return ops
