"""SQLite store: one writer connection with group commit, one reader connection.

Writers never wait for each other: ``write`` appends its ops to the newest pending batch and
returns that batch's :class:`Commit`. While a transaction is in flight, new ops pile up; the
writer then takes the next batch (at most ``batch_max`` ops), runs it as ONE transaction in
aiosqlite's thread (one thread hop per batch, not per statement) and resolves its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from types import EllipsisType
from typing import Any, TypeVar

import aiosqlite
import anyio
import msgspec

from actorflow._errors import DatabaseInvalid, StorageError, StorageUnavailable
from actorflow.storage import _sql
from actorflow.storage._procwriter import ProcessWriter, WriterError
from actorflow.storage._rows import (
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
)
from actorflow.storage._schema import CURRENT_VERSION, migrate
from actorflow.storage._store import COMMITTED, Commit

T = TypeVar("T")
_PIPELINE = 8  # batches sent to the writer process before the first is acknowledged


class WriterStats(msgspec.Struct, frozen=True):
    """What the writer did so far: transactions committed and ops they held."""

    batches: int
    ops: int
    largest_batch: int


class _Latest:
    """A place in a batch for the newest item of a key; built into ops when written."""

    __slots__ = ("build", "item", "pos")

    def __init__(self, build: Callable[[Any], Sequence[Op]], item: Any, pos: int) -> None:
        self.build = build
        self.item = item
        self.pos = pos


class _Batch:
    """Ops that will commit in one transaction, and the commit their writers await."""

    __slots__ = ("barrier", "commit", "latest", "ops")

    def __init__(self, notify: Callable[[], None]) -> None:
        self.ops: list[Op | _Latest] = []
        self.latest: dict[Hashable, _Latest] = {}
        self.barrier = 0  # ops before the last delete: a key written later takes a new place
        self.commit = Commit(notify)

    def add(self, ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, DeleteTaskRuns | DeleteExecution):
                self.barrier = len(self.ops) + 1
            self.ops.append(op)

    def add_latest(self, key: Hashable, build: Callable[[Any], Sequence[Op]], item: Any) -> None:
        slot = self.latest.get(key)
        if slot is not None and slot.pos >= self.barrier:
            slot.item = item
            return
        slot = self.latest[key] = _Latest(build, item, len(self.ops))
        self.ops.append(slot)

    def materialize(self) -> list[Op]:
        """The batch's ops, each latest item built now (encoded once per batch)."""
        out: list[Op] = []
        for op in self.ops:
            if type(op) is _Latest:
                out.extend(op.build(op.item))
            else:
                out.append(op)  # type: ignore[arg-type]
        return out


class SQLiteStore:
    """The default store: a WAL-mode SQLite file shared by any number of processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_max: int = 1000,
        linger: float = 0.002,
        writer: str = "process",
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, not {batch_max}")
        if writer not in ("process", "thread"):
            raise ValueError(f"writer must be 'process' or 'thread', not {writer!r}")
        self.path = Path(path)
        self.batch_max = batch_max
        # Without a waiter, the writer gives a batch this long to grow (group commit): many
        # snapshots per transaction, one encoding of each record. A waiter ends it at once.
        self.linger = linger
        # Batches commit in a writer process by default: a thread shares the GIL with the
        # event loop and both slow down (see _writer_proc); "thread" keeps it in-process.
        self.writer = writer
        self._proc: ProcessWriter | None = None
        self.read_only = read_only
        self.clock = clock  # wall time for heartbeats and command stamps (tests age them)
        self.fail_next: BaseException | None = None  # test hook: the next batch raises this
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: deque[_Batch] = deque()
        self._in_flight: deque[_Batch] = deque()  # sent, not committed yet (in order)
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._refusal: str | None = "store is not open"
        self._batches = self._ops = self._largest = 0

    @property
    def failed(self) -> BaseException | None:
        """Why the writer stopped, if it did."""
        return self._failed

    @property
    def stats(self) -> WriterStats:
        """Transactions and ops written since open."""
        return WriterStats(self._batches, self._ops, self._largest)

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """Validate the file, migrate it, connect, start the writer."""
        if self._reader is not None:
            return
        path = self.path
        if not path.parent.is_dir():
            raise StorageError(f"{path}: directory {path.parent} does not exist")
        if path.is_dir():
            raise DatabaseInvalid(f"{path}: is a directory, not a database file")
        if self.read_only and not path.is_file():
            raise StorageError(f"{path}: no such database (opened read-only)")
        if not hasattr(aiosqlite.Connection, "_execute"):
            raise StorageError("this aiosqlite has no Connection._execute; pin aiosqlite<1")
        try:
            version = await anyio.to_thread.run_sync(_sql.inspect_file, path)
            if self.read_only:
                if version != CURRENT_VERSION:
                    raise StorageError(
                        f"{path}: schema version {version} must be migrated to"
                        f" {CURRENT_VERSION}; open it once without read_only"
                    )
                self._reader = await self._connect(f"{path.absolute().as_uri()}?mode=ro", False)
            else:
                self._writer = await self._connect(str(path), True)
                await self._call(self._writer, migrate, str(path))
                self._reader = await self._connect(str(path), False)
                if self.writer == "process":
                    self._proc = ProcessWriter(path)
                    await self._proc.start()
        except sqlite3.OperationalError as exc:
            await self._disconnect()
            raise StorageUnavailable(f"{path}: cannot open the database ({exc})") from exc
        except BaseException:
            await self._disconnect()
            raise
        self._failed = None
        self._batches = self._ops = self._largest = 0
        if self.read_only:
            self._refusal = "store is opened read-only"
        else:
            self._refusal = None
            # A plain asyncio task (aiosqlite ties the store to asyncio anyway): it belongs to
            # no caller's cancel scope, so a cancelled caller cannot strand queued writes, and
            # open/close may come from different tasks.
            self._task = asyncio.get_running_loop().create_task(self._run_writer())

    async def _connect(self, target: str, writer: bool) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(target, uri=target.startswith("file:"), isolation_level=None)
        try:
            await self._call(conn, _sql.setup, writer)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Commit everything queued, stop the writer, disconnect. Never raises for a failure
        already reported through commits."""
        if self._reader is None and self._writer is None:
            return
        self._refusal = "store is closed"
        with anyio.CancelScope(shield=True):
            if self._task is not None:
                self._wake_writer()
                with contextlib.suppress(BaseException):
                    await asyncio.shield(self._task)
                self._task = None
            await self._disconnect()

    async def _disconnect(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.close()
        for conn in (self._reader, self._writer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    async def _call(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(sqlite3_connection, *args)`` in the connection's thread as one call."""
        # aiosqlite has no public way to run a callable in its thread; _execute is its own
        # queueing, and one hop for a whole transaction beats one per statement.
        return await conn._execute(fn, conn._conn, *args)  # type: ignore[no-untyped-call,no-any-return]

    # -- writing ------------------------------------------------------------------------
    def write(self, ops: Iterable[Op]) -> Commit:
        """Queue ``ops`` (they commit together); await the result for durability."""
        if self._refusal is not None or self._failed is not None:
            raise self._unavailable()
        ops = ops if isinstance(ops, list | tuple) else list(ops)
        if not ops:
            return self._last_commit() or COMMITTED
        batch = self._open_batch(len(ops))
        batch.add(ops)
        return batch.commit

    def write_latest(
        self, key: Hashable, build: Callable[[Any], Sequence[Op]], item: Any
    ) -> Commit:
        """Queue ``build(item)`` in place of what ``key`` queued before (see :class:`Store`)."""
        if self._refusal is not None or self._failed is not None:
            raise self._unavailable()
        batch = self._open_batch(1)
        batch.add_latest(key, build, item)
        return batch.commit

    def _open_batch(self, size: int) -> _Batch:
        """The batch new ops join: the last queued one, or a new one when it is full."""
        queue = self._queue
        if queue:
            batch = queue[-1]
            if not batch.ops or len(batch.ops) + size <= self.batch_max:
                return batch
        batch = _Batch(self._wake_writer)
        queue.append(batch)
        self._wake_writer()
        return batch

    def _unavailable(self) -> StorageUnavailable:
        if self._failed is not None:
            return StorageUnavailable(f"{self.path}: storage failed earlier: {self._failed}")
        return StorageUnavailable(f"{self.path}: {self._refusal}")

    def _last_commit(self) -> Commit | None:
        if self._queue:
            return self._queue[-1].commit
        return self._in_flight[-1].commit if self._in_flight else None

    def _wake_writer(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _sleep(self, timeout: float | None) -> None:
        """Until :meth:`_wake_writer` (or ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()
        if timeout is None:
            await wake
            return
        timer = loop.call_later(timeout, self._wake_writer)
        try:
            await wake
        finally:
            timer.cancel()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        commit = self._last_commit()
        if commit is not None:
            await commit
        if self._failed is not None:
            raise self._unavailable()

    async def _run_writer(self) -> None:
        assert self._writer is not None
        conn = self._writer
        queue = self._queue
        in_flight = self._in_flight
        # A writer process takes the next batches while one commits (the pipe keeps their
        # order); the thread writer runs one at a time.
        depth = _PIPELINE if self._proc is not None else 1
        try:
            while self._failed is None:
                if not queue:
                    if self._refusal is not None and not in_flight:
                        return
                    await self._sleep(None)
                    continue
                if len(in_flight) >= depth:
                    await self._sleep(None)  # an acknowledgement wakes it
                    continue
                first = queue[0]
                if (
                    self.linger > 0
                    and len(queue) == 1
                    and not first.commit.wanted
                    and self._refusal is None
                ):
                    await self._sleep(self.linger)  # a waiter or a full batch wakes it early
                    if self._failed is not None or not queue:
                        continue
                batch = queue.popleft()
                ops = batch.materialize()
                fail, self.fail_next = self.fail_next, None
                in_flight.append(batch)
                if self._proc is not None:
                    done = await self._proc.send(_sql.plan_batch(ops), fail)
                    done.add_done_callback(functools.partial(self._acked, batch, len(ops), fail))
                else:
                    await self._call(conn, _sql.apply_batch, ops, fail)
                    self._committed(batch, len(ops))
        except BaseException as exc:
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise

    def _committed(self, batch: _Batch, ops: int) -> None:
        if self._in_flight and self._in_flight[0] is batch:
            self._in_flight.popleft()
        self._batches += 1
        self._ops += ops
        self._largest = max(self._largest, ops)
        batch.commit.resolve()

    def _acked(
        self, batch: _Batch, ops: int, fail: BaseException | None, done: asyncio.Future[None]
    ) -> None:
        """A reply of the writer process (they come in the order the batches went)."""
        if self._failed is not None:
            return
        error = done.exception()
        if error is None:
            self._committed(batch, ops)
        else:
            # The test hook's own exception, as in-thread; otherwise what the process said.
            self._fail(fail if fail is not None and isinstance(error, WriterError) else error)
        self._wake_writer()

    def _fail(self, exc: BaseException) -> None:
        """Fail the batches in flight and everything queued; refuse later writes."""
        self._failed = exc
        error = StorageUnavailable(
            f"{self.path}: a write failed, storage stopped so nothing is lost silently: {exc}"
        )
        batches = [*self._in_flight, *self._queue]
        self._queue.clear()
        self._in_flight.clear()
        for batch in batches:
            batch.commit.resolve(error)
        self._wake_writer()

    # -- administration: whole transactions on the writer connection -----------------
    async def _admin(self, fn: Callable[..., T], *args: Any) -> T:
        if self._refusal is not None or self._failed is not None or self._writer is None:
            raise self._unavailable()
        try:
            return await self._call(self._writer, fn, *args)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"{self.path}: {exc}") from exc

    async def purge(
        self,
        *,
        older_than: float | None = None,
        execution_ids: Collection[str] | None = None,
        states: Collection[str] | None = None,
    ) -> list[str]:
        """Delete executions (ended before ``older_than``, or by id) with all their rows."""
        await self.flush()
        ids = list(execution_ids or ())
        return await self._admin(
            _sql.purge, older_than, ids, None if states is None else list(states)
        )

    async def post_command(self, execution_id: str, kind: str, payload: bytes = b"") -> int:
        """Store a command for the owning process; durable on return."""
        return await self._admin(
            _sql.execute,
            "INSERT INTO commands (execution_id, kind, payload, created) VALUES (?,?,?,?)",
            (execution_id, kind, payload, self.clock()),
        )

    async def register_owner(self, owner: str, ttl: float) -> None:
        """Announce a live runtime process."""
        await self._admin(
            _sql.execute,
            "INSERT INTO owners (owner, heartbeat, ttl) VALUES (?,?,?) ON CONFLICT(owner)"
            " DO UPDATE SET heartbeat = excluded.heartbeat, ttl = excluded.ttl",
            (owner, self.clock(), ttl),
        )

    async def heartbeat(self, owner: str) -> None:
        """Keep an owner alive."""
        await self._admin(
            _sql.execute, "UPDATE owners SET heartbeat = ? WHERE owner = ?", (self.clock(), owner)
        )

    async def release_owner(self, owner: str) -> None:
        """Forget an owner: its unfinished executions become claimable."""
        await self._admin(_sql.execute, "DELETE FROM owners WHERE owner = ?", (owner,))

    async def claim_orphans(
        self, owner: str, terminal_states: Collection[str], stale_after: float
    ) -> list[ExecutionRow]:
        """Atomically take unfinished executions whose owner is unset, unregistered or stale.

        Returns only executions this call took: those ``owner`` already held are left out.
        """
        await self.flush()
        rows = await self._admin(
            _sql.claim, owner, list(terminal_states), self.clock() - stale_after
        )
        return [ExecutionRow(*r) for r in rows]

    # -- reading (its own connection and thread: never waits for the writer) ----------
    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            raise StorageError(f"{self.path}: store is not open")
        try:
            return await self._call(self._reader, _sql.fetch, sql, params)
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"{self.path}: cannot read ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            raise DatabaseInvalid(f"{self.path}: corrupt database ({exc})") from exc

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        """One execution row."""
        sql = f"SELECT {_sql.EXEC_COLS} FROM executions WHERE id = ?"
        rows = await self._rows(sql, (execution_id,))
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
        """Executions filtered by flow, namespace, states and creation time [since, until)."""
        where: list[str] = []
        params: list[Any] = []
        for clause, val in (
            ("flow_id = ?", flow_id),
            ("namespace = ?", namespace),
            ("created >= ?", since),
            ("created < ?", until),
        ):
            if val is not None:
                where.append(clause)
                params.append(val)
        if states is not None:
            st = list(states)
            where.append(f"state IN ({','.join('?' * len(st))})")
            params.extend(st)
        order = "DESC" if newest_first else "ASC"
        sql = (
            f"SELECT {_sql.EXEC_COLS} FROM executions"
            f"{' WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY created {order}, id {order} LIMIT ? OFFSET ?"
        )
        return [ExecutionRow(*r) for r in await self._rows(sql, [*params, limit, offset])]

    async def unfinished_executions(self, terminal_states: Collection[str]) -> list[ExecutionRow]:
        """Executions not in a terminal state, oldest first."""
        st = list(terminal_states)
        sql = (
            f"SELECT {_sql.EXEC_COLS} FROM executions WHERE state NOT IN"
            f" ({','.join('?' * len(st))}) ORDER BY created, id"
        )
        return [ExecutionRow(*r) for r in await self._rows(sql, st)]

    async def task_runs(self, execution_id: str) -> list[TaskRunRow]:
        """Task runs of an execution in creation order."""
        sql = f"SELECT {_sql.TR_COLS} FROM task_runs WHERE execution_id = ? ORDER BY created, rowid"
        return [TaskRunRow(*r) for r in await self._rows(sql, (execution_id,))]

    async def task_runs_of(self, execution_ids: Sequence[str]) -> dict[str, list[TaskRunRow]]:
        """Task runs of many executions, by execution, each in creation order: one query per
        500 executions instead of one each."""
        out: dict[str, list[TaskRunRow]] = {i: [] for i in execution_ids}
        ids = list(out)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            sql = (
                f"SELECT {_sql.TR_COLS} FROM task_runs WHERE execution_id IN"
                f" ({','.join('?' * len(chunk))}) ORDER BY execution_id, created, rowid"
            )
            for r in await self._rows(sql, chunk):
                out[r[1]].append(TaskRunRow(*r))
        return out

    async def attempts(self, execution_id: str, task_run_id: str | None = None) -> list[AttemptRow]:
        """Attempts of an execution in insertion order, or of one task run by number."""
        sql = f"SELECT {_sql.ATTEMPT_COLS} FROM attempts WHERE execution_id = ?"
        if task_run_id is None:
            rows = await self._rows(sql + " ORDER BY rowid", (execution_id,))
        else:
            sql += " AND task_run_id = ? ORDER BY number"
            rows = await self._rows(sql, (execution_id, task_run_id))
        return [AttemptRow(*r) for r in rows]

    async def history(
        self, execution_id: str, task_run_id: str | EllipsisType | None = ...
    ) -> list[HistoryRow]:
        """State history in insertion order: ``...`` every entry, ``None`` the execution's."""
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
        where: list[str] = []
        params: list[Any] = []
        for col, val in (("execution_id", execution_id), ("task_run_id", task_run_id),
                         ("name", name)):  # fmt: skip
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        rest: dict[str, str] = {}
        for key, value in (tags or {}).items():
            if '"' in key or "\\" in key:
                rest[key] = value  # not expressible as a JSON path: filtered below
                continue
            where.append("json_extract(tags, ?) IS ?")
            params.extend((f'$."{key}"', value))
        sql = (
            f"SELECT {_sql.METRIC_COLS} FROM metrics"
            f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY rowid"
        )
        rows = await self._rows(sql, params)
        out = [MetricRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]
        if rest:
            out = [m for m in out if all(m.tags.get(k) == v for k, v in rest.items())]
        return out

    async def logs(
        self, execution_id: str, task_run_id: str | None = None, *, limit: int | None = None
    ) -> list[LogRow]:
        """Log lines in order (the first ``limit`` of them)."""
        sql = f"SELECT {_sql.LOG_COLS} FROM logs WHERE execution_id = ?"
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
        sql = "SELECT execution_id, task_run_id, data FROM outputs WHERE execution_id = ?"
        return [OutputRow(*r) for r in await self._rows(sql + " ORDER BY rowid", (execution_id,))]

    async def commands_after(self, last_id: int) -> list[CommandRow]:
        """Commands with an id above ``last_id``, in order."""
        sql = (
            "SELECT id, execution_id, kind, payload, created FROM commands WHERE id > ? ORDER BY id"
        )
        return [CommandRow(*r) for r in await self._rows(sql, (last_id,))]

    async def owners(self) -> list[tuple[str, float]]:
        """Registered owners with their last heartbeat."""
        return [(r[0], r[1]) for r in await self._rows("SELECT owner, heartbeat FROM owners")]
