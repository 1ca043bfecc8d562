"""SQLite store: one writer connection with group commit, one reader connection.

Writers never wait for each other: ``write`` appends to the pending batch and returns that
batch's :class:`Commit`. The writer task takes everything pending, runs it as ONE transaction
in aiosqlite's thread (one thread hop per batch, not per statement), and resolves the commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from types import EllipsisType
from typing import Any, TypeVar

import aiosqlite
import anyio

from actorflow._errors import DatabaseInvalid, SchemaTooNew, StorageError, StorageUnavailable
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
from actorflow.storage._schema import CURRENT_VERSION, migrate
from actorflow.storage._store import Commit

T = TypeVar("T")
_HEADER = b"SQLite format 3\x00"
_EXEC_COLS = "id, namespace, flow_id, flow_revision, state, created, updated, ended, parent_execution_id, owner, data"  # noqa: E501
_TR_COLS = (
    "id, execution_id, task_id, state, created, updated, ended, parent_task_run_id, value, data"
)


def _tags(tags: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(tags.items())), separators=(",", ":"))


def _inspect(path: Path) -> int:
    """Schema version of an existing file (0 if empty); refuses anything not ours."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb") as f:
        if f.read(16) != _HEADER:
            raise DatabaseInvalid(f"{path}: not an SQLite database (bad header); left untouched")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if not names:
                return 0
            if "schema_version" not in names:
                raise DatabaseInvalid(
                    f"{path}: an SQLite database but not an actorflow one (no schema_version"
                    " table); left untouched"
                )
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseInvalid(
            f"{path}: corrupt or unreadable database ({exc}); left untouched"
        ) from exc
    if row is None:
        raise DatabaseInvalid(f"{path}: schema_version table is empty; left untouched")
    version = int(row[0])
    if version > CURRENT_VERSION:
        raise SchemaTooNew(
            f"{path}: schema version {version} is newer than this actorflow understands"
            f" ({CURRENT_VERSION}); upgrade actorflow. The file was not modified."
        )
    return version


class SQLiteStore:
    """The default store: a WAL-mode SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, batch_max: int = 5000) -> None:
        self.path = Path(path)
        self.batch_max = batch_max
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: list[Op] = []
        self._commit = Commit()
        self._wake: anyio.Event | None = None
        self._failed: BaseException | None = None
        self._closed = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._idle = anyio.Event()
        self._in_flight = False
        self.fail_next: BaseException | None = None  # test hook: the next batch raises this

    @property
    def failed(self) -> BaseException | None:
        """Why the writer stopped, if it did."""
        return self._failed

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """Validate, migrate and connect."""
        if not self.path.parent.is_dir():
            raise StorageError(f"{self.path}: directory {self.path.parent} does not exist")
        if self.path.is_dir():
            raise DatabaseInvalid(f"{self.path}: is a directory, not a database file")
        version = _inspect(self.path)
        try:
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            await self._writer.execute("PRAGMA journal_mode=WAL")
            await self._writer.execute("PRAGMA synchronous=NORMAL")
            await self._writer.execute("PRAGMA busy_timeout=5000")
            await self._writer.execute("PRAGMA foreign_keys=ON")
            await self._call(migrate, version)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA busy_timeout=5000")
            await self._reader.execute("PRAGMA query_only=ON")
        except sqlite3.OperationalError as exc:
            await self._disconnect()
            raise StorageUnavailable(f"{self.path}: cannot open for writing ({exc})") from exc
        self._idle.set()
        # The writer task lives in a task group entered here and left in close(): use the
        # store as ``async with`` (or call open/close from the same task, same nesting).
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run_writer)

    async def close(self) -> None:
        """Commit what is pending, stop the writer, disconnect."""
        if self._closed:
            return
        if self._failed is None and self._tg is not None:
            with contextlib.suppress(StorageUnavailable):
                await self.flush()
        self._closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._tg = None
        await self._disconnect()

    async def _disconnect(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(sqlite3_connection, *args)`` in the writer's thread as one call."""
        assert self._writer is not None
        conn = self._writer
        # aiosqlite's own queueing runs the callable in its connection thread; one hop for a
        # whole transaction instead of one per statement.
        return await conn._execute(fn, conn._conn, *args)  # type: ignore[no-untyped-call,no-any-return]

    # -- writing ------------------------------------------------------------------------
    def write(self, ops: Iterable[Op]) -> Commit:
        """Queue ``ops``; returns the commit of the batch they join."""
        if self._failed is not None:
            raise StorageUnavailable(f"{self.path}: storage failed earlier: {self._failed}")
        if self._closed:
            raise StorageUnavailable(f"{self.path}: store is closed")
        self._pending.extend(ops)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()
        return self._commit

    async def flush(self) -> None:
        """Wait for everything queued so far."""
        if self._pending:
            # The pending batch commits after the one in flight: its commit covers both.
            await self._commit.wait()
        elif self._in_flight:
            await self._idle.wait()
        if self._failed is not None:
            raise StorageUnavailable(f"{self.path}: storage failed: {self._failed}")

    async def _run_writer(self) -> None:
        while True:
            if not self._pending:
                wake = anyio.Event()
                self._wake = wake
                await wake.wait()
                continue
            batch, commit = self._pending, self._commit
            self._pending, self._commit = [], Commit()
            self._in_flight = True
            self._idle = anyio.Event()
            try:
                if self.fail_next is not None:
                    error, self.fail_next = self.fail_next, None
                    raise error
                await self._call(_apply_batch, batch)
            except Exception as exc:
                self._failed = exc
                failure = StorageUnavailable(
                    f"{self.path}: a write failed, storage stopped to lose nothing silently: {exc}"
                )
                commit.resolve(failure)
                self._commit.resolve(failure)
                self._in_flight = False
                self._idle.set()
                return
            self._in_flight = False
            self._idle.set()
            commit.resolve()

    # -- reading ------------------------------------------------------------------------
    async def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        assert self._reader is not None
        async with self._reader.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        """One execution row."""
        rows = await self._rows(
            f"SELECT {_EXEC_COLS} FROM executions WHERE id = ?", (execution_id,)
        )
        return ExecutionRow(*rows[0]) if rows else None

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
        """Executions filtered by flow, namespace, states and creation time."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        for col, val in (("flow_id", flow_id), ("namespace", namespace)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if states is not None:
            states = list(states)
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        if since is not None:
            where.append("created >= ?")
            params.append(since)
        if until is not None:
            where.append("created < ?")
            params.append(until)
        order = "DESC" if newest_first else "ASC"
        sql = (
            f"SELECT {_EXEC_COLS} FROM executions WHERE {' AND '.join(where)}"
            f" ORDER BY created {order}, id {order} LIMIT ? OFFSET ?"
        )
        rows = await self._rows(sql, [*params, limit, offset])
        return [ExecutionRow(*r) for r in rows]

    async def unfinished_executions(self, terminal_states: Collection[str]) -> list[ExecutionRow]:
        """Executions not in a terminal state."""
        states = list(terminal_states)
        rows = await self._rows(
            f"SELECT {_EXEC_COLS} FROM executions WHERE state NOT IN"
            f" ({','.join('?' * len(states))}) ORDER BY created",
            states,
        )
        return [ExecutionRow(*r) for r in rows]

    async def task_runs(self, execution_id: str) -> list[TaskRunRow]:
        """Task runs of an execution in creation order."""
        rows = await self._rows(
            f"SELECT {_TR_COLS} FROM task_runs WHERE execution_id = ? ORDER BY created, rowid",
            (execution_id,),
        )
        return [TaskRunRow(*r) for r in rows]

    async def attempts(self, execution_id: str, task_run_id: str | None = None) -> list[AttemptRow]:
        """Attempts of an execution (or one task run)."""
        sql = 'SELECT execution_id, task_run_id, number, state, start, "end", error FROM attempts'
        if task_run_id is None:
            rows = await self._rows(sql + " WHERE execution_id = ? ORDER BY rowid", (execution_id,))
        else:
            rows = await self._rows(sql + " WHERE task_run_id = ? ORDER BY number", (task_run_id,))
        return [AttemptRow(*r) for r in rows]

    async def history(
        self, execution_id: str, task_run_id: str | EllipsisType | None = ...
    ) -> list[HistoryRow]:
        """State history in insertion order."""
        sql = (
            "SELECT execution_id, task_run_id, state, ts FROM state_history WHERE execution_id = ?"
        )
        params: list[Any] = [execution_id]
        if task_run_id is None:
            sql += " AND task_run_id IS NULL"
        elif not isinstance(task_run_id, EllipsisType):
            sql += " AND task_run_id = ?"
            params.append(task_run_id)
        return [HistoryRow(*r) for r in await self._rows(sql + " ORDER BY seq", params)]

    async def metrics(
        self,
        *,
        execution_id: str | None = None,
        task_run_id: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[MetricRow]:
        """Metrics; ``tags`` matches metrics carrying at least those tags."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        for col, val in (
            ("execution_id", execution_id),
            ("task_run_id", task_run_id),
            ("name", name),
        ):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        rows = await self._rows(
            "SELECT execution_id, task_run_id, name, kind, tags, value, count FROM metrics"
            f" WHERE {' AND '.join(where)} ORDER BY rowid",
            params,
        )
        out = [MetricRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]
        if tags:
            out = [m for m in out if all(m.tags.get(k) == v for k, v in tags.items())]
        return out

    async def logs(
        self, execution_id: str, task_run_id: str | None = None, *, limit: int | None = None
    ) -> list[LogRow]:
        """Log lines in order."""
        sql = (
            "SELECT execution_id, task_run_id, ts, level, message, trace_id, span_id FROM logs"
            " WHERE execution_id = ?"
        )
        params: list[Any] = [execution_id]
        if task_run_id is not None:
            sql += " AND task_run_id = ?"
            params.append(task_run_id)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [LogRow(*r) for r in await self._rows(sql, params)]

    async def outputs(self, execution_id: str) -> list[OutputRow]:
        """Outputs of every task run of an execution."""
        rows = await self._rows(
            "SELECT execution_id, task_run_id, data FROM outputs WHERE execution_id = ?",
            (execution_id,),
        )
        return [OutputRow(*r) for r in rows]

    # -- administration (whole transactions on the writer connection) ------------------
    async def purge(
        self,
        *,
        older_than: float | None = None,
        execution_ids: Collection[str] | None = None,
        states: Collection[str] | None = None,
    ) -> list[str]:
        """Delete executions (ended before ``older_than``, or by id) with all their rows."""
        await self.flush()
        return await self._call(_purge, older_than, list(execution_ids or ()), states)

    async def post_command(self, execution_id: str, kind: str, payload: bytes = b"") -> int:
        """Store a command for the owning process; durable on return."""
        return await self._call(_post_command, execution_id, kind, payload, time.time())

    async def commands_after(self, last_id: int) -> list[CommandRow]:
        """Commands newer than ``last_id``."""
        rows = await self._rows(
            "SELECT id, execution_id, kind, payload, created FROM commands"
            " WHERE id > ? ORDER BY id",
            (last_id,),
        )
        return [CommandRow(*r) for r in rows]

    async def register_owner(self, owner: str, ttl: float) -> None:
        """Announce a live runtime."""
        await self._call(
            _exec, "INSERT OR REPLACE INTO owners VALUES (?, ?, ?)", (owner, time.time(), ttl)
        )

    async def heartbeat(self, owner: str) -> None:
        """Keep an owner alive."""
        await self._call(
            _exec, "UPDATE owners SET heartbeat = ? WHERE owner = ?", (time.time(), owner)
        )

    async def release_owner(self, owner: str) -> None:
        """Forget an owner."""
        await self._call(_exec, "DELETE FROM owners WHERE owner = ?", (owner,))

    async def owners(self) -> list[tuple[str, float]]:
        """Registered owners and their heartbeats."""
        return [(r[0], r[1]) for r in await self._rows("SELECT owner, heartbeat FROM owners")]

    async def claim_orphans(
        self, owner: str, terminal_states: Collection[str], stale_after: float
    ) -> list[ExecutionRow]:
        """Take unfinished executions whose owner is gone."""
        await self.flush()
        rows = await self._call(_claim, owner, list(terminal_states), time.time() - stale_after)
        return [ExecutionRow(*r) for r in rows]


# -- functions run in the writer thread ------------------------------------------------------
def _exec(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    conn.execute(sql, params)


def _apply_batch(conn: sqlite3.Connection, batch: list[Op]) -> None:
    execs: dict[str, ExecutionRow] = {}
    runs: dict[str, TaskRunRow] = {}
    attempts: dict[tuple[str, int], AttemptRow] = {}
    metrics: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}
    outputs: dict[str, OutputRow] = {}
    history: list[tuple[Any, ...]] = []
    logs: list[tuple[Any, ...]] = []
    deletes: list[Op] = []
    for op in batch:
        if isinstance(op, UpsertTaskRun):
            runs[op.row.id] = op.row
        elif isinstance(op, AppendHistory):
            h = op.row
            history.append((h.execution_id, h.task_run_id, h.state, h.ts))
        elif isinstance(op, UpsertExecution):
            execs[op.row.id] = op.row
        elif isinstance(op, UpsertAttempt):
            attempts[(op.row.task_run_id, op.row.number)] = op.row
        elif isinstance(op, UpsertMetric):
            m = op.row
            tags = _tags(m.tags)
            metrics[(m.task_run_id, m.name, m.kind, tags)] = (
                m.execution_id, m.task_run_id, m.name, m.kind, tags, m.value, m.count,
            )  # fmt: skip
        elif isinstance(op, AppendLog):
            lg = op.row
            logs.append((lg.execution_id, lg.task_run_id, lg.ts, lg.level, lg.message,
                         lg.trace_id, lg.span_id))  # fmt: skip
        elif isinstance(op, UpsertOutput):
            outputs[op.row.task_run_id] = op.row
        else:
            deletes.append(op)
    conn.execute("BEGIN")
    try:
        if execs:
            # An upsert, not INSERT OR REPLACE: REPLACE deletes the old row, and the
            # foreign key's ON DELETE CASCADE would take the execution's task runs with it.
            conn.executemany(
                f"INSERT INTO executions ({_EXEC_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET namespace=excluded.namespace,"
                " flow_id=excluded.flow_id, flow_revision=excluded.flow_revision,"
                " state=excluded.state, created=excluded.created, updated=excluded.updated,"
                " ended=excluded.ended, parent_execution_id=excluded.parent_execution_id,"
                " owner=excluded.owner, data=excluded.data",
                [_astuple(r) for r in execs.values()],
            )
        if runs:
            conn.executemany(
                f"INSERT INTO task_runs ({_TR_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET state=excluded.state, updated=excluded.updated,"
                " ended=excluded.ended, data=excluded.data",
                [_astuple(r) for r in runs.values()],
            )
        if attempts:
            conn.executemany(
                'INSERT OR REPLACE INTO attempts (execution_id, task_run_id, number, state, start, "end", error)'  # noqa: E501
                " VALUES (?,?,?,?,?,?,?)",
                [_astuple(a) for a in attempts.values()],
            )
        if history:
            conn.executemany(
                "INSERT INTO state_history (execution_id, task_run_id, state, ts) VALUES (?,?,?,?)",
                history,
            )
        if metrics:
            conn.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?,?,?)", list(metrics.values())
            )
        if logs:
            conn.executemany(
                "INSERT INTO logs"
                " (execution_id, task_run_id, ts, level, message, trace_id, span_id)"
                " VALUES (?,?,?,?,?,?,?)",
                logs,
            )
        if outputs:
            conn.executemany(
                "INSERT OR REPLACE INTO outputs VALUES (?,?,?)",
                [(o.task_run_id, o.execution_id, o.data) for o in outputs.values()],
            )
        for op in deletes:
            if isinstance(op, DeleteTaskRuns):
                ids = [(i,) for i in op.task_run_ids]
                for table in ("task_runs", "attempts", "outputs", "metrics"):
                    col = "id" if table == "task_runs" else "task_run_id"
                    conn.executemany(f"DELETE FROM {table} WHERE {col} = ?", ids)
            elif isinstance(op, DeleteExecution):
                _delete_executions(conn, [op.execution_id])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _astuple(row: Any) -> tuple[Any, ...]:
    return tuple(getattr(row, f) for f in row.__struct_fields__)


_CHILD_TABLES = ("attempts", "state_history", "metrics", "logs", "outputs", "commands", "task_runs")


def _delete_executions(conn: sqlite3.Connection, ids: list[str]) -> None:
    params = [(i,) for i in ids]
    for table in _CHILD_TABLES:
        conn.executemany(f"DELETE FROM {table} WHERE execution_id = ?", params)
    conn.executemany("DELETE FROM executions WHERE id = ?", params)


def _purge(
    conn: sqlite3.Connection,
    older_than: float | None,
    ids: list[str],
    states: Collection[str] | None,
) -> list[str]:
    where: list[str] = []
    params: list[Any] = []
    if ids:
        where.append(f"id IN ({','.join('?' * len(ids))})")
        params.extend(ids)
    if older_than is not None:
        where.append("ended IS NOT NULL AND ended < ?")
        params.append(older_than)
    if not where:
        return []
    sql = f"SELECT id FROM executions WHERE ({' OR '.join(where)})"
    if states is not None:
        st = list(states)
        sql += f" AND state IN ({','.join('?' * len(st))})"
        params.extend(st)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = [r[0] for r in conn.execute(sql, params)]
        _delete_executions(conn, found)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _post_command(
    conn: sqlite3.Connection, execution_id: str, kind: str, payload: bytes, now: float
) -> int:
    cur = conn.execute(
        "INSERT INTO commands (execution_id, kind, payload, created) VALUES (?,?,?,?)",
        (execution_id, kind, payload, now),
    )
    return int(cur.lastrowid or 0)


def _claim(
    conn: sqlite3.Connection, owner: str, terminal: list[str], fresh_after: float
) -> list[Any]:
    marks = ",".join("?" * len(terminal))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            f"UPDATE executions SET owner = ? WHERE state NOT IN ({marks}) AND (owner IS NULL OR"
            " owner NOT IN (SELECT owner FROM owners WHERE heartbeat >= ?))",
            (owner, *terminal, fresh_after),
        )
        rows = conn.execute(
            f"SELECT {_EXEC_COLS} FROM executions WHERE owner = ? AND state NOT IN ({marks})"
            " ORDER BY created",
            (owner, *terminal),
        ).fetchall()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return rows
