"""The SQLite side of the store: plain functions that run in a connection's own thread.

Each function is ONE call into aiosqlite's thread (one thread hop), however many statements
it runs: a whole batch of writes, a purge, a claim.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from msgspec.structs import astuple

from actorflow.storage import _writer_proc
from actorflow.storage._rows import (
    AppendHistory,
    AppendLog,
    ClaimExecution,
    DeleteExecution,
    DeleteTaskRuns,
    ExecutionRow,
    Op,
    QuarantineExecution,
    ReleaseQuarantine,
    TaskRunRow,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertOutput,
    UpsertTaskRun,
)
from actorflow.storage._writer_proc import FENCE, WalRecorder, busy_timeout_ms, with_lock_retry

T = TypeVar("T")
_EXEC_WRITE_COLS = (
    "id, namespace, flow_id, flow_revision, state, created, updated, ended,"
    " parent_execution_id, owner, data, epoch, lease_expiry"
)
_EXEC_WRITTEN = _EXEC_WRITE_COLS.count(",") + 1
EXEC_COLS = f"{_EXEC_WRITE_COLS}, waiting"  # what reads select: every ExecutionRow field
TR_COLS = (
    "id, execution_id, task_id, state, created, updated, ended, parent_task_run_id, value, data"
)
ATTEMPT_COLS = 'execution_id, task_run_id, number, state, start, "end", error'
METRIC_COLS = "execution_id, task_run_id, name, kind, tags, value, count"
LOG_COLS = "execution_id, task_run_id, ts, level, message, trace_id, span_id"


def _upsert(table: str, cols: str, key: str, keep: tuple[str, ...] = ()) -> str:
    names = [c.strip() for c in cols.split(",")]
    keys = {k.strip() for k in key.split(",")}
    sets = ", ".join(f"{c} = excluded.{c}" for c in names if c not in keys and c not in keep)
    marks = ",".join("?" * len(names))
    # An upsert, never INSERT OR REPLACE: REPLACE deletes the old row first, which would
    # cascade to an execution's task runs and move the row to the end of rowid order.
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT({key}) DO UPDATE SET {sets}"


# The lease (owner, epoch, expiry) is written when the row is inserted (a worker that runs
# its own submission holds it from the first commit); later snapshots leave it to claims.
# An update sets only the columns a later write can change: SQLite rewrites every index that
# holds a column named in the SET, changed or not, so naming the fixed ones (which execution
# a row belongs to, an execution's flow and creation) rewrote five indexes of executions and
# the execution index of attempts, metrics and outputs on each upsert for nothing.
_EXEC_FIXED = ("namespace", "flow_id", "flow_revision", "created", "parent_execution_id")
_SQL_EXEC = _upsert(
    "executions", _EXEC_WRITE_COLS, "id", ("owner", "epoch", "lease_expiry", *_EXEC_FIXED)
)
_SQL_CLAIM = (
    "UPDATE executions SET owner = ?, epoch = ?, lease_expiry = ?, waiting = NULL WHERE id = ?"
)
# A task run's ``created`` stays in its SET: a restart may create a task run again under its
# (deterministic) id, with a new first date.
_SQL_TR = _upsert("task_runs", TR_COLS, "id", ("execution_id",))
_SQL_ATTEMPT = _upsert("attempts", ATTEMPT_COLS, "task_run_id, number", ("execution_id",))
_SQL_METRIC = _upsert("metrics", METRIC_COLS, "task_run_id, name, kind, tags", ("execution_id",))
_SQL_OUTPUT = _upsert(
    "outputs", "task_run_id, execution_id, data", "task_run_id", ("execution_id",)
)
_SQL_HISTORY = "INSERT INTO state_history (execution_id, task_run_id, state, ts) VALUES (?,?,?,?)"
_SQL_LOG = f"INSERT INTO logs ({LOG_COLS}) VALUES (?,?,?,?,?,?,?)"
_SQL_QUARANTINE = _upsert("quarantine", "execution_id, reason, ts", "execution_id")
_CHILD_TABLES = ("attempts", "state_history", "metrics", "logs", "outputs", "commands",
                 "quarantine", "task_runs")  # fmt: skip


def tags_key(tags: Mapping[str, str]) -> str:
    """Canonical JSON of a tag set: the same tags always give the same key."""
    return _tags_json(tuple(sorted(tags.items())))


@functools.lru_cache(maxsize=4096)
def _tags_json(items: tuple[tuple[str, str], ...]) -> str:
    # Cached: a few tag sets (a span name, a host) recur on every task run.
    return json.dumps(dict(items), separators=(",", ":"))


def setup(conn: sqlite3.Connection, writer: bool, lock_timeout: float = 30.0) -> None:
    """Connection pragmas: WAL and NORMAL sync for the writer, read-only for readers."""
    # Writers wait in short attempts (each wait is reported, the bound is ours); a reader
    # in WAL mode meets a lock only during recovery, so SQLite may wait it out alone.
    wait = busy_timeout_ms(lock_timeout) if writer else int(min(lock_timeout, 86400.0) * 1000)
    conn.execute(f"PRAGMA busy_timeout = {wait}")
    conn.execute("PRAGMA foreign_keys = ON")
    if writer:
        set_wal(conn, lock_timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
    else:
        conn.execute("PRAGMA query_only = ON")


def set_wal(conn: sqlite3.Connection, patience: float = 30.0) -> None:
    """``journal_mode = WAL``, waiting while another connection holds the file.

    The busy timeout does not cover a journal-mode change that meets a lock (SQLite answers
    SQLITE_BUSY at once to avoid a deadlock), e.g. two processes creating one database.
    """
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)  # in the connection's own thread, never on the event loop
            delay = min(delay * 2, 0.1)


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """Rows of one query. Text that is not UTF-8 (a damaged row) comes back with its bad
    bytes as lone surrogates instead of failing the whole query: the caller decides."""
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "Could not decode to UTF-8" not in str(exc):
            raise
    # Rare: a Python text factory is slower than the built-in one, so only for this query.
    conn.text_factory = _lenient_text
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.text_factory = str


class Admin:
    """How the in-process writer connection writes: the lock bound, where waits are told,
    and the WAL recorder that must hear of each commit (see ``_writer_proc``)."""

    def __init__(
        self,
        where: str,
        lock_timeout: float,
        recorder: WalRecorder | None,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.where = where
        self.lock_timeout = lock_timeout
        self.recorder = recorder
        self.on_wait = on_wait

    def retry(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, again while another connection holds the lock; records the WAL."""
        result = with_lock_retry(
            attempt, where=self.where, lock_timeout=self.lock_timeout, on_wait=self.on_wait
        )
        if self.recorder is not None:
            self.recorder.after_write()
        return result


def execute(conn: sqlite3.Connection, admin: Admin, sql: str, params: Sequence[Any]) -> int:
    """One autocommitted statement; returns the last row id."""
    return admin.retry(lambda: int(conn.execute(sql, params).lastrowid or 0))


# Every statement a batch may run, by index: a plan names them by number, so the writer
# process needs no knowledge of the schema (it gets this list when it starts).
STATEMENTS: tuple[str, ...] = (
    _SQL_EXEC,
    _SQL_TR,
    _SQL_ATTEMPT,
    _SQL_HISTORY,
    _SQL_METRIC,
    _SQL_LOG,
    _SQL_OUTPUT,
    _SQL_QUARANTINE,
    "DELETE FROM quarantine WHERE execution_id = ?",
    "DELETE FROM task_runs WHERE execution_id = ? AND id = ?",
    *(f"DELETE FROM {t} WHERE execution_id = ? AND task_run_id = ?"
      for t in ("attempts", "outputs", "metrics")),
    *(f"DELETE FROM {t} WHERE execution_id = ?" for t in _CHILD_TABLES),
    "DELETE FROM executions WHERE id = ?",
    _SQL_CLAIM,
)  # fmt: skip
_EXEC, _TR, _ATTEMPT, _HISTORY, _METRIC, _LOG, _OUTPUT, _QUARANTINE, _RELEASE, _DEL_TR = range(10)
_DEL_TR_CHILDREN = (10, 11, 12)
_DEL_EXEC = tuple(range(13, 13 + len(_CHILD_TABLES) + 1))
_CLAIM = _DEL_EXEC[-1] + 1
assert len(STATEMENTS) == _CLAIM + 1


def _columns(sql: str) -> tuple[str, tuple[str, ...]]:
    """Table and parameter columns of one of STATEMENTS, in parameter order."""
    if sql.startswith("INSERT INTO "):
        table, rest = sql[len("INSERT INTO ") :].split(" (", 1)
        cols = rest.split(")", 1)[0]
        return table, tuple(c.strip().strip('"') for c in cols.split(","))
    if sql.startswith("UPDATE "):
        table, rest = sql[len("UPDATE ") :].split(" SET ", 1)
        sets, where = rest.split(" WHERE ", 1)
        params = [p.split(" = ")[0].strip() for p in sets.split(",") if p.strip().endswith("?")]
        return table, (*params, *(p.split(" = ")[0].strip() for p in where.split(" AND ")))
    table, where = sql[len("DELETE FROM ") :].split(" WHERE ", 1)
    return table, tuple(p.split(" = ")[0].strip() for p in where.split(" AND "))


_SHAPES = tuple(_columns(sql) for sql in STATEMENTS)
# The parameter holding the execution id, per statement: what a fence filters rows by.
EXEC_ID_COLUMN = tuple(
    cols.index("id" if table == "executions" else "execution_id") for table, cols in _SHAPES
)
_EXEC_ID_JSON = json.dumps(EXEC_ID_COLUMN)


def describe(stmt: int, row: Sequence[Any]) -> tuple[str | None, str, str, str]:
    """(execution id, table, key, the column whose value is suspect or "") of a plan row."""
    table, cols = _SHAPES[stmt]
    values = dict(zip(cols, row, strict=False))
    execution_id = values.get("id") if table == "executions" else values.get("execution_id")
    key = values.get("id") or values.get("task_run_id") or execution_id
    key = key if isinstance(key, str) else repr(key)
    if "name" in values:
        key = f"{key}/{values['name']}"
    return (
        execution_id if isinstance(execution_id, str) else None,
        table,
        key,
        suspect_column(cols, row),
    )


def suspect_column(cols: Sequence[str], row: Sequence[Any]) -> str:
    """The first column whose value SQLite cannot store as given, or ""."""
    for col, value in zip(cols, row, strict=False):
        if type(value) is int and not -(2**63) <= value < 2**63:
            return col
        if type(value) is float and math.isnan(value):
            return col
        if type(value) is str and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return col
    return ""


Plan = list[tuple[int, list[tuple[Any, ...]]]]
"""Statements of one transaction, in order: (index in STATEMENTS, parameter rows)."""


class _Group:
    """Upserts coalesced by key (the last wins) and appends in order, between two deletes."""

    __slots__ = ("attempts", "claims", "execs", "history", "logs", "metrics", "outputs", "runs")

    def __init__(self) -> None:
        self.execs: dict[str, ExecutionRow] = {}
        self.claims: list[tuple[Any, ...]] = []
        self.runs: dict[str, TaskRunRow] = {}
        self.attempts: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.metrics: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}
        self.outputs: dict[str, tuple[Any, ...]] = {}
        self.history: list[tuple[Any, ...]] = []
        self.logs: list[tuple[Any, ...]] = []

    def emit(self, plan: Plan) -> None:
        # Executions first: task runs reference them.
        if self.execs:
            plan.append((_EXEC, [astuple(r)[:_EXEC_WRITTEN] for r in self.execs.values()]))
        if self.claims:
            plan.append((_CLAIM, self.claims))
        if self.runs:
            plan.append((_TR, [astuple(r) for r in self.runs.values()]))
        for stmt, rows in (
            (_ATTEMPT, self.attempts.values()),
            (_HISTORY, self.history),
            (_METRIC, self.metrics.values()),
            (_LOG, self.logs),
            (_OUTPUT, self.outputs.values()),
        ):
            if rows:
                plan.append((stmt, list(rows)))


def plan_batch(
    ops: Sequence[Op], fences: Mapping[str, int] | None = None, owner: str | None = None
) -> Plan:
    """The statements that write ``ops``: executemany per op type, repeated upserts coalesced.

    A delete splits the batch: what came before it is written first, so an upsert never
    moves across a delete. ``fences`` (execution id -> epoch ``owner`` holds it with): the
    plan starts with a fence step for the executions it writes, so that the transaction
    leaves out the rows of any whose lease another worker took since (see ``_writer_proc``).
    """
    plan: Plan = []
    group = _Group()
    for op in ops:
        # Exact types for the frequent ops (they are final classes): cheaper per row.
        if type(op) is AppendHistory:
            group.history.append(astuple(op.row))
        elif type(op) is UpsertTaskRun:
            group.runs[op.row.id] = op.row
        elif type(op) is UpsertAttempt:
            group.attempts[(op.row.task_run_id, op.row.number)] = astuple(op.row)
        elif isinstance(op, UpsertExecution):
            group.execs[op.row.id] = op.row
        elif isinstance(op, ClaimExecution):
            group.claims.append((op.owner, op.epoch, op.lease_expiry, op.execution_id))
        elif isinstance(op, AppendLog):
            group.logs.append(astuple(op.row))
        elif isinstance(op, UpsertMetric):
            m = op.row
            tags = tags_key(m.tags)
            group.metrics[(m.task_run_id, m.name, m.kind, tags)] = (
                m.execution_id, m.task_run_id, m.name, m.kind, tags, m.value, m.count,
            )  # fmt: skip
        elif isinstance(op, UpsertOutput):
            o = op.row
            group.outputs[o.task_run_id] = (o.task_run_id, o.execution_id, o.data)
        elif isinstance(op, DeleteTaskRuns):
            group.emit(plan)
            group = _Group()
            params = [(op.execution_id, i) for i in op.task_run_ids]
            plan.extend((stmt, params) for stmt in (_DEL_TR, *_DEL_TR_CHILDREN))
        elif isinstance(op, DeleteExecution):
            group.emit(plan)
            group = _Group()
            plan.extend((stmt, [(op.execution_id,)]) for stmt in _DEL_EXEC)
        elif isinstance(op, QuarantineExecution):
            group.emit(plan)  # rare: kept in order with everything around it
            group = _Group()
            plan.append((_QUARANTINE, [astuple(op.row)]))
        elif isinstance(op, ReleaseQuarantine):
            group.emit(plan)
            group = _Group()
            plan.append((_RELEASE, [(op.execution_id,)]))
        else:
            raise TypeError(f"not a storage op: {op!r}")
    group.emit(plan)
    if fences:
        held = _held(plan, fences)
        if held:
            plan.insert(0, (FENCE, [(owner, json.dumps(held), _EXEC_ID_JSON)]))
    return plan


def _held(plan: Plan, fences: Mapping[str, int]) -> dict[str, int]:
    """The fenced executions ``plan`` writes rows of, with their epochs."""
    held: dict[str, int] = {}
    for stmt, rows in plan:
        col = EXEC_ID_COLUMN[stmt]
        for row in rows:
            ex_id = row[col]
            if ex_id not in held:
                epoch = fences.get(ex_id)
                if epoch is not None:
                    held[ex_id] = epoch
    return held


def run_plan(
    conn: sqlite3.Connection, admin: Admin, plan: Plan, fail: BaseException | None = None
) -> list[Any]:
    """Run ``plan`` as ONE transaction (the writer process's code, in this thread); returns
    the rows left out for their values, as ``[plan index, row index, type, message]``."""
    rejected = _writer_proc.run_plan(
        conn, STATEMENTS, plan, where=admin.where, lock_timeout=admin.lock_timeout,
        fail=fail, on_wait=admin.on_wait,
    )  # fmt: skip
    if admin.recorder is not None:
        admin.recorder.after_write()
    return rejected


def delete_executions(conn: sqlite3.Connection, ids: Sequence[str]) -> None:
    """Delete executions and every row they own (inside the caller's transaction)."""
    params = [(i,) for i in ids]
    for stmt in _DEL_EXEC:
        conn.executemany(STATEMENTS[stmt], params)


def _transaction(conn: sqlite3.Connection, admin: Admin, body: Callable[..., T], *args: Any) -> T:
    def attempt() -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn, *args)
            conn.execute("COMMIT")
            return result
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    return admin.retry(attempt)


CHUNK = 500  # ids bound into one statement: far below any SQLITE_MAX_VARIABLE_NUMBER


def purge_candidates(
    conn: sqlite3.Connection,
    older_than: float | None,
    ids: Sequence[str],
    states: Collection[str] | None,
) -> list[str]:
    """Ids a purge would delete, oldest first: executions ended before ``older_than`` and
    those named in ``ids``, in ``states`` if given. Reads only; ``ids`` go in chunks."""
    st = list(states) if states is not None else None
    if st == []:
        return []
    in_states = f" AND state IN ({','.join('?' * len(st))})" if st is not None else ""
    found: dict[str, float] = {}
    if older_than is not None:
        sql = f"SELECT id, created FROM executions WHERE ended IS NOT NULL AND ended < ?{in_states}"
        found.update(conn.execute(sql, [older_than, *(st or ())]))
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id, created FROM executions WHERE id IN ({marks}){in_states}"
        found.update(conn.execute(sql, [*chunk, *(st or ())]))
    return sorted(found, key=lambda i: (found[i], i))


def purge_batch(
    conn: sqlite3.Connection,
    admin: Admin,
    batch: Sequence[str],
    named: Collection[str],
    older_than: float | None,
    states: Collection[str] | None,
) -> list[str]:
    """Delete the executions of ``batch`` that still qualify, whole, in ONE transaction.

    The test is made again under the write lock: an execution restarted since the
    candidates were read is no longer purged.
    """
    wanted = set(states) if states is not None else None

    def body(c: sqlite3.Connection) -> list[str]:
        sql = f"SELECT id, state, ended FROM executions WHERE id IN ({','.join('?' * len(batch))})"
        rows = {r[0]: r for r in c.execute(sql, list(batch))}
        keep = []
        for i in batch:
            r = rows.get(i)
            if r is None or (wanted is not None and r[1] not in wanted):
                continue
            if i in named or (older_than is not None and r[2] is not None and r[2] < older_than):
                keep.append(i)
        delete_executions(c, keep)
        return keep

    return _transaction(conn, admin, body)


COMMAND_COLS = "id, execution_id, kind, payload, created, status, answer, target, answered, error"


def answer_command(
    conn: sqlite3.Connection,
    admin: Admin,
    command_id: int,
    status: str,
    answer: str,
    now: float,
    error: str | None = None,
) -> bool:
    """Set a pending command's status, answer and error kind; False if it was not pending
    any more."""

    def run() -> bool:
        cur = conn.execute(
            "UPDATE commands SET status = ?, answer = ?, answered = ?, error = ? WHERE id = ?"
            " AND status = 'pending'",
            (status, answer, now, error, command_id),
        )
        return cur.rowcount == 1

    return admin.retry(run)


def compare_and_write(
    conn: sqlite3.Connection,
    admin: Admin,
    execution_id: str,
    state: str,
    updated: float,
    plan: Plan,
) -> bool:
    """Run ``plan`` in one transaction if the execution row still has ``state``/``updated``."""

    def body(c: sqlite3.Connection) -> bool:
        row = c.execute(
            "SELECT state, updated FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
        if row is None or row[0] != state or row[1] != updated:
            return False
        for stmt, rows in plan:
            c.executemany(STATEMENTS[stmt], rows)
        return True

    result: bool = _transaction(conn, admin, body)
    return result


def claim(
    conn: sqlite3.Connection,
    admin: Admin,
    owner: str,
    terminal: Sequence[str],
    fresh_after: float,
    expiry: float | None = None,
) -> list[Any]:
    """Set ``owner`` on unfinished executions of no live owner (quarantined ones stay where
    they are), with a new epoch and a lease until ``expiry``; returns those rows."""
    marks = ",".join("?" * len(terminal))
    select = (
        # ended IS NULL: the unfinished rows alone, off ix_executions_ended, not the table.
        f"SELECT {EXEC_COLS} FROM executions WHERE ended IS NULL AND state NOT IN ({marks}) AND"
        " (owner IS NULL OR (owner != ? AND owner NOT IN"
        " (SELECT owner FROM owners WHERE heartbeat >= ?)))"
        " AND id NOT IN (SELECT execution_id FROM quarantine) ORDER BY created, id"
    )

    def body(c: sqlite3.Connection) -> list[Any]:
        rows = fetch(c, select, (*terminal, owner, fresh_after))
        c.executemany(
            "UPDATE executions SET owner = ?, epoch = epoch + 1, lease_expiry = ? WHERE id = ?",
            [(owner, expiry, r[0]) for r in rows],
        )
        return [(*r[:9], owner, r[10], r[11] + 1, expiry, r[13]) for r in rows]

    return _transaction(conn, admin, body)


def claim_fire(
    conn: sqlite3.Connection,
    admin: Admin,
    trigger: str,
    fire: str,
    tick: float,
    execution_id: str | None,
    owner: str,
    now: float,
) -> bool:
    """Record one fire of a trigger unless it is recorded already; True if this call did."""

    def body(c: sqlite3.Connection) -> bool:
        cur = c.execute(
            "INSERT INTO trigger_fires (trigger, fire, tick, execution_id, owner, created)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(trigger, fire) DO NOTHING",
            (trigger, fire, tick, execution_id, owner, now),
        )
        return cur.rowcount == 1

    result: bool = _transaction(conn, admin, body)
    return result


def kv_write(
    conn: sqlite3.Connection,
    admin: Admin,
    namespace: str,
    key: str,
    value: str | None,
    expires: float | None,
    now: float,
) -> bool:
    """Set (``value`` given) or delete (None) one key-value entry in one transaction; True
    if an entry that had not expired was there before."""

    def body(c: sqlite3.Connection) -> bool:
        cur = c.execute(
            "SELECT 1 FROM kv WHERE namespace = ? AND key = ? AND (expires IS NULL OR expires > ?)",
            (namespace, key, now),
        )
        existed = cur.fetchone() is not None
        if value is None:
            c.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        else:
            c.execute(
                "INSERT INTO kv (namespace, key, value, updated, expires) VALUES (?,?,?,?,?)"
                " ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value,"
                " updated = excluded.updated, expires = excluded.expires",
                (namespace, key, value, now, expires),
            )
        return existed

    result: bool = _transaction(conn, admin, body)
    return result


def deploy_flow(
    conn: sqlite3.Connection,
    admin: Admin,
    namespace: str,
    flow_id: str,
    source: str,
    revision: int | None,
    now: float,
) -> tuple[int, bool]:
    """Store ``source`` as the next revision of a flow (or as ``revision``), unless the latest
    one has the same source; returns (revision, whether it is new)."""

    def body(c: sqlite3.Connection) -> tuple[int, bool]:
        row = c.execute(
            "SELECT revision, source FROM flows WHERE namespace = ? AND id = ?"
            " ORDER BY revision DESC LIMIT 1",
            (namespace, flow_id),
        ).fetchone()
        if row is not None and row[1] == source:
            return int(row[0]), False
        latest = int(row[0]) if row is not None else 0
        chosen = revision if revision is not None and revision > latest else latest + 1
        c.execute(
            "INSERT INTO flows (namespace, id, revision, source, created) VALUES (?,?,?,?,?)",
            (namespace, flow_id, chosen, source, now),
        )
        return chosen, True

    result: tuple[int, bool] = _transaction(conn, admin, body)
    return result


# -- the work queue: leases and fencing tokens --------------------------------------------
_CLAIMABLE = (
    "ended IS NULL AND (lease_expiry IS NULL OR lease_expiry < ?)"
    " AND id NOT IN (SELECT execution_id FROM quarantine)"
)
_QUEUE_ORDER = "ORDER BY waiting IS NOT NULL, created, id"
# Ids first (from the covering index), then their rows, put in queue order by the caller:
# sorting whole rows (snapshots included) cost 130 ms a round with 5,000 claimable.
CLAIMABLE_SQL = (
    f"SELECT {EXEC_COLS} FROM executions WHERE id IN (SELECT id FROM executions"
    f" INDEXED BY ix_executions_queue WHERE {_CLAIMABLE} {_QUEUE_ORDER} LIMIT ?)"
)


def claim_queued(
    conn: sqlite3.Connection,
    admin: Admin,
    owner: str,
    ids: Sequence[str],
    waiting: Sequence[tuple[str, str]],
    now: float,
    expiry: float,
) -> list[Any]:
    """Give ``owner`` each of ``ids`` still unclaimed (no lease, or an expired one), raising
    its epoch; mark ``waiting`` ones (id, why) with their reason. ONE transaction; returns
    the rows this call took, as they are now."""
    take = (
        "UPDATE executions SET owner = ?, epoch = epoch + 1, lease_expiry = ?, waiting = NULL"
        f" WHERE id = ? AND {_CLAIMABLE} RETURNING {EXEC_COLS}"
    )
    mark = f"UPDATE executions SET waiting = ? WHERE id = ? AND {_CLAIMABLE} AND waiting IS NOT ?"

    def body(c: sqlite3.Connection) -> list[Any]:
        out: list[Any] = []
        for ex_id in ids:
            out.extend(c.execute(take, (owner, expiry, ex_id, now)).fetchall())
        for ex_id, why in waiting:
            c.execute(mark, (why, ex_id, now, why))
        return out

    return _transaction(conn, admin, body)


def renew_leases(
    conn: sqlite3.Connection, admin: Admin, owner: str, expiry: float, now: float
) -> list[str]:
    """Extend the leases ``owner`` holds (and its heartbeat); returns their execution ids."""

    def body(c: sqlite3.Connection) -> list[str]:
        c.execute("UPDATE owners SET heartbeat = ? WHERE owner = ?", (now, owner))
        # No RETURNING: each returned row takes the GIL back, and against a busy event loop
        # 8,000 rows held the write lock for 1.6 s, stalling every batch of the writer. One
        # statement, then the ids as one JSON value: two steps, whatever the count.
        c.execute(
            "UPDATE executions SET lease_expiry = ? WHERE owner = ? AND ended IS NULL",
            (expiry, owner),
        )
        (ids,) = c.execute(
            "SELECT json_group_array(id) FROM executions WHERE owner = ? AND ended IS NULL",
            (owner,),
        ).fetchone()
        held: list[str] = json.loads(ids)
        return held

    return _transaction(conn, admin, body)


def release_leases(
    conn: sqlite3.Connection, admin: Admin, owner: str, ids: Sequence[str] | None
) -> int:
    """Put ``owner``'s unfinished executions (or those of ``ids``) back in the queue at once."""

    def body(c: sqlite3.Connection) -> int:
        sql = (
            "UPDATE executions SET owner = NULL, lease_expiry = NULL"
            " WHERE owner = ? AND ended IS NULL"
        )
        if ids is None:
            return int(c.execute(sql, (owner,)).rowcount)
        return sum(int(c.execute(f"{sql} AND id = ?", (owner, i)).rowcount) for i in ids)

    return _transaction(conn, admin, body)


def take_slot(
    conn: sqlite3.Connection,
    admin: Admin,
    execution_id: str,
    namespace: str,
    flow_id: str,
    limit: int,
) -> bool:
    """Give an execution one of its flow's ``limit`` concurrency slots, in ONE transaction:
    only while fewer unfinished executions of the flow hold one, and no older execution of
    it waits QUEUED for one (FIFO across processes). True if it holds a slot now."""

    def body(c: sqlite3.Connection) -> bool:
        me = c.execute(
            "SELECT slot, created, ended FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
        if me is None or me[2] is not None:
            return False
        if me[0]:
            return True
        held = c.execute(
            "SELECT count(*) FROM executions WHERE namespace = ? AND flow_id = ?"
            " AND ended IS NULL AND slot = 1",
            (namespace, flow_id),
        ).fetchone()[0]
        if held >= limit:
            return False
        older = c.execute(
            "SELECT 1 FROM executions WHERE namespace = ? AND flow_id = ? AND ended IS NULL"
            " AND state = 'QUEUED' AND slot = 0 AND (created < ? OR (created = ? AND id < ?))"
            " LIMIT 1",
            (namespace, flow_id, me[1], me[1], execution_id),
        ).fetchone()
        if older is not None:
            return False
        c.execute("UPDATE executions SET slot = 1 WHERE id = ?", (execution_id,))
        return True

    result: bool = _transaction(conn, admin, body)
    return result
