"""A store that keeps everything in memory: the SQLite store's semantics, nothing persisted.

Writes apply at once, so every commit is already resolved; ``write_latest`` items are built
when something reads (or after many of them), so what is never read is never encoded. Orders
match SQLite's: rows come back in first-insertion order (an upsert keeps a row's place),
task runs by creation. So do its refusals: a row SQLite could not store for its values (an
int beyond 64 bits, a lone surrogate, a NaN or None in a NOT NULL column, a type SQLite
cannot bind) is left out and reported (``Commit.rejected``, ``on_rejected``), the rest is
applied. Foreign keys are not checked.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from types import EllipsisType
from typing import Any

import msgspec
from msgspec.structs import astuple

from actorflow._errors import StorageUnavailable
from actorflow.storage._batch import build_failure
from actorflow.storage._rows import (
    AppendHistory,
    AppendLog,
    AttemptRow,
    ClaimExecution,
    CommandRow,
    DeleteExecution,
    DeleteTaskRuns,
    ExecutionRow,
    FlowRow,
    HistoryRow,
    KVRow,
    LogRow,
    MetricRow,
    Op,
    OutputRow,
    PurgeProgress,
    QuarantineExecution,
    QuarantineRow,
    RejectedOp,
    ReleaseQuarantine,
    TaskRunRow,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertOutput,
    UpsertTaskRun,
)
from actorflow.storage._store import (
    COMMITTED,
    Commit,
    FailedCallback,
    FencedCallback,
    ProgressCallback,
    RejectedCallback,
)

_log = logging.getLogger("actorflow.storage")

_MetricKey = tuple[str, str, str, tuple[tuple[str, str], ...]]
_SETTLE_AT = 4096  # pending latest items kept unbuilt at most
# Ops that must not overtake pending latest items (same tables, or deletes).
_ORDERED = frozenset({UpsertExecution, UpsertTaskRun, UpsertAttempt, UpsertOutput, ClaimExecution,
                      DeleteTaskRuns, DeleteExecution})  # fmt: skip


# Per row type: its table, and per field (in order) whether SQLite's column is NOT NULL.
_TABLES: dict[type[msgspec.Struct], tuple[str, frozenset[str]]] = {
    ExecutionRow: ("executions", frozenset(
        {"namespace", "flow_id", "flow_revision", "state", "created", "updated", "data"})),
    TaskRunRow: ("task_runs", frozenset(
        {"execution_id", "task_id", "state", "created", "updated", "data"})),
    AttemptRow: ("attempts", frozenset({"execution_id", "task_run_id", "number", "state",
                                        "start"})),
    HistoryRow: ("state_history", frozenset({"execution_id", "state", "ts"})),
    MetricRow: ("metrics", frozenset({"execution_id", "task_run_id", "name", "kind", "tags",
                                      "value", "count"})),
    LogRow: ("logs", frozenset({"execution_id", "ts", "level", "message"})),
    OutputRow: ("outputs", frozenset({"task_run_id", "execution_id", "data"})),
    QuarantineRow: ("quarantine", frozenset({"execution_id", "reason", "ts"})),
}  # fmt: skip
_BINDABLE = (int, float, str, bytes, type(None))


def _value_error(table: str, notnull: frozenset[str], name: str, value: Any) -> str | None:
    """Why SQLite would not store ``value`` in column ``name``, or None."""
    t = type(value)
    if t is str:
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError as exc:
                return f"UnicodeEncodeError: {exc} (column {table}.{name})"
        return None
    if t is int:
        if not -(2**63) <= value < 2**63:
            return (
                "OverflowError: Python int too large to convert to SQLite INTEGER"
                f" (column {table}.{name})"
            )
        return None
    if value is None or (t is float and math.isnan(value)):  # SQLite binds NaN as NULL
        if name in notnull:
            return f"IntegrityError: NOT NULL constraint failed: {table}.{name}"
        return None
    if not isinstance(value, _BINDABLE) and not (table == "metrics" and name == "tags"):
        return f"ProgrammingError: Error binding parameter: type {t.__name__!r} is not supported"
    return None


_I64 = 2**63


def _fast_check(cls: type[msgspec.Struct]) -> Callable[[Any], bool]:
    """A test that a row of ``cls`` holds only values SQLite takes as they are, made from its
    field types: every write passes here, and a per-field loop tripled the cost of a write.
    False (or an exception, for a value of another type) sends the row to :func:`check`'s
    exact test."""
    terms = []
    for f in msgspec.structs.fields(cls):
        v = f"r.{f.name}"
        term = {
            str: f"{v}.isascii()",
            float: f"(type({v}) is float and {v} == {v})",  # NaN != NaN
            int: f"(type({v}) is int and -{_I64} <= {v} < {_I64})",
            bytes: f"type({v}) is bytes",
            str | None: f"({v} is None or {v}.isascii())",
            float | None: f"({v} is None or type({v}) is float)",
        }.get(f.type, "True")  # dict[str, str] tags: stored as JSON, always storable
        terms.append(term)
    namespace: dict[str, Any] = {}
    exec(f"def fast(r):\n    return {' and '.join(terms)}", namespace)
    fast: Callable[[Any], bool] = namespace["fast"]
    return fast


_SHAPES = {
    cls: (table, cls.__struct_fields__, _fast_check(cls)) for cls, (table, _) in _TABLES.items()
}


def check(op: Op) -> RejectedOp | None:
    """The rejection SQLite would give ``op`` for its values, or None."""
    row = getattr(op, "row", None)
    if row is None:
        return None
    table, names, fast = _SHAPES[type(row)]
    try:
        if fast(row):
            return None
    except Exception:  # a value of an unexpected type: the exact test below says
        pass
    notnull = _TABLES[type(row)][1]
    for name, value in zip(names, astuple(row), strict=True):
        error = _value_error(table, notnull, name, value)
        if error is not None:
            return _rejected(table, row, error)
    return None


def _rejected(table: str, row: Any, error: str) -> RejectedOp:
    execution_id = row.id if table == "executions" else row.execution_id
    key = getattr(row, "id", None) or getattr(row, "task_run_id", None) or execution_id
    if table == "metrics":
        key = f"{key}/{row.name}"
    return RejectedOp(
        execution_id if type(execution_id) is str else None,
        table,
        key if type(key) is str else repr(key),
        error,
    )


class _Rows:
    """Everything one execution owns."""

    __slots__ = ("attempts", "history", "logs", "outputs", "runs")

    def __init__(self) -> None:
        self.runs: dict[str, TaskRunRow] = {}
        self.attempts: dict[tuple[str, int], AttemptRow] = {}
        self.history: list[HistoryRow] = []
        self.logs: list[LogRow] = []
        self.outputs: dict[str, OutputRow] = {}


_EMPTY = _Rows()


class MemoryStore:
    """For tests, benchmarks (the no-persistence baseline) and ``":memory:"`` runtimes."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # wall time for heartbeats and command stamps (tests age them)
        self._execs: dict[str, ExecutionRow] = {}
        self._rows: dict[str, _Rows] = {}
        # One table, like SQLite's, so queries across executions keep insertion order.
        self._metrics: dict[_MetricKey, MetricRow] = {}
        self._commands: dict[int, CommandRow] = {}
        self._pending_commands: set[int] = set()
        self._owners: dict[str, float] = {}
        self._fires: dict[tuple[str, str], tuple[float, str | None, str]] = {}
        self._flows: dict[tuple[str, str], list[FlowRow]] = {}
        self._kv: dict[tuple[str, str], KVRow] = {}
        self._quarantine: dict[str, QuarantineRow] = {}
        self.on_rejected: RejectedCallback | None = None
        self.on_failed: FailedCallback | None = None
        self.on_fenced: FencedCallback | None = None
        self.fences: dict[str, int] = {}  # leases held: execution id -> epoch (see Store)
        self.fence_owner: str | None = None
        self._slots: set[str] = set()  # executions holding a flow-concurrency slot
        self._ids = itertools.count(1)
        self._failed: BaseException | None = None
        self._closed = False
        self.fail_next: BaseException | None = None  # test hook: the next write fails
        self._latest: dict[Hashable, tuple[Callable[[Any], Sequence[Op]], Any]] = {}

    @property
    def failed(self) -> BaseException | None:
        """Why writes stopped, if they did."""
        return self._failed

    async def open(self) -> None:
        """Accept writes again after :meth:`close` (the data stays)."""
        self._closed = False

    async def close(self) -> None:
        """Refuse further writes."""
        self._closed = True

    async def __aenter__(self) -> MemoryStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _unavailable(self) -> StorageUnavailable:
        if self._failed is not None:
            return StorageUnavailable(f"memory store failed earlier: {self._failed}")
        return StorageUnavailable("memory store is closed")

    def write(self, ops: Iterable[Op]) -> Commit:
        """Apply ``ops`` at once, all or nothing; the returned commit is already resolved."""
        if self._failed is not None or self._closed:
            raise self._unavailable()
        ops = ops if isinstance(ops, list | tuple) else list(ops)
        error = self.fail_next
        self.fail_next = None
        if error is not None:
            self._failed = error
            failed = Commit()
            unavailable = StorageUnavailable(
                f"a write failed, storage stopped so nothing is lost: {error}"
            )
            failed.resolve(unavailable)
            if self.on_failed is not None:
                self.on_failed(unavailable)
            return failed
        if self._latest:
            for op in ops:
                if type(op) in _ORDERED:
                    self._settle()  # rows of the same tables, or a delete: keep the order
                    break
        rejected = self._apply_all(ops)
        if not rejected:
            return COMMITTED
        commit = Commit()
        commit.resolve(None, rejected)
        return commit

    def _apply_all(self, ops: Iterable[Op]) -> tuple[RejectedOp, ...]:
        """Apply the ops that SQLite would take; report (and return) the others."""
        rejected: list[RejectedOp] = []
        apply = self._apply
        if self.fences:
            ops = self._fenced(ops)
        for op in ops:
            bad = check(op)
            if bad is None:
                apply(op)
            else:
                rejected.append(bad)
        if rejected:
            self._report(tuple(rejected))
        return tuple(rejected)

    def _fenced(self, ops: Iterable[Op]) -> list[Op]:
        """``ops`` without those of executions whose lease this writer lost (as SQLite's
        fence step does); tells ``on_fenced``."""
        kept: list[Op] = []
        lost: dict[str, str] = {}
        fences, owner = self.fences, self.fence_owner
        for op in ops:
            ex_id = _execution_of(op)
            epoch = fences.get(ex_id) if ex_id is not None else None
            if epoch is not None:
                row = self._execs.get(ex_id)  # type: ignore[arg-type]
                if row is not None and (row.epoch != epoch or row.owner != owner):
                    lost[ex_id] = f"claimed by {row.owner} (epoch {row.epoch})"  # type: ignore[index]
                    continue
            kept.append(op)
        if lost:
            if self.on_fenced is None:
                for ex_id, why in lost.items():
                    _log.warning("memory store: writes of execution %s refused: %s", ex_id, why)
            else:
                self.on_fenced(tuple(lost.items()))
        return kept

    def _report(self, rejected: tuple[RejectedOp, ...]) -> None:
        if self.on_rejected is None:
            for r in rejected:
                _log.warning(
                    "memory store: a row of execution %s was not stored (%s %s): %s",
                    r.execution_id, r.table, r.key, r.error,
                )  # fmt: skip
            return
        try:
            self.on_rejected(rejected)
        except Exception:
            _log.exception("memory store: on_rejected failed")

    def write_latest(
        self, key: Hashable, build: Callable[[Any], Sequence[Op]], item: Any
    ) -> Commit:
        """Keep ``item`` in place of what ``key`` had; built when read (see :class:`Store`)."""
        if self._failed is not None or self._closed:
            raise self._unavailable()
        if self.fail_next is not None:
            return self.write(())
        latest = self._latest
        latest[key] = (build, item)
        if len(latest) >= _SETTLE_AT:
            self._settle()
        return COMMITTED

    def _settle(self) -> None:
        """Build and apply the pending latest items, in their order of first write."""
        latest = self._latest
        if latest:
            self._latest = {}
            unbuilt: list[RejectedOp] = []
            ops: list[Op] = []
            for key, (build, item) in latest.items():
                try:
                    ops.extend(build(item))
                except Exception as exc:  # one unencodable snapshot must not stop the rest
                    unbuilt.append(build_failure(key, exc))
            if unbuilt:
                self._report(tuple(unbuilt))
            self._apply_all(ops)

    def _bucket(self, execution_id: str) -> _Rows:
        rows = self._rows.get(execution_id)
        if rows is None:
            rows = self._rows[execution_id] = _Rows()
        return rows

    def _apply(self, op: Op) -> None:
        if type(op) is AppendHistory:  # the most frequent: one per transition
            self._bucket(op.row.execution_id).history.append(op.row)
        elif isinstance(op, UpsertTaskRun):
            self._bucket(op.row.execution_id).runs[op.row.id] = op.row
        elif isinstance(op, AppendHistory):
            self._bucket(op.row.execution_id).history.append(op.row)
        elif isinstance(op, UpsertExecution):
            row, old = op.row, self._execs.get(op.row.id)
            if old is not None:  # as SQLite's upsert: the lease is left to claims
                row = msgspec.structs.replace(
                    row, owner=old.owner, epoch=old.epoch, lease_expiry=old.lease_expiry,
                    waiting=old.waiting,
                )  # fmt: skip
            self._execs[row.id] = row
        elif isinstance(op, ClaimExecution):
            old = self._execs.get(op.execution_id)
            if old is not None:
                self._execs[old.id] = msgspec.structs.replace(
                    old, owner=op.owner, epoch=op.epoch, lease_expiry=op.lease_expiry,
                    waiting=None,
                )  # fmt: skip
        elif isinstance(op, AppendLog):
            self._bucket(op.row.execution_id).logs.append(op.row)
        elif isinstance(op, UpsertAttempt):
            a = op.row
            self._bucket(a.execution_id).attempts[(a.task_run_id, a.number)] = a
        elif isinstance(op, UpsertMetric):
            m = op.row
            self._metrics[(m.task_run_id, m.name, m.kind, tuple(sorted(m.tags.items())))] = m
        elif isinstance(op, UpsertOutput):
            self._bucket(op.row.execution_id).outputs[op.row.task_run_id] = op.row
        elif isinstance(op, DeleteTaskRuns):
            self._delete_task_runs(op.execution_id, set(op.task_run_ids))
        elif isinstance(op, DeleteExecution):
            self._delete({op.execution_id})
        elif isinstance(op, QuarantineExecution):
            self._quarantine[op.row.execution_id] = op.row
        elif isinstance(op, ReleaseQuarantine):
            self._quarantine.pop(op.execution_id, None)
        else:
            raise TypeError(f"not a storage op: {op!r}")

    def _delete_task_runs(self, execution_id: str, gone: set[str]) -> None:
        rows = self._rows.get(execution_id)
        if rows is None:
            return
        for i in gone:
            rows.runs.pop(i, None)
            rows.outputs.pop(i, None)
        rows.attempts = {k: v for k, v in rows.attempts.items() if k[0] not in gone}
        self._metrics = {
            k: m
            for k, m in self._metrics.items()
            if not (m.execution_id == execution_id and m.task_run_id in gone)
        }

    def _delete(self, ids: set[str]) -> None:
        for i in ids:
            self._execs.pop(i, None)
            self._slots.discard(i)
            self._rows.pop(i, None)
            self._quarantine.pop(i, None)
        self._metrics = {k: m for k, m in self._metrics.items() if m.execution_id not in ids}
        self._commands = {k: c for k, c in self._commands.items() if c.execution_id not in ids}
        self._pending_commands &= self._commands.keys()

    async def flush(self) -> None:
        """Writes are applied at once; only reports an earlier failure."""
        self._settle()
        if self._failed is not None:
            raise self._unavailable()

    # -- reading ------------------------------------------------------------------------
    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        """One execution row."""
        self._settle()
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
        """Executions filtered by flow, namespace, states and creation time [since, until)."""
        self._settle()
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
        return rows[offset : offset + limit] if limit >= 0 else rows[offset:]

    async def unfinished_executions(self, terminal_states: Collection[str]) -> list[ExecutionRow]:
        """Executions not in a terminal state, oldest first, quarantined ones left out."""
        self._settle()
        done = set(terminal_states)
        held = self._quarantine
        rows = [r for r in self._execs.values() if r.state not in done and r.id not in held]
        return sorted(rows, key=lambda r: (r.created, r.id))

    async def quarantined(self) -> list[QuarantineRow]:
        """Quarantined executions with the reason, oldest first."""
        self._settle()
        return sorted(self._quarantine.values(), key=lambda q: (q.ts, q.execution_id))

    async def task_runs(self, execution_id: str) -> list[TaskRunRow]:
        """Task runs in creation order (ties: first stored first)."""
        self._settle()
        runs = self._rows.get(execution_id, _EMPTY).runs.values()
        return sorted(runs, key=lambda r: r.created)

    async def task_runs_of(self, execution_ids: Sequence[str]) -> dict[str, list[TaskRunRow]]:
        """Task runs of many executions, by execution, each in creation order."""
        self._settle()
        return {
            i: sorted(self._rows.get(i, _EMPTY).runs.values(), key=lambda r: r.created)
            for i in execution_ids
        }

    async def attempts(self, execution_id: str, task_run_id: str | None = None) -> list[AttemptRow]:
        """Attempts of an execution in insertion order, or of one task run by number."""
        self._settle()
        found = self._rows.get(execution_id, _EMPTY).attempts.values()
        if task_run_id is None:
            return list(found)
        return sorted((a for a in found if a.task_run_id == task_run_id), key=lambda a: a.number)

    async def history(
        self, execution_id: str, task_run_id: str | EllipsisType | None = ...
    ) -> list[HistoryRow]:
        """State history in insertion order: ``...`` every entry, ``None`` the execution's."""
        self._settle()
        entries = self._rows.get(execution_id, _EMPTY).history
        if isinstance(task_run_id, EllipsisType):
            return list(entries)
        return [h for h in entries if h.task_run_id == task_run_id]

    async def metrics(
        self,
        *,
        execution_id: str | None = None,
        task_run_id: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[MetricRow]:
        """Metrics; ``tags`` matches metrics carrying at least those tags."""
        self._settle()
        wanted = (tags or {}).items()
        return [
            m
            for m in self._metrics.values()
            if (execution_id is None or m.execution_id == execution_id)
            and (task_run_id is None or m.task_run_id == task_run_id)
            and (name is None or m.name == name)
            and all(m.tags.get(k) == v for k, v in wanted)
        ]

    async def logs(
        self, execution_id: str, task_run_id: str | None = None, *, limit: int | None = None
    ) -> list[LogRow]:
        """Log lines in order (the first ``limit`` of them)."""
        self._settle()
        lines = self._rows.get(execution_id, _EMPTY).logs
        if task_run_id is not None:
            lines = [lg for lg in lines if lg.task_run_id == task_run_id]
        return list(lines[:limit] if limit is not None and limit >= 0 else lines)

    async def outputs(self, execution_id: str) -> list[OutputRow]:
        """Outputs of an execution's task runs."""
        self._settle()
        return list(self._rows.get(execution_id, _EMPTY).outputs.values())

    async def commands_after(self, last_id: int) -> list[CommandRow]:
        """Commands with an id above ``last_id``, in order."""
        return [c for c in self._commands.values() if c.id > last_id]

    async def get_command(self, command_id: int) -> CommandRow | None:
        """One command with its status and answer."""
        return self._commands.get(command_id)

    async def pending_commands(self, owner: str) -> list[CommandRow]:
        """Pending commands of the executions ``owner`` owns, oldest first."""
        if not self._pending_commands:
            return []  # the common case, polled often: nothing to build
        self._settle()
        return [
            c
            for c in (self._commands[i] for i in sorted(self._pending_commands))
            if (row := self._execs.get(c.execution_id)) is not None and row.owner == owner
        ]

    async def owners(self) -> list[tuple[str, float]]:
        """Registered owners with their last heartbeat."""
        return list(self._owners.items())

    # -- administration -----------------------------------------------------------------
    def _check(self) -> None:
        if self._failed is not None or self._closed:
            raise self._unavailable()

    async def purge(
        self,
        *,
        older_than: float | None = None,
        execution_ids: Collection[str] | None = None,
        states: Collection[str] | None = None,
        batch_size: int = 500,
        progress: ProgressCallback | None = None,
    ) -> list[str]:
        """Delete executions (ended before ``older_than``, or named) with all their rows,
        ``batch_size`` at a time (see :meth:`Store.purge`)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self._settle()
        self._check()
        named = set(execution_ids or ())
        wanted = set(states) if states is not None else None

        def qualifies(r: ExecutionRow) -> bool:
            return (
                r.id in named
                or (older_than is not None and r.ended is not None and r.ended < older_than)
            ) and (wanted is None or r.state in wanted)

        found = sorted((r for r in self._execs.values() if qualifies(r)),
                       key=lambda r: (r.created, r.id))  # fmt: skip
        candidates = [r.id for r in found]
        deleted: list[str] = []
        for batches, start in enumerate(range(0, len(candidates), batch_size), 1):
            self._settle()
            self._check()
            gone = [
                i
                for i in candidates[start : start + batch_size]
                if (r := self._execs.get(i)) is not None and qualifies(r)
            ]
            self._delete(set(gone))
            deleted.extend(gone)
            if progress is not None:
                done = progress(PurgeProgress(tuple(gone), len(deleted), len(candidates), batches))
                if inspect.isawaitable(done):
                    await done
        return deleted

    def command_wakeup(self) -> None:
        """No notifications here: the command loop polls."""
        return None

    async def post_command(
        self, execution_id: str, kind: str, payload: bytes = b"", target: bytes = b""
    ) -> int:
        """Store a pending command for the owning process."""
        self._check()
        cmd = CommandRow(next(self._ids), execution_id, kind, payload, self.clock(), target=target)
        self._commands[cmd.id] = cmd
        self._pending_commands.add(cmd.id)
        return cmd.id

    async def deploy_flow(
        self, namespace: str, flow_id: str, source: str, revision: int | None = None
    ) -> tuple[int, bool]:
        """Store a flow's source as its next revision unless the latest has the same source."""
        self._check()
        revisions = self._flows.setdefault((namespace, flow_id), [])
        if revisions and revisions[-1].source == source:
            return revisions[-1].revision, False
        latest = revisions[-1].revision if revisions else 0
        chosen = revision if revision is not None and revision > latest else latest + 1
        revisions.append(FlowRow(namespace, flow_id, chosen, source, self.clock()))
        return chosen, True

    async def flows(self, namespace: str | None = None) -> list[FlowRow]:
        """The latest revision of every deployed flow (of ``namespace``)."""
        return [
            revs[-1]
            for (ns, _), revs in sorted(self._flows.items())
            if namespace is None or ns == namespace
        ]

    async def flow_revision(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRow | None:
        """One deployed revision (the latest when ``revision`` is None)."""
        revs = self._flows.get((namespace, flow_id), [])
        if revision is None:
            return revs[-1] if revs else None
        return next((r for r in revs if r.revision == revision), None)

    def _kv_live(self, namespace: str, key: str) -> KVRow | None:
        row = self._kv.get((namespace, key))
        if row is not None and row.expires is not None and row.expires <= self.clock():
            del self._kv[(namespace, key)]
            return None
        return row

    async def kv_get(self, namespace: str, key: str) -> KVRow | None:
        """The entry ``key`` of ``namespace``, None if absent or expired."""
        return self._kv_live(namespace, key)

    async def kv_set(self, namespace: str, key: str, value: str, ttl: float | None = None) -> None:
        """Set ``key`` in ``namespace``'s key-value store (``ttl``: seconds until it expires)."""
        self._check()
        now = self.clock()
        expires = None if ttl is None else now + ttl
        self._kv[(namespace, key)] = KVRow(namespace, key, value, now, expires)

    async def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; False when there was none."""
        self._check()
        found = self._kv_live(namespace, key) is not None
        self._kv.pop((namespace, key), None)
        return found

    async def kv_keys(self, namespace: str) -> list[KVRow]:
        """Every live entry of ``namespace``, by key."""
        keys = sorted(k for ns, k in self._kv if ns == namespace)
        return [r for k in keys if (r := self._kv_live(namespace, k)) is not None]

    async def claim_fire(
        self, trigger: str, fire: str, tick: float, execution_id: str | None, owner: str
    ) -> bool:
        """Record one fire of a trigger unless it is recorded already; True if this call did."""
        self._check()
        if (trigger, fire) in self._fires:
            return False
        self._fires[(trigger, fire)] = (tick, execution_id, owner)
        return True

    async def last_tick(self, trigger: str) -> float | None:
        """The latest recorded fire's tick of a trigger, or None."""
        ticks = [t for (trg, _), (t, _, _) in self._fires.items() if trg == trigger]
        return max(ticks) if ticks else None

    async def unstarted_fires(self, stale_after: float) -> list[tuple[str, str, float, str]]:
        """Fires whose execution was never stored and whose owner is gone."""
        fresh = self.clock() - stale_after
        return sorted(
            ((trg, fire, tick, ex_id) for (trg, fire), (tick, ex_id, owner) in self._fires.items()
             if ex_id is not None and ex_id not in self._execs
             and self._owners.get(owner, float("-inf")) < fresh),
            key=lambda r: r[2],
        )  # fmt: skip

    async def answer_command(
        self, command_id: int, status: str, answer: str, error: str | None = None
    ) -> bool:
        """Consume a pending command once (see :class:`Store`)."""
        self._check()
        cmd = self._commands.get(command_id)
        if cmd is None or cmd.status != "pending":
            return False
        self._commands[command_id] = msgspec.structs.replace(
            cmd, status=status, answer=answer, answered=self.clock(), error=error
        )
        self._pending_commands.discard(command_id)
        return True

    async def compare_and_write(
        self, execution_id: str, state: str, updated: float, ops: Sequence[Op]
    ) -> bool:
        """Write ``ops`` if the execution's row is unchanged (see :class:`Store`)."""
        self._settle()
        self._check()
        row = self._execs.get(execution_id)
        if row is None or row.state != state or row.updated != updated:
            return False
        await self.write(ops)
        return True

    async def register_owner(self, owner: str, ttl: float) -> None:
        """Announce a live runtime process."""
        self._check()
        self._owners[owner] = self.clock()

    async def heartbeat(self, owner: str) -> None:
        """Keep an owner alive."""
        self._check()
        if owner in self._owners:
            self._owners[owner] = self.clock()

    async def release_owner(self, owner: str) -> None:
        """Forget an owner: its unfinished executions become claimable."""
        self._check()
        self._owners.pop(owner, None)

    async def claim_orphans(
        self, owner: str, terminal_states: Collection[str], stale_after: float
    ) -> list[ExecutionRow]:
        """Take unfinished executions whose owner is unset, unregistered or stale.

        Returns only executions this call took: those ``owner`` already held are left out.
        """
        self._settle()
        self._check()
        fresh_after = self.clock() - stale_after
        live = {o for o, beat in self._owners.items() if beat >= fresh_after}
        done = set(terminal_states)
        taken = [
            r
            for r in self._execs.values()
            if r.state not in done
            and r.id not in self._quarantine
            and (r.owner is None or (r.owner != owner and r.owner not in live))
        ]
        taken.sort(key=lambda r: (r.created, r.id))
        out = []
        expiry = self.clock() + stale_after
        for r in taken:
            r = msgspec.structs.replace(r, owner=owner, epoch=r.epoch + 1, lease_expiry=expiry)
            self._execs[r.id] = r
            out.append(r)
        return out

    # -- the work queue ----------------------------------------------------------------
    def _claimable(self, r: ExecutionRow, now: float) -> bool:
        return (
            r.ended is None
            and (r.lease_expiry is None or r.lease_expiry < now)
            and r.id not in self._quarantine
        )

    async def claimable(self, limit: int) -> list[ExecutionRow]:
        """Unfinished executions no live lease holds (see :class:`Store`)."""
        self._settle()
        now = self.clock()
        found = [r for r in self._execs.values() if self._claimable(r, now)]
        found.sort(key=lambda r: (r.waiting is not None, r.created, r.id))
        return found[:limit]

    async def claim_queued(
        self,
        owner: str,
        ids: Sequence[str],
        lease_ttl: float,
        waiting: Sequence[tuple[str, str]] = (),
    ) -> list[ExecutionRow]:
        """Lease each of ``ids`` still unclaimed to ``owner`` (see :class:`Store`)."""
        self._settle()
        self._check()
        now = self.clock()
        out = []
        for ex_id in ids:
            r = self._execs.get(ex_id)
            if r is not None and self._claimable(r, now):
                r = msgspec.structs.replace(
                    r, owner=owner, epoch=r.epoch + 1, lease_expiry=now + lease_ttl, waiting=None
                )
                self._execs[ex_id] = r
                out.append(r)
        for ex_id, why in waiting:
            r = self._execs.get(ex_id)
            if r is not None and self._claimable(r, now) and r.waiting != why:
                self._execs[ex_id] = msgspec.structs.replace(r, waiting=why)
        return out

    async def take_slot(self, execution_id: str, namespace: str, flow_id: str, limit: int) -> bool:
        """Give an execution one of its flow's concurrency slots (see :class:`Store`)."""
        self._settle()
        self._check()
        me = self._execs.get(execution_id)
        if me is None or me.ended is not None:
            return False
        if execution_id in self._slots:
            return True
        mine = [
            r
            for r in self._execs.values()
            if r.namespace == namespace and r.flow_id == flow_id and r.ended is None
        ]
        if sum(r.id in self._slots for r in mine) >= limit:
            return False
        first = (me.created, me.id)
        waiting = (r for r in mine if r.state == "QUEUED" and r.id not in self._slots)
        if any((r.created, r.id) < first for r in waiting):
            return False
        self._slots.add(execution_id)
        return True

    async def renew_leases(self, owner: str, lease_ttl: float) -> list[str]:
        """Heartbeat ``owner`` and extend its leases (see :class:`Store`)."""
        self._settle()
        self._check()
        now = self.clock()
        if owner in self._owners:
            self._owners[owner] = now
        held = []
        for r in list(self._execs.values()):
            if r.owner == owner and r.ended is None:
                self._execs[r.id] = msgspec.structs.replace(r, lease_expiry=now + lease_ttl)
                held.append(r.id)
        return held

    async def release_leases(self, owner: str, ids: Sequence[str] | None = None) -> int:
        """Give up ``owner``'s leases (see :class:`Store`)."""
        self._settle()
        self._check()
        wanted = None if ids is None else set(ids)
        n = 0
        for r in list(self._execs.values()):
            if r.owner == owner and r.ended is None and (wanted is None or r.id in wanted):
                self._execs[r.id] = msgspec.structs.replace(r, owner=None, lease_expiry=None)
                n += 1
        return n


def _execution_of(op: Op) -> str | None:
    """The execution an op writes rows of."""
    row = getattr(op, "row", None)
    if row is None:
        return getattr(op, "execution_id", None)
    if type(row) is ExecutionRow:
        return row.id
    return getattr(row, "execution_id", None)
