"""Services shared by every actor of a runtime: storage, files, timers, ids, waiters, slots."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
import msgspec

from actorflow._errors import ExecutionNotFound, RuntimeClosedError, StorageUnavailable
from actorflow.actors import ActorSystem, Kill, stop_within
from actorflow.runtime._allow import check_allowed
from actorflow.runtime._clock import Clock, Timers
from actorflow.runtime._core._admission import Admission
from actorflow.runtime._core._ids import child_execution_id
from actorflow.runtime._core._messages import Complete, Dequeue, Start
from actorflow.runtime._core._persist import (
    ExecutionItem,
    decode_tree,
    execution_rows,
    execution_rows_timed,
    history_ops,
    task_run_rows,
    task_run_rows_timed,
)
from actorflow.runtime._flow import Flow, validate_inputs
from actorflow.runtime._hostlog import execution_event
from actorflow.runtime._observer import Observer
from actorflow.runtime._records import Execution, StateEntry, TaskRun
from actorflow.runtime._states import TERMINAL, State
from actorflow.runtime._tasks import check_subflow_depth
from actorflow.runtime._values import check_labels, safe_text
from actorflow.storage import (
    AppendLog,
    Commit,
    FileStorage,
    LogRow,
    Store,
    new_future,
    running_loop,
)

if TYPE_CHECKING:
    from actorflow.actors import Actor, ActorRef
    from actorflow.runtime._context import Controller, TaskContext
    from actorflow.runtime._tasks import Subflow


class ExecutionActorClass(Protocol):
    """How the engine makes an execution's actor (``ExecutionActor``, given by the runtime:
    the engine is the actors' service object and never imports them)."""

    def __call__(
        self, engine: Engine, flow: Flow, record: Execution, task_runs: list[TaskRun], mode: str
    ) -> Actor:
        """A new execution actor."""
        ...


class GuardianLike(Protocol):
    """The engine's side of the guardian actor: the parent of every execution actor."""

    def adopt(self, ref: ActorRef, execution_id: str, flow: Flow) -> None:
        """Link an execution actor spawned with the guardian as its parent."""

    def release(self, name: str) -> None:
        """An execution actor ended its execution: nothing to restart."""

    def live_flows(self) -> dict[str, Flow]:
        """The flow of each execution whose actor has not ended it (by execution id)."""
        ...


_log = logging.getLogger("actorflow.engine")
# Module globals: ``State.X`` is a class-attribute read through the enum's metaclass.
_PAUSED, _QUEUED = State.PAUSED, State.QUEUED


class Engine:
    """Everything the actors of one runtime share."""

    #: Names of the gated task types this runtime runs (``Runtime.open(allow_types=...)``).
    allow_types: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        system: ActorSystem,
        store: Store,
        files: FileStorage,
        clock: Clock,
        observer: Observer | None = None,
        owner: str | None = None,
        max_active: int | None = None,
        max_queued: int | None = None,
        execution_actor: ExecutionActorClass,
        guardian: Callable[[Engine], GuardianLike],
    ) -> None:
        self.system = system
        # asyncio's loop for its bare futures and tasks; None on trio (anyio-based path).
        self._loop = running_loop()
        self._execution_actor = execution_actor
        self.store = store
        self.files = files
        self.clock = clock
        self.timers = Timers(clock)
        self.observer = observer or Observer()
        self.observer.bind(self)
        self.tracing = type(self.observer) is not Observer
        # With tracing on, every ended record also stores its span's duration as a metric.
        timed = self.observer.stores_durations
        self._execution_rows = execution_rows_timed if timed else execution_rows
        self._task_run_rows = task_run_rows_timed if timed else task_run_rows
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"
        #: What tasks that act on other executions call (the Runtime sets itself here).
        self.controller: Controller | None = None
        #: Whether this runtime runs executions (a worker) or only submits and reads them.
        self.worker = True
        #: Seconds a claim lasts without renewal (renewed by the heartbeat).
        self.lease_ttl = 15.0
        self._wall = getattr(store, "clock", time.time)  # the clock leases are stamped with
        # Leases: every write of an execution this runtime runs carries its epoch (fencing
        # token); the store refuses it once another worker claimed the execution.
        store.fence_owner = self.owner
        store.on_fenced = self.fenced
        # A store that can lose its connection (PostgreSQL) says so: attempts wait for it
        # before they run, so no side effect happens while nothing can be stored.
        self.store_outage: Callable[[], Awaitable[object] | None] | None = getattr(
            store, "outage", None
        )
        self.fenced_out: set[str] = set()
        # Executions QUEUED here behind their flow's concurrency, oldest first.
        self._queued: dict[str, tuple[Flow, ActorRef]] = {}
        self._releasing = False  # a _release_queued pass is under way
        self.flows: dict[tuple[str, str, int], Flow] = {}
        self.live: dict[str, ActorRef] = {}
        self.admission = Admission(max_active, max_queued)
        self._waiters: dict[str, list[asyncio.Future[Execution]]] = {}
        # Executions that ended here and are stored, newest last (at most _KEEP_ENDED): each
        # as its record alone (no task runs, inputs or outputs), so the cache costs the same
        # whatever the executions carried; a late wait() or get() reads the tree from the store.
        self._ended: dict[str, Execution] = {}
        self._loads: set[asyncio.Task[None]] = set()  # child trees read for watch_child
        self._ending: dict[str, Commit] = {}  # ended, final snapshot not committed yet
        self._child_watchers: dict[str, ActorRef] = {}
        self._state_waiters: dict[str, list[tuple[frozenset[State], anyio.Event]]] = {}
        self._prefix = os.urandom(5).hex()
        self._ids = itertools.count(1)
        self.accepting = True
        #: Called with every execution whose end is stored (the scheduler's Flow triggers).
        self.end_listeners: list[Callable[[Execution], None]] = []
        #: Called with an execution at each new state short of its end (Flow triggers on
        #: RUNNING or PAUSED); ends go to ``end_listeners`` once stored.
        self.state_listeners: list[Callable[[Execution], None]] = []
        #: Called with a task run at each new state (``Runtime.watch``; empty when unwatched).
        self.task_run_listeners: list[Callable[[TaskRun], None]] = []
        # Set once storage failed: every waiter was told, and every later one is.
        self.storage_error: StorageUnavailable | None = None
        self._watched: Commit | None = None  # the newest batch commit with our callback
        self.guardian = guardian(self)
        # The guardian is an actor as well as a GuardianLike; a Protocol cannot say both.
        actor = cast("Actor", self.guardian)
        self._guardian_ref = system.spawn(lambda: actor, name=f"executions-{self.owner}")

    def new_id(self) -> str:
        """A process-unique, roughly time-ordered id."""
        return f"{self._prefix}{next(self._ids):08x}"

    # -- flows -----------------------------------------------------------------------
    def register(self, flow: Flow) -> None:
        """Make ``flow`` known (for subflows and recovery)."""
        self.flows[(flow.namespace, flow.id, flow.revision)] = flow

    def find_flow(self, namespace: str, flow_id: str, revision: int | None = None) -> Flow | None:
        """A registered flow; the latest revision when ``revision`` is None."""
        if revision is not None:
            return self.flows.get((namespace, flow_id, revision))
        found = [f for (ns, fid, _), f in self.flows.items() if ns == namespace and fid == flow_id]
        return max(found, key=lambda f: f.revision) if found else None

    # -- persistence -----------------------------------------------------------------
    def _check(self) -> None:
        failed = self.store.failed
        if failed is not None:
            self.storage_failed(failed)
            raise RuntimeClosedError(f"storage failed, no more work is accepted: {failed}")
        if not self.accepting:
            raise RuntimeClosedError("the runtime is closing or closed: no more work is accepted")

    def _watch(self, commit: Commit) -> Commit:
        """Hear of a failed batch: one callback per batch, on the newest commit we wrote to
        (a failure fails that batch and every one queued behind it)."""
        if commit is not self._watched:
            self._watched = commit
            commit.add_callback(self._batch_done, want=False)
        return commit

    def _batch_done(self, error: BaseException | None) -> None:
        # Only a store that stopped stops the runtime: a store that refuses one op and goes
        # on (a bad op isolated) fails that op's commit and nothing else.
        if error is not None and self.store.failed is not None:
            self.storage_failed(self.store.failed)

    def _refused(self, error: StorageUnavailable) -> None:
        """A write raised: the store is closed, read-only or failed; nothing here can go on."""
        self.storage_failed(self.store.failed or error)

    def storage_failed(self, error: BaseException) -> None:
        """Storage stopped: accept no more work, and answer every caller waiting on this
        runtime (``wait``, ``wait_for``, ``submit``) with :class:`StorageUnavailable`.

        Nothing they wait for can be reported any more: an end is reported only once stored.
        """
        if self.storage_error is not None:
            return
        self.accepting = False
        self.storage_error = _unavailable("storage failed", error)
        waiters, self._waiters = self._waiters, {}
        for execution_id, futures in waiters.items():
            for done in futures:
                if not done.done():
                    # One exception per caller: a shared one would collect every traceback.
                    done.set_exception(
                        _unavailable(f"execution {execution_id}: its end cannot be stored", error)
                    )
        state_waiters, self._state_waiters = self._state_waiters, {}
        for entries in state_waiters.values():
            for _, event in entries:
                event.set()  # wait_for wakes and raises storage_error
        self.admission.fail_waiting(
            lambda: _unavailable("storage failed, nothing more can be submitted", error)
        )

    def raise_if_storage_failed(self) -> None:
        """Raise :class:`StorageUnavailable` once storage failed."""
        if self.storage_error is None and self.store.failed is not None:
            self.storage_failed(self.store.failed)
        if self.storage_error is not None:
            raise StorageUnavailable(str(self.storage_error))

    def save_execution(self, ex: Execution, new: Sequence[StateEntry]) -> Commit:
        """Queue an execution snapshot; returns the commit to await for durability."""
        store = self.store
        if new:
            if self.tracing:
                try:
                    self.observer.execution_changed(ex)
                    tp = self.observer.execution_traceparent(ex)
                except Exception:  # tracing must never break an execution
                    _log.exception("observer failed on execution %s", ex.id)
                    tp = ex.traceparent
                if tp != ex.traceparent:
                    # Keep the execution span's context: a recovered run continues the trace.
                    ex = msgspec.structs.replace(ex, traceparent=tp)
            waiters = self._state_waiters.get(ex.id)
            if waiters:
                for states, event in waiters:
                    if ex.state in states:
                        event.set()
            if ex.id in self.live:
                idle = self.admission.idle
                state = ex.state
                if state is _PAUSED or state is _QUEUED:
                    if ex.id not in idle:
                        idle.add(ex.id)
                        self._admit()  # an idle execution holds no slot
                elif idle:
                    idle.discard(ex.id)
            if self.state_listeners and not ex.state.terminal:
                for listener in self.state_listeners:
                    listener(ex)
            execution_event(ex)
            if ex.error is not None and not ex.error.isascii():
                ex = msgspec.structs.replace(ex, error=safe_text(ex.error))
        item: ExecutionItem
        if self.worker:
            # A new execution is leased to this worker from its first commit (epoch 1); for
            # one it claimed, the row keeps the claim's lease and this is only its token.
            fences = store.fences
            epoch = fences.get(ex.id) or fences.setdefault(ex.id, 1)
            item = (ex, self.owner, epoch, self._wall() + self.lease_ttl)
        else:
            item = (ex, None, 0, None)  # queued for any worker
        try:
            if new:
                store.write(history_ops(ex.id, None, new))
            commit = store.write_latest(("execution", ex.id), self._execution_rows, item)
        except StorageUnavailable as exc:
            self._refused(exc)
            raise
        return self._watch(commit)

    def save_task_run(self, tr: TaskRun, new: Sequence[StateEntry] = ()) -> Commit:
        """Queue a task-run snapshot (with its attempts; outputs and metrics once ended)."""
        store = self.store
        if new:
            if self.tracing:
                try:
                    self.observer.task_run_changed(tr, None)
                except Exception:  # tracing must never break an execution
                    _log.exception("observer failed on task run %s", tr.id)
            if self.task_run_listeners:
                for listener in self.task_run_listeners:
                    listener(tr)
            if tr.error is not None and not tr.error.isascii():
                # Error texts come from exceptions, whatever they hold: kept as valid text.
                tr = msgspec.structs.replace(tr, error=safe_text(tr.error))
        try:
            if new:
                store.write(history_ops(tr.execution_id, tr.id, new))
            commit = store.write_latest(tr.id, self._task_run_rows, tr)
        except StorageUnavailable as exc:
            self._refused(exc)
            raise
        return commit if commit is self._watched else self._watch(commit)

    def log(
        self, execution_id: str, task_run_id: str | None, level: str, message: str
    ) -> tuple[str | None, str | None]:
        """Store one log line of a task run; returns the trace and span ids stored with it."""
        ids = trace_id, span_id = self.observer.log_ids()
        row = LogRow(execution_id, task_run_id, self.clock.now(), level, message, trace_id, span_id)
        try:
            commit = self.store.write((AppendLog(row),))
        except StorageUnavailable as exc:
            self._refused(exc)
            raise
        self._watch(commit)
        return ids

    def observe_metric(
        self, ctx: TaskContext, kind: str, name: str, value: float, tags: dict[str, str]
    ) -> None:
        """Forward a task metric to the observer (OTel instruments)."""
        self.observer.metric(ctx, kind, name, value, tags)

    # -- executions ------------------------------------------------------------------
    def start_execution(
        self,
        flow: Flow,
        record: Execution,
        task_runs: list[TaskRun] | None = None,
        mode: str = "start",
        first: Any = None,
    ) -> ActorRef | None:
        """Spawn the execution's actor now if a slot is free, else park it (see Admission)."""
        if not self.accepting:
            raise RuntimeClosedError("the runtime does not accept work any more")
        entry = (flow, record, task_runs or [], mode, first if first is not None else Start())
        if self.admission.must_park(self.live):
            self.register(flow)
            self._ended.pop(record.id, None)
            self.admission.parked[record.id] = entry
            return None
        return self.spawn_execution(*entry)

    # -- flow concurrency, counted in the store ------------------------------------------
    async def take_flow_slot(self, flow: Flow, execution_id: str) -> bool:
        """Whether ``execution_id`` may run now under ``flow.concurrency``: it takes a slot in
        the store (one transaction), so the limit holds across every process."""
        assert flow.concurrency is not None
        return await self.store.take_slot(
            execution_id, flow.namespace, flow.id, flow.concurrency.limit
        )

    def queue_for_slot(self, flow: Flow, execution_id: str, ref: ActorRef) -> None:
        """An execution waits QUEUED here for a slot of its flow."""
        self._queued[execution_id] = (flow, ref)

    def unqueue(self, execution_id: str) -> None:
        """A queued execution was killed or lost: it no longer waits."""
        self._queued.pop(execution_id, None)

    def wake_queued(self) -> None:
        """Ask the store for slots for the executions queued here (after a local end, and
        periodically for ends elsewhere); the store keeps them FIFO across processes."""
        if self._queued and not self._releasing:
            self._releasing = True
            self._background(self._release_queued)

    def _background(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` soon, kept alive until done (trio: in the actor system's group)."""
        if self._loop is None:
            self.system._tg.start_soon(fn, *args)
            return
        task = self._loop.create_task(fn(*args))
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def _release_queued(self) -> None:
        try:
            await self._release_queued_once()
        finally:
            self._releasing = False

    async def _release_queued_once(self) -> None:
        full: set[tuple[str, str]] = set()
        for ex_id, (flow, ref) in list(self._queued.items()):
            key = (flow.namespace, flow.id)
            if key in full:
                continue
            if not ref.is_alive:
                self._queued.pop(ex_id, None)
                continue
            try:
                taken = await self.take_flow_slot(flow, ex_id)
            except Exception:  # storage trouble: the next wake tries again
                _log.debug("asking for a slot failed", exc_info=True)
                return
            if not taken:
                full.add(key)  # FIFO: no younger one of this flow gets one either
            elif self._queued.pop(ex_id, None) is not None:
                ref.tell_nowait(Dequeue())

    def free_slots(self) -> int:
        """How many more executions this worker may take from the queue now."""
        admission = self.admission
        if not self.worker or not self.accepting:
            return 0
        if admission.max_active is None:
            return _CLAIM_UNBOUNDED
        busy = len(self.live) - len(admission.idle) + len(admission.parked)
        return max(0, admission.max_active - busy)

    def unpark(self, execution_id: str) -> ActorRef | None:
        """Start a parked execution at once (a command for it arrived); None if not parked."""
        entry = self.admission.parked.pop(execution_id, None)
        return None if entry is None else self.spawn_execution(*entry)

    def _admit(self) -> None:
        if self.accepting:
            self.admission.admit(self.live, self.spawn_execution)

    def spawn_execution(
        self, flow: Flow, record: Execution, task_runs: list[TaskRun], mode: str, first: Any
    ) -> ActorRef:
        """Start the actor of an execution and send it ``first``."""
        if not self.accepting:
            raise RuntimeClosedError("the runtime does not accept work any more")
        self.register(flow)
        if mode == "recover" and self.tracing:
            try:  # its spans continue from now, before any task run changes again
                self.observer.execution_recovered(record, task_runs)
            except Exception:  # tracing must never break an execution
                _log.exception("observer failed on execution %s", record.id)
        ref = self.system._spawn(
            functools.partial(self._execution_actor, self, flow, record, task_runs, mode),
            None,
            4096,
            self._guardian_ref,
            None,
        )
        ref._notify_stop = False  # the guardian hears of crashes only (see Guardian.release)
        self.guardian.adopt(ref, record.id, flow)
        self.live[record.id] = ref
        self._ended.pop(record.id, None)  # a restart runs the same id again
        ref.tell_nowait(first)
        return ref

    def execution_ended(self, flow: Flow, ex: Execution, commit: Commit) -> None:
        """Called by an execution actor once terminal (its snapshot is queued in ``commit``)."""
        ref = self.live.pop(ex.id, None)
        if ref is not None:
            self.guardian.release(ref.name)
        self.admission.idle.discard(ex.id)
        self._queued.pop(ex.id, None)
        if flow.concurrency is not None:
            self.wake_queued()  # its slot is free once its end is stored
        self._admit()
        watcher = self._child_watchers.pop(ex.id, None)

        def committed(error: BaseException | None) -> None:
            # Waiters hear of the end only once it is stored; if it could not be, they hear
            # that instead (the end is not durable, so it is not reported as one).
            self._ending.pop(ex.id, None)
            if ex.id not in self.fenced_out:
                self.store.fences.pop(ex.id, None)  # ended and stored: no more writes
            ended = self._ended
            if error is None:
                ended[ex.id] = _ended_marker(ex)
                for listener in self.end_listeners:
                    listener(ex)
            for done in self._waiters.pop(ex.id, ()):
                if not done.done():
                    if error is None:
                        done.set_result(ex)
                    else:
                        done.set_exception(_not_stored(ex, error))
            if watcher is not None:
                watcher.tell_nowait(Complete(ex.state, _child_outputs(ex), ex.error))
            if len(ended) > _KEEP_ENDED:
                ended.pop(next(iter(ended)))

        # Nobody waiting: the writer may keep gathering; a waiter that comes wants it now.
        self._ending[ex.id] = commit
        commit.add_callback(committed, want=watcher is not None or ex.id in self._waiters)

    def fenced(self, lost: Sequence[tuple[str, str]]) -> None:
        """Another worker claimed these executions (our lease expired: we were stalled or
        cut off): the store refused our writes; stop their actors here, write nothing more.

        Their ids stay fenced (any late write is refused again); local waiters follow the
        execution in the store, where its new owner finishes it.
        """
        for ex_id, why in lost:
            if ex_id in self.fenced_out:
                continue
            self.fenced_out.add(ex_id)
            _log.warning(
                "execution %s: lease lost, %s; its writes from this worker were refused and"
                " it stops here (the new owner resumes it from its stored state)", ex_id, why,
            )  # fmt: skip
            self.admission.parked.pop(ex_id, None)
            self.admission.idle.discard(ex_id)
            self._queued.pop(ex_id, None)
            ref = self.live.pop(ex_id, None)
            if ref is not None:
                self.guardian.release(ref.name)
                self._background(stop_within, ref, 0.0)
            waiters = self._waiters.pop(ex_id, [])
            if waiters:
                self._background(self._follow_for, ex_id, waiters)
        self._admit()

    async def _follow_for(self, ex_id: str, waiters: list[asyncio.Future[Execution]]) -> None:
        """Answer local waiters of an execution another worker runs now, from the store."""
        try:
            while True:
                found = await self.load_execution(ex_id)
                if found is None or found.state.terminal:
                    break
                await anyio.sleep(0.2)
        except Exception as exc:
            for done in waiters:
                if not done.done():
                    done.set_exception(exc)
            return
        for done in waiters:
            if not done.done():
                if found is None:
                    done.set_exception(ExecutionNotFound(f"no execution with id {ex_id!r}"))
                else:
                    done.set_result(found)

    def waiter(self, execution_id: str) -> Execution | asyncio.Future[Execution] | None:
        """The ended execution's record (without its tree: read that from the store), a future
        of the full tree (set once its end is stored), or None when it is not live here."""
        ended = self._ended.get(execution_id)
        if ended is not None:
            return ended
        if self.storage_error is not None:
            raise _unavailable(
                f"execution {execution_id}: its end cannot be stored", self.storage_error
            )
        ending = self._ending.get(execution_id)
        if (
            execution_id not in self.live
            and ending is None
            and execution_id not in self.admission.parked
        ):
            return None
        # A bare future: thousands of waiters are common, an Event costs three objects each.
        done: asyncio.Future[Execution] = new_future(self._loop)
        self._waiters.setdefault(execution_id, []).append(done)
        if ending is not None:
            ending.want()
        return done

    def state_waiter(self, execution_id: str, states: frozenset[State]) -> anyio.Event:
        """An event set when the execution next saves one of ``states``."""
        event = anyio.Event()
        self._state_waiters.setdefault(execution_id, []).append((states, event))
        return event

    def drop_state_waiter(self, execution_id: str, event: anyio.Event) -> None:
        """Forget a waiter from :meth:`state_waiter`."""
        waiters = [w for w in self._state_waiters.get(execution_id, []) if w[1] is not event]
        if waiters:
            self._state_waiters[execution_id] = waiters
        else:
            self._state_waiters.pop(execution_id, None)

    async def submit_child(
        self,
        parent: Execution,
        tr: TaskRun,
        task: Subflow,
        inputs: dict[str, Any],
        *,
        watcher: ActorRef,
        flow_id: str | None = None,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        attempt: int = 1,
    ) -> str:
        """Start a subflow execution linked to task run ``tr`` (attempt ``attempt``), or, if
        that attempt's child is stored already (a crash came before the parent stored its
        id), watch that one: a recovered parent never starts a second child. ``flow_id`` /
        ``namespace`` are the task's, rendered (templates), ``labels`` the child's extra
        labels."""
        child_id = child_execution_id(tr.id, attempt)
        if await self.adopt_child(child_id, watcher if task.wait else None):
            return child_id
        flow_id = flow_id or task.flow_id
        namespace = namespace or task.namespace or parent.namespace
        target = f"{namespace}.{flow_id}"
        await check_subflow_depth(parent.parent_execution_id, self._parent_id, target)
        flow = self.find_flow(namespace, flow_id)
        if flow is None:
            raise ExecutionNotFound(f"subflow {namespace}.{flow_id} is not registered")
        check_allowed(flow, self.allow_types, self.find_flow)
        valid = validate_inputs(flow.inputs, inputs, where=f"subflow {namespace}.{flow.id}")
        record = new_execution_record(
            engine=self,
            flow=flow,
            inputs=valid,
            parent_execution_id=parent.id,
            parent_task_run_id=tr.id,
            traceparent=parent.traceparent,
            labels=check_labels(labels, f"subflow {target}: labels") if labels else None,
            execution_id=child_id,
        )
        if task.wait:
            self._child_watchers[record.id] = watcher
        await self.save_execution(record, record.history)
        self.spawn_execution(flow, record, [], "start", Start())
        return record.id

    async def start_linked(
        self,
        flow: Flow,
        inputs: dict[str, Any],
        *,
        parent_id: str,
        parent_task_run_id: str,
        labels: dict[str, str],
        execution_id: str,
    ) -> bool:
        """Start an execution of ``flow`` with id ``execution_id`` as a child of a task run
        (ForEachItem's batches); False when it exists already (started before a crash)."""
        target = f"{flow.namespace}.{flow.id}"
        if execution_id in self.live or await self.store.get_execution(execution_id):
            return False
        await check_subflow_depth(await self._parent_id(parent_id), self._parent_id, target)
        check_allowed(flow, self.allow_types, self.find_flow)
        valid = validate_inputs(flow.inputs, inputs, where=f"subflow {target}")
        await self.admission.wait_for_room()
        record = new_execution_record(
            engine=self,
            flow=flow,
            inputs=valid,
            parent_execution_id=parent_id,
            parent_task_run_id=parent_task_run_id,
            labels=check_labels(labels, f"subflow {target}: labels") if labels else None,
            execution_id=execution_id,
        )
        await self.save_execution(record, record.history)
        self.start_execution(flow, record)
        return True

    def start_retry(self, flow: Flow, record: Execution) -> None:
        """Start the stored next execution of a retry as a new execution (it waits for its
        ``not_before`` itself); a runtime closing leaves it CREATED for the next worker."""
        if not self.worker or not self.accepting:
            return
        with contextlib.suppress(RuntimeClosedError):
            self.start_execution(flow, record)

    async def _parent_id(self, execution_id: str) -> str | None:
        row = await self.store.get_execution(execution_id)
        return None if row is None else row.parent_execution_id

    async def adopt_child(self, child_id: str, watcher: ActorRef | None) -> bool:
        """If child execution ``child_id`` is stored, have ``watcher`` (if any) told when it
        ends, or now if it ended before a crash; False if there is no such execution."""
        row = await self.store.get_execution(child_id)
        if row is None:
            return False
        if watcher is not None:
            if State(row.state) in TERMINAL and child_id not in self.live:
                self._tell_ended_soon(child_id, watcher)
            else:
                self.watch_child(child_id, watcher)
        return True

    def watch_child(self, child_id: str, watcher: ActorRef) -> None:
        """After recovery: tell ``watcher`` when child execution ``child_id`` ends."""
        ending = self._ending.get(child_id)
        if child_id in self._ended:
            # Ended and stored here already; the cache keeps no outputs: read them back.
            self._tell_ended_soon(child_id, watcher)
        elif ending is not None:
            # Ended here, its end not stored yet (nobody watched it then): tell once it is.
            def stored(error: BaseException | None) -> None:
                if error is None:
                    self._tell_ended_soon(child_id, watcher)

            ending.add_callback(stored, want=True)
        else:
            self._child_watchers[child_id] = watcher

    def _tell_ended_soon(self, child_id: str, watcher: ActorRef) -> None:
        if self._loop is None:  # trio: a task of the actor system's task group
            self.system._tg.start_soon(self._tell_ended, child_id, watcher)
            return
        task = self._loop.create_task(self._tell_ended(child_id, watcher))
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)

    async def load_execution(self, execution_id: str) -> Execution | None:
        """The stored tree of an execution, or None if there is none."""
        row = await self.store.get_execution(execution_id)
        if row is None:
            return None
        return decode_tree(row, await self.store.task_runs(execution_id))

    async def _tell_ended(self, child_id: str, watcher: ActorRef) -> None:
        try:
            done = await self.load_execution(child_id)
        except Exception:  # storage failed: the parent is recovered again on the next start
            _log.exception("could not read ended child execution %s", child_id)
            return
        if done is not None:
            watcher.tell_nowait(Complete(done.state, _child_outputs(done), done.error))

    def kill_child(self, child_id: str) -> None:
        """Kill a subflow's child execution (cascade)."""
        ref = self.live.get(child_id)
        if ref is not None and ref.is_alive:
            ref.tell_nowait(Kill())


def _unavailable(what: str, error: BaseException) -> StorageUnavailable:
    return StorageUnavailable(f"{what}: {error}")


_KEEP_ENDED = 10_000
_CLAIM_UNBOUNDED = 256  # per claim round, when max_active is None


def _ended_marker(ex: Execution) -> Execution:
    """What the ended cache keeps of ``ex``: the record without its tree or data."""
    return msgspec.structs.replace(
        ex, task_runs=(), inputs={}, labels={}, flow_source=None, error=None
    )


def _not_stored(ex: Execution, error: BaseException) -> StorageUnavailable:
    if isinstance(error, StorageUnavailable):
        return error
    return StorageUnavailable(
        f"execution {ex.id} ended {ex.state.value} but was not stored: {error}"
    )


def _child_outputs(ex: Execution) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tr in ex.task_runs:
        if tr.outputs:
            if tr.value is None:
                out[tr.task_id] = tr.outputs
            else:
                out.setdefault(tr.task_id, {})[tr.value] = tr.outputs
    return out


#: Kestra's label naming the first execution of a chain of subflows (and of retries).
CORRELATION_ID = "system.correlationId"


def new_execution_record(
    *,
    engine: Engine,
    flow: Flow,
    inputs: dict[str, Any],
    parent_execution_id: str | None = None,
    parent_task_run_id: str | None = None,
    labels: dict[str, str] | None = None,
    traceparent: str | None = None,
    trigger: dict[str, Any] | None = None,
    execution_id: str | None = None,
) -> Execution:
    """A CREATED execution of ``flow``, labelled ``system.correlationId`` (its own id unless
    given: a subflow's child carries its root's, as in Kestra)."""
    execution_id = execution_id or engine.new_id()
    all_labels = {**flow.labels, **(labels or {})}
    all_labels.setdefault(CORRELATION_ID, execution_id)
    return Execution(
        id=execution_id,
        trigger=trigger,
        namespace=flow.namespace,
        flow_id=flow.id,
        flow_revision=flow.revision,
        state=State.CREATED,
        history=(StateEntry(State.CREATED, engine.clock.now()),),
        inputs=inputs,
        parent_execution_id=parent_execution_id,
        parent_task_run_id=parent_task_run_id,
        labels=all_labels,
        traceparent=traceparent,
        flow_source=flow.source,
    )
