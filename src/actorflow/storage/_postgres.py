"""PostgreSQL store (asyncpg): the SQLite store's semantics on a database many hosts share.

One writer connection commits batches with group commit, exactly as the SQLite writer does
(``_batch``: ``write`` joins the newest pending batch, ``write_latest`` keeps the newest item
of a key, a waiter ends the linger): a batch is ONE transaction of ``executemany`` calls,
batches commit one after the other in the order they were queued (one asyncpg connection
runs one thing at a time; while it commits, the next batch grows). Rows PostgreSQL refuses
for their values are left out and named (``Commit.rejected``) after the batch is run again
in savepoints; any other failure stops the store (see ``_store``).

A lost connection is not a failure until it lasts: the writer, each read and each
administrative call make a new connection with jittered backoff (``_pg_link``) for up to
``lock_timeout`` seconds, while later writes queue up behind the batch in order and their
waiters wait; only past that bound do they get :class:`StorageUnavailable` (and the store
stops, as SQLite's does past its lock wait). A transaction whose COMMIT the loss cut off is
looked up by its id (``txid_status``) before anything runs again, so nothing is applied twice
or lost; the fence check of the batch run again drops what another worker took meanwhile.
Every connection carries ``idle_in_transaction_session_timeout`` (``idle_timeout``), a
``statement_timeout`` and TCP keepalives, so a stopped or vanished process holds no row lock
for long and a cut link is noticed within seconds.

Reads and administration (claims, purges, owners, commands, flows, fires) run on a small
pool of other connections, each administrative call one transaction. Claims take rows
``FOR UPDATE SKIP LOCKED``. A batch that writes executions this process holds leases of
(``fences``) first locks their rows and checks the stored lease, so a claim by another
host either commits before it (and the batch drops those rows, see ``on_fenced``) or
waits until it committed. ``post_command`` sends a NOTIFY that :meth:`command_wakeup`
hears on a connection of its own (LISTEN), so the owner need not poll.

asyncpg is imported only here, when a ``postgresql://`` store is made: embedding users
without the ``postgres`` extra are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

from actorflow._errors import StorageError, StorageUnavailable
from actorflow.storage import _pg_sql as _q
from actorflow.storage import _sql
from actorflow.storage._batch import Batch, BatchQueue
from actorflow.storage._pg_link import (
    BACKOFF_MAX,
    CONNECT_TIMEOUT,
    Backoff,
    is_lost,
    server_settings,
    set_keepalive,
)
from actorflow.storage._pg_schema import CURRENT_PG_VERSION, migrate, read_version
from actorflow.storage._rows import (
    AttemptRow,
    CommandRow,
    ExecutionRow,
    FlowRow,
    HistoryRow,
    KVRow,
    LogRow,
    MetricRow,
    Op,
    OutputRow,
    PurgeProgress,
    QuarantineRow,
    RejectedOp,
    TaskRunRow,
)
from actorflow.storage._sqlite import WriterStats
from actorflow.storage._store import (
    Commit,
    FailedCallback,
    FencedCallback,
    ProgressCallback,
    RejectedCallback,
)
from actorflow.storage._writer_proc import FENCE, drop_fenced

if TYPE_CHECKING:
    import asyncpg

_log = logging.getLogger("actorflow.storage")
POLL = 0.2  # how often a command waiter looks when it cannot listen (lost connection)
T = TypeVar("T")


def is_postgres_url(text: str) -> bool:
    """A ``postgresql://`` or ``postgres://`` URL (what selects this store)."""
    return text.startswith(("postgresql://", "postgres://"))


def redact(dsn: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StorageError(
            "a postgresql:// database needs asyncpg: pip install 'actorflow[postgres]'"
        ) from exc
    return asyncpg


class CommandListener:
    """Wakes the owner's command loop when a command is posted (LISTEN on its own
    connection); polls every :data:`POLL` seconds while it cannot listen."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._event = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._retry_at = 0.0
        self._backoff = Backoff(POLL, BACKOFF_MAX)
        self.closed = False

    @property
    def listening(self) -> bool:
        """Whether notifications arrive now (else the waiter polls)."""
        return self._conn is not None and not self._conn.is_closed()

    def _notified(self, *_: object) -> None:
        self._event.set()

    def _lost(self, *_: object) -> None:
        self._conn = None
        self._event.set()  # look now: what was posted meanwhile was not heard

    async def _listen(self) -> None:
        now = time.monotonic()
        if self.closed or now < self._retry_at:
            return
        try:
            conn = await self._store._connect()
            await conn.add_listener(_q.COMMANDS_CHANNEL, self._notified)
        except Exception as exc:
            self._retry_at = now + self._backoff.next()
            _log.debug("cannot LISTEN for commands (%s); polling", exc)
            return
        conn.add_termination_listener(self._lost)
        self._conn = conn
        self._backoff.reset()
        # Commands posted before we listened (or while the connection was down) were not
        # heard: the waiter looks once now.
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Until a command may have been posted, or ``timeout`` seconds."""
        if not self.listening:
            await self._listen()
            if not self.listening:
                timeout = min(timeout, POLL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    async def close(self) -> None:
        self.closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)


class PostgresStore(BatchQueue):
    """A PostgreSQL database (``postgresql://user@host/db``) any number of hosts share.

    ``lock_timeout``: seconds a write waits for a row lock another session holds, and how
    long any call waits for a lost connection to come back before StorageUnavailable.
    ``statement_timeout``: seconds one statement may run on the server (migrations have no
    bound). ``idle_timeout``: the server ends a session idle that long inside a
    transaction (a stopped process), rolling it back and freeing its locks.
    """

    def __init__(
        self,
        dsn: str,
        *,
        batch_max: int = 1000,
        linger: float = 0.002,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        lock_timeout: float = 30.0,
        pool_size: int = 4,
        statement_timeout: float = 300.0,
        idle_timeout: float = 10.0,
    ) -> None:
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, not {batch_max}")
        for name, value in (
            ("lock_timeout", lock_timeout),
            ("statement_timeout", statement_timeout),
            ("idle_timeout", idle_timeout),
        ):
            if not value > 0:  # NaN too
                raise ValueError(f"{name} must be a positive number of seconds, not {value}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        self.dsn = dsn
        self.where = redact(dsn)
        self.batch_max = batch_max
        self.linger = linger  # as SQLiteStore: how long a batch without a waiter may grow
        self.read_only = read_only
        # How long a write waits for a lock another session holds (PostgreSQL's
        # lock_timeout) and, as SQLite's writer waits for a busy file, how long any call
        # waits for a lost connection to come back before it raises StorageUnavailable.
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout  # one statement at most, on the server
        # The server ends a session idle this long inside a transaction (a stopped process).
        self.idle_timeout = idle_timeout
        #: Test hook: awaited inside each batch's transaction, after its fence check locked
        #: the rows of the leases it writes (a test holds a transaction open with it).
        self.in_transaction: Callable[[], Awaitable[None]] | None = None
        #: Writer connections made again after a loss, since open.
        self.reconnects = 0
        #: Attempts waiting in :meth:`outage` for the writer's connection to come back.
        self.paused = 0
        #: Test hook: called on the loop whenever :attr:`lost` or :attr:`paused` changes, so
        #: a test waits for the state it needs instead of polling.
        self.on_change: Callable[[], None] | None = None
        self._outage: asyncio.Event | None = None  # set while the writer's connection is lost
        self.pool_size = pool_size
        self.clock = clock
        self.fail_next: BaseException | None = None  # test hook: the next batch raises this
        self.on_rejected: RejectedCallback | None = None
        self.on_failed: FailedCallback | None = None
        self.on_fenced: FencedCallback | None = None
        # Leases held: execution id -> epoch. Every batch that writes one of these checks,
        # in its transaction, that ``fence_owner`` still holds it with that epoch.
        self.fences: dict[str, int] = {}
        self.fence_owner: str | None = None
        self._writer: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._listener: CommandListener | None = None
        self._queue: deque[Batch] = deque()
        self._in_flight: Batch | None = None
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._refusal: str | None = "store is not open"
        self._batches = self._ops = self._largest = self._rejected = 0
        #: Batches run again because a deadlock with another session rolled them back.
        self.conflicts = 0

    @property
    def failed(self) -> BaseException | None:
        """Why the writer stopped, if it did."""
        return self._failed

    @property
    def stats(self) -> WriterStats:
        """Transactions and ops written since open (as :attr:`SQLiteStore.stats`)."""
        return WriterStats(self._batches, self._ops, self._largest, self._rejected)

    # -- lifecycle ---------------------------------------------------------------------
    def _settings(self) -> dict[str, str]:
        return server_settings(
            lock_timeout=self.lock_timeout,
            statement_timeout=self.statement_timeout,
            idle_timeout=self.idle_timeout,
            read_only=self.read_only,
        )

    async def _connect(self) -> asyncpg.Connection:
        asyncpg = _import_asyncpg()
        conn = await asyncpg.connect(
            self.dsn, server_settings=self._settings(), timeout=CONNECT_TIMEOUT
        )
        set_keepalive(conn)
        return conn

    async def open(self) -> None:
        """Connect, migrate (read-only: check the version), start the writer."""
        if self._pool is not None:
            return
        asyncpg = _import_asyncpg()
        try:
            if not self.read_only:
                self._writer = await self._connect()
                # A migration rewrites whole tables: no per-statement bound for it.
                await self._writer.execute("SET statement_timeout = 0")
                await migrate(self._writer, self.where)
                await self._writer.execute("RESET statement_timeout")
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.pool_size, init=_pool_init,
                server_settings=self._settings(), timeout=CONNECT_TIMEOUT,
            )  # fmt: skip
            if self.read_only:
                async with self._pool.acquire() as conn:
                    version = await read_version(conn, self.where)
                if version != CURRENT_PG_VERSION:
                    raise StorageError(
                        f"{self.where}: schema version {version} must be migrated to"
                        f" {CURRENT_PG_VERSION}; open it once without read_only"
                    )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self._disconnect()
            raise StorageUnavailable(f"{self.where}: cannot open the database ({exc})") from exc
        except BaseException:
            await self._disconnect()
            raise
        self._failed = None
        self._batches = self._ops = self._largest = self._rejected = 0
        if self.read_only:
            self._refusal = "store is opened read-only"
        else:
            self._refusal = None
            # A plain asyncio task, as SQLite's writer: no caller's cancel scope can strand
            # queued writes.
            self._task = asyncio.get_running_loop().create_task(self._run_writer())

    async def close(self) -> None:
        """Commit everything queued, stop the writer, disconnect."""
        if self._pool is None and self._writer is None:
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
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.close(timeout=5)
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def command_wakeup(self) -> CommandListener | None:
        """What the owner's command loop waits on instead of sleeping (LISTEN/NOTIFY)."""
        if self.read_only or self._pool is None:
            return None
        if self._listener is None:
            self._listener = CommandListener(self)
        return self._listener

    # -- writing ------------------------------------------------------------------------
    def _unavailable(self) -> StorageUnavailable:
        if self._failed is not None:
            return StorageUnavailable(f"{self.where}: storage failed earlier: {self._failed}")
        return StorageUnavailable(f"{self.where}: {self._refusal}")

    def _last_commit(self) -> Commit | None:
        if self._queue:
            return self._queue[-1].commit
        return self._in_flight.commit if self._in_flight is not None else None

    def _wake_writer(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _sleep(self, timeout: float | None) -> None:
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
        queue = self._queue
        try:
            while self._failed is None:
                if not queue:
                    if self._refusal is not None:
                        return
                    await self._sleep(None)
                    continue
                if self._lingers():
                    await self._sleep(self.linger)
                    if self._failed is not None or not queue:
                        continue
                batch = queue.popleft()
                self._in_flight = batch
                ops, unbuilt = batch.materialize()
                fail, self.fail_next = self.fail_next, None
                plan = _sql.plan_batch(ops, self.fences, self.fence_owner)
                rejected, fenced = await self._commit(plan, fail)
                self._in_flight = None
                self._tell_fenced(fenced)
                self._committed(batch, len(ops), unbuilt + rejected)
        except BaseException as exc:
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise

    @property
    def lost(self) -> bool:
        """Whether the writer's connection is lost now (it is being made again)."""
        return self._outage is not None

    def outage(self) -> Awaitable[None] | None:
        """While the writer's connection is lost, what to await until it is back (raises
        StorageUnavailable if the store stopped instead); None otherwise. The runtime awaits
        it before each task attempt runs, so a worker cut off does nothing it could not
        store (and might be fenced for)."""
        event = self._outage
        return None if event is None else self._paused_until(event)

    async def _paused_until(self, event: asyncio.Event) -> None:
        self.paused += 1
        self._changed()
        try:
            await event.wait()
        finally:
            self.paused -= 1
            self._changed()
        if self._failed is not None:  # given up (past lock_timeout): the attempt must not run
            raise self._unavailable()

    def _reachable(self) -> None:
        event, self._outage = self._outage, None
        if event is not None:
            event.set()
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def _commit(
        self, plan: _sql.Plan, fail: BaseException | None
    ) -> tuple[list[RejectedOp], list[tuple[str, str]]]:
        try:
            return await self._commit_once(plan, fail)
        finally:
            self._reachable()

    async def _commit_once(
        self, plan: _sql.Plan, fail: BaseException | None
    ) -> tuple[list[RejectedOp], list[tuple[str, str]]]:
        """Commit ``plan`` exactly once, whatever happens to the connection meanwhile.

        A lost connection is made again (with backoff) and the batch run again, for at most
        ``lock_timeout`` seconds; meanwhile later batches queue up behind it in order and
        their waiters keep waiting. Past that the store stops as SQLite's does past its
        lock wait (:class:`StorageUnavailable` to every waiter, nothing half-applied).

        A loss during COMMIT leaves the outcome unknown. We ask the server: the batch's
        transaction id, read just before COMMIT, and ``txid_status`` on the next connection
        say whether it committed (done: its waiters are answered), aborted (run it again)
        or is still in progress (the old session lives on, e.g. behind a cut link: wait
        until it ends, at the latest when ``idle_timeout`` ends it). The rows are not made
        idempotent instead: history, logs and metrics are appends (a second run would store
        each twice), and the fence check cannot tell either, since a committed batch
        leaves the epoch we hold unchanged.
        """
        tx = _Tx()
        lost_at: float | None = None
        backoff = Backoff()
        while True:
            try:
                conn = await self._writer_connection()
                if tx.xid is not None:
                    if await _committed(conn, tx.xid):
                        done: tuple[list[RejectedOp], list[tuple[str, str]]] = tx.result
                        return done
                    tx = _Tx()  # rolled back whole: run it again
                result = await _run_plan(
                    conn, plan, fail, self._conflicted, tx, self.in_transaction
                )
            except Exception as exc:
                if exc is fail or not is_lost(exc):  # the test hook's failure is final
                    raise
                if not isinstance(exc, _StillRunning):
                    self._drop_writer()
                if not tx.committing:
                    tx = _Tx()  # COMMIT was never sent: the server rolled it back
                elif tx.xid is None:
                    wrote_nothing: tuple[list[RejectedOp], list[tuple[str, str]]] = tx.result
                    return wrote_nothing  # nothing to apply or repeat
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    self._outage = asyncio.Event()
                    self._changed()
                    _log.warning(
                        "%s: the writer's connection is lost (%s); writes wait for it to come"
                        " back (at most lock_timeout=%gs)", self.where, exc, self.lock_timeout,
                    )  # fmt: skip
                left = lost_at + self.lock_timeout - now
                if left <= 0:
                    raise StorageUnavailable(
                        f"{self.where}: the database could not be reached for lock_timeout="
                        f"{self.lock_timeout:g}s ({exc})"
                    ) from exc
                await asyncio.sleep(min(backoff.next(), left))
                continue
            if lost_at is not None:
                _log.warning(
                    "%s: the writer reconnected after %.1fs; queued writes are committed",
                    self.where, time.monotonic() - lost_at,
                )  # fmt: skip
            return result

    async def _writer_connection(self) -> asyncpg.Connection:
        """The writer's connection, made again if it was lost."""
        conn = self._writer
        if conn is not None and not conn.is_closed():
            return conn
        self._writer = None
        conn = await self._connect()
        self._writer = conn
        self.reconnects += 1
        return conn

    def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # its socket may hang (a cut link): do not wait for a goodbye

    def _conflicted(self) -> None:
        self.conflicts += 1

    def _committed(self, batch: Batch, ops: int, rejected: list[RejectedOp]) -> None:
        self._batches += 1
        self._ops += ops
        self._largest = max(self._largest, ops)
        left_out = tuple(rejected)
        if left_out:
            self._rejected += len(left_out)
            self._report(left_out)
        batch.commit.resolve(None, left_out)

    def _name(self) -> str:
        return self.where

    def _fail(self, exc: BaseException) -> None:
        """Fail the batch in flight and everything queued; refuse later writes."""
        first = self._failed is None
        self._failed = exc
        error = StorageUnavailable(
            f"{self.where}: a write failed, storage stopped so nothing is lost silently: {exc}"
        )
        batches = [*([self._in_flight] if self._in_flight is not None else []), *self._queue]
        self._in_flight = None
        self._queue.clear()
        for batch in batches:
            batch.commit.resolve(error)
        self._wake_writer()
        if first and self.on_failed is not None:
            try:
                self.on_failed(error)
            except Exception:
                _log.exception("%s: on_failed failed", self.where)

    # -- reads --------------------------------------------------------------------------
    async def _rows(self, sql: str, *params: Any) -> list[Any]:
        pool = self._pool
        if pool is None:
            raise StorageError(f"{self.where}: store is not open")
        acquire = pool.acquire
        asyncpg = _import_asyncpg()
        lost: _Lost | None = None
        while True:
            try:
                async with acquire() as conn:
                    try:
                        return list(await conn.fetch(sql, *params))
                    except Exception as exc:
                        if is_lost(exc):
                            conn.terminate()  # the pool makes a new one at the next acquire
                        raise
            except Exception as exc:
                # A read is safe to repeat: on a lost connection, wait for another one.
                if is_lost(exc) and pool is self._pool:
                    lost = lost or _Lost(self, "read")
                    await lost.wait(exc)
                    continue
                if isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
                    raise StorageUnavailable(f"{self.where}: cannot read ({exc})") from exc
                raise

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        """One execution row."""
        rows = await self._rows(
            f"SELECT {_q.EXEC_COLS} FROM executions WHERE id = $1", execution_id
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
        """Executions filtered by flow, namespace, states and creation time [since, until)."""
        where: list[str] = []
        params: list[Any] = []
        for clause, val in (
            ("flow_id = $", flow_id),
            ("namespace = $", namespace),
            ("created >= $", since),
            ("created < $", until),
        ):
            if val is not None:
                params.append(val)
                where.append(f"{clause}{len(params)}")
        if states is not None:
            params.append(list(states))
            where.append(f"state = ANY(${len(params)}::text[])")
        order = "DESC" if newest_first else "ASC"
        n = len(params)
        sql = (
            f"SELECT {_q.EXEC_COLS} FROM executions"
            f"{' WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY created {order}, id {order} LIMIT ${n + 1} OFFSET ${n + 2}"
        )
        return [ExecutionRow(*r) for r in await self._rows(sql, *params, limit, offset)]

    async def unfinished_executions(self, terminal_states: Collection[str]) -> list[ExecutionRow]:
        """Executions not in a terminal state, oldest first, quarantined ones left out."""
        sql = (
            f"SELECT {_q.EXEC_COLS} FROM executions WHERE NOT (state = ANY($1::text[]))"
            " AND id NOT IN (SELECT execution_id FROM quarantine) ORDER BY created, id"
        )
        return [ExecutionRow(*r) for r in await self._rows(sql, list(terminal_states))]

    async def quarantined(self) -> list[QuarantineRow]:
        """Quarantined executions with the reason, oldest first."""
        sql = "SELECT execution_id, reason, ts FROM quarantine ORDER BY ts, execution_id"
        return [QuarantineRow(*r) for r in await self._rows(sql)]

    async def task_runs(self, execution_id: str) -> list[TaskRunRow]:
        """Task runs of an execution in creation order."""
        sql = f"SELECT {_q.TR_COLS} FROM task_runs WHERE execution_id = $1 ORDER BY created, seq"
        return [TaskRunRow(*r) for r in await self._rows(sql, execution_id)]

    async def task_runs_of(self, execution_ids: Sequence[str]) -> dict[str, list[TaskRunRow]]:
        """Task runs of many executions, by execution, each in creation order."""
        out: dict[str, list[TaskRunRow]] = {i: [] for i in execution_ids}
        ids = list(out)
        for start in range(0, len(ids), 5000):
            sql = (
                f"SELECT {_q.TR_COLS} FROM task_runs WHERE execution_id = ANY($1::text[])"
                " ORDER BY execution_id, created, seq"
            )
            for r in await self._rows(sql, ids[start : start + 5000]):
                out[r[1]].append(TaskRunRow(*r))
        return out

    async def attempts(self, execution_id: str, task_run_id: str | None = None) -> list[AttemptRow]:
        """Attempts of an execution in insertion order, or of one task run by number."""
        sql = f"SELECT {_sql.ATTEMPT_COLS} FROM attempts WHERE execution_id = $1"
        if task_run_id is None:
            rows = await self._rows(sql + " ORDER BY seq", execution_id)
        else:
            sql += " AND task_run_id = $2 ORDER BY number"
            rows = await self._rows(sql, execution_id, task_run_id)
        return [AttemptRow(*r) for r in rows]

    async def history(
        self, execution_id: str, task_run_id: str | EllipsisType | None = ...
    ) -> list[HistoryRow]:
        """State history in insertion order: ``...`` every entry, ``None`` the execution's."""
        sql = (
            "SELECT execution_id, task_run_id, state, ts FROM state_history WHERE execution_id = $1"
        )
        params: list[Any] = [execution_id]
        if task_run_id is None:
            sql += " AND task_run_id IS NULL"
        elif not isinstance(task_run_id, EllipsisType):
            sql += " AND task_run_id = $2"
            params.append(task_run_id)
        return [HistoryRow(*r) for r in await self._rows(sql + " ORDER BY seq", *params)]

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
                params.append(val)
                where.append(f"{col} = ${len(params)}")
        if tags:
            # Tags are canonical JSON text (the key column); containment tests a subset.
            params.append(json.dumps(dict(tags)))
            where.append(f"tags::jsonb @> ${len(params)}::jsonb")
        sql = (
            f"SELECT {_sql.METRIC_COLS} FROM metrics"
            f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY seq"
        )
        rows = await self._rows(sql, *params)
        return [MetricRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    async def logs(
        self, execution_id: str, task_run_id: str | None = None, *, limit: int | None = None
    ) -> list[LogRow]:
        """Log lines in order (the first ``limit`` of them)."""
        sql = f"SELECT {_sql.LOG_COLS} FROM logs WHERE execution_id = $1"
        params: list[Any] = [execution_id]
        if task_run_id is not None:
            params.append(task_run_id)
            sql += " AND task_run_id = $2"
        sql += " ORDER BY seq"
        if limit is not None:
            params.append(limit)
            sql += f" LIMIT ${len(params)}"
        return [LogRow(*r) for r in await self._rows(sql, *params)]

    async def outputs(self, execution_id: str) -> list[OutputRow]:
        """Outputs of every task run of an execution."""
        sql = "SELECT execution_id, task_run_id, data FROM outputs WHERE execution_id = $1"
        return [OutputRow(*r) for r in await self._rows(sql + " ORDER BY seq", execution_id)]

    async def commands_after(self, last_id: int) -> list[CommandRow]:
        """Commands with an id above ``last_id``, in order."""
        sql = f"SELECT {_q.COMMAND_COLS} FROM commands WHERE id > $1 ORDER BY id"
        return [CommandRow(*r) for r in await self._rows(sql, last_id)]

    async def get_command(self, command_id: int) -> CommandRow | None:
        """One command with its status and answer."""
        sql = f"SELECT {_q.COMMAND_COLS} FROM commands WHERE id = $1"
        rows = await self._rows(sql, command_id)
        return CommandRow(*rows[0]) if rows else None

    async def pending_commands(self, owner: str) -> list[CommandRow]:
        """Pending commands of the executions ``owner`` owns, oldest first."""
        cols = ", ".join(f"c.{c.strip()}" for c in _q.COMMAND_COLS.split(","))
        sql = (
            f"SELECT {cols} FROM commands c JOIN executions e ON e.id = c.execution_id"
            " WHERE c.status = 'pending' AND e.owner = $1 ORDER BY c.id"
        )
        return [CommandRow(*r) for r in await self._rows(sql, owner)]

    async def owners(self) -> list[tuple[str, float]]:
        """Registered owners with their last heartbeat."""
        return [(r[0], r[1]) for r in await self._rows("SELECT owner, heartbeat FROM owners")]

    async def flows(self, namespace: str | None = None) -> list[FlowRow]:
        """The latest revision of every deployed flow (of ``namespace``)."""
        sql = (
            "SELECT DISTINCT ON (namespace, id) namespace, id, revision, source, created FROM flows"
        )
        params: tuple[Any, ...] = ()
        if namespace:
            sql += " WHERE namespace = $1"
            params = (namespace,)
        sql += " ORDER BY namespace, id, revision DESC"
        return [FlowRow(*r) for r in await self._rows(sql, *params)]

    async def flow_revision(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRow | None:
        """One deployed revision (the latest when ``revision`` is None)."""
        sql = (
            "SELECT namespace, id, revision, source, created FROM flows"
            " WHERE namespace = $1 AND id = $2"
        )
        params: tuple[Any, ...] = (namespace, flow_id)
        if revision is not None:
            sql += " AND revision = $3"
            params += (revision,)
        rows = await self._rows(sql + " ORDER BY revision DESC LIMIT 1", *params)
        return FlowRow(*rows[0]) if rows else None

    async def last_tick(self, trigger: str) -> float | None:
        """The latest recorded fire's tick of a trigger, or None."""
        rows = await self._rows("SELECT max(tick) FROM trigger_fires WHERE trigger = $1", trigger)
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def unstarted_fires(self, stale_after: float) -> list[tuple[str, str, float, str]]:
        """Fires whose execution was never stored and whose owner is gone."""
        rows = await self._rows(
            "SELECT trigger, fire, tick, execution_id FROM trigger_fires f"
            " WHERE execution_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.id = f.execution_id)"
            " AND (owner IS NULL OR owner NOT IN"
            "  (SELECT owner FROM owners WHERE heartbeat >= $1)) ORDER BY tick",
            self.clock() - stale_after,
        )
        return [(r[0], r[1], float(r[2]), r[3]) for r in rows]

    # -- administration: one transaction each, on a pool connection ---------------------
    async def _admin(self, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``body`` in one transaction on a pool connection, once; refused like a write
        when writes are.

        On a lost connection it runs again on another one, for at most ``lock_timeout``
        seconds, unless its COMMIT was cut off: then the server says whether it committed
        (see :meth:`_commit`), so a claim or a posted command is never applied twice.
        """
        if self._refusal is not None or self._failed is not None or self._pool is None:
            raise self._unavailable()
        pool = self._pool
        asyncpg = _import_asyncpg()
        tx = _Tx()
        lost: _Lost | None = None
        while True:
            try:
                async with pool.acquire() as conn:
                    if tx.xid is not None:
                        if await _committed(conn, tx.xid):
                            return tx.result  # type: ignore[no-any-return]
                        tx = _Tx()
                    try:
                        async with conn.transaction():
                            result = await body(conn)
                            await tx.before_commit(conn, result)
                    except Exception as exc:
                        if is_lost(exc):
                            conn.terminate()  # the pool makes a new one at the next acquire
                        raise
                    return result
            except Exception as exc:
                if is_lost(exc) and pool is self._pool:
                    if not tx.committing:
                        tx = _Tx()
                    elif tx.xid is None:
                        return tx.result  # type: ignore[no-any-return]
                    lost = lost or _Lost(self, "write")
                    await lost.wait(exc)
                    continue
                if isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
                    raise StorageUnavailable(f"{self.where}: {exc}") from exc
                raise

    async def kv_get(self, namespace: str, key: str) -> KVRow | None:
        """The entry ``key`` of ``namespace``, None if absent or expired."""
        rows = await self._rows(
            "SELECT namespace, key, value, updated, expires FROM kv WHERE namespace = $1"
            " AND key = $2 AND (expires IS NULL OR expires > $3)",
            namespace, key, self.clock(),
        )  # fmt: skip
        return KVRow(*rows[0]) if rows else None

    async def kv_keys(self, namespace: str) -> list[KVRow]:
        """Every live entry of ``namespace``, by key."""
        rows = await self._rows(
            "SELECT namespace, key, value, updated, expires FROM kv WHERE namespace = $1"
            " AND (expires IS NULL OR expires > $2) ORDER BY key",
            namespace, self.clock(),
        )  # fmt: skip
        return [KVRow(*r) for r in rows]

    async def kv_set(self, namespace: str, key: str, value: str, ttl: float | None = None) -> None:
        """Set ``key`` in ``namespace``'s key-value store (its own transaction; ``ttl``:
        seconds until it expires)."""
        now = self.clock()
        expires = None if ttl is None else now + ttl

        async def body(conn: asyncpg.Connection) -> Any:
            await conn.execute(
                "INSERT INTO kv (namespace, key, value, updated, expires) VALUES ($1,$2,$3,$4,$5)"
                " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,"
                " updated = excluded.updated, expires = excluded.expires",
                namespace, key, value, now, expires,
            )  # fmt: skip

        await self._admin(body)

    async def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; False when there was none (or it had expired)."""

        async def body(conn: asyncpg.Connection) -> Any:
            expires = await conn.fetch(
                "DELETE FROM kv WHERE namespace = $1 AND key = $2 RETURNING expires",
                namespace, key,
            )  # fmt: skip
            return expires

        expires = await self._admin(body)
        now = self.clock()
        return any(r[0] is None or r[0] > now for r in expires)

    async def post_command(
        self, execution_id: str, kind: str, payload: bytes = b"", target: bytes = b""
    ) -> int:
        """Store a pending command for the owning process and NOTIFY it; durable on return."""

        async def body(conn: asyncpg.Connection) -> Any:
            command_id: int = await conn.fetchval(
                "INSERT INTO commands (execution_id, kind, payload, created, status, target)"
                " VALUES ($1,$2,$3,$4,'pending',$5) RETURNING id",
                execution_id, kind, payload, self.clock(), target,
            )  # fmt: skip
            # Delivered at commit, to every listening host (the owner among them).
            await conn.execute("SELECT pg_notify($1, $2)", _q.COMMANDS_CHANNEL, str(command_id))
            return command_id

        command_id: int = await self._admin(body)
        return command_id

    async def answer_command(
        self, command_id: int, status: str, answer: str, error: str | None = None
    ) -> bool:
        """Consume a pending command once (see :class:`Store`)."""

        async def body(conn: asyncpg.Connection) -> Any:
            done: str = await conn.execute(
                "UPDATE commands SET status = $1, answer = $2, answered = $3, error = $4"
                " WHERE id = $5 AND status = 'pending'",
                status, answer, self.clock(), error, command_id,
            )  # fmt: skip
            return done

        done: str = await self._admin(body)
        return done == "UPDATE 1"

    async def compare_and_write(
        self, execution_id: str, state: str, updated: float, ops: Sequence[Op]
    ) -> bool:
        """Write ``ops`` if the execution's row is unchanged (see :class:`Store`)."""
        await self.flush()
        plan = _sql.plan_batch(ops)

        async def body(conn: asyncpg.Connection) -> Any:
            # FOR UPDATE: a concurrent compare-and-write waits here, then sees our change.
            row = await conn.fetchrow(
                "SELECT state, updated FROM executions WHERE id = $1 FOR UPDATE", execution_id
            )
            if row is None or row[0] != state or row[1] != updated:
                return False
            for stmt, rows in plan:
                await conn.executemany(_q.STATEMENTS[stmt], rows)
            return True

        return bool(await self._admin(body))

    async def register_owner(self, owner: str, ttl: float) -> None:
        """Announce a live runtime process."""

        async def body(conn: asyncpg.Connection) -> Any:
            await conn.execute(
                "INSERT INTO owners (owner, heartbeat, ttl) VALUES ($1,$2,$3) ON CONFLICT(owner)"
                " DO UPDATE SET heartbeat = excluded.heartbeat, ttl = excluded.ttl",
                owner, self.clock(), ttl,
            )  # fmt: skip

        await self._admin(body)

    async def heartbeat(self, owner: str) -> None:
        """Keep an owner alive."""

        async def body(conn: asyncpg.Connection) -> Any:
            await conn.execute(
                "UPDATE owners SET heartbeat = $1 WHERE owner = $2", self.clock(), owner
            )

        await self._admin(body)

    async def release_owner(self, owner: str) -> None:
        """Forget an owner: its unfinished executions become claimable."""

        async def body(conn: asyncpg.Connection) -> Any:
            await conn.execute("DELETE FROM owners WHERE owner = $1", owner)

        await self._admin(body)

    async def deploy_flow(
        self, namespace: str, flow_id: str, source: str, revision: int | None = None
    ) -> tuple[int, bool]:
        """Store a flow's source as its next revision unless the latest has the same source."""

        async def body(conn: asyncpg.Connection) -> Any:
            # One deployer of a flow at a time: the next revision is read, then written.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{namespace}/{flow_id}"
            )
            row = await conn.fetchrow(
                "SELECT revision, source FROM flows WHERE namespace = $1 AND id = $2"
                " ORDER BY revision DESC LIMIT 1",
                namespace, flow_id,
            )  # fmt: skip
            if row is not None and row[1] == source:
                return int(row[0]), False
            latest = int(row[0]) if row is not None else 0
            chosen = revision if revision is not None and revision > latest else latest + 1
            await conn.execute(
                "INSERT INTO flows (namespace, id, revision, source, created)"
                " VALUES ($1,$2,$3,$4,$5)",
                namespace, flow_id, chosen, source, self.clock(),
            )  # fmt: skip
            return chosen, True

        done: tuple[int, bool] = await self._admin(body)
        return done

    async def claim_fire(
        self, trigger: str, fire: str, tick: float, execution_id: str | None, owner: str
    ) -> bool:
        """Record one fire of a trigger unless it is recorded already; True if this call did."""

        async def body(conn: asyncpg.Connection) -> Any:
            done: str = await conn.execute(
                "INSERT INTO trigger_fires (trigger, fire, tick, execution_id, owner, created)"
                " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (trigger, fire) DO NOTHING",
                trigger, fire, tick, execution_id, owner, self.clock(),
            )  # fmt: skip
            return done

        done: str = await self._admin(body)
        return done == "INSERT 0 1"

    async def claim_orphans(
        self, owner: str, terminal_states: Collection[str], stale_after: float
    ) -> list[ExecutionRow]:
        """Atomically take unfinished executions whose owner is unset, unregistered or stale.

        Rows another claimer holds are skipped (``FOR UPDATE SKIP LOCKED``), not waited for:
        concurrent claimers split the orphans. Returns only executions this call took.
        """
        await self.flush()

        async def body(conn: asyncpg.Connection) -> Any:
            now = self.clock()  # at each run: a retry after a lost connection is later
            rows = await conn.fetch(
                "WITH orphans AS (SELECT id FROM executions"
                " WHERE ended IS NULL AND NOT (state = ANY($1::text[]))"
                " AND (owner IS NULL OR (owner <> $2 AND owner NOT IN"
                "  (SELECT owner FROM owners WHERE heartbeat >= $3)))"
                " AND id NOT IN (SELECT execution_id FROM quarantine)"
                " FOR UPDATE SKIP LOCKED)"
                " UPDATE executions e SET owner = $2, epoch = e.epoch + 1, lease_expiry = $4"
                f" FROM orphans o WHERE e.id = o.id RETURNING {_E_COLS}",
                list(terminal_states), owner, now - stale_after, now + stale_after,
            )  # fmt: skip
            return rows

        rows = await self._admin(body)
        out = [ExecutionRow(*r) for r in rows]
        out.sort(key=lambda r: (r.created, r.id.encode()))
        return out

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
        named = list(dict.fromkeys(execution_ids or ()))
        wanted = None if states is None else list(states)
        if wanted == []:
            return []
        in_states = " AND state = ANY($2::text[])" if wanted is not None else ""
        extra = [wanted] if wanted is not None else []
        found: dict[str, float] = {}
        if older_than is not None:
            sql = "SELECT id, created FROM executions WHERE ended IS NOT NULL AND ended < $1"
            found.update(
                (r[0], r[1]) for r in await self._rows(sql + in_states, older_than, *extra)
            )
        if named:
            sql = "SELECT id, created FROM executions WHERE id = ANY($1::text[])"
            found.update((r[0], r[1]) for r in await self._rows(sql + in_states, named, *extra))
        candidates = sorted(found, key=lambda i: (found[i], i.encode()))
        named_set = set(named)
        deleted: list[str] = []
        for batches, start in enumerate(range(0, len(candidates), batch_size), 1):
            chunk = candidates[start : start + batch_size]
            gone = await self._purge_batch(chunk, named_set, older_than, wanted)
            deleted.extend(gone)
            if progress is not None:
                done = progress(PurgeProgress(tuple(gone), len(deleted), len(candidates), batches))
                if inspect.isawaitable(done):
                    await done
        return deleted

    async def _purge_batch(
        self,
        chunk: list[str],
        named: set[str],
        older_than: float | None,
        wanted: list[str] | None,
    ) -> list[str]:
        """Delete the executions of ``chunk`` that still qualify, whole, in one transaction
        (tested again under the row locks: one restarted meanwhile is kept)."""

        async def body(conn: asyncpg.Connection) -> Any:
            rows = await conn.fetch(
                "SELECT id, state, ended FROM executions WHERE id = ANY($1::text[]) FOR UPDATE",
                chunk,
            )
            by_id = {r[0]: r for r in rows}
            keep = []
            for i in chunk:
                r = by_id.get(i)
                if r is None or (wanted is not None and r[1] not in wanted):
                    continue
                if i in named or (
                    older_than is not None and r[2] is not None and r[2] < older_than
                ):
                    keep.append(i)
            if keep:
                for table in _q.CHILD_TABLES:
                    await conn.execute(
                        f"DELETE FROM {table} WHERE execution_id = ANY($1::text[])", keep
                    )
                await conn.execute("DELETE FROM executions WHERE id = ANY($1::text[])", keep)
            return keep

        gone: list[str] = await self._admin(body)
        return gone

    # -- the work queue: leases and fencing tokens ------------------------------------
    async def claimable(self, limit: int) -> list[ExecutionRow]:
        """Unfinished executions no live lease holds, oldest first (those waiting for a
        worker that can load their flow last), at most ``limit``."""
        sql = (
            f"SELECT {_q.EXEC_COLS} FROM executions WHERE {_claimable('$1')}"
            f" ORDER BY waiting IS NOT NULL, created, id LIMIT $2"
        )
        return [ExecutionRow(*r) for r in await self._rows(sql, self.clock(), limit)]

    async def claim_queued(
        self,
        owner: str,
        ids: Sequence[str],
        lease_ttl: float,
        waiting: Sequence[tuple[str, str]] = (),
    ) -> list[ExecutionRow]:
        """Atomically lease each of ``ids`` no live lease holds to ``owner`` for
        ``lease_ttl`` s with a new epoch (its fencing token), and mark ``waiting`` (id, why);
        returns the rows taken, in the order of ``ids``.

        Rows another session has locked (a concurrent claimer, or a writer checking its
        fence) are skipped, not waited for: they are someone else's, for now."""

        async def body(conn: asyncpg.Connection) -> list[ExecutionRow]:
            now = self.clock()  # at each run: a retry after a lost connection is later
            out: list[ExecutionRow] = []
            if ids:
                rows = await conn.fetch(
                    "WITH c AS (SELECT id FROM executions WHERE id = ANY($1::text[])"
                    f" AND {_claimable('$2')} FOR UPDATE SKIP LOCKED)"
                    " UPDATE executions e SET owner = $3, epoch = e.epoch + 1,"
                    f" lease_expiry = $4, waiting = NULL FROM c WHERE e.id = c.id"
                    f" RETURNING {_E_COLS}",
                    list(ids), now, owner, now + lease_ttl,
                )  # fmt: skip
                out = [ExecutionRow(*r) for r in rows]
            if waiting:
                await conn.execute(
                    "WITH w AS (SELECT e.id, u.why FROM executions e"
                    " JOIN unnest($1::text[], $2::text[]) AS u(id, why) ON e.id = u.id"
                    f" WHERE {_claimable('$3', 'e.')}"
                    " AND e.waiting IS DISTINCT FROM u.why FOR UPDATE OF e SKIP LOCKED)"
                    " UPDATE executions x SET waiting = w.why FROM w WHERE x.id = w.id",
                    [w[0] for w in waiting], [w[1] for w in waiting], now,
                )  # fmt: skip
            return out

        out = await self._admin(body)
        place = {ex_id: n for n, ex_id in reversed(list(enumerate(ids)))}
        out.sort(key=lambda r: place[r.id])
        return out

    async def take_slot(self, execution_id: str, namespace: str, flow_id: str, limit: int) -> bool:
        """Give an execution one of its flow's concurrency slots if one is free and no older
        one waits QUEUED (see :class:`Store`); the takers of one flow take turns (an
        advisory lock), so two hosts never both take its last slot."""
        await self.flush()

        async def body(conn: asyncpg.Connection) -> Any:
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                _SLOT_LOCK,
                f"{namespace}.{flow_id}",
            )
            me = await conn.fetchrow(
                "SELECT slot, created, ended FROM executions WHERE id = $1", execution_id
            )
            if me is None or me[2] is not None:
                return False
            if me[0]:
                return True
            held = await conn.fetchval(
                "SELECT count(*) FROM executions WHERE namespace = $1 AND flow_id = $2"
                " AND ended IS NULL AND slot = 1",
                namespace, flow_id,
            )  # fmt: skip
            if held >= limit:
                return False
            older = await conn.fetchval(
                "SELECT 1 FROM executions WHERE namespace = $1 AND flow_id = $2"
                " AND ended IS NULL AND state = 'QUEUED' AND slot = 0"
                " AND (created < $3 OR (created = $3 AND id < $4)) LIMIT 1",
                namespace, flow_id, me[1], execution_id,
            )  # fmt: skip
            if older is not None:
                return False
            await conn.execute("UPDATE executions SET slot = 1 WHERE id = $1", execution_id)
            return True

        return bool(await self._admin(body))

    async def renew_leases(self, owner: str, lease_ttl: float) -> list[str]:
        """Heartbeat ``owner`` and extend every lease it holds; returns their ids."""

        async def body(conn: asyncpg.Connection) -> Any:
            now = self.clock()  # at each run: a lease renewed after a reconnect runs from now
            await conn.execute("UPDATE owners SET heartbeat = $1 WHERE owner = $2", now, owner)
            rows = await conn.fetch(
                f"WITH l AS ({_HELD_BY}) UPDATE executions e SET lease_expiry = $2"
                " FROM l WHERE e.id = l.id RETURNING e.id",
                owner, now + lease_ttl,
            )  # fmt: skip
            return rows

        rows = await self._admin(body)
        return sorted((r[0] for r in rows), key=str.encode)

    async def release_leases(self, owner: str, ids: Sequence[str] | None = None) -> int:
        """Put ``owner``'s unfinished executions (or ``ids`` of them) back in the queue."""
        await self.flush()
        held, params = _HELD_BY, [owner]
        if ids is not None:
            held = held.replace(" ORDER BY", " AND id = ANY($2::text[]) ORDER BY")
            params.append(list(ids))  # type: ignore[arg-type]

        async def body(conn: asyncpg.Connection) -> Any:
            done: str = await conn.execute(
                f"WITH l AS ({held}) UPDATE executions e SET owner = NULL, lease_expiry = NULL"
                " FROM l WHERE e.id = l.id",
                *params,
            )
            return done

        done = await self._admin(body)
        return int(done.rsplit(" ", 1)[1])


async def _pool_init(conn: asyncpg.Connection) -> None:
    """Each new pool connection, first (a reconnect too): as the writer's."""
    set_keepalive(conn)


def _claimable(now: str, of: str = "") -> str:
    """Unfinished, no live lease (``now``: its placeholder), not quarantined."""
    return (
        f"{of}ended IS NULL AND ({of}lease_expiry IS NULL OR {of}lease_expiry < {now})"
        f" AND {of}id NOT IN (SELECT execution_id FROM quarantine)"
    )


# The unfinished executions $1 holds, locked in id order (as a batch's fence check locks
# them), so a renewal and a batch of the same host never deadlock.
_HELD_BY = (
    "SELECT id FROM executions WHERE owner = $1 AND ended IS NULL ORDER BY id FOR NO KEY UPDATE"
)
_E_COLS = ", ".join(f"e.{c.strip()}" for c in _q.EXEC_COLS.split(","))
_SLOT_LOCK = 0x736C6F74  # "slot": the advisory-lock class of take_slot, one key per flow
_RETRIES = 5


class _Lost:
    """One call's wait for a lost connection to come back: backoff between attempts, and
    :class:`StorageUnavailable` once ``lock_timeout`` seconds passed since it was lost."""

    def __init__(self, store: PostgresStore, what: str) -> None:
        self.store = store
        self.what = what
        self.since = time.monotonic()
        self.backoff = Backoff()

    async def wait(self, exc: BaseException) -> None:
        store = self.store
        left = self.since + store.lock_timeout - time.monotonic()
        if left <= 0:
            raise StorageUnavailable(
                f"{store.where}: cannot {self.what}: the database could not be reached for"
                f" lock_timeout={store.lock_timeout:g}s ({exc})"
            ) from exc
        await asyncio.sleep(min(self.backoff.next(), left))


class _StillRunning(ConnectionError):
    """The transaction a lost connection cut off still runs on its old session."""


class _Tx:
    """One transaction's way to COMMIT: its id (read just before COMMIT, None if it wrote
    nothing), whether COMMIT was sent, and the result it returns once committed."""

    __slots__ = ("committing", "result", "xid")

    def __init__(self) -> None:
        self.xid: int | None = None
        self.committing = False
        self.result: Any = None

    async def before_commit(self, conn: asyncpg.Connection, result: Any) -> None:
        self.xid = await conn.fetchval("SELECT txid_current_if_assigned()")
        self.result = result
        self.committing = True


async def _committed(conn: asyncpg.Connection, xid: int) -> bool:
    """Whether transaction ``xid``, whose COMMIT a lost connection cut off, committed;
    raises a lost-connection error while it is still running on its old session."""
    status = await conn.fetchval("SELECT txid_status($1)", xid)
    if status == "in progress":
        raise _StillRunning(f"transaction {xid} of a lost connection is still in progress")
    if status is None:  # pragma: no cover - a transaction id older than the wraparound
        raise StorageError(f"the outcome of transaction {xid} is no longer known")
    return bool(status == "committed")


async def _run_plan(
    conn: asyncpg.Connection,
    plan: _sql.Plan,
    fail: BaseException | None,
    on_conflict: Callable[[], None] | None = None,
    tx: _Tx | None = None,
    hook: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[RejectedOp], list[tuple[str, str]]]:
    """:func:`_attempt_plan`, again when PostgreSQL chose this transaction as a deadlock's
    victim (another host's transaction locked rows in another order): it was rolled back
    whole, so running it again is safe; a passing conflict must not stop the store."""
    tx = tx or _Tx()
    for attempt in range(_RETRIES):
        try:
            return await _attempt_plan(conn, plan, fail, tx, hook)
        except Exception as exc:
            if not _q.is_conflict(exc) or attempt == _RETRIES - 1:
                raise
            if on_conflict is not None:
                on_conflict()
            await asyncio.sleep(0.005 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


# The fence step's check (see ``_writer_proc``): the rows are locked, in id order, until the
# batch commits, so no claim commits between the check and the writes (a claimer skips
# them, a renewal waits).
_FENCED = (
    "SELECT id, owner, epoch FROM executions WHERE id = ANY($1::text[])"
    " ORDER BY id FOR NO KEY UPDATE"
)


async def _fence(
    conn: asyncpg.Connection, plan: _sql.Plan
) -> tuple[_sql.Plan, list[tuple[str, str]]]:
    """``plan`` without its fence step and the rows of executions whose lease the writer
    lost, and those executions (id, why); inside the batch's transaction."""
    if not plan or plan[0][0] != FENCE:
        return plan, []
    owner, held_json, _cols = plan[0][1][0]
    held: dict[str, int] = json.loads(held_json)
    lost = {
        r[0]: (r[1], r[2])
        for r in await conn.fetch(_FENCED, list(held))
        if r[2] != held[r[0]] or r[1] != owner
    }
    if not lost:
        return plan[1:], []
    fenced = [
        (ex_id, f"claimed by {who} (epoch {epoch})") for ex_id, (who, epoch) in sorted(lost.items())
    ]
    return drop_fenced(plan, lost)[1:], fenced


async def _attempt_plan(
    conn: asyncpg.Connection,
    plan: _sql.Plan,
    fail: BaseException | None,
    tx: _Tx,
    hook: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[RejectedOp], list[tuple[str, str]]]:
    """Run ``plan`` as ONE transaction; returns the rows left out for their values, and
    the executions whose rows were dropped by its fence step (id, why).

    When some row cannot be stored, the whole batch runs again, each statement in a
    savepoint and a failing statement row by row, so the good rows commit and the bad
    ones are named (text with NUL characters is kept, each shown as U+2400). ``fail`` (a
    test hook) is raised just before COMMIT.
    """
    statements, bulk = _q.STATEMENTS, _q.BULK
    try:
        async with conn.transaction():
            locks = bool(plan) and plan[0][0] == FENCE
            steps, fenced = await _fence(conn, plan)
            if hook is not None and locks:
                await hook()
            for stmt, rows in steps:
                many = bulk[stmt]
                if not rows:
                    continue
                if len(rows) == 1:
                    await conn.execute(statements[stmt], *rows[0])
                elif many is not None:
                    await conn.execute(many, *(list(c) for c in zip(*rows, strict=True)))
                else:
                    await conn.executemany(statements[stmt], rows)
            if fail is not None:
                raise fail
            await tx.before_commit(conn, ([], fenced))
        return [], fenced
    except Exception as exc:
        if not _q.is_value_error(exc):
            raise
    rejected: list[RejectedOp] = []
    async with conn.transaction():
        steps, fenced = await _fence(conn, plan)  # a new transaction: look again
        for stmt, rows in steps:
            if not rows:
                continue
            with contextlib.suppress(Exception):
                async with conn.transaction():
                    await conn.executemany(statements[stmt], rows)
                continue
            for row in rows:
                try:
                    async with conn.transaction():
                        await conn.execute(statements[stmt], *row)
                    continue
                except Exception as exc:
                    if not _q.is_value_error(exc):
                        raise
                    error: Exception = exc
                if _q.is_nul_error(error):
                    # PostgreSQL text cannot hold NUL (SQLite's can): the row is kept with
                    # each NUL shown as U+2400 rather than lost.
                    try:
                        async with conn.transaction():
                            await conn.execute(statements[stmt], *_q.without_nul(row))
                        continue
                    except Exception as exc:
                        if not _q.is_value_error(exc):
                            raise
                        error = exc
                rejected.append(RejectedOp(*_q.rejection(stmt, row, error)))
        if fail is not None:
            raise fail
        await tx.before_commit(conn, (rejected, fenced))
    return rejected, fenced
