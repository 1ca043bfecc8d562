"""SQLite store: one writer with group commit, a reader connection, an admin connection.

Writers never wait for each other: ``write`` appends its ops to the newest pending batch and
returns that batch's :class:`Commit`; ``write_latest`` keeps only the newest snapshot of a key
until its batch is written. While batches commit, new ops pile up; the writer takes the next
batch (at most ``batch_max`` ops), builds it, and commits it as ONE transaction in the writer
process (several batches in flight, in order) or, with ``writer="thread"``, in aiosqlite's
thread (one hop per batch, not per statement). Migrations and administration (claims,
purges, owners, commands) run on an in-process connection; reads in ``_sqlite_reads``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio
import msgspec

from actorflow._errors import DatabaseInvalid, StorageError, StorageUnavailable
from actorflow.storage import _sql
from actorflow.storage._batch import Batch
from actorflow.storage._procwriter import ProcessWriter, WriterError
from actorflow.storage._rows import (
    ExecutionRow,
    Op,
)
from actorflow.storage._schema import CURRENT_VERSION, migrate
from actorflow.storage._sqlite_reads import SQLiteReads
from actorflow.storage._store import COMMITTED, Commit

T = TypeVar("T")
_PIPELINE = 8  # batches sent to the writer process before the first is acknowledged


class WriterStats(msgspec.Struct, frozen=True):
    """What the writer did so far: transactions committed and ops they held."""

    batches: int
    ops: int
    largest_batch: int


class SQLiteStore(SQLiteReads):
    """The default store: a WAL-mode SQLite file shared by any number of processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_max: int = 1000,
        linger: float = 0.002,
        writer: str | None = None,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, not {batch_max}")
        writer = writer or os.environ.get("ACTORFLOW_SQLITE_WRITER") or "process"
        if writer not in ("process", "thread"):
            raise ValueError(
                f"writer (or ACTORFLOW_SQLITE_WRITER) must be 'process' or 'thread', not {writer!r}"
            )
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
        self._queue: deque[Batch] = deque()
        self._in_flight: deque[Batch] = deque()  # sent, not committed yet (in order)
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
                    try:
                        await self._proc.start()
                    except (OSError, StorageUnavailable) as exc:
                        raise StorageUnavailable(
                            f"{path}: cannot start the SQLite writer process ({exc}); where"
                            " subprocesses are not allowed, write in-process with"
                            " ACTORFLOW_SQLITE_WRITER=thread or SQLiteStore(writer='thread')"
                        ) from exc
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

    def _open_batch(self, size: int) -> Batch:
        """The batch new ops join: the last queued one, or a new one when it is full."""
        queue = self._queue
        if queue:
            batch = queue[-1]
            if not batch.ops or len(batch.ops) + size <= self.batch_max:
                return batch
        batch = Batch(self._wake_writer)
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

    def _committed(self, batch: Batch, ops: int) -> None:
        if self._in_flight and self._in_flight[0] is batch:
            self._in_flight.popleft()
        self._batches += 1
        self._ops += ops
        self._largest = max(self._largest, ops)
        batch.commit.resolve()

    def _acked(
        self, batch: Batch, ops: int, fail: BaseException | None, done: asyncio.Future[None]
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

    async def post_command(
        self, execution_id: str, kind: str, payload: bytes = b"", target: bytes = b""
    ) -> int:
        """Store a pending command for the owning process; durable on return."""
        return await self._admin(
            _sql.execute,
            "INSERT INTO commands (execution_id, kind, payload, created, status, target)"
            " VALUES (?,?,?,?,'pending',?)",
            (execution_id, kind, payload, self.clock(), target),
        )

    async def answer_command(self, command_id: int, status: str, answer: str) -> bool:
        """Consume a pending command once (see :class:`Store`)."""
        return await self._admin(_sql.answer_command, command_id, status, answer, self.clock())

    async def compare_and_write(
        self, execution_id: str, state: str, updated: float, ops: Sequence[Op]
    ) -> bool:
        """Write ``ops`` if the execution's row is unchanged (see :class:`Store`)."""
        await self.flush()
        plan = _sql.plan_batch(ops)
        return await self._admin(_sql.compare_and_write, execution_id, state, updated, plan)

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
