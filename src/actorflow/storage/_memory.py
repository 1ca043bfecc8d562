"""A store that keeps everything in memory: same semantics as SQLite, nothing persisted."""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Iterable, Mapping
from types import EllipsisType

from actorflow._errors import StorageUnavailable
from actorflow.storage._rows import (
    AppendHistory,
    AppendLog,
    AttemptRow,
    CommandRow,
    DeleteExecution,
    DeleteTaskRuns,
    ExecutionRow,
    HistoryRow,
    LogRow,
    MetricRow,
    Op,
    OutputRow,
    TaskRunRow,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertOutput,
    UpsertTaskRun,
)
from actorflow.storage._store import COMMITTED, Commit


class MemoryStore:
    """For tests, benchmarks (the no-persistence baseline) and ``":memory:"`` runtimes."""

    def __init__(self) -> None:
        self._execs: dict[str, ExecutionRow] = {}
        self._runs: dict[str, TaskRunRow] = {}
        self._attempts: dict[tuple[str, int], AttemptRow] = {}
        self._history: list[HistoryRow] = []
        self._metrics: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], MetricRow] = {}
        self._logs: list[LogRow] = []
        self._outputs: dict[str, OutputRow] = {}
        self._commands: list[CommandRow] = []
        self._owners: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._failed: BaseException | None = None
        self.fail_next: BaseException | None = None

    @property
    def failed(self) -> BaseException | None:
        """Why writes stopped, if they did."""
        return self._failed

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def write(self, ops: Iterable[Op]) -> Commit:
        """Apply ``ops`` at once; the returned commit is already resolved."""
        if self._failed is not None:
            raise StorageUnavailable(f"memory store failed earlier: {self._failed}")
        if self.fail_next is not None:
            self._failed, self.fail_next = self.fail_next, None
            failed = Commit()
            failed.resolve(StorageUnavailable(f"a write failed: {self._failed}"))
            return failed
        for op in ops:
            self._apply(op)
        return COMMITTED

    def _apply(self, op: Op) -> None:
        if isinstance(op, UpsertTaskRun):
            self._runs[op.row.id] = op.row
        elif isinstance(op, AppendHistory):
            self._history.append(op.row)
        elif isinstance(op, UpsertExecution):
            self._execs[op.row.id] = op.row
        elif isinstance(op, UpsertAttempt):
            self._attempts[(op.row.task_run_id, op.row.number)] = op.row
        elif isinstance(op, UpsertMetric):
            m = op.row
            self._metrics[(m.task_run_id, m.name, m.kind, tuple(sorted(m.tags.items())))] = m
        elif isinstance(op, AppendLog):
            self._logs.append(op.row)
        elif isinstance(op, UpsertOutput):
            self._outputs[op.row.task_run_id] = op.row
        elif isinstance(op, DeleteTaskRuns):
            gone = set(op.task_run_ids)
            for i in gone:
                self._runs.pop(i, None)
                self._outputs.pop(i, None)
            self._attempts = {k: v for k, v in self._attempts.items() if k[0] not in gone}
            self._metrics = {k: v for k, v in self._metrics.items() if k[0] not in gone}
        elif isinstance(op, DeleteExecution):
            self._delete({op.execution_id})

    def _delete(self, ids: set[str]) -> None:
        for i in ids:
            self._execs.pop(i, None)
        self._runs = {k: v for k, v in self._runs.items() if v.execution_id not in ids}
        self._attempts = {k: v for k, v in self._attempts.items() if v.execution_id not in ids}
        self._history = [h for h in self._history if h.execution_id not in ids]
        self._metrics = {k: v for k, v in self._metrics.items() if v.execution_id not in ids}
        self._logs = [lg for lg in self._logs if lg.execution_id not in ids]
        self._outputs = {k: v for k, v in self._outputs.items() if v.execution_id not in ids}
        self._commands = [c for c in self._commands if c.execution_id not in ids]

    async def flush(self) -> None:
        """Writes are applied at once; only reports an earlier failure."""
        if self._failed is not None:
            raise StorageUnavailable(f"memory store failed: {self._failed}")

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        """One execution row."""
        return self._execs.get(execution_id)

    async def list_executions(
        self,
        *,
        flow_id: str | None = None,
        namespace: str | None = None,
        states: Collection[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[ExecutionRow]:
        """Executions filtered and ordered like the SQLite store."""
        wanted = set(states) if states is not None else None
        rows = [
            r
            for r in self._execs.values()
            if (flow_id is None or r.flow_id == flow_id)
            and (namespace is None or r.namespace == namespace)
            and (wanted is None or r.state in wanted)
            and (since is None or r.created >= since)
            and (until is None or r.created < until)
        ]
        rows.sort(key=lambda r: (r.created, r.id), reverse=newest_first)
        return rows[offset : offset + limit]

    async def unfinished_executions(self, terminal_states: Collection[str]) -> list[ExecutionRow]:
        """Executions not in a terminal state."""
        done = set(terminal_states)
        return sorted(
            (r for r in self._execs.values() if r.state not in done), key=lambda r: r.created
        )

    async def task_runs(self, execution_id: str) -> list[TaskRunRow]:
        """Task runs in creation order."""
        return [r for r in self._runs.values() if r.execution_id == execution_id]

    async def attempts(self, execution_id: str, task_run_id: str | None = None) -> list[AttemptRow]:
        """Attempts of an execution or a task run."""
        return [
            a
            for a in self._attempts.values()
            if a.execution_id == execution_id
            and (task_run_id is None or a.task_run_id == task_run_id)
        ]

    async def history(
        self, execution_id: str, task_run_id: str | EllipsisType | None = ...
    ) -> list[HistoryRow]:
        """State history in insertion order."""
        return [
            h
            for h in self._history
            if h.execution_id == execution_id
            and (isinstance(task_run_id, EllipsisType) or h.task_run_id == task_run_id)
        ]

    async def metrics(
        self,
        *,
        execution_id: str | None = None,
        task_run_id: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[MetricRow]:
        """Metrics; ``tags`` matches metrics carrying at least those tags."""
        return [
            m
            for m in self._metrics.values()
            if (execution_id is None or m.execution_id == execution_id)
            and (task_run_id is None or m.task_run_id == task_run_id)
            and (name is None or m.name == name)
            and all(m.tags.get(k) == v for k, v in (tags or {}).items())
        ]

    async def logs(
        self, execution_id: str, task_run_id: str | None = None, *, limit: int | None = None
    ) -> list[LogRow]:
        """Log lines in order."""
        out = [
            lg
            for lg in self._logs
            if lg.execution_id == execution_id
            and (task_run_id is None or lg.task_run_id == task_run_id)
        ]
        return out[:limit] if limit is not None else out

    async def outputs(self, execution_id: str) -> list[OutputRow]:
        """Outputs of an execution's task runs."""
        return [o for o in self._outputs.values() if o.execution_id == execution_id]

    async def purge(
        self,
        *,
        older_than: float | None = None,
        execution_ids: Collection[str] | None = None,
        states: Collection[str] | None = None,
    ) -> list[str]:
        """Delete executions (ended before ``older_than``, or by id)."""
        ids = set(execution_ids or ())
        found = [
            r.id
            for r in self._execs.values()
            if (
                r.id in ids
                or (older_than is not None and r.ended is not None and r.ended < older_than)
            )
            and (states is None or r.state in states)
        ]
        self._delete(set(found))
        return found

    async def post_command(self, execution_id: str, kind: str, payload: bytes = b"") -> int:
        """Store a command."""
        cmd = CommandRow(next(self._ids), execution_id, kind, payload, time.time())
        self._commands.append(cmd)
        return cmd.id

    async def commands_after(self, last_id: int) -> list[CommandRow]:
        """Commands newer than ``last_id``."""
        return [c for c in self._commands if c.id > last_id]

    async def register_owner(self, owner: str, ttl: float) -> None:
        """Announce a live runtime."""
        self._owners[owner] = time.time()

    async def heartbeat(self, owner: str) -> None:
        """Keep an owner alive."""
        if owner in self._owners:
            self._owners[owner] = time.time()

    async def release_owner(self, owner: str) -> None:
        """Forget an owner."""
        self._owners.pop(owner, None)

    async def owners(self) -> list[tuple[str, float]]:
        """Registered owners and heartbeats."""
        return list(self._owners.items())

    async def claim_orphans(
        self, owner: str, terminal_states: Collection[str], stale_after: float
    ) -> list[ExecutionRow]:
        """Take unfinished executions whose owner is gone."""
        fresh = {o for o, hb in self._owners.items() if hb >= time.time() - stale_after}
        done = set(terminal_states)
        out = []
        for r in list(self._execs.values()):
            if r.state in done:
                continue
            if r.owner != owner and (r.owner is None or r.owner not in fresh):
                r = ExecutionRow(
                    **{f: getattr(r, f) for f in r.__struct_fields__} | {"owner": owner}
                )
                self._execs[r.id] = r
            if r.owner == owner:
                out.append(r)
        return sorted(out, key=lambda r: r.created)
