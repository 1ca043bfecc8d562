"""The embedding API: ``async with Runtime.open("actorflow.db") as rt: ...``."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actorflow._errors import (
    ExecutionCorrupt,
    ExecutionNotFound,
    FlowError,
    IllegalOperation,
    InputError,
    StorageError,
    StorageUnavailable,
    TaskNotAllowed,
    UnstorableValue,
)
from actorflow.actors import ActorSystem, Kill, Pause, open_actor_system
from actorflow.runtime._allow import allowed_types, check_allowed
from actorflow.runtime._clock import Clock
from actorflow.runtime._core._admission import check_limits
from actorflow.runtime._core._collector import Tuning
from actorflow.runtime._core._engine import Engine, new_execution_record
from actorflow.runtime._core._execution import ExecutionActor
from actorflow.runtime._core._guardian import Guardian
from actorflow.runtime._core._messages import Restart, ResumeWith, Snapshot
from actorflow.runtime._core._persist import (
    decode_any,
    decode_tree,
    history_ops,
)
from actorflow.runtime._core._recovery import (
    COMMAND_POLL,
    COMMAND_TIMEOUT,
    STALE_AFTER,
    TERMINAL_NAMES,
    Recovery,
)
from actorflow.runtime._core._shutdown import RECORD_MIN, grace_of, record_interrupted
from actorflow.runtime._flow import Flow, Input, load_source, validate_inputs
from actorflow.runtime._observer import Observer
from actorflow.runtime._records import Execution, StateEntry, TaskRun
from actorflow.runtime._states import TERMINAL, State, check_transition
from actorflow.runtime._tasks import Flowable, Task
from actorflow.runtime._values import check_labels, check_text, to_plain
from actorflow.runtime._watch import DEFAULT_BACKLOG, ChangeHub, ChangeWatch, Listeners
from actorflow.storage import (
    SCHEME,
    ClaimExecution,
    Commit,
    DeleteTaskRuns,
    ExecutionRow,
    FileStorage,
    LogRow,
    MetricRow,
    ObjectStore,
    Store,
    is_postgres_url,
    open_store,
    redact_url,
)

_log = logging.getLogger("actorflow.runtime")
FILES_ENV = "ACTORFLOW_FILES"


def _shared_files(url: str, read_only: bool) -> FileStorage | None:
    """The files folder of a PostgreSQL runtime: ``$ACTORFLOW_FILES``, as nothing lies beside
    a database on a server; every host must reach the same folder (a shared mount). A
    reader without it gets a temporary folder (None here); a writer is refused."""
    folder = os.environ.get(FILES_ENV)
    if folder:
        return FileStorage(Path(folder))
    if read_only:
        return None
    raise StorageError(
        f"{redact_url(url)}: a PostgreSQL database keeps no files beside it: pass"
        f" files= (a folder every host of the cluster mounts) or set {FILES_ENV}"
    )


DEFAULT_MAX_ACTIVE: int | None = 128
DEFAULT_MAX_QUEUED: int | None = 10_000


_log = logging.getLogger("actorflow.runtime")


class ExecutionHandle:
    """What ``submit`` returns: the id, and shortcuts to wait for or control the execution."""

    def __init__(self, runtime: Runtime, record: Execution) -> None:
        self.runtime = runtime
        self.record = record
        self.id = record.id

    async def wait(self, timeout: float | None = None) -> Execution:
        """Wait until terminal; returns the full tree."""
        return await self.runtime.wait(self.id, timeout=timeout)

    async def get(self) -> Execution:
        """The current tree."""
        return await self.runtime.get(self.id)

    def __repr__(self) -> str:
        return f"<ExecutionHandle {self.record.namespace}.{self.record.flow_id} {self.id}>"


class Runtime(Recovery):
    """An embedded workflow runtime on an actor system and a store."""

    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine = engine
        self.store = store
        engine.controller = self  # for tasks that act on other executions (Resume)
        #: Seconds closing may take in all (see :meth:`open`).
        self.shutdown_timeout = 10.0
        self._closing = False
        self._unrunnable: dict[str, str] = {}
        self._opened: contextlib.AbstractAsyncContextManager[Runtime] | None = None

    @classmethod
    async def start(cls, path: str | os.PathLike[str] = "actorflow.db", **options: Any) -> Runtime:
        """Open a runtime without an ``async with`` block, for a host's startup and shutdown
        hooks (a FastAPI lifespan, an aiohttp ``on_startup``): the arguments of :meth:`open`;
        close it with :meth:`aclose`, from the same task."""
        opened = cls.open(path, **options)
        rt = await opened.__aenter__()
        rt._opened = opened
        return rt

    async def aclose(self, timeout: float | None = None) -> None:
        """Close a runtime made by :meth:`start` within ``timeout`` seconds (default its
        ``shutdown_timeout``), as the end of an :meth:`open` block does; again: nothing."""
        if timeout is not None:
            if not timeout >= 0:  # NaN too
                raise ValueError(f"aclose timeout must be >= 0 seconds, got {timeout!r}")
            self.shutdown_timeout = timeout
        opened, self._opened = self._opened, None
        if opened is not None:
            await opened.__aexit__(None, None, None)
        elif not self._closing:
            raise IllegalOperation(
                "this runtime closes when its `async with Runtime.open(...)` block ends"
                " (set rt.shutdown_timeout to bound it); aclose() closes one made by"
                " Runtime.start()"
            )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str] = "actorflow.db",
        *,
        flows: Iterable[Flow] = (),
        store: Store | None = None,
        files: FileStorage | ObjectStore | str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        observer: Observer | None = None,
        tracing: Any = None,
        recover: bool = True,
        max_active: int | None = DEFAULT_MAX_ACTIVE,
        max_queued: int | None = DEFAULT_MAX_QUEUED,
        shutdown_timeout: float = 10.0,
        read_only: bool = False,
        lock_timeout: float = 30.0,
        allow_types: Collection[str] | str = (),
        tune_gc: bool = True,
        worker: bool = True,
        lease_ttl: float = STALE_AFTER,
    ) -> AsyncIterator[Runtime]:
        """Open a runtime on the database at ``path`` (``":memory:"`` keeps nothing; a
        ``postgresql://`` URL opens PostgreSQL, whose files go to ``files`` or
        ``$ACTORFLOW_FILES``, a folder every host of the cluster mounts). ``files``: a
        folder, an :class:`~actorflow.storage.ObjectStore` (where task files' bytes live; a
        folder is a :class:`~actorflow.storage.LocalDirectory`) or a ``FileStorage``; by
        default a folder beside the database file.

        Unfinished executions whose owner process is gone are resumed, provided their flow is
        in ``flows`` (or registered later with :meth:`register`) or was loaded from a file.
        Closing takes at most about ``shutdown_timeout`` seconds, however many executions run
        (set ``rt.shutdown_timeout`` to change it before the block ends): nothing new starts or
        is claimed; running attempts get that long together (less a fifth, at most 2 s, kept
        for what follows), then are interrupted; the runtime records each interrupted attempt
        as recovery would (FAILED ``interrupted``), commits that, and only then releases its
        leases, so another worker or the next start resumes them at once with a new attempt.
        Recording gets at least half a second; what storage could not record keeps its lease
        and is recovered as after a crash.

        ``read_only``: read and inspect only (the CLI's read commands): nothing is written, no
        writer starts, no owner is registered, nothing is recovered; it works on a read-only
        file. ``lock_timeout``: seconds a write waits for a lock another process holds; on
        PostgreSQL also how long a lost connection is waited for (callers then get
        :class:`~actorflow.StorageUnavailable`).

        ``allow_types`` names the gated task types this runtime runs (``{"shell"}``: tasks
        that run commands); a flow with any other gated task is refused at submit with
        :class:`~actorflow.TaskNotAllowed`, and recovery leaves its executions alone.

        ``tune_gc``: while open, freeze what exists after start-up and raise the cycle
        collector's thresholds while many actors live; the host's settings come back on close
        (see ``runtime/_core/_collector.py``).

        ``worker``: this runtime runs executions (the default): it runs its own submissions
        and claims queued ones from the store while it has free slots (``max_active``),
        each under a lease of ``lease_ttl`` seconds that its heartbeat renews (every
        ``lease_ttl / 3`` s at most 2 s). A lease that expires (a dead or stalled worker) is
        claimed by another worker, which resumes the execution; the stalled one's later
        writes are refused. ``worker=False``: only submit, read and control; a worker
        elsewhere runs what it submits (``wait`` follows the store).
        """
        if not lease_ttl > 0 or lease_ttl == float("inf"):  # NaN too
            raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        if not shutdown_timeout >= 0:  # NaN too
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, got {shutdown_timeout!r}")
        allowed = allowed_types(allow_types)
        check_limits(max_active, max_queued)  # before anything is opened
        own_store = store is None
        store = store or open_store(str(path), read_only=read_only, lock_timeout=lock_timeout)
        if read_only:
            recover = worker = False
        if not worker:
            recover = False
        temp_root: Path | None = None
        if files is None and is_postgres_url(str(path)):
            files = _shared_files(str(path), read_only)
        if files is None:
            if str(path) in (":memory:", "memory://") or (read_only and is_postgres_url(str(path))):
                temp_root = Path(tempfile.mkdtemp(prefix="actorflow-files-"))
            files = FileStorage(temp_root or Path(f"{path}.files"))
        elif not isinstance(files, FileStorage):
            files = FileStorage(Path(files) if isinstance(files, str | os.PathLike) else files)
        body_error: Exception | None = None
        async with contextlib.AsyncExitStack() as stack:
            if temp_root is not None:
                # Nothing of an in-memory runtime outlives it: nor its files' temporary folder.
                stack.callback(shutil.rmtree, temp_root, ignore_errors=True)
            if own_store:
                await stack.enter_async_context(store)  # type: ignore[arg-type]
            if observer is None and tracing is not False:
                # None still traces into the host's global provider when it configured one.
                tracing_mod = importlib.import_module("actorflow.runtime._tracing")
                observer = tracing_mod.make_observer(tracing)
            system = await stack.enter_async_context(open_actor_system(name="actorflow"))
            tg = await stack.enter_async_context(anyio.create_task_group())
            # A runtime that takes no queued work says so in its name (see live_workers).
            owner = None
            if not recover:
                owner = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}{CLIENT_SUFFIX}"
            engine = Engine(
                system=system, store=store, files=files, clock=clock or Clock(),
                observer=observer, max_active=max_active, max_queued=max_queued,
                execution_actor=ExecutionActor, guardian=Guardian, owner=owner,
            )  # fmt: skip
            engine.allow_types = allowed
            engine.worker = worker
            engine.lease_ttl = lease_ttl
            rt = cls(engine, store)
            rt.read_only = read_only
            rt.shutdown_timeout = shutdown_timeout
            await rt._load_deployed()  # before `flows`: the caller's own objects win
            for flow in flows:
                engine.register(flow)
            tg.start_soon(engine.timers.run)
            if not read_only:  # a reader announces nothing and runs no one else's commands
                await store.register_owner(engine.owner, lease_ttl)
                tg.start_soon(rt._housekeeping)
            if recover:
                await rt.recover()
                tg.start_soon(rt._claim_loop)  # a worker takes queued work while it runs
            if tune_gc:
                stack.enter_context(Tuning(functools.partial(_live_count, system, engine)))
            try:
                yield rt
            except Exception as exc:
                # Re-raised below, outside the task groups, so callers get their own
                # exception and not an ExceptionGroup wrapping it.
                body_error = exc
            finally:
                engine.accepting = False
                rt._closing = True
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await rt._shut_down(worker=worker)
        if body_error is not None:
            raise body_error

    async def _shut_down(self, *, worker: bool) -> None:
        """Close within ``shutdown_timeout`` whatever the number of executions: nothing new
        starts or is claimed; running attempts get the grace together, then are interrupted;
        the interrupted attempts are recorded (as recovery would) and committed, and only then
        are the leases released, so another worker (or the next start) resumes them at once.
        """
        engine, store = self.engine, self.store
        deadline = anyio.current_time() + self.shutdown_timeout
        grace = grace_of(self.shutdown_timeout)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._interrupt_after, grace)
            # The system's own deadline only backs the watchdog up: cancelling every actor at
            # once costs a fraction of each execution's stop timing out on its own.
            await engine.system.shutdown(grace + RECORD_MIN)
            tg.cancel_scope.cancel()
        consuming = self._consuming
        if consuming is not None:
            await consuming.wait()  # its answer is written while we still own
        unrecorded: set[str] = set()
        late: Commit | None = None
        if worker and not self.read_only:
            unrecorded, late = await self._record_interrupted(deadline)
        with contextlib.suppress(Exception):
            await engine.observer.aclose()
        with contextlib.suppress(Exception):
            await store.flush()
        if late is not None and late.done and late.error is None:
            unrecorded = set()  # the records landed after all: nothing is left unanswered
        if self.read_only:
            return
        if worker:
            # Another worker resumes at once what did not finish here; what could not be
            # recorded keeps its lease until it expires, then is recovered as after a crash.
            with contextlib.suppress(Exception):
                if unrecorded:
                    rest = [i for i in store.fences if i not in unrecorded]
                    await store.release_leases(engine.owner, rest)
                else:
                    await store.release_leases(engine.owner)
        with contextlib.suppress(Exception):
            await store.release_owner(engine.owner)

    async def _interrupt_after(self, grace: float) -> None:
        await anyio.sleep(grace)
        self.engine.system.cancel_all()

    async def _record_interrupted(self, deadline: float) -> tuple[set[str], Commit | None]:
        """Record the attempts the close interrupted; returns the executions it could not
        answer for yet (storage failed, or the time ran out: then also the commit, which may
        still land)."""
        engine = self.engine
        ids = [i for i in engine.live if i not in engine.fenced_out]
        if not ids:
            return set(), None
        if engine.store.failed is not None:
            return set(ids), None
        flows = engine.guardian.live_flows()
        budget = max(deadline - anyio.current_time(), RECORD_MIN)
        commit: Commit | None = None
        with anyio.move_on_after(budget):
            try:
                await engine.store.flush()  # the snapshots of the last moments are stored
                commit, count = await record_interrupted(engine, flows, ids)
                if commit is not None:
                    await commit
            except Exception as exc:
                _log.warning(
                    "closing: the interrupted attempts of %d executions could not be recorded"
                    " (%s); the next worker records them when it resumes them", len(ids), exc,
                )  # fmt: skip
                return set(ids), None
            if count:
                _log.info("closing: %d interrupted attempts recorded", count)
            return set(), None
        _log.warning(
            "closing: recording the interrupted attempts of %d executions took longer than"
            " %.2gs; unless it is stored by the end of the close, the next worker records them"
            " when it resumes them", len(ids), budget,
        )  # fmt: skip
        return set(ids), commit

    def interrupt(self) -> None:
        """Interrupt running attempts now instead of at the end of the closing grace (the CLI's
        second Ctrl-C): called while the runtime closes, the grace ends at once; called before,
        closing will not wait. The close still records the interrupted attempts (FAILED
        ``interrupted``) before it releases their leases; the next runtime to take them runs a
        new attempt."""
        self.shutdown_timeout = 0.0
        if self._closing:
            self.engine.system.cancel_all()

    # -- flows and submission --------------------------------------------------------
    def register(self, flow: Flow) -> None:
        """Make a flow known: for subflows, and to resume its unfinished executions."""
        self.engine.register(flow)

    async def run_task(
        self,
        task: Task,
        inputs: Mapping[str, Any] | None = None,
        *,
        namespace: str = "adhoc",
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Execution:
        """Run one task on its own, without writing a flow (Mistral's "action execution"):
        with its retries, timeout and records, stored and shown like any execution (of a flow
        ``task-<task id>`` in ``namespace``); ``inputs`` are ``{{ inputs.* }}`` to its templates.
        Returns the finished execution; ``.task_run(task.id)`` has its attempts and outputs.
        """
        if isinstance(task, Flowable):
            raise IllegalOperation(
                f"run_task runs one task; {task.id!r} is a flowable: make it a Flow"
            )
        values = dict(inputs or {})
        flow = Flow(
            id=f"task-{task.id}",
            namespace=namespace,
            inputs=[Input(name=k, type="any", required=False) for k in sorted(values)],
            tasks=[task],
            labels={"actorflow.adhoc": "true", **dict(labels or {})},
            description=f"task {task.id} run on its own",
        )
        self.register(flow)  # recovery and restart find it by id
        handle = await self.submit(flow, values, durable=False)
        return await self.wait(handle.id, timeout=timeout)

    async def deploy(self, source: str) -> tuple[Flow, bool]:
        """Store a flow file's text as the next revision of its flow (unless the latest stored
        revision has the same text) and register it; returns (the flow, whether it is new).

        Deployed flows are loaded by every runtime that opens the database, so any worker can
        run them. Python flows are not deployed: register them on each worker
        (``Runtime.open(flows=...)``).
        """
        flow = load_source(source)
        if flow is None:
            raise FlowError("no flow language is installed to read flow sources")
        revision, new = await self.store.deploy_flow(flow.namespace, flow.id, source, flow.revision)
        flow = dataclasses.replace(flow, revision=revision)
        self.engine.register(flow)
        return flow, new

    async def _load_deployed(self) -> None:
        for row in await self.store.flows():
            try:
                flow = load_source(row.source)
            except FlowError as exc:
                # E.g. a task type only another worker registers: that worker runs it.
                _log.warning("deployed flow %s.%s revision %d does not load here: %s",
                             row.namespace, row.id, row.revision, exc)  # fmt: skip
                continue
            if flow is not None:
                self.engine.register(dataclasses.replace(flow, revision=row.revision))

    def new_execution_id(self) -> str:
        """A fresh execution id, for :meth:`submit`'s ``execution_id``."""
        return self.engine.new_id()

    def flow(self, namespace: str, flow_id: str, revision: int | None = None) -> Flow | None:
        """A registered flow (its latest revision unless ``revision`` is given), else None."""
        return self.engine.find_flow(namespace, flow_id, revision)

    def flows(self) -> list[Flow]:
        """The latest revision of every registered flow, by namespace and id."""
        latest: dict[tuple[str, str], Flow] = {}
        for (namespace, flow_id, _), flow in self.engine.flows.items():
            key = (namespace, flow_id)
            if key not in latest or flow.revision > latest[key].revision:
                latest[key] = flow
        return [latest[k] for k in sorted(latest)]

    async def submit(
        self,
        flow: Flow,
        inputs: Mapping[str, Any] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        traceparent: str | None = None,
        durable: bool = True,
        trigger: Mapping[str, Any] | None = None,
        execution_id: str | None = None,
    ) -> ExecutionHandle:
        """Create an execution of ``flow`` and start it; returns once it is stored
        (``durable=False``: once it is queued for storage, for a caller that awaits its end).

        ``trigger`` records what started it (``{{ trigger.* }}``); ``execution_id`` is an id
        made beforehand with :meth:`new_execution_id` (a trigger claims its fire with it).
        """
        engine = self.engine
        engine._check()
        check_allowed(flow, engine.allow_types, engine.find_flow)
        valid: dict[str, Any]
        if flow.inputs or inputs:
            valid, execution_id = await self._inputs(flow, inputs, execution_id)
        else:  # the common case: nothing to validate, no message to build
            valid = {}
        extra: dict[str, str] = {}
        if labels or traceparent is not None:
            try:
                extra = check_labels(labels or {}, "labels")
                if traceparent is not None:
                    check_text(traceparent, "traceparent")
            except UnstorableValue as exc:
                raise InputError(f"flow {flow.namespace}.{flow.id}: {exc}") from None
        admission = engine.admission
        if admission.must_wait():  # a coroutine only when there is a queue to wait in
            await admission.wait_for_room()
        if traceparent is None:
            traceparent = engine.observer.current_traceparent()
        record = new_execution_record(
            engine=engine,
            flow=flow,
            inputs=valid,
            labels=extra,
            traceparent=traceparent,
            trigger=dict(trigger) if trigger is not None else None,
            execution_id=execution_id,
        )
        commit = engine.save_execution(record, record.history)
        if engine.worker:
            engine.start_execution(flow, record)  # leased to us by its own first commit
        if durable or not engine.worker:
            # Queued for a worker elsewhere: a wait follows the store, where it must be.
            await commit
        return ExecutionHandle(self, record)

    async def _inputs(
        self, flow: Flow, inputs: Mapping[str, Any] | None, execution_id: str | None
    ) -> tuple[dict[str, Any], str | None]:
        """``inputs`` validated against the flow's (FILE inputs stored), and the execution
        id (made here when a FILE input needs it before the record)."""
        where = f"flow {flow.namespace}.{flow.id}"
        declared = {i.name for i in flow.inputs}
        undeclared = sorted(k for k in (inputs or {}) if k not in declared)
        if undeclared:
            # Kestra reads the inputs a flow declares and ignores the rest: so do we, aloud.
            _log.warning("%s: input(s) %s not declared by the flow; ignored", where, undeclared)
        valid = validate_inputs(flow.inputs, inputs, where=where, ignore_unknown=True)
        if execution_id is None and any(i.type == "file" for i in flow.inputs):
            execution_id = self.new_execution_id()
        for inp in flow.inputs:
            if inp.type == "file" and valid.get(inp.name) is not None:
                assert execution_id is not None
                valid[inp.name] = await self._store_input_file(
                    flow, execution_id, inp.name, valid[inp.name], where
                )
        return valid, execution_id

    async def _store_input_file(
        self, flow: Flow, execution_id: str, name: str, value: Any, where: str
    ) -> str:
        """A FILE input in the internal storage: its URI (one already stored is kept)."""
        files = self.engine.files
        if isinstance(value, str) and value.startswith(SCHEME):
            if not await files.exists(value):
                raise InputError(f"{where}: input {name!r}: no such file {value!r}")
            return value
        if isinstance(value, bytes):
            data, filename = value, name
        else:
            path = Path(value[len("file://") :] if value.startswith("file://") else value)
            try:
                data = await anyio.Path(path).read_bytes()
            except OSError as exc:
                raise InputError(
                    f"{where}: input {name!r}: cannot read file {str(path)!r}: "
                    f"{exc.strerror or exc}"
                ) from None
            filename = path.name or name
        return await files.put(
            flow.namespace, flow.id, execution_id, "inputs", name, filename, data
        )

    async def run(
        self, flow: Flow, inputs: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Execution:
        """Submit and wait: the finished tree."""
        # No wait for the creation's own commit: the end commits after it, and is awaited.
        handle = await self.submit(flow, inputs, durable=False)
        return await self.wait(handle.id, timeout=timeout)

    # -- reading ---------------------------------------------------------------------
    async def get(self, execution_id: str) -> Execution:
        """The full tree of an execution (live or stored)."""
        ref = self.engine.live.get(execution_id)
        if ref is not None and ref.is_alive:
            with contextlib.suppress(Exception):
                snap = await ref.ask(Snapshot(), timeout=5.0)
                if isinstance(snap, Execution):
                    return snap
        return await self._load(execution_id)  # ended (the ended cache keeps no trees) or not here

    async def _load(self, execution_id: str) -> Execution:
        return (await self._read(execution_id))[1]

    async def _read(self, execution_id: str) -> tuple[ExecutionRow, Execution]:
        """The stored row (its state and ``updated`` are the version a compare-and-set
        checks) and the tree."""
        row = await self.store.get_execution(execution_id)
        if row is None:
            raise ExecutionNotFound(f"no execution with id {execution_id!r}")
        try:
            return row, decode_tree(row, await self.store.task_runs(execution_id))
        except ExecutionCorrupt as exc:
            await self.quarantine(execution_id, str(exc))
            raise

    async def _read_whole(self, execution_id: str) -> tuple[ExecutionRow, Execution]:
        """:meth:`_read`, with task runs of the same version as the row: another process
        may change them between the two reads (a concurrent restart), so read again until
        the row did not move meanwhile."""
        await self.store.flush()
        for _ in range(5):
            row, ex = await self._read(execution_id)
            again = await self.store.get_execution(execution_id)
            if again is not None and (again.state, again.updated) == (row.state, row.updated):
                return row, ex
        raise IllegalOperation(f"execution {execution_id} keeps changing; try again")

    async def wait(self, execution_id: str, *, timeout: float | None = None) -> Execution:
        """Wait until the execution is terminal (its final state is stored); returns the tree."""
        found = self.engine.waiter(execution_id)
        if isinstance(found, Execution):
            return await self._load(execution_id)  # ended and stored: its tree is in the store
        if found is not None and timeout is None:
            return await found  # the common case: no cancel scope to build
        with anyio.fail_after(timeout):
            if found is not None:
                return await found
            return await self._follow(execution_id)

    async def _follow(self, execution_id: str) -> Execution:
        """Not running here: another process may own it; follow the store."""
        while True:
            if self.store.failed is not None:
                raise StorageUnavailable(f"storage failed: {self.store.failed}")
            ex = await self._load(execution_id)
            if ex.state.terminal:
                return ex
            await anyio.sleep(COMMAND_POLL)

    async def wait_for(
        self, execution_id: str, *states: State, timeout: float | None = None
    ) -> Execution:
        """Wait until a live execution reaches one of ``states`` (e.g. PAUSED); returns the tree."""
        wanted = frozenset(states) | TERMINAL
        engine = self.engine
        with anyio.fail_after(timeout):
            engine.raise_if_storage_failed()
            # Register first, then look: no change can slip between the two.
            event = engine.state_waiter(execution_id, wanted)
            try:
                snap = await self.get(execution_id)
                if snap.state not in wanted:
                    engine.raise_if_storage_failed()
                    if execution_id not in engine.live:
                        raise IllegalOperation(f"execution {execution_id} is not running here")
                    await event.wait()
            finally:
                engine.drop_state_waiter(execution_id, event)
            engine.raise_if_storage_failed()  # the event is also how storage failure wakes us
            await self.store.flush()
            return await self.get(execution_id)

    async def executions(
        self,
        *,
        flow: str | None = None,
        namespace: str | None = None,
        state: State | str | Collection[State | str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Execution]:
        """Stored executions, newest first (without task runs; use :meth:`get` for a tree)."""
        states = None
        if state is not None:
            items = [state] if isinstance(state, str | State) else list(state)
            states = [State(s).value for s in items]
        await self.store.flush()
        rows = await self.store.list_executions(
            flow_id=flow, namespace=namespace, states=states, since=since, until=until,
            limit=limit, offset=offset,
        )  # fmt: skip
        listed = []
        for r in rows:
            try:
                listed.append(decode_tree(r, ()))
            except ExecutionCorrupt as exc:  # one bad row hides itself, not the listing
                await self.quarantine(r.id, str(exc))
        return listed

    async def logs(self, execution_id: str, task_run_id: str | None = None) -> list[LogRow]:
        """Stored log lines of an execution (or one task run)."""
        await self.store.flush()
        return await self.store.logs(execution_id, task_run_id)

    async def metrics(
        self, *, execution_id: str | None = None, name: str | None = None, **tags: str
    ) -> list[MetricRow]:
        """Stored metrics, filtered by execution, name and tags."""
        await self.store.flush()
        return await self.store.metrics(execution_id=execution_id, name=name, tags=tags or None)

    async def read_file(self, uri: str) -> bytes:
        """Content of an ``actorflow://`` file written by a task."""
        return await self.engine.files.get(uri)

    # -- watching --------------------------------------------------------------------
    @functools.cached_property
    def _changes(self) -> ChangeHub:
        engine = self.engine
        hooks = Listeners(engine.state_listeners, engine.end_listeners, engine.task_run_listeners)
        return ChangeHub(hooks)

    def watch(
        self, execution_id: str | None = None, *, maxsize: int = DEFAULT_BACKLOG
    ) -> ChangeWatch:
        """Notices of the state changes of the executions (and their task runs) this process
        runs, or of one execution: ``with rt.watch() as changes: async for c in changes``.

        Never slows the engine: a watcher ``maxsize`` notices behind gets one ``resync``
        notice in their place. Executions other processes run are not heard of (read the
        store for those); see :meth:`runs_here`.
        """
        return self._changes.watch(execution_id, maxsize)

    def runs_here(self, execution_id: str) -> bool:
        """Whether this process runs the execution now (so :meth:`watch` hears of it)."""
        return execution_id in self.engine.live

    # -- control ---------------------------------------------------------------------
    async def _control(
        self,
        execution_id: str,
        message: Any,
        command: str,
        inputs: Mapping[str, Any] | None,
        timeout: float,
    ) -> None:
        ref = self.engine.live.get(execution_id) or self.engine.unpark(execution_id)
        if ref is not None and ref.is_alive:
            result = await ref.ask(message, timeout=30.0)
            if isinstance(result, Exception):
                raise result
            await self.store.flush()
            return
        await self.store.flush()  # an execution that just ended here reads as ended
        ex = await self._load(execution_id)
        if ex.state.terminal:
            raise IllegalOperation(f"execution {execution_id} is already {ex.state.value}")
        # Owned by another process: a command through the store, answered by its owner.
        await self.send_command(ex, command, inputs, timeout)

    async def kill(self, execution_id: str, *, timeout: float = COMMAND_TIMEOUT) -> None:
        """Kill: KILLING, running task runs cancelled, then KILLED (subflows too).

        For an execution of another process, waits up to ``timeout`` s for its owner's
        answer (every control method does): raises its refusal (``IllegalOperation``), or
        ``CommandNotAnswered``.
        """
        await self._control(execution_id, Kill(), "kill", None, timeout)

    async def pause(self, execution_id: str, *, timeout: float = COMMAND_TIMEOUT) -> None:
        """Pause a RUNNING execution: no new task run starts; running ones finish."""
        await self._control(execution_id, Pause(), "pause", None, timeout)

    async def resume(
        self,
        execution_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        """Resume a PAUSED execution; ``inputs`` go to the Pause task it waits on."""
        # Checked here too (the Pause task checks them against its declarations): they may
        # travel to another process as a command first.
        try:
            given = {
                check_text(k, "resume input name"): to_plain(v, f"inputs.{k}")
                for k, v in (inputs or {}).items()
            }
        except UnstorableValue as exc:
            raise InputError(f"resume of {execution_id}: {exc}") from None
        await self._control(execution_id, ResumeWith(given), "resume", given, timeout)

    async def restart(self, execution_id: str) -> ExecutionHandle:
        """Run failed task runs of a FAILED, KILLED or WARNING execution again (same id)."""
        restartable = (State.FAILED, State.KILLED, State.WARNING)
        if execution_id in self.engine.live:
            # Its live state, in the words a caller in another process reads from the store.
            live = (await self.get(execution_id)).state
            if live in restartable:  # ended, its actor not gone yet
                raise IllegalOperation(f"execution {execution_id} is still running")
            raise _not_restartable(execution_id, live)
        row, ex = await self._read_whole(execution_id)
        if ex.state not in restartable:
            raise _not_restartable(execution_id, ex.state)
        flow = self._flow_for(ex)
        now = self.engine.clock.now()
        removed = _errors_subtrees(flow, ex.task_runs)
        runs = [tr for tr in ex.task_runs if tr.id not in removed]
        by_id = {tr.id: tr for tr in runs}
        targets = {
            tr.id for tr in runs if tr.state in (State.FAILED, State.KILLED, State.CANCELLED)
        }
        targets = {
            t for t in targets if not isinstance(flow.task(by_id[t].task_id), Flowable)
        } or targets
        if not targets:
            raise IllegalOperation(f"execution {execution_id}: no task found to restart")
        reopen = set(targets)
        for t in targets:
            pid = by_id[t].parent_task_run_id
            while pid is not None:
                reopen.add(pid)
                pid = by_id[pid].parent_task_run_id
        engine = self.engine
        # One transaction, on the condition that the stored execution is still what was
        # read: of two concurrent restarts (two processes) exactly one goes on.
        ops: list[Any] = []
        new_runs: list[TaskRun] = []
        reopened: list[TaskRun] = []
        for tr in runs:
            if tr.id in reopen and tr.state.terminal:
                check_transition("task run", tr.id, tr.state, State.RESTARTED)
                entry = StateEntry(State.RESTARTED, now)
                tr = msgspec.structs.replace(
                    tr, state=State.RESTARTED, history=(*tr.history, entry)
                )
                ops += history_ops(ex.id, tr.id, (entry,))
                ops += engine._task_run_rows(tr)
                reopened.append(tr)
            new_runs.append(tr)
        if removed:
            ops.append(DeleteTaskRuns(ex.id, tuple(sorted(removed))))
        check_transition("execution", ex.id, ex.state, State.RESTARTED)
        entry = StateEntry(State.RESTARTED, now)
        record = msgspec.structs.replace(
            ex, state=State.RESTARTED, history=(*ex.history, entry), task_runs=(),
            attempt_number=ex.attempt_number + 1, error=None,
        )  # fmt: skip
        ops += history_ops(ex.id, None, (entry,))
        ops += engine._execution_rows((record, engine.owner, row.epoch, None))
        # The restart takes the lease with a new epoch: a worker here, else the queue.
        epoch = row.epoch + 1
        if engine.worker:
            ops.append(
                ClaimExecution(ex.id, engine.owner, epoch, engine._wall() + engine.lease_ttl)
            )
        else:
            ops.append(ClaimExecution(ex.id, None, epoch, None))
        if not await self.store.compare_and_write(ex.id, row.state, row.updated, ops):
            now_row = await self.store.get_execution(ex.id)
            state = "purged" if now_row is None else now_row.state
            raise IllegalOperation(
                f"execution {execution_id} changed while it was being restarted (now {state}):"
                " another restart took it first"
            )
        if engine.tracing:
            try:
                for tr in reopened:
                    engine.observer.task_run_changed(tr, None)
                engine.observer.execution_changed(record)
            except Exception:  # tracing must never break an execution
                _log.exception("observer failed on restart of %s", ex.id)
        if engine.worker:
            self.store.fences[ex.id] = epoch
            engine.fenced_out.discard(ex.id)
            engine.spawn_execution(flow, record, new_runs, "restart", Restart())
        return ExecutionHandle(self, record)

    async def replay(
        self, execution_id: str, *, task_run_id: str | None = None, task_id: str | None = None
    ) -> ExecutionHandle:
        """A new execution linked to the original that runs again from a task run (or from the
        beginning): everything before it is kept, it and what follows run again."""
        _, ex = await self._read_whole(execution_id)
        if not ex.state.terminal:
            raise IllegalOperation(f"execution {execution_id} is {ex.state.value}; wait for it")
        flow = self._flow_for(ex)
        now = self.engine.clock.now()
        engine = self.engine
        base = new_execution_record(
            engine=engine, flow=flow, inputs=dict(ex.inputs), labels=dict(ex.labels),
            traceparent=ex.traceparent,
        )  # fmt: skip
        base = msgspec.structs.replace(
            base, original_execution_id=ex.id, attempt_number=ex.attempt_number + 1
        )
        if task_run_id is None and task_id is None:
            await engine.save_execution(base, base.history)
            if engine.worker:
                engine.start_execution(flow, base)
            return ExecutionHandle(self, base)
        if task_run_id is None:
            try:
                task_run_id = ex.task_run(str(task_id)).id
            except KeyError as exc:
                raise IllegalOperation(
                    f"execution {execution_id} has no task run of {task_id!r}"
                ) from exc
        runs = list(ex.task_runs)
        by_id = {tr.id: tr for tr in runs}
        if task_run_id not in by_id:
            raise IllegalOperation(f"execution {execution_id} has no task run {task_run_id!r}")
        chain: list[str] = []
        pid: str | None = task_run_id
        while pid is not None:
            chain.append(pid)
            pid = by_id[pid].parent_task_run_id
        # Along the chain, keep the siblings created before each chain member (with all
        # they contain); the replayed task run's own children and everything after go.
        order = {tr.id: i for i, tr in enumerate(runs)}
        children: dict[str | None, list[str]] = {}
        for tr in runs:
            children.setdefault(tr.parent_task_run_id, []).append(tr.id)
        keep: set[str] = set(chain)
        stack: list[str] = []
        for member in chain:
            parent = by_id[member].parent_task_run_id
            stack.extend(i for i in children.get(parent, ()) if order[i] < order[member])
        while stack:
            i = stack.pop()
            if i not in keep:
                keep.add(i)
                stack.extend(children.get(i, ()))
        ids = {old: engine.new_id() for old in keep}
        new_runs: list[TaskRun] = []
        for tr in runs:
            if tr.id not in keep:
                continue
            changes: dict[str, Any] = {
                "id": ids[tr.id],
                "execution_id": base.id,
                "parent_task_run_id": ids.get(tr.parent_task_run_id or ""),
            }
            if tr.id in chain:
                entry = StateEntry(State.RESTARTED, now)
                changes["state"] = State.RESTARTED
                changes["history"] = (*tr.history, entry)
                if tr.id != task_run_id:
                    # Ancestors decide again from their kept children.
                    changes["outputs"] = tr.outputs
            new = msgspec.structs.replace(tr, **changes)
            engine.save_task_run(new, new.history)
            new_runs.append(new)
        entry = StateEntry(State.RESTARTED, now)
        record = msgspec.structs.replace(
            base, state=State.RESTARTED, history=(*base.history, entry)
        )
        await engine.save_execution(record, record.history)
        if engine.worker:
            engine.spawn_execution(flow, record, new_runs, "restart", Restart())
        return ExecutionHandle(self, record)

    async def purge(
        self,
        *,
        older_than: float | None = None,
        execution_ids: Collection[str] | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Delete ended executions (with their files) that ended more than ``older_than``
        seconds ago, or by id; running ones are never deleted. ``dry_run``: only say which."""
        await self.store.flush()
        rows = []
        if execution_ids:
            for i in execution_ids:
                row = await self.store.get_execution(i)
                if row is not None and row.state in TERMINAL_NAMES:
                    rows.append(row)
        if older_than is not None:
            cutoff = time.time() - older_than
            offset = 0
            while True:
                page = await self.store.list_executions(
                    states=TERMINAL_NAMES, limit=1000, offset=offset, newest_first=False
                )
                rows.extend(r for r in page if r.ended is not None and r.ended < cutoff)
                if len(page) < 1000:
                    break
                offset += 1000
        if not rows or dry_run:
            return [r.id for r in rows]
        deleted = await self.store.purge(execution_ids=[r.id for r in rows])
        gone = set(deleted)
        for row in rows:
            if row.id in gone:
                await self.engine.files.delete_execution(row.namespace, row.flow_id, row.id)
        return deleted

    def _flow_for(self, ex: Execution) -> Flow:
        flow = self.engine.find_flow(ex.namespace, ex.flow_id, ex.flow_revision)
        if flow is None and ex.flow_source is not None:
            try:
                flow = load_source(ex.flow_source)
            except FlowError as exc:
                # E.g. a type registered in the process that ran it: recovery skips it.
                raise IllegalOperation(f"stored flow of {ex.id} does not load: {exc}") from exc
            if flow is not None:
                self.engine.register(flow)
        if flow is None:
            raise IllegalOperation(
                f"flow {ex.namespace}.{ex.flow_id} revision {ex.flow_revision} is not registered"
            )
        try:
            check_allowed(flow, self.engine.allow_types, self.engine.find_flow)
        except TaskNotAllowed as exc:
            raise IllegalOperation(f"execution {ex.id}: {exc}") from exc
        return flow


def _not_restartable(execution_id: str, state: State) -> IllegalOperation:
    return IllegalOperation(
        f"execution {execution_id} is {state.value}; only FAILED, KILLED or WARNING"
        " executions can be restarted"
    )


CLIENT_SUFFIX = ":client"


async def live_workers(path: str | os.PathLike[str]) -> list[str]:
    """Owners of the database at ``path`` that take queued work and heartbeat (a server, an
    embedded worker); none when there is no such database. Reads only."""
    if not Path(path).is_file():
        return []
    store = open_store(str(path), read_only=True)
    try:
        await store.open()
        try:
            beats = await store.owners()
        finally:
            await store.close()
    except Exception:  # not a database this version reads: nobody runs work from it
        return []
    fresh = time.time() - STALE_AFTER
    return [o for o, beat in beats if beat >= fresh and not o.endswith(CLIENT_SUFFIX)]


def _live_count(system: ActorSystem, engine: Engine) -> int:
    """Actors alive and executions parked: what the collector walks (see Tuning)."""
    return len(system) + len(engine.admission.parked)


def _errors_subtrees(flow: Flow, runs: tuple[TaskRun, ...]) -> set[str]:
    """Task runs of ``errors`` branches and everything under them (restart removes them)."""
    removed = {tr.id for tr in runs if tr.branch == "errors"}
    changed = True
    while changed:
        changed = False
        for tr in runs:
            if tr.id not in removed and tr.parent_task_run_id in removed:
                removed.add(tr.id)
                changed = True
    return removed


__all__ = ["ExecutionHandle", "Runtime", "decode_any", "live_workers"]
