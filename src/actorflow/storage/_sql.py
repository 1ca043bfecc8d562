"""The SQLite side of the store: plain functions that run in a connection's own thread.

Each function is ONE call into aiosqlite's thread (one thread hop), however many statements
it runs: a whole batch of writes, a purge, a claim.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from msgspec.structs import astuple

from actorflow._errors import DatabaseInvalid
from actorflow.storage._rows import (
    AppendHistory,
    AppendLog,
    DeleteExecution,
    DeleteTaskRuns,
    ExecutionRow,
    Op,
    TaskRunRow,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertOutput,
    UpsertTaskRun,
)
from actorflow.storage._schema import read_version

_HEADER = b"SQLite format 3\x00"
EXEC_COLS = (
    "id, namespace, flow_id, flow_revision, state, created, updated, ended,"
    " parent_execution_id, owner, data"
)
TR_COLS = (
    "id, execution_id, task_id, state, created, updated, ended, parent_task_run_id, value, data"
)
ATTEMPT_COLS = 'execution_id, task_run_id, number, state, start, "end", error'
METRIC_COLS = "execution_id, task_run_id, name, kind, tags, value, count"
LOG_COLS = "execution_id, task_run_id, ts, level, message, trace_id, span_id"


def _upsert(table: str, cols: str, key: str) -> str:
    names = [c.strip() for c in cols.split(",")]
    keys = {k.strip() for k in key.split(",")}
    sets = ", ".join(f"{c} = excluded.{c}" for c in names if c not in keys)
    marks = ",".join("?" * len(names))
    # An upsert, never INSERT OR REPLACE: REPLACE deletes the old row first, which would
    # cascade to an execution's task runs and move the row to the end of rowid order.
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT({key}) DO UPDATE SET {sets}"


_SQL_EXEC = _upsert("executions", EXEC_COLS, "id")
_SQL_TR = _upsert("task_runs", TR_COLS, "id")
_SQL_ATTEMPT = _upsert("attempts", ATTEMPT_COLS, "task_run_id, number")
_SQL_METRIC = _upsert("metrics", METRIC_COLS, "task_run_id, name, kind, tags")
_SQL_OUTPUT = _upsert("outputs", "task_run_id, execution_id, data", "task_run_id")
_SQL_HISTORY = "INSERT INTO state_history (execution_id, task_run_id, state, ts) VALUES (?,?,?,?)"
_SQL_LOG = f"INSERT INTO logs ({LOG_COLS}) VALUES (?,?,?,?,?,?,?)"
_CHILD_TABLES = ("attempts", "state_history", "metrics", "logs", "outputs", "commands", "task_runs")


def tags_key(tags: Mapping[str, str]) -> str:
    """Canonical JSON of a tag set: the same tags always give the same key."""
    return _tags_json(tuple(sorted(tags.items())))


@functools.lru_cache(maxsize=4096)
def _tags_json(items: tuple[tuple[str, str], ...]) -> str:
    # Cached: a few tag sets (a span name, a host) recur on every task run.
    return json.dumps(dict(items), separators=(",", ":"))


def inspect_file(path: Path) -> int:
    """Schema version of an existing file (0 if absent or empty); refuses anything not ours.

    Reads through a read-only connection, so a refused file is never modified.
    """
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb") as f:
        if f.read(16) != _HEADER:
            raise DatabaseInvalid(f"{path}: not an SQLite database (bad header); left untouched")
    try:
        # Without a WAL beside it, immutable=1 reads the file alone and creates no -wal/-shm
        # next to a file we may refuse; with one, the WAL must be read too.
        wal = Path(f"{path}-wal").exists()
        mode = "mode=ro" if wal else "mode=ro&immutable=1"
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?{mode}", uri=True)
        try:
            return read_version(conn, str(path))
        finally:
            conn.close()
    except sqlite3.OperationalError:
        raise  # locked, unreadable: the caller reports it as unavailable, not as invalid
    except sqlite3.DatabaseError as exc:
        raise DatabaseInvalid(
            f"{path}: corrupt or unreadable database ({exc}); left untouched"
        ) from exc


def setup(conn: sqlite3.Connection, writer: bool) -> None:
    """Connection pragmas: WAL and NORMAL sync for the writer, read-only for readers."""
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    if writer:
        set_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
    else:
        conn.execute("PRAGMA query_only = ON")


def set_wal(conn: sqlite3.Connection, patience: float = 5.0) -> None:
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


def fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """Rows of one query."""
    return conn.execute(sql, params).fetchall()


def execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    """One autocommitted statement; returns the last row id."""
    return int(conn.execute(sql, params).lastrowid or 0)


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
    "DELETE FROM task_runs WHERE execution_id = ? AND id = ?",
    *(f"DELETE FROM {t} WHERE execution_id = ? AND task_run_id = ?"
      for t in ("attempts", "outputs", "metrics")),
    *(f"DELETE FROM {t} WHERE execution_id = ?" for t in _CHILD_TABLES),
    "DELETE FROM executions WHERE id = ?",
)  # fmt: skip
_EXEC, _TR, _ATTEMPT, _HISTORY, _METRIC, _LOG, _OUTPUT, _DEL_TR = range(8)
_DEL_TR_CHILDREN = (8, 9, 10)
_DEL_EXEC = tuple(range(11, 11 + len(_CHILD_TABLES) + 1))

Plan = list[tuple[int, list[tuple[Any, ...]]]]
"""Statements of one transaction, in order: (index in STATEMENTS, parameter rows)."""


class _Group:
    """Upserts coalesced by key (the last wins) and appends in order, between two deletes."""

    __slots__ = ("attempts", "execs", "history", "logs", "metrics", "outputs", "runs")

    def __init__(self) -> None:
        self.execs: dict[str, ExecutionRow] = {}
        self.runs: dict[str, TaskRunRow] = {}
        self.attempts: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.metrics: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}
        self.outputs: dict[str, tuple[Any, ...]] = {}
        self.history: list[tuple[Any, ...]] = []
        self.logs: list[tuple[Any, ...]] = []

    def emit(self, plan: Plan) -> None:
        # Executions first: task runs reference them.
        if self.execs:
            plan.append((_EXEC, [astuple(r) for r in self.execs.values()]))
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


def plan_batch(ops: Sequence[Op]) -> Plan:
    """The statements that write ``ops``: executemany per op type, repeated upserts coalesced.

    A delete splits the batch: what came before it is written first, so an upsert never
    moves across a delete.
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
        else:
            raise TypeError(f"not a storage op: {op!r}")
    group.emit(plan)
    return plan


def run_plan(
    conn: sqlite3.Connection,
    plan: Plan,
    fail: BaseException | None = None,
    statements: Sequence[str] = STATEMENTS,
) -> None:
    """Run ``plan`` as ONE transaction. ``fail`` is a test hook raised just before COMMIT."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt, rows in plan:
            conn.executemany(statements[stmt], rows)
        if fail is not None:
            raise fail
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def apply_batch(
    conn: sqlite3.Connection, ops: Sequence[Op], fail: BaseException | None = None
) -> None:
    """Write ``ops`` as ONE transaction (see :func:`plan_batch`)."""
    run_plan(conn, plan_batch(ops), fail)


def delete_executions(conn: sqlite3.Connection, ids: Sequence[str]) -> None:
    """Delete executions and every row they own (inside the caller's transaction)."""
    params = [(i,) for i in ids]
    for stmt in _DEL_EXEC:
        conn.executemany(STATEMENTS[stmt], params)


def _transaction(conn: sqlite3.Connection, body: Any, *args: Any) -> Any:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn, *args)
        conn.execute("COMMIT")
        return result
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def purge(
    conn: sqlite3.Connection,
    older_than: float | None,
    ids: Sequence[str],
    states: Collection[str] | None,
) -> list[str]:
    """Delete executions ended before ``older_than`` or named in ``ids`` (in ``states``)."""
    where: list[str] = []
    params: list[Any] = []
    if ids:
        where.append(f"id IN ({','.join('?' * len(ids))})")
        params.extend(ids)
    if older_than is not None:
        where.append("(ended IS NOT NULL AND ended < ?)")
        params.append(older_than)
    if not where:
        return []
    sql = f"SELECT id FROM executions WHERE ({' OR '.join(where)})"
    if states is not None:
        st = list(states)
        sql += f" AND state IN ({','.join('?' * len(st))})"
        params.extend(st)

    def body(c: sqlite3.Connection) -> list[str]:
        found = [r[0] for r in c.execute(sql + " ORDER BY created, id", params)]
        delete_executions(c, found)
        return found

    result: list[str] = _transaction(conn, body)
    return result


COMMAND_COLS = "id, execution_id, kind, payload, created, status, answer, target, answered"


def answer_command(
    conn: sqlite3.Connection, command_id: int, status: str, answer: str, now: float
) -> bool:
    """Set a pending command's status and answer; False if it was not pending any more."""
    cur = conn.execute(
        "UPDATE commands SET status = ?, answer = ?, answered = ? WHERE id = ?"
        " AND status = 'pending'",
        (status, answer, now, command_id),
    )
    return cur.rowcount == 1


def compare_and_write(
    conn: sqlite3.Connection, execution_id: str, state: str, updated: float, plan: Plan
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

    result: bool = _transaction(conn, body)
    return result


def claim(
    conn: sqlite3.Connection, owner: str, terminal: Sequence[str], fresh_after: float
) -> list[Any]:
    """Set ``owner`` on unfinished executions of no live owner; returns those rows."""
    marks = ",".join("?" * len(terminal))
    select = (
        f"SELECT {EXEC_COLS} FROM executions WHERE state NOT IN ({marks}) AND"
        " (owner IS NULL OR (owner != ? AND owner NOT IN"
        " (SELECT owner FROM owners WHERE heartbeat >= ?))) ORDER BY created, id"
    )

    def body(c: sqlite3.Connection) -> list[Any]:
        rows = c.execute(select, (*terminal, owner, fresh_after)).fetchall()
        c.executemany("UPDATE executions SET owner = ? WHERE id = ?", [(owner, r[0]) for r in rows])
        return [(*r[:9], owner, r[10]) for r in rows]

    result: list[Any] = _transaction(conn, body)
    return result
