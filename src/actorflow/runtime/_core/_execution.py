"""The execution actor: one per execution; it supervises the task-run actors of that execution.

It decides which task runs come next (through frames), keeps the live tree, and sets the
execution's state. Children are linked actors: if a task-run actor crashes (a runtime bug, not
a task failure, which is an ordinary FAILED attempt) the execution restarts it from the last
snapshot it reported, at most three times, then fails that task run.
"""

from __future__ import annotations

import functools
import shutil
from typing import TYPE_CHECKING, Any

import msgspec

from actorflow._errors import (
    ActorError,
    IllegalOperation,
    InputError,
    TemplateError,
    UnstorableValue,
)
from actorflow.actors import Actor, Kill, Pause, Resume, Terminated
from actorflow.runtime._clock import TimerHandle
from actorflow.runtime._core._commands import apply_command
from actorflow.runtime._core._frames import MAIN, Frame, Spec, WaitForFrame, make_frame
from actorflow.runtime._core._ids import child_execution_id, task_run_id
from actorflow.runtime._core._messages import (
    Command,
    Dequeue,
    Recover,
    Restart,
    ResumeWith,
    Snapshot,
    Start,
    TaskRunChanged,
)
from actorflow.runtime._core._scope import ExecutionScope
from actorflow.runtime._core._taskrun import TaskRunActor, validate_resume
from actorflow.runtime._flow import ConcurrencyBehavior, Flow, flow_outputs
from actorflow.runtime._hostlog import task_run_event
from actorflow.runtime._records import Execution, StateEntry, TaskRun
from actorflow.runtime._states import State, check_transition
from actorflow.runtime._tasks import Flowable, Task, WorkingDirectory, working_dir_path
from actorflow.runtime._tasks import Labels as LabelsTask
from actorflow.runtime._tasks import Pause as PauseTask
from actorflow.runtime._template import render, truthy
from actorflow.storage import call_soon

if TYPE_CHECKING:
    from actorflow.actors import ActorRef
    from actorflow.runtime._core._engine import Engine

_MAX_CHILD_RESTARTS = 3
# Children created between two passes over the mailbox: a frame asking for 100,000 at once gets
# them in chunks, with the reports of those already running handled in between. No limit on
# how many run (a chunk that has not ended is not waited for), but the loop never stalls for
# the whole fan-out, and short children end about as fast as they are made.
CREATE_CHUNK = 512


class ChildCrashed(msgspec.Struct, frozen=True, tag=True):
    """A task-run actor crashed (re-queued behind the snapshots it sent before)."""

    ref: Any
    error: str


class _Continue(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Create the children a chunk left over (see CREATE_CHUNK)."""


class _Wake(msgspec.Struct, frozen=True, tag=True):
    """A waiting frame's time came (WaitFor's interval between iterations)."""

    owner_id: str


class _SlaDue(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A MAX_DURATION sla of the flow has passed."""

    sla_id: str


_SLA_END = {"FAIL": State.FAILED, "CANCEL": State.CANCELLED}

# The states the per-task-run path tests, as module globals: ``State.X`` is a class-attribute
# read through the enum's metaclass (~0.1 µs on 3.11, several per task run), a global is not.
_CREATED, _RUNNING, _PAUSED, _KILLING = State.CREATED, State.RUNNING, State.PAUSED, State.KILLING
_SUCCESS, _WARNING = State.SUCCESS, State.WARNING
# Frozen and field-less: one instance serves every child (a message is never mutated).
_START = Start()


class ExecutionActor(Actor):
    """Runs one execution to a terminal state."""

    # Its children (task runs) do not depend on one another: a shutdown gives them one grace
    # period together.
    stop_children_together = True

    __slots__ = ("_budget", "_deferred", "_pending", "_sla_end", "_sla_timers", "_timers",
                 "child_restarts", "engine", "ex", "flow", "frames", "live", "mode", "runs",
                 "scope")  # fmt: skip

    def __init__(
        self, engine: Engine, flow: Flow, record: Execution, task_runs: list[TaskRun], mode: str
    ) -> None:
        self.engine = engine
        self.flow = flow
        self.ex = msgspec.structs.replace(record, task_runs=()) if record.task_runs else record
        self.runs: dict[str, TaskRun] = {tr.id: tr for tr in task_runs}
        self.frames: dict[str | None, Frame] = {}
        self.live: dict[str, ActorRef] = {}
        self.child_restarts: dict[str, int] = {}
        self.mode = mode
        self._pending: list[StateEntry] = []
        self._budget = CREATE_CHUNK  # children this pass over the mailbox may still create
        self._deferred: dict[int, Frame] | None = None  # frames with children left to create
        self._timers: dict[str, TimerHandle] = {}  # waiting frames' wake-ups, by owner id
        self.scope: ExecutionScope
        # The state a violated sla ends the execution in once its task runs are killed.
        self._sla_end: State | None = None
        self._sla_timers: list[Any] = []

    # -- state -----------------------------------------------------------------------
    def _to(self, state: State, **changes: Any) -> None:
        ex = self.ex
        check_transition("execution", ex.id, ex.state, state)
        entry = StateEntry(state, self.engine.clock.now())
        self._pending.append(entry)
        self.ex = self.scope.record = msgspec.structs.replace(
            ex, state=state, history=(*ex.history, entry), **changes
        )

    def _save(self) -> Any:
        commit = self.engine.save_execution(self.ex, self._pending)
        self._pending = []
        return commit

    def _set_run(self, tr: TaskRun, state: State, **changes: Any) -> TaskRun:
        """Change a task run this actor owns (flowables, never-dispatched leaves)."""
        check_transition("task run", tr.id, tr.state, state)
        entry = StateEntry(state, self.engine.clock.now())
        new = msgspec.structs.replace(tr, state=state, history=(*tr.history, entry), **changes)
        self.runs[tr.id] = new
        self.engine.save_task_run(new, (entry,))
        task_run_event(self.ex, new)
        if new.state.terminal:
            self.scope.record_outputs(new)
        return new

    def snapshot(self) -> Execution:
        """The live tree."""
        current = self.scope.current
        if current:
            runs = tuple(current.get(i, tr) for i, tr in self.runs.items())
        else:  # nothing live (an ended execution): the task runs as they are
            runs = tuple(self.runs.values())
        return msgspec.structs.replace(self.ex, task_runs=runs)

    # -- lifecycle -------------------------------------------------------------------
    async def on_start(self) -> None:
        self.scope = ExecutionScope(self.engine, self.flow, self.ex, self.context.self_ref)
        self.scope.runs = self.runs
        if not self.ex.state.terminal:
            ref = self.context.self_ref
            for sla in self.flow.sla:
                if sla.type == "MAX_DURATION" and sla.duration is not None:
                    due = self.ex.start_date + sla.duration
                    self._sla_timers.append(
                        self.engine.timers.call_at(
                            due, functools.partial(ref.tell_nowait, _SlaDue(sla.id))
                        )
                    )
        for tr in self.runs.values():
            if tr.state.terminal:
                self.scope.record_outputs(tr)

    async def receive(self, message: Any) -> Any:
        try:
            if type(message) is TaskRunChanged:  # by far the most frequent: no coroutine
                self._child_changed(message.task_run)
                return None
            return await self._handle(message)
        except (IllegalOperation, InputError) as exc:
            # A refused operation or a bad resume input is the caller's answer, not a crash.
            return exc

    async def _handle(self, message: Any) -> Any:
        # TaskRunChanged never comes here: receive handles it without a coroutine.
        if isinstance(message, Terminated):
            if message.error is not None:
                # Terminated comes on the system lane, ahead of the snapshots the child sent
                # before crashing: handle it after them, on the ordinary lane (never refused:
                # one per child at most, like the reports themselves).
                self.context.self_ref.post(ChildCrashed(message.ref, message.error))
        elif isinstance(message, Start):
            if self._not_yet():
                return None
            if self.flow.concurrency is None:
                self._start()
            else:
                await self._start_limited()
        elif isinstance(message, Dequeue):
            if self.ex.state is State.QUEUED:
                self._to(State.RUNNING)
                self._save()
                self._process([self._top()])
        elif isinstance(message, Snapshot):
            return self.snapshot()
        elif isinstance(message, Kill):
            self._kill()
        elif isinstance(message, Pause):
            self._pause()
        elif isinstance(message, ResumeWith | Resume):
            inputs = message.inputs if isinstance(message, ResumeWith) else {}
            await self._resume(inputs)
        elif isinstance(message, Recover | Restart):
            self._rebuild()
        elif isinstance(message, Command):
            return await apply_command(self, message)
        elif isinstance(message, ChildCrashed):
            self._child_terminated(message)
        elif type(message) is _Wake:
            self._wake(message.owner_id)
        elif type(message) is _SlaDue:
            self._sla_due(message.sla_id)
        elif type(message) is _Continue:
            frames, self._deferred = self._deferred or {}, None
            self._budget = CREATE_CHUNK
            self._process(list(frames.values()))
        return None

    async def _start_limited(self) -> None:
        """Start under the flow's ``concurrency``, counted in the store across processes."""
        if self.ex.state is not State.CREATED:
            return
        assert self.flow.concurrency is not None
        if await self.engine.take_flow_slot(self.flow, self.ex.id):
            self._start(None)
            return
        behavior = self.flow.concurrency.behavior
        if behavior is ConcurrencyBehavior.QUEUE and self.ex.state is State.CREATED:
            self._to(State.QUEUED)
            self._save()
            self.engine.queue_for_slot(self.flow, self.ex.id, self.context.self_ref)
            return
        self._start(behavior)

    def _not_yet(self) -> bool:
        """A retry as a new execution waits for its start (a timer posts Start then)."""
        due = self.ex.not_before
        if due is None or self.ex.state is not State.CREATED or due <= self.engine.clock.now():
            return False
        ref = self.context.self_ref
        self._sla_timers.append(self.engine.timers.call_at(due, lambda: ref.post(Start())))
        return True

    def _start(self, decision: ConcurrencyBehavior | None = None) -> None:
        if self.ex.state is not _CREATED or (self.ex.not_before is not None and self._not_yet()):
            return
        if decision is not None:
            if decision is ConcurrencyBehavior.CANCEL:
                self._finish(State.CANCELLED)
                return
            if decision is ConcurrencyBehavior.FAIL:
                self._finish(State.FAILED, error="flow concurrency limit exceeded")
                return
        self._to(_RUNNING)
        self._save()
        self._process([self._top()])

    def _top(self) -> Frame:
        frame = self.frames.get(None)
        if frame is None:
            f = self.flow
            frame = Frame(self.runs, None, f.tasks, f.errors, f.finally_)
            self.frames[None] = frame
        return frame

    # -- rebuild (restart, recovery) -----------------------------------------------
    def _rebuild(self) -> None:
        """Rebuild frames from the task runs and continue where they stand."""
        if self.ex.state is State.CREATED:
            if self.flow.concurrency is None:
                self._start()
            else:
                self.context.self_ref.post(Start())  # its slot is asked of the store
            return
        if self.ex.state is State.QUEUED:
            self.engine.queue_for_slot(self.flow, self.ex.id, self.context.self_ref)
            return
        top = self._top()
        for tr in self.runs.values():
            parent = self._frame_of(tr)
            if parent is not None:
                parent.add(tr)
            if tr.state in (State.SUCCESS, State.WARNING) and "labels" in tr.outputs:
                # Its labels may have ended with the process before the execution was saved.
                self._set_labels(tr)
        if self.ex.state is State.RESTARTED:
            self._to(State.RUNNING)
            self._save()
        if (
            self.ex.state is State.PAUSED
            and not self.ex.manual_pause
            and not any(tr.state is State.PAUSED for tr in self.runs.values())
        ):
            # Its Pause task ended while no process ran it: continue as a resume would.
            self._to(State.RESTARTED)
            self._to(State.RUNNING)
            self._save()
        dirty: list[Frame] = [top]
        for tr in list(self.runs.values()):
            if tr.state.terminal:
                continue
            task = self.flow.task(tr.task_id)
            if isinstance(task, Flowable) and (
                not isinstance(task, PauseTask) or _pause_done(tr, task)
            ):
                if tr.state in (State.CREATED, State.RESTARTED):
                    tr = self._set_run(tr, State.RUNNING)
                frame = self._ensure_frame(tr, task)
                if frame is not None:
                    dirty.append(frame)
            else:
                self._spawn(tr, task, Recover())
        if self.ex.state is State.KILLING:
            self._kill_live()
        self._process(dirty)

    def _frame_of(self, tr: TaskRun) -> Frame | None:
        """The frame that owns ``tr`` (building its ancestors' frames as needed)."""
        pid = tr.parent_task_run_id
        if pid is None:
            return self._top()
        frame = self.frames.get(pid)
        if frame is None:
            owner = self.runs.get(pid)
            if owner is None:
                return None
            task = self.flow.task(owner.task_id)
            assert isinstance(task, Flowable)
            frame = self._ensure_frame(owner, task)
        return frame

    def _ensure_frame(self, owner: TaskRun, task: Flowable) -> Frame | None:
        frame = self.frames.get(owner.id)
        if frame is not None:
            return frame
        try:
            frame = make_frame(
                self.runs,
                owner,
                task,
                lambda v, field: render(
                    v, self.scope.variables(owner), where=f"task {task.id!r} field {field!r}"
                ),
                truthy,
                self.engine.clock.now,
            )
        except Exception as exc:
            current = self.runs[owner.id]
            if not current.state.terminal:
                failed = self._set_run(current, State.FAILED, error=f"{type(exc).__name__}: {exc}")
                parent = self._frame_of(failed)
                if parent is not None:
                    parent.changed(current.state, failed)
            return None
        self.frames[owner.id] = frame
        self._store_frame_outputs(owner.id, frame)
        return frame

    def _store_frame_outputs(self, owner_id: str, frame: Frame) -> None:
        extra = frame.outputs()
        current = self.runs[owner_id]
        if extra and any(current.outputs.get(k) != v for k, v in extra.items()):
            updated = msgspec.structs.replace(current, outputs={**current.outputs, **extra})
            self.runs[owner_id] = updated
            self.engine.save_task_run(updated)
            if isinstance(frame, WaitForFrame):
                # Its children read the running loop's iterationCount.
                self.scope.record_outputs(updated)

    def _wake(self, owner_id: str) -> None:
        frame = self.frames.get(owner_id)
        if not isinstance(frame, WaitForFrame) or not frame.waiting:
            return
        self._timers.pop(owner_id, None)
        frame.wake()
        self._store_frame_outputs(owner_id, frame)
        self._process([frame])  # nothing while paused by hand: the resume processes it

    def _arm(self, frame: Frame, when: float) -> None:
        owner_id = frame.owner_id
        if owner_id is None or owner_id in self._timers:
            return
        ref = self.context.self_ref
        self._timers[owner_id] = self.engine.timers.call_at(when, lambda: ref.post(_Wake(owner_id)))

    # -- scheduling ------------------------------------------------------------------
    def _process(self, frames: list[Frame]) -> None:
        """Create what can run, then settle frames whose children all ended."""
        ex_state = self.ex.state
        killing = ex_state is _KILLING
        if ex_state is not _RUNNING and not killing:
            return
        work = frames
        while work:
            frame = work.pop()
            if not killing:
                if frame.waits:
                    wake_at = frame.prepare(self.engine.clock.now())
                    if wake_at is not None:
                        self._arm(frame, wake_at)
                while True:
                    if not self._budget:
                        if frame.nexts(1):
                            self._defer([*work, frame])
                            return
                        break
                    specs = frame.nexts(self._budget)
                    if not specs:
                        break
                    self._budget -= len(specs)
                    for spec in specs:
                        child = self._create(spec, frame)
                        if child is not None:
                            work.append(child)
                    if self.ex.state is not _RUNNING:
                        return
            state = frame.result(killing)
            if state is None:
                continue
            if frame.owner_id is None:
                self._finish(state)
                return
            owner = self.runs[frame.owner_id]
            if owner.state.terminal:
                continue
            old = owner.state
            wd = self.flow.task(owner.task_id)
            extra: dict[str, Any] = {}
            if isinstance(wd, WorkingDirectory):
                shutil.rmtree(working_dir_path(self.ex.id, owner.id), ignore_errors=True)
                if wd.collect_from is not None:
                    extra["outputs"] = {**owner.outputs, "outputFiles": self._collected(frame, wd)}
            owner = self._set_run(owner, state, error=frame.error, **extra)
            parent = self._frame_of(owner)
            if parent is not None:
                parent.changed(old, owner)
                work.append(parent)

    def _defer(self, frames: list[Frame]) -> None:
        """Continue with ``frames`` after the messages already queued (reports among them)."""
        deferred = self._deferred
        if deferred is None:
            deferred = self._deferred = {}
            # Posted once the loop has run what is ready now (the children just spawned among
            # it), so their reports come first; never refused, like them: one is pending at most.
            call_soon(self.context.self_ref.post, _Continue())
        for frame in frames:
            deferred[id(frame)] = frame

    def _create(self, spec: Spec, frame: Frame) -> Frame | None:
        """Create and dispatch one child task run; returns a new frame to process."""
        ex = self.ex
        task, branch, value, iteration = spec
        owner_id = frame.owner_id
        tr = TaskRun(
            id=task_run_id(ex, owner_id, spec),
            execution_id=ex.id,
            task_id=task.id,
            state=_CREATED,
            history=(StateEntry(_CREATED, self.engine.clock.now()),),
            parent_task_run_id=owner_id,
            value=value,
            iteration=iteration,
            branch=branch,
        )
        self.runs[tr.id] = tr
        frame.add(tr)
        if task.run_if is None and (not isinstance(task, Flowable) or isinstance(task, PauseTask)):
            self._spawn(tr, task, _START, fresh=True)  # its actor saves the creation
            return None
        self.engine.save_task_run(tr, tr.history)
        task_run_event(self.ex, tr)
        if task.run_if is not None:
            try:
                run_if = task.run_if
                if callable(run_if):
                    ok = bool(run_if(self.scope.variables(tr)))
                else:
                    value = render(
                        run_if, self.scope.variables(tr), where=f"task {task.id!r} field 'run_if'"
                    )
                    ok = truthy(value)
            except Exception as exc:
                self._settle(tr, frame, State.FAILED, error=f"run_if: {exc}")
                return None
            if not ok:
                self._settle(tr, frame, State.SKIPPED)
                return None
        if isinstance(task, Flowable) and not isinstance(task, PauseTask):
            tr = self._set_run(tr, State.RUNNING)
            return self._ensure_frame(tr, task) or frame
        self._spawn(tr, task, _START)
        return None

    def _settle(self, tr: TaskRun, frame: Frame, state: State, error: str | None = None) -> None:
        new = self._set_run(tr, state, error=error)
        frame.changed(tr.state, new)

    def _collected(self, frame: Frame, wd: WorkingDirectory) -> dict[str, Any]:
        """The files a WorkingDirectory's last task stored (its ``uris``)."""
        for run_id in frame.main.ids:
            tr = self.runs[run_id]
            if tr.task_id == wd.collect_from:
                uris = tr.outputs.get("uris")
                return dict(uris) if isinstance(uris, dict) else {}
        return {}

    def _working_dir(self, tr: TaskRun) -> str | None:
        """The directory of the nearest WorkingDirectory task run around ``tr``, if any."""
        flow = self.flow
        parent = flow.parent_of(tr.task_id)
        while parent is not None and not isinstance(parent, WorkingDirectory):
            parent = flow.parent_of(parent.id)
        if parent is None:  # the common case: no lookup of task runs
            return None
        pid = tr.parent_task_run_id
        while pid is not None:
            owner = self.runs.get(pid)
            if owner is None:
                return None
            if isinstance(flow.task(owner.task_id), WorkingDirectory):
                return working_dir_path(self.ex.id, owner.id)
            pid = owner.parent_task_run_id
        return None

    def _spawn(self, tr: TaskRun, task: Task, first: Any, *, fresh: bool = False) -> None:
        # A top-level task run has no WorkingDirectory around it: no walk up the flow.
        wd = None if tr.parent_task_run_id is None else self._working_dir(tr)
        ref = self.context.spawn(
            functools.partial(TaskRunActor, self.scope, task, tr, fresh=fresh, working_dir=wd),
            mailbox_size=16,
            notify_stop=False,  # it reports its end itself; only a crash needs Terminated
        )
        self.live[tr.id] = ref
        ref.tell_nowait(first)

    def _child_changed(self, tr: TaskRun) -> None:
        runs = self.runs
        tr_id = tr.id
        old = runs.get(tr_id)
        if old is None:
            return
        runs[tr_id] = tr
        state, old_state = tr.state, old.state
        if state.terminal:
            self.live.pop(tr_id, None)
            scope = self.scope
            scope.current.pop(tr_id, None)
            scope.record_outputs(tr)
            if (state is _SUCCESS or state is _WARNING) and "labels" in tr.outputs:
                self._set_labels(tr)
            if old_state is not _PAUSED:
                # The common case (a leaf ended): no pause to resume, no PAUSED to take.
                frame = self.frames.get(tr.parent_task_run_id) or self._frame_of(tr)
                if frame is not None:
                    frame.changed(old_state, tr)
                if self.ex.state is _KILLING:
                    if not self.live:
                        self._process(list(self.frames.values()))
                elif frame is not None:
                    self._process([frame])
                return
        elif old_state is _PAUSED and state is _RUNNING:
            # A Pause with tasks handed over: its children run in a frame of ours.
            task = self.flow.task(tr.task_id)
            if isinstance(task, PauseTask) and task.tasks:
                self.live.pop(tr.id, None)
                self.scope.current.pop(tr.id, None)
                self.scope.record_outputs(tr)
                self._ensure_frame(tr, task)
        frame = self._frame_of(tr)
        if frame is not None:
            frame.changed(old.state, tr)
        if tr.state is State.PAUSED and self.ex.state is State.RUNNING:
            self._to(State.PAUSED)
            self._save()
            return
        if (
            old.state is State.PAUSED
            and self.ex.state is State.PAUSED
            and not self.ex.manual_pause
            and not any(r.state is State.PAUSED for r in self.runs.values())
        ):
            self._to(State.RESTARTED)
            self._to(State.RUNNING)
            self._save()
            self._process(list(self.frames.values()))
            return
        if self.ex.state is State.KILLING:
            if not self.live:
                self._process(list(self.frames.values()))
            return
        if frame is not None and tr.state.terminal:
            self._process([frame])

    def _set_labels(self, tr: TaskRun) -> None:
        """An ended Labels task: its labels go on the execution."""
        if not isinstance(self.flow.task(tr.task_id), LabelsTask):
            return
        labels = {**self.ex.labels, **tr.outputs["labels"]}
        if labels != self.ex.labels:
            self.ex = msgspec.structs.replace(self.ex, labels=labels)
            self.scope.record = self.ex
            self._save()

    def _child_terminated(self, msg: ChildCrashed) -> None:
        """A task-run actor stopped; restart it from its last snapshot if it crashed."""
        tr_id = next((i for i, r in self.live.items() if r is msg.ref), None)
        if tr_id is None:
            return
        tr = self.scope.current.get(tr_id) or self.runs[tr_id]
        self.runs[tr_id] = tr
        count = self.child_restarts.get(tr_id, 0) + 1
        self.child_restarts[tr_id] = count
        task = self.flow.task(tr.task_id)
        if count <= _MAX_CHILD_RESTARTS and not tr.state.terminal:
            # Crashed before its first save: the restarted actor saves the creation.
            self._spawn(tr, task, Recover(), fresh=tr_id not in self.scope.current)
            return
        self.live.pop(tr_id, None)
        self.scope.current.pop(tr_id, None)
        if not tr.state.terminal:
            target = State.KILLED if tr.state is State.KILLING else State.FAILED
            new = self._set_run(tr, target, error=f"task-run actor crashed: {msg.error}")
            self._child_changed_settled(tr, new)

    def _child_changed_settled(self, old: TaskRun, new: TaskRun) -> None:
        frame = self._frame_of(new)
        if frame is not None:
            frame.changed(old.state, new)
            self._process([frame])

    # -- control ---------------------------------------------------------------------
    def _kill(self) -> None:
        state = self.ex.state
        if state.terminal:
            raise IllegalOperation(f"execution {self.ex.id} is already {state.value}")
        if state is State.KILLING:
            return
        if state in (State.CREATED, State.QUEUED):
            self.engine.unqueue(self.ex.id)
            self._finish(State.KILLED)
            return
        self._to(State.KILLING)
        self._save()
        self._kill_live()
        if not self.live:
            self._process(list(self.frames.values()))

    def _kill_live(self) -> None:
        for ref in list(self.live.values()):
            ref.tell_nowait(Kill())

    def _pause(self) -> None:
        if self.ex.state is not State.RUNNING:
            raise IllegalOperation(
                f"execution {self.ex.id} is {self.ex.state.value}; only RUNNING can be paused"
            )
        self._to(State.PAUSED, manual_pause=True)
        self._save()

    async def _resume(self, inputs: dict[str, Any], task_run_id: str | None = None) -> None:
        if self.ex.state is not State.PAUSED:
            raise IllegalOperation(f"execution {self.ex.id} is not paused ({self.ex.state.value})")
        if task_run_id is not None:
            paused: TaskRun | None = self.runs[task_run_id]
        else:
            paused = next((tr for tr in self.runs.values() if tr.state is State.PAUSED), None)
        if paused is None:
            if inputs:
                raise IllegalOperation("a manually paused execution takes no resume inputs")
            self._to(State.RUNNING, manual_pause=False)
            await self._save()
            self._process(list(self.frames.values()))
            return
        task = self.flow.task(paused.task_id)
        assert isinstance(task, PauseTask)
        valid = validate_resume(task, inputs, f"resume of task {task.id!r}")
        if self.ex.manual_pause:
            self.ex = msgspec.structs.replace(self.ex, manual_pause=False)
            self.scope.record = self.ex
        ref = self.live.get(paused.id)
        if ref is not None:
            # Asked, not told: once this returns the Pause's RUNNING is queued for storage,
            # so whoever answers "resumed" after a flush answers with the effect stored.
            try:
                await ref.ask(ResumeWith(valid), timeout=30.0)
            except ActorError as exc:
                raise IllegalOperation(
                    f"pause {paused.task_id!r} of execution {self.ex.id} ended before the"
                    f" resume reached it ({exc})"
                ) from exc

    def _sla_due(self, sla_id: str) -> None:
        """A MAX_DURATION sla passed: label the execution; FAIL / CANCEL also kill it."""
        if self.ex.state.terminal or self.ex.state is State.KILLING:
            return
        sla = next(s for s in self.flow.sla if s.id == sla_id)
        self._sla_labels(sla.labels)
        end = _SLA_END.get(sla.behavior)
        if end is None:
            self._save()
            return
        self._sla_end = end
        self._kill()

    def _sla_labels(self, labels: Any) -> None:
        if labels:
            self.ex = msgspec.structs.replace(self.ex, labels={**self.ex.labels, **labels})
            self.scope.record = self.ex

    def _sla_assertions(self, state: State) -> State:
        """EXECUTION_ASSERTION slas, checked as the execution ends: the state they give."""
        if state in (State.KILLED, State.CANCELLED):
            return state
        for sla in self.flow.sla:
            if sla.type != "EXECUTION_ASSERTION" or sla.assert_ is None:
                continue
            try:
                held = truthy(render(sla.assert_, self.scope.variables(), where=f"sla {sla.id!r}"))
            except Exception:  # an assertion that cannot be rendered does not hold
                held = False
            if not held:
                self._sla_labels(sla.labels)
                state = _SLA_END.get(sla.behavior, state)
        return state

    def _finish(self, state: State, error: str | None = None) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for timer in self._sla_timers:
            timer.cancel()
        if self._sla_end is not None and state is State.KILLED:
            state = self._sla_end
            error = error or "the flow's sla was violated (MAX_DURATION)"
        elif self.flow.sla:
            state = self._sla_assertions(state)
        for tr in list(self.runs.values()):
            if not tr.state.terminal and tr.id not in self.live:
                # Flowables still open when the execution ends (kill) end with it.
                self._set_run(tr, State.KILLED if state is State.KILLED else state)
        changes: dict[str, Any] = {"error": error} if error else {}
        if self.flow.outputs and state in (State.SUCCESS, State.WARNING):
            # Kestra renders the flow's outputs once the tasks are done; one that cannot be
            # rendered or has the wrong type fails the execution.
            try:
                changes["outputs"] = flow_outputs(self.flow, self.scope.variables())
            except (TemplateError, InputError, UnstorableValue) as exc:
                state = State.FAILED
                changes["error"] = f"flow outputs: {exc}"
        retry = self._new_execution() if state is State.FAILED else None
        if retry is not None:
            state = State.RETRIED
        if self.ex.state is State.CREATED and state is State.KILLED:
            self._to(State.KILLED, **changes)
        else:
            self._to(state, **changes)
        commit = self._save()
        self.engine.execution_ended(self.flow, self.snapshot(), commit)
        if retry is not None:
            self.engine.start_retry(self.flow, retry)
        self.context.stop()

    def _new_execution(self) -> Execution | None:
        """The next execution of a failed one whose failed task's retry is a new execution
        (Kestra's CREATE_NEW_EXECUTION), queued to be stored; None when there is none or
        retrying is over."""
        flow, ex = self.flow, self.ex
        for tr in self.runs.values():
            if tr.state is not State.FAILED:
                continue
            try:
                task = flow.task(tr.task_id)
            except KeyError:
                continue
            retry = flow.retry_for(task.id)
            if retry is None or not retry.new_execution or isinstance(task, Flowable):
                continue
            first_start = ex.original_start or ex.start_date
            now = self.engine.clock.now()
            due = retry.next_execution(
                attempt_number=ex.attempt_number, first_start=first_start, now=now
            )
            if due < 0:
                return None
            from actorflow.runtime._core._engine import new_execution_record  # a cycle

            record = new_execution_record(
                engine=self.engine, flow=flow, inputs=dict(ex.inputs), labels=dict(ex.labels),
                trigger=ex.trigger,
                # One id per failed attempt: a run again after a crash never makes two.
                execution_id=child_execution_id(f"{ex.id}-retry", ex.attempt_number + 1),
            )  # fmt: skip
            record = msgspec.structs.replace(
                record,
                original_execution_id=ex.original_execution_id or ex.id,
                attempt_number=ex.attempt_number + 1,
                original_start=first_start,
                not_before=due,
            )
            # Stored before this execution's end, in the same write order: the retry is
            # never lost between the two.
            self.engine.save_execution(record, record.history)
            return record
        return None


def _pause_done(tr: TaskRun, task: PauseTask) -> bool:
    """Whether a Pause task run is past its pause (its own tasks run in a frame)."""
    if not task.tasks:
        return False
    if tr.state is State.RESTARTED:
        return any(e.state is State.PAUSED for e in tr.history)
    return tr.state is State.RUNNING and any(e.state is State.PAUSED for e in tr.history)


__all__ = ["MAIN", "ExecutionActor", "ExecutionScope"]
