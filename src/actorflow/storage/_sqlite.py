"""SQLite store: one writer with group commit, a reader connection, an admin connection.

Writers never wait for each other: ``write`` appends its ops to the newest pending batch and
returns that batch's :class:`Commit`; ``write_latest`` keeps only the newest snapshot of a key
until its batch is written. While batches commit, new ops pile up; the writer takes the next
batch (at most ``batch_max`` ops), builds it, and commits it as ONE transaction in the writer
process (several batches in flight, in order) or, with ``writer="thread"``, in aiosqlite's
thread (one hop per batch, not per statement). Migrations and administration (claims,
purges, owners, commands) run on an in-process connection; reads in ``_sqlite_reads``.

Failures (see ``_store``): a batch with rows SQLite cannot take for their values commits
without them and names them (``Commit.rejected``, ``on_rejected``); any other failure
stops the store. A write lock held by another connection is waited for, in short attempts
with backoff, up to ``lock_timeout`` seconds (each wait is told to ``on_lock_wait``); past
it the batch fails as storage failure, naming the lock. ``open`` checks the file first
(``_integrity``): truncation, a WAL from another database, a failed ``quick_check`` after a
crash. A ``read_only`` store writes nothing at all: no writer, no migration, no owner, no
``-wal``/``-shm`` it did not find (a WAL-less file is read ``immutable=1`` until a writer
appears).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import math
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio
import msgspec

from actorflow._errors import DatabaseInvalid, StorageError, StorageUnavailable
from actorflow.storage import _sql
from actorflow.storage._batch import Batch, BatchQueue
from actorflow.storage._future import new_future, running_loop, threadsafe_caller
from actorflow.storage._integrity import inspect_file
from actorflow.storage._procwriter import ProcessWriter, Rejection, Unsent, WriterError
from actorflow.storage._rows import (
    ExecutionRow,
    Op,
    PurgeProgress,
    RejectedOp,
)
from actorflow.storage._schema import CURRENT_VERSION, migrate
from actorflow.storage._sqlite_reads import SQLiteReads
from actorflow.storage._store import (
    Commit,
    FailedCallback,
    FencedCallback,
    ProgressCallback,
    RejectedCallback,
)
from actorflow.storage._writer_proc import FENCE, WalRecorder, drop_fenced, mark_clean

T = TypeVar("T")
_PIPELINE = 8  # batches sent to the writer process before the first is acknowledged
_log = logging.getLogger("actorflow.storage")
# Stores of this process by database (real path): a file open here is not read through a
# descriptor of our own (see _integrity.inspect_file).
_OPEN: dict[str, int] = {}


def _split_fenced(
    plan: _sql.Plan, found: Sequence[Rejection]
) -> tuple[_sql.Plan, Sequence[Rejection], list[tuple[str, str]]]:
    """Tell fenced executions (see ``_writer_proc``) from rows rejected for their values,
    whose places are then places in the plan as the transaction ran it."""
    if not any(r[0] == FENCE for r in found):
        return plan, found, []
    fenced: list[tuple[str, str]] = []
    for r in found:
        if r[0] == FENCE:
            ex_id, owner, epoch = str(r[3]).split(" ")
            fenced.append((ex_id, f"claimed by {owner} (epoch {epoch})"))
    ran = drop_fenced(plan, {f[0] for f in fenced})
    return ran, [r for r in found if r[0] != FENCE], fenced


def _rejections(
    plan: _sql.Plan, found: Sequence[Rejection], unsent: Sequence[Unsent]
) -> list[RejectedOp]:
    out = []
    for stmt, row, kind, message in [
        *unsent,
        *((plan[i][0], plan[i][1][r], kind, message) for i, r, kind, message in found),
    ]:
        execution_id, table, key, column = _sql.describe(stmt, row)
        named = f"{table}.{column}"
        where = f" (column {named})" if column and named not in message else ""
        out.append(RejectedOp(execution_id, table, key, f"{kind}: {message}{where}"))
    return out


class WriterStats(msgspec.Struct, frozen=True):
    """What the writer did so far: transactions committed and ops they held, rows left out
    for their values, and how often a write waited for another connection's lock."""

    batches: int
    ops: int
    largest_batch: int
    rejected: int = 0
    lock_waits: int = 0


class SQLiteStore(SQLiteReads, BatchQueue):
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
        lock_timeout: float = 30.0,
    ) -> None:
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, not {batch_max}")
        if not lock_timeout > 0:  # NaN too
            raise ValueError(
                f"lock_timeout must be a positive number of seconds, not {lock_timeout}"
            )
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
        # How long a write waits for a lock another connection (process) holds, in all,
        # before storage is declared failed.
        self.lock_timeout = lock_timeout
        self.clock = clock  # wall time for heartbeats and command stamps (tests age them)
        self.fail_next: BaseException | None = None  # test hook: the next batch raises this
        self.on_rejected: RejectedCallback | None = None
        self.on_failed: FailedCallback | None = None
        self.on_fenced: FencedCallback | None = None
        # Leases held: execution id -> epoch. Every batch that writes one of these checks,
        # in its transaction, that ``fence_owner`` still holds it with that epoch.
        self.fences: dict[str, int] = {}
        self.fence_owner: str | None = None
        # Called on the loop, about every 100 ms, while a write waits for a lock (seconds
        # waited so far): to log it, or for tests to act on it.
        self.on_lock_wait: Callable[[float], None] | None = None
        self._admin_of: _sql.Admin | None = None
        self._registered: str | None = None
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: deque[Batch] = deque()
        self._in_flight: deque[Batch] = deque()  # sent, not committed yet (in order)
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer_done: anyio.Event | None = None  # trio: the writer task ended
        self._failed: BaseException | None = None
        self._refusal: str | None = "store is not open"
        self._batches = self._ops = self._largest = self._rejected = self._lock_waits = 0
        self._warned_wait = False

    @property
    def failed(self) -> BaseException | None:
        """Why the writer stopped, if it did."""
        return self._failed

    @property
    def stats(self) -> WriterStats:
        """Transactions and ops written since open."""
        return WriterStats(
            self._batches, self._ops, self._largest, self._rejected, self._lock_waits
        )

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        """Check the file, migrate it, connect, start the writer (read-only: check, connect)."""
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
        real = os.path.realpath(path)
        # None on trio: aiosqlite and the writer process are asyncio's; there, every SQLite
        # call runs in an anyio worker thread instead (see ThreadConnection).
        loop = self._loop = running_loop()
        call_threadsafe = threadsafe_caller()
        self._lock_waits = 0
        try:
            found = await anyio.to_thread.run_sync(
                functools.partial(inspect_file, path, in_use=_OPEN.get(real, 0) > 0)
            )
            _OPEN[real] = _OPEN.get(real, 0) + 1
            self._registered = real
            if self.read_only:
                if found.version != CURRENT_VERSION:
                    raise StorageError(
                        f"{path}: schema version {found.version} must be migrated to"
                        f" {CURRENT_VERSION}; open it once without read_only"
                    )
                self._reader = await self._connect_reader(found.wal)
            else:

                def told(waited: float) -> None:  # in the connection's thread
                    call_threadsafe(self._lock_waited, waited)

                admin = self._admin_of = _sql.Admin(
                    str(path), self.lock_timeout, WalRecorder(str(path)), told
                )
                self._writer = await self._connect(str(path), True)
                await self._call(self._writer, _migrate, admin)
                self._reader = await self._connect(str(path), False)
                if self.writer == "process" and loop is not None:
                    self._proc = ProcessWriter(path, self.lock_timeout, self._lock_waited)
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
        self._batches = self._ops = self._largest = self._rejected = 0
        if self.read_only:
            self._refusal = "store is opened read-only"
        else:
            self._refusal = None
            # A plain asyncio task (aiosqlite ties the store to asyncio anyway): it belongs to
            # no caller's cancel scope, so a cancelled caller cannot strand queued writes, and
            # open/close may come from different tasks.
            if loop is not None:
                self._task = loop.create_task(self._run_writer())
            else:
                self._writer_done = anyio.Event()
                _spawn_system_task(self._run_writer_then, self._writer_done)

    def _lock_waited(self, waited: float) -> None:
        """A write waits for a lock another connection holds (on the loop)."""
        self._lock_waits += 1
        if waited >= 1.0 and not self._warned_wait:
            self._warned_wait = True
            _log.warning(
                "%s: waiting for a write lock another connection holds (%.1fs so far; giving"
                " up at lock_timeout=%gs)", self.path, waited, self.lock_timeout,
            )  # fmt: skip
        elif waited < 1.0:
            self._warned_wait = False
        if self.on_lock_wait is not None:
            self.on_lock_wait(waited)

    async def _connect(self, target: str, writer: bool) -> aiosqlite.Connection:
        conn: aiosqlite.Connection
        if self._loop is None:
            conn = await ThreadConnection.connect(target)  # type: ignore[assignment]
        else:
            conn = await aiosqlite.connect(
                target, uri=target.startswith("file:"), isolation_level=None
            )
        try:
            await self._call(conn, _sql.setup, writer, self.lock_timeout)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _connect_reader(self, wal: bool) -> aiosqlite.Connection:
        """The read-only connection: it must create nothing beside the file. A file without
        a WAL is read ``immutable=1`` (SQLite would otherwise create -wal and -shm, and fail
        on a read-only directory); the reads switch to a live connection once a writer
        created a WAL (see ``_rows``)."""
        uri = self.path.absolute().as_uri()
        self._static = not wal
        return await self._connect(f"{uri}?{'mode=ro' if wal else 'mode=ro&immutable=1'}", False)

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
            elif self._writer_done is not None:
                self._wake_writer()
                await self._writer_done.wait()
                self._writer_done = None
            wrote = self._writer is not None
            await self._disconnect()
            if wrote and _OPEN.get(os.path.realpath(self.path), 0) == 0:
                # The last connection of every process gone, SQLite deleted the WAL: a WAL
                # found later is not ours (see _integrity). Does nothing if one remains.
                await anyio.to_thread.run_sync(mark_clean, str(self.path))

    async def _disconnect(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.close()
        for conn in (self._reader, self._writer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._reader = self._writer = None
        self._admin_of = None
        real, self._registered = self._registered, None
        if real is not None:
            left = _OPEN.get(real, 1) - 1
            if left > 0:
                _OPEN[real] = left
            else:
                _OPEN.pop(real, None)

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing ------------------------------------------------------------------------
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
        loop = self._loop
        if loop is None:  # trio
            wake = self._wake = new_future()
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                await wake
            return
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
                if self._lingers():
                    # A waiter, a full batch or a refusal ends the linger early; an earlier
                    # batch's acknowledgement wakes the writer too, and must not: batches would
                    # then go as fast as the writer process answers, a few task runs each.
                    deadline = time.monotonic() + self.linger
                    while True:
                        await self._sleep(deadline - time.monotonic())
                        if not self._lingers() or time.monotonic() >= deadline:
                            break
                    if self._failed is not None or not queue:
                        continue
                batch = queue.popleft()
                ops, unbuilt = batch.materialize()
                fail, self.fail_next = self.fail_next, None
                in_flight.append(batch)
                plan = _sql.plan_batch(ops, self.fences, self.fence_owner)
                if self._proc is not None:
                    done, unsent = await self._proc.send(plan, fail)
                    done.add_done_callback(
                        functools.partial(self._acked, batch, len(ops), fail, plan, unsent, unbuilt)
                    )
                else:
                    assert self._admin_of is not None
                    got = await self._call(conn, _sql.run_plan, self._admin_of, plan, fail)
                    ran, found, fenced = _split_fenced(plan, got)
                    self._tell_fenced(fenced)
                    self._committed(batch, len(ops), unbuilt + _rejections(ran, found, ()))
        except BaseException as exc:
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise

    async def _run_writer_then(self, done: anyio.Event) -> None:
        """The writer on trio: a system task (no caller's cancel scope strands queued writes),
        ``done`` set when it ends."""
        try:
            await self._run_writer()
        finally:
            done.set()

    def _committed(self, batch: Batch, ops: int, rejected: list[RejectedOp]) -> None:
        if self._in_flight and self._in_flight[0] is batch:
            self._in_flight.popleft()
        self._batches += 1
        self._ops += ops
        self._largest = max(self._largest, ops)
        left_out = tuple(rejected)
        if left_out:
            self._rejected += len(left_out)
            self._report(left_out)
        batch.commit.resolve(None, left_out)

    def _name(self) -> str:
        return str(self.path)

    def _acked(
        self,
        batch: Batch,
        ops: int,
        fail: BaseException | None,
        plan: _sql.Plan,
        unsent: list[Unsent],
        unbuilt: list[RejectedOp],
        done: asyncio.Future[list[Rejection]],
    ) -> None:
        """A reply of the writer process (they come in the order the batches went)."""
        if done.cancelled():
            return
        # Read even when ignored below: asyncio reports an exception nobody retrieved.
        error = done.exception()
        if self._failed is not None:
            return
        if error is None:
            ran, found, fenced = _split_fenced(plan, done.result())
            self._tell_fenced(fenced)
            self._committed(batch, ops, unbuilt + _rejections(ran, found, unsent))
        else:
            # The test hook's own exception, as in-thread; otherwise what the process said.
            self._fail(fail if fail is not None and isinstance(error, WriterError) else error)
        self._wake_writer()

    def _fail(self, exc: BaseException) -> None:
        """Fail the batches in flight and everything queued; refuse later writes."""
        first = self._failed is None
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
        if first and self.on_failed is not None:
            try:
                self.on_failed(error)
            except Exception:
                _log.exception("%s: on_failed failed", self.path)

    # -- administration: whole transactions on the writer connection -----------------
    async def _admin(self, fn: Callable[..., T], *args: Any) -> T:
        if (
            self._refusal is not None
            or self._failed is not None
            or self._writer is None
            or self._admin_of is None
        ):
            raise self._unavailable()
        try:
            return await self._call(self._writer, fn, self._admin_of, *args)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"{self.path}: {exc}") from exc

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
        ``batch_size`` per transaction (see :meth:`Store.purge`)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        await self.flush()
        if self._reader is None or self._writer is None:
            raise self._unavailable()
        named = set(execution_ids or ())
        wanted = None if states is None else list(states)
        try:
            candidates = await self._call(
                self._writer, _sql.purge_candidates, older_than, list(named), wanted
            )
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"{self.path}: {exc}") from exc
        deleted: list[str] = []
        step = min(batch_size, _sql.CHUNK)
        for batches, start in enumerate(range(0, len(candidates), step), 1):
            chunk = candidates[start : start + step]
            gone = await self._admin(_sql.purge_batch, chunk, named, older_than, wanted)
            deleted.extend(gone)
            if progress is not None:
                done = progress(PurgeProgress(tuple(gone), len(deleted), len(candidates), batches))
                if inspect.isawaitable(done):
                    await done
        return deleted

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

    def command_wakeup(self) -> None:
        """No notifications here: the command loop polls."""
        return None

    async def answer_command(
        self, command_id: int, status: str, answer: str, error: str | None = None
    ) -> bool:
        """Consume a pending command once (see :class:`Store`)."""
        return await self._admin(
            _sql.answer_command, command_id, status, answer, self.clock(), error
        )

    async def compare_and_write(
        self, execution_id: str, state: str, updated: float, ops: Sequence[Op]
    ) -> bool:
        """Write ``ops`` if the execution's row is unchanged (see :class:`Store`)."""
        await self.flush()
        plan = _sql.plan_batch(ops)
        return await self._admin(_sql.compare_and_write, execution_id, state, updated, plan)

    async def register_owner(self, owner: str, ttl: float) -> None:
        """Announce a live runtime process (refused by a read-only store)."""
        await self._admin(
            _sql.execute,
            "INSERT INTO owners (owner, heartbeat, ttl) VALUES (?,?,?) ON CONFLICT(owner)"
            " DO UPDATE SET heartbeat = excluded.heartbeat, ttl = excluded.ttl",
            (owner, self.clock(), ttl),
        )

    async def deploy_flow(
        self, namespace: str, flow_id: str, source: str, revision: int | None = None
    ) -> tuple[int, bool]:
        """Store a flow's source as its next revision unless the latest has the same source."""
        return await self._admin(
            _sql.deploy_flow, namespace, flow_id, source, revision, self.clock()
        )

    async def kv_set(self, namespace: str, key: str, value: str, ttl: float | None = None) -> None:
        """Set ``key`` in ``namespace``'s key-value store (its own transaction; ``ttl``:
        seconds until it expires)."""
        now = self.clock()
        expires = None if ttl is None else now + ttl
        await self._admin(_sql.kv_write, namespace, key, value, expires, now)

    async def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; False when there was none (or it had expired)."""
        return await self._admin(_sql.kv_write, namespace, key, None, None, self.clock())

    async def claim_fire(
        self, trigger: str, fire: str, tick: float, execution_id: str | None, owner: str
    ) -> bool:
        """Record one fire of a trigger unless it is recorded already; True if this call did."""
        return await self._admin(
            _sql.claim_fire, trigger, fire, tick, execution_id, owner, self.clock()
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
        now = self.clock()
        rows = await self._admin(
            _sql.claim, owner, list(terminal_states), now - stale_after, now + stale_after
        )
        return [ExecutionRow(*r) for r in rows]

    # -- the work queue ----------------------------------------------------------------
    async def claimable(self, limit: int) -> list[ExecutionRow]:
        """Unfinished executions no live lease holds, oldest first (those waiting for a
        worker that can load their flow last), at most ``limit``."""
        rows = [
            ExecutionRow(*r) for r in await self._rows(_sql.CLAIMABLE_SQL, (self.clock(), limit))
        ]
        rows.sort(key=lambda r: (r.waiting is not None, r.created, r.id))
        return rows

    async def claim_queued(
        self,
        owner: str,
        ids: Sequence[str],
        lease_ttl: float,
        waiting: Sequence[tuple[str, str]] = (),
    ) -> list[ExecutionRow]:
        """Atomically lease each of ``ids`` no live lease holds to ``owner`` for
        ``lease_ttl`` s with a new epoch (its fencing token), and mark ``waiting`` (id, why);
        returns the rows taken."""
        now = self.clock()
        rows = await self._admin(
            _sql.claim_queued, owner, list(ids), list(waiting), now, now + lease_ttl
        )
        return [ExecutionRow(*r) for r in rows]

    async def take_slot(self, execution_id: str, namespace: str, flow_id: str, limit: int) -> bool:
        """Give an execution one of its flow's concurrency slots if one is free and no older
        one waits QUEUED (see :class:`Store`)."""
        await self.flush()
        return await self._admin(_sql.take_slot, execution_id, namespace, flow_id, limit)

    async def renew_leases(self, owner: str, lease_ttl: float) -> list[str]:
        """Heartbeat ``owner`` and extend every lease it holds; returns their ids."""
        now = self.clock()
        return await self._admin(_sql.renew_leases, owner, now + lease_ttl, now)

    async def release_leases(self, owner: str, ids: Sequence[str] | None = None) -> int:
        """Put ``owner``'s unfinished executions (or ``ids`` of them) back in the queue."""
        await self.flush()
        return await self._admin(_sql.release_leases, owner, None if ids is None else list(ids))


def _spawn_system_task(fn: Callable[..., Any], *args: Any) -> None:
    import trio

    trio.lowlevel.spawn_system_task(fn, *args)


class ThreadConnection:
    """The few calls the store makes of an ``aiosqlite.Connection``, for backends other than
    asyncio (trio): each call runs in an anyio worker thread, one at a time per connection.

    ``_execute(fn, *args)`` and ``_conn`` are the names the store's ``_call`` uses on both.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._limiter = anyio.CapacityLimiter(1)  # one statement at a time, like aiosqlite

    @classmethod
    async def connect(cls, target: str) -> ThreadConnection:
        conn = await anyio.to_thread.run_sync(
            functools.partial(
                sqlite3.connect,
                target,
                uri=target.startswith("file:"),
                isolation_level=None,
                check_same_thread=False,  # the calls are serialized, in whichever worker thread
            )
        )
        return cls(conn)

    async def _execute(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiter)

    async def close(self) -> None:
        await self._execute(self._conn.close)


def _migrate(conn: sqlite3.Connection, admin: _sql.Admin) -> int:
    """Migrate (waiting for the write lock like any write) and record the WAL."""
    old = migrate(conn, admin.where, admin.lock_timeout)
    if admin.recorder is not None:
        admin.recorder.after_write()
    return old
