"""The store interface the runtime writes through, and the commit handle of the writer.

Two kinds of write failure, told apart:

* A *storage* failure (disk full, I/O error, the writer process killed, a write lock held
  past ``lock_timeout``, a PostgreSQL connection lost for longer than ``lock_timeout``; a
  shorter loss is waited out, see ``_postgres``): the transaction is rolled back, its
  :class:`Commit` and every later one fail with StorageUnavailable, the store refuses
  further writes (``failed`` is set, ``on_failed`` is called once). Nothing after a lost
  write may commit.
* A *value* failure (an int beyond 64 bits, a lone surrogate, a NaN or NULL in a NOT NULL
  column, a broken constraint, a ``write_latest`` builder that raised): only the rows
  holding such values are left out; the rest of the transaction commits and the store goes
  on. The commit resolves without error and lists the rows in ``Commit.rejected``; the
  store calls ``on_rejected(rejected)`` (or logs a warning when it is None) before the
  commit resolves, so the runtime can fail just those executions.

The store is also the work queue. An execution is claimed as a lease (``claim_queued``):
owner, expiry, and an ``epoch`` raised by every claim, its fencing token. A writer lists
the leases it holds in ``fences`` (id -> epoch, as ``fence_owner``); each transaction drops
the rows of any execution whose stored lease is no longer that one and reports it to
``on_fenced``, so a worker whose lease was taken over writes nothing more for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Generator,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from types import EllipsisType
from typing import Any, Protocol

from actorflow.storage._future import new_future
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


class Commit:
    """Awaitable: resolves when the transaction holding some writes committed.

    Awaiting it, or adding a callback, marks it *wanted*: a writer that lingers to gather a
    bigger batch commits a wanted one at once. ``rejected`` lists the rows of that
    transaction that were left out for their values (see the module docstring); awaiting
    does not raise for them.
    """

    __slots__ = ("_callbacks", "_notify", "_waiters", "done", "error", "rejected", "wanted")

    def __init__(self, notify: Callable[[], None] | None = None) -> None:
        # Bare loop futures, not Events: thousands of submitters may wait on one commit.
        self._waiters: list[asyncio.Future[None]] | None = None
        self._callbacks: list[Callable[[BaseException | None], None]] | None = None
        self._notify = notify
        self.error: BaseException | None = None
        self.rejected: tuple[RejectedOp, ...] = ()
        self.done = False
        self.wanted = False

    def resolve(
        self, error: BaseException | None = None, rejected: tuple[RejectedOp, ...] = ()
    ) -> None:
        """Mark committed (or failed with ``error``), with the rows left out; wakes the
        waiters, runs the callbacks."""
        self.error = error
        self.rejected = rejected
        self.done = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            callback(error)

    def want(self) -> None:
        """Someone needs this commit now: a lingering writer should not wait for more."""
        if not self.wanted:
            self.wanted = True
            if self._notify is not None:
                self._notify()

    def add_callback(
        self, callback: Callable[[BaseException | None], None], *, want: bool = True
    ) -> None:
        """Call ``callback(error)`` once the transaction finished (at once if it has);
        ``want=False`` lets a lingering writer take its time."""
        if self.done:
            callback(self.error)
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)
        if want:
            self.want()

    async def wait(self) -> None:
        """Wait for the commit; raises its error if it failed."""
        if not self.done:
            waiter: asyncio.Future[None] = new_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            self.want()
            await waiter
        if self.error is not None:
            raise self.error

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()


COMMITTED = Commit()
COMMITTED.resolve()


RejectedCallback = Callable[[tuple[RejectedOp, ...]], None]
FencedCallback = Callable[[tuple[tuple[str, str], ...]], None]
FailedCallback = Callable[[BaseException], None]
ProgressCallback = Callable[[PurgeProgress], Awaitable[None] | None]


class CommandWakeup(Protocol):
    """Wakes an owner's command loop when a command may have been posted (a store that can
    notify, such as PostgreSQL's LISTEN/NOTIFY); the loop still looks after ``timeout``."""

    async def wait(self, timeout: float) -> None:
        """Until a command may have been posted, or ``timeout`` seconds."""
        ...


class Store(Protocol):
    """Where the runtime keeps executions; one writer with group commit.

    ``on_rejected`` hears the rows left out of each transaction for their values, on the
    event loop, before that transaction's commit resolves; ``on_failed`` hears once that
    storage failed and writes stop (see the module docstring).
    """

    on_rejected: RejectedCallback | None
    on_failed: FailedCallback | None
    #: Hears (execution id, why) of executions whose writes were refused because another
    #: worker holds their lease now (a newer epoch): nothing of those writes was stored.
    on_fenced: FencedCallback | None
    #: The leases this process holds (execution id -> epoch) and as whom: every write of
    #: one of them is checked against the stored lease, in its own transaction.
    fences: dict[str, int]
    fence_owner: str | None

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped the writer, if any."""
        ...

    async def open(self) -> None:
        """Connect (and migrate)."""
        ...

    async def close(self) -> None:
        """Flush and disconnect."""
        ...

    def write(self, ops: Iterable[Op]) -> Commit:
        """Queue ``ops`` without blocking; they commit in one transaction, in order.

        Await the returned :class:`Commit` for durability (it raises StorageUnavailable if
        that transaction failed). Raises StorageUnavailable at once when the store is
        closed, read-only, or its writer has failed.
        """
        ...

    def write_latest(
        self, key: Hashable, build: Callable[[Any], Sequence[Op]], item: Any
    ) -> Commit:
        """Queue the ops ``build(item)`` in place of those queued earlier under ``key``.

        For snapshots that change faster than they commit: only the latest ``item`` of a key
        is built (encoded) and written, once, when its batch is written; a key keeps its
        place in the order of writes (a delete in between starts a new place).
        """
        ...

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        ...

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        """One execution row."""
        ...

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
        ...

    async def unfinished_executions(self, terminal_states: Collection[str]) -> list[ExecutionRow]:
        """Executions whose state is not terminal, quarantined ones left out."""
        ...

    async def quarantined(self) -> list[QuarantineRow]:
        """Quarantined executions with the reason, oldest first (their rows are kept)."""
        ...

    async def task_runs(self, execution_id: str) -> list[TaskRunRow]:
        """Task runs of an execution in creation order."""
        ...

    async def task_runs_of(self, execution_ids: Sequence[str]) -> dict[str, list[TaskRunRow]]:
        """Task runs of many executions at once (recovery), each list in creation order."""
        ...

    async def attempts(self, execution_id: str, task_run_id: str | None = None) -> list[AttemptRow]:
        """Attempts of an execution (or one task run)."""
        ...

    async def history(
        self, execution_id: str, task_run_id: str | EllipsisType | None = ...
    ) -> list[HistoryRow]:
        """State history in insertion order (``...`` = every entry of the execution)."""
        ...

    async def metrics(
        self,
        *,
        execution_id: str | None = None,
        task_run_id: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[MetricRow]:
        """Metrics filtered by execution, task run, name and a subset of tags."""
        ...

    async def logs(
        self, execution_id: str, task_run_id: str | None = None, *, limit: int | None = None
    ) -> list[LogRow]:
        """Log lines in order."""
        ...

    async def outputs(self, execution_id: str) -> list[OutputRow]:
        """Outputs of every task run of an execution."""
        ...

    async def purge(
        self,
        *,
        older_than: float | None = None,
        execution_ids: Collection[str] | None = None,
        states: Collection[str] | None = None,
        batch_size: int = 500,
        progress: ProgressCallback | None = None,
    ) -> list[str]:
        """Delete executions (ended before ``older_than``, or named) with all their rows, in
        ``states`` if given; returns the deleted ids, oldest first.

        Deletes ``batch_size`` executions per transaction, each execution whole, and calls
        ``progress`` (awaited if it returns an awaitable) after each. Interrupted (an
        error, a crash, ``progress`` raising), it leaves every execution deleted or kept
        whole; the same call again deletes the rest.
        """
        ...

    async def post_command(
        self, execution_id: str, kind: str, payload: bytes = b"", target: bytes = b""
    ) -> int:
        """Store a pending command for the process that owns the execution (durable on
        return); returns its id."""
        ...

    def command_wakeup(self) -> CommandWakeup | None:
        """What the owner's command loop may wait on instead of polling; None (poll) when
        the store cannot notify (SQLite, memory)."""
        ...

    async def commands_after(self, last_id: int) -> list[CommandRow]:
        """Commands with an id above ``last_id``, whatever their status."""
        ...

    async def get_command(self, command_id: int) -> CommandRow | None:
        """One command, with its status and answer (its sender polls it)."""
        ...

    async def pending_commands(self, owner: str) -> list[CommandRow]:
        """Pending commands of the executions ``owner`` owns, oldest first."""
        ...

    async def answer_command(
        self, command_id: int, status: str, answer: str, error: str | None = None
    ) -> bool:
        """Consume a pending command: set its status (``applied`` or ``rejected``), answer
        and, when rejected, ``error`` (the class name of the error its sender raises), once;
        False (nothing changed) when it was no longer pending."""
        ...

    async def compare_and_write(
        self, execution_id: str, state: str, updated: float, ops: Sequence[Op]
    ) -> bool:
        """Write ``ops`` in one transaction if the execution's row still has ``state`` and
        ``updated`` (the time of its last change); False and nothing written otherwise.

        Commits what was queued before it first. For changes requested from outside the
        owning process (restart): of two concurrent ones, exactly one succeeds.
        """
        ...

    async def register_owner(self, owner: str, ttl: float) -> None:
        """Announce a live runtime process."""
        ...

    async def heartbeat(self, owner: str) -> None:
        """Keep an owner alive."""
        ...

    async def release_owner(self, owner: str) -> None:
        """Forget an owner (its executions become claimable)."""
        ...

    async def owners(self) -> list[tuple[str, float]]:
        """Registered owners with their last heartbeat."""
        ...

    async def deploy_flow(
        self, namespace: str, flow_id: str, source: str, revision: int | None = None
    ) -> tuple[int, bool]:
        """Store a flow's source as its next revision (``revision`` when it is higher than the
        latest) unless the latest has the same source; returns (revision, whether new)."""
        ...

    async def flows(self, namespace: str | None = None) -> list[FlowRow]:
        """The latest revision of every deployed flow (of ``namespace``), by namespace and id."""
        ...

    async def flow_revision(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRow | None:
        """One deployed revision (the latest when ``revision`` is None)."""
        ...

    async def kv_get(self, namespace: str, key: str) -> KVRow | None:
        """The entry ``key`` of ``namespace``'s key-value store, None if absent or expired."""
        ...

    async def kv_set(self, namespace: str, key: str, value: str, ttl: float | None = None) -> None:
        """Set ``key`` (JSON text ``value``) in ``namespace``'s key-value store, at once
        (not through the write queue): a task that set it reads it back next. ``ttl``:
        seconds (of the store's clock) until it expires; None: never."""
        ...

    async def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; False when there was none (or it had expired)."""
        ...

    async def kv_keys(self, namespace: str) -> list[KVRow]:
        """Every live entry of ``namespace``, by key."""
        ...

    async def claim_fire(
        self, trigger: str, fire: str, tick: float, execution_id: str | None, owner: str
    ) -> bool:
        """Record one fire of a trigger (a tick, a source execution) unless some process did
        already; True if this call did. ``execution_id`` is the execution it will start."""
        ...

    async def last_tick(self, trigger: str) -> float | None:
        """The latest recorded fire's tick of a trigger, or None."""
        ...

    async def unstarted_fires(self, stale_after: float) -> list[tuple[str, str, float, str]]:
        """Fires whose execution was never stored and whose owner is gone: (trigger, fire,
        tick, execution_id), to start now."""
        ...

    async def claimable(self, limit: int) -> list[ExecutionRow]:
        """Unfinished executions no live lease holds (none, or expired), oldest first and
        those ``waiting`` for a worker last; at most ``limit``. Quarantined ones never."""
        ...

    async def claim_queued(
        self,
        owner: str,
        ids: Sequence[str],
        lease_ttl: float,
        waiting: Sequence[tuple[str, str]] = (),
    ) -> list[ExecutionRow]:
        """In ONE transaction: lease each of ``ids`` that no live lease holds to ``owner``
        until now + ``lease_ttl``, raising its ``epoch`` (the fencing token) and clearing
        ``waiting``; set ``waiting`` on the (id, why) of ``waiting`` still unclaimed.
        Returns the rows this call took."""
        ...

    async def take_slot(self, execution_id: str, namespace: str, flow_id: str, limit: int) -> bool:
        """Flow concurrency across processes, in ONE transaction: give the (stored)
        execution one of its flow's ``limit`` slots unless ``limit`` unfinished executions
        of the flow hold one or an older one waits QUEUED for one; True if it holds one.
        A slot is given back by the execution's end."""
        ...

    async def renew_leases(self, owner: str, lease_ttl: float) -> list[str]:
        """Heartbeat ``owner`` and extend its leases to now + ``lease_ttl``; returns the ids
        of the unfinished executions it still holds."""
        ...

    async def release_leases(self, owner: str, ids: Sequence[str] | None = None) -> int:
        """Give up ``owner``'s leases (of ``ids``, or all) so another worker claims them at
        once; returns how many."""
        ...

    async def claim_orphans(
        self, owner: str, terminal_states: Collection[str], stale_after: float
    ) -> list[ExecutionRow]:
        """Atomically take unfinished executions whose owner is unset, unregistered or has not
        heartbeat for ``stale_after`` seconds (never quarantined ones); returns only those
        this call took."""
        ...
