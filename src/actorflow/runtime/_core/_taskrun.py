"""The task-run actor: one per running leaf task (runnable, Pause or Subflow).

It owns its :class:`TaskRun` record, runs attempts, waits for retries (a timer sends it
``Retry``), pauses, and reports every change to its execution actor. A ``Kill`` interrupts a
running attempt at once through ``on_interrupt`` (the attempt's cancel scope).
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Awaitable, Coroutine, Generator
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actorflow._errors import InputError, UnstorableValue
from actorflow.actors import Actor, Interruptible, Kill
from actorflow.runtime._clock import TimerHandle, check_duration, parse_duration_text
from actorflow.runtime._core._ids import child_execution_id
from actorflow.runtime._core._messages import (
    Complete,
    Fail,
    PauseElapsed,
    Recover,
    Restart,
    ResumeWith,
    Retry,
    Start,
    TaskRunChanged,
)
from actorflow.runtime._core._shutdown import interrupted_attempt
from actorflow.runtime._flow import validate_inputs
from actorflow.runtime._hostlog import task_run_event
from actorflow.runtime._records import Attempt, StateEntry, TaskRun
from actorflow.runtime._states import TERMINAL, State, check_transition
from actorflow.runtime._tasks import (
    Pause,
    PauseBehavior,
    Runnable,
    Subflow,
    Task,
    labels_mapping,
)
from actorflow.runtime._template import render
from actorflow.runtime._template_io import kv_templates, prefetch_kv
from actorflow.runtime._values import (
    check_plain,
    metric_value,
    safe_text,
    to_builtins,
)

if TYPE_CHECKING:
    from actorflow.runtime._context import TaskContext
    from actorflow.runtime._core._scope import ExecutionScope


def normalize_outputs(result: Any) -> dict[str, Any]:
    """A task's return value as an outputs mapping of plain, storable values.

    Raises :class:`~actorflow.UnstorableValue` naming the field (``outputs.x.y``) the store
    could not keep: raised inside the attempt, it fails that attempt (retries apply).
    """
    if result is None:
        return {}
    plain = to_builtins(result, "outputs")
    outputs = plain if isinstance(plain, dict) else {"value": plain}
    check_plain(outputs, "outputs")
    return outputs


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an error, as text the store keeps (whatever the message holds)."""
    name = safe_text(type(exc).__name__)
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not break the task run reporting it
        return f"{name} (its message could not be read)"
    return f"{name}: {safe_text(text)}" if text else name


class TaskRunActor(Actor):
    """Runs one task run to a terminal state and reports to its execution."""

    __slots__ = ("_cancel", "_killed", "_pending", "_runnable", "_timer", "record", "scope", "task",
                 "working_dir")  # fmt: skip

    def __init__(
        self,
        scope: ExecutionScope,
        task: Task,
        record: TaskRun,
        *,
        fresh: bool = False,
        working_dir: str | None = None,
    ) -> None:
        self.scope = scope
        self.working_dir = working_dir
        self.task = task
        self._runnable = isinstance(task, Runnable)
        self.record = record
        self._cancel: Interruptible | None = None
        self._killed = False
        self._timer: TimerHandle | None = None
        # A fresh task run was created for this actor and not saved yet: its first save
        # carries the creation too (one write instead of two, moments apart). A tuple: the
        # empty one is shared, and a live fan-out holds one per task run.
        self._pending: tuple[StateEntry, ...] = record.history if fresh else ()

    # -- state -----------------------------------------------------------------------
    def _to(self, state: State, **changes: Any) -> None:
        check_transition("task run", self.record.id, self.record.state, state)
        entry = StateEntry(state, self.scope.engine.clock.now())
        self._pending = (*self._pending, entry)
        self.record = msgspec.structs.replace(
            self.record, state=state, history=(*self.record.history, entry), **changes
        )

    def _publish(self) -> None:
        """Persist the new snapshot; tell the execution what it schedules on (an end, a
        pause); stop once terminal.

        Other changes (RUNNING, RETRYING) only go to ``scope.current``, where the execution
        reads its snapshots and restarts a crashed actor from.
        """
        record = self.record
        scope = self.scope
        scope.engine.save_task_run(record, self._pending)
        if self._pending:
            task_run_event(scope.record, record)
        self._pending = ()
        scope.current[record.id] = record
        state = record.state
        if state in TERMINAL:
            scope.exec_ref.post(TaskRunChanged(record))
            self.context.stop()
        elif state is State.PAUSED:
            scope.exec_ref.post(TaskRunChanged(record))

    # -- messages --------------------------------------------------------------------
    def on_interrupt(self, message: Any) -> None:
        if isinstance(message, Kill) and self._cancel is not None:
            self._killed = True
            self._cancel.cancel()

    def receive(self, message: Any) -> Coroutine[Any, Any, None]:
        # Not a coroutine itself: the attempt's coroutine is what the actor awaits, one frame
        # less held by each running task run (a fan-out may hold a hundred thousand).
        if (
            (type(message) is Start or isinstance(message, Restart))
            and self._runnable
            and self.record.state in (State.CREATED, State.RESTARTED)
        ):
            return self._run_attempt(to_running=True)
        return self._receive(message)

    async def _receive(self, message: Any) -> None:
        state = self.record.state
        if type(message) is Start or isinstance(message, Restart):
            if state in (State.CREATED, State.RESTARTED):
                await self._begin()
        elif isinstance(message, Recover):
            await self._recover()
        elif isinstance(message, Retry):
            if state is State.RETRYING:
                self._timer = None
                if isinstance(self.task, Subflow):
                    await self._start_subflow()
                else:
                    await self._run_attempt(to_running=True)
        elif isinstance(message, Kill):
            self._kill()
        elif isinstance(message, ResumeWith):
            self._resume_pause(message.inputs)
        elif isinstance(message, PauseElapsed):
            self._pause_elapsed(message.kind)
        elif isinstance(message, Complete):
            self._subflow_ended(message)
        elif isinstance(message, Fail) and not state.terminal:
            self._end_attempt(State.FAILED, error=message.error)

    async def _begin(self) -> None:
        if isinstance(self.task, Pause):
            self._start_pause()
        elif isinstance(self.task, Subflow):
            await self._start_subflow()
        else:
            await self._run_attempt(to_running=True)

    async def _recover(self) -> None:
        """Continue after a crash from the stored snapshot."""
        state = self.record.state
        if state in (State.CREATED, State.RESTARTED):
            await self._begin()
        elif state is State.RETRYING:
            self._arm_retry(self.record.due or self.scope.engine.clock.now())
        elif state is State.PAUSED:
            self._arm_pause()
        elif state is State.KILLING:
            self._to(State.KILLED)
            self._publish()
        elif state is State.RUNNING:
            if isinstance(self.task, Pause):
                self._to(State.PAUSED)
                self._publish()
                self._arm_pause()
                return
            if isinstance(self.task, Subflow) and self.record.child_execution_id:
                self.scope.engine.watch_child(self.record.child_execution_id, self.context.self_ref)
                return
            if isinstance(self.task, Subflow) and await self._found_child():
                return
            # The attempt in flight died with the process: record it, then try again. A
            # runtime that closed recorded it already (the same record): nothing twice.
            recorded = interrupted_attempt(self.record, self.scope.engine.clock.now())
            if recorded is not None:
                self.record = recorded
                self.scope.engine.save_task_run(self.record)
            await self._run_attempt()

    # -- runnable attempts -----------------------------------------------------------
    def _run_attempt(self, to_running: bool = False) -> Coroutine[Any, Any, None]:
        """Start the next attempt; the coroutine returned runs it (awaited at once).

        Only the running part is a coroutine: its frame is held while the attempt runs, by
        every running task run, so it keeps few locals.
        """
        engine = self.scope.engine
        record = self.record
        number = len(record.attempts) + 1
        attempt = Attempt(number=number, state=State.RUNNING, start=engine.clock.now())
        attempts = (*record.attempts, attempt)
        if to_running:
            self._to(State.RUNNING, due=None, attempts=attempts)
        else:
            self.record = msgspec.structs.replace(record, attempts=attempts)
        record = self.record
        task = self.task
        assert isinstance(task, Runnable)
        observer = engine.observer if engine.tracing else None
        # Without a timeout, the attempt's first step runs before RUNNING is queued for
        # storage: nothing else runs meanwhile, so nothing can tell, and an attempt that ends
        # in that step (most do) stores RUNNING with its end, in one snapshot. Not for an
        # observer that must see RUNNING as its own change (the CLI's progress), nor while
        # the store is cut off (the attempt waits for it first), nor when the task's
        # templates call kv() (read from the store before the attempt).
        outage = engine.store_outage() if engine.store_outage is not None else None
        eager = (
            task.timeout is None
            and outage is None
            and (observer is None or not observer.sees_running)
            and not kv_templates(task)
        )
        if eager:
            task_run_event(self.scope.record, record)
        else:
            self._publish()
        ctx = self.scope.task_context(record, number, self.working_dir)
        self._killed = False
        span = observer.attempt_started(self.scope, record, number) if observer else None
        return self._attempt(task, ctx, eager, outage, span)

    async def _attempt(
        self,
        task: Runnable,
        ctx: TaskContext,
        eager: bool,
        outage: Awaitable[object] | None,
        span: Any,
    ) -> None:
        error: BaseException | None = None
        result: Any = None
        with self.context.interruptible() as cancel:
            self._cancel = cancel
            try:
                if outage is not None:
                    await outage  # the store's connection is lost: run once it is back
                if eager:
                    result = await self._first_step(task, ctx)
                elif task.timeout is not None:
                    with anyio.fail_after(task.timeout):
                        await prefetch_kv(task, ctx)
                        result = await task.run(ctx)
                else:
                    await prefetch_kv(task, ctx)
                    result = await task.run(ctx)
                if result is not None:
                    result = normalize_outputs(result)
            except TimeoutError as exc:
                if task.timeout is not None and not str(exc):
                    exc = TimeoutError(f"Timeout after {task.timeout}s")
                    ctx.log.error(str(exc))
                error = exc
            except Exception as exc:
                error = exc
        self._cancel = None
        if ctx.log_lines:
            error = await self._store_log(ctx, error)
        self._attempt_ended(task, ctx, span, result, error, cancel.cancelled_caught)

    async def _store_log(
        self, ctx: TaskContext, error: BaseException | None
    ) -> BaseException | None:
        """Keep a ``log_to_file`` attempt's lines as its log file; the attempt's error after."""
        assert ctx.log_lines is not None
        try:
            uri = await ctx.storage.put(
                f"log-{ctx.attempt}.txt", "".join(line + "\n" for line in ctx.log_lines)
            )
        except Exception as exc:  # the attempt did not keep its log lines
            return error or exc
        attempts = self.record.attempts
        last = msgspec.structs.replace(attempts[-1], log_file=uri)
        self.record = msgspec.structs.replace(self.record, attempts=(*attempts[:-1], last))
        return error

    def _attempt_ended(
        self,
        task: Runnable,
        ctx: TaskContext,
        span: Any,
        outputs: dict[str, Any] | None,
        error: BaseException | None,
        cancelled: bool,
    ) -> None:
        engine = self.scope.engine
        number = ctx.attempt
        if error is None and ctx.rejected is not None:
            # A log line or metric the store could not keep was refused; even if the task
            # caught that error, the attempt did not record what it meant to.
            error = ctx.rejected
        metrics = ctx.metrics()
        if metrics:
            merged = _merge(self.record.metrics, metrics)
            try:
                for m in merged:
                    metric_value(m.name, m.value)
            except UnstorableValue as exc:  # finite per attempt, overflowed in the sum
                merged = tuple(m for m in merged if math.isfinite(m.value))
                if error is None:
                    error = exc
            self.record = msgspec.structs.replace(self.record, metrics=merged)
        if cancelled or self._killed:
            if span is not None:
                engine.observer.attempt_ended(span, State.KILLED, None)
            self._end_attempt(State.KILLED, error="killed")
            return
        if error is None:
            if span is not None:
                engine.observer.attempt_ended(span, State.SUCCESS, None)
            state = State.SUCCESS
            if number > 2:
                retry = self.scope.flow.retry_for(task.id)
                if retry is not None and retry.warning_on_retry:
                    state = State.WARNING
                    if task.allow_warning:
                        state = State.SUCCESS
            self._end_attempt(
                state, attempt_state=State.SUCCESS, outputs={} if outputs is None else outputs
            )
            return
        if not isinstance(error, TimeoutError):
            ctx.log.error(safe_text("".join(traceback.format_exception_only(error)).strip()))
        if span is not None:  # after the log line, so it carries the attempt's span id
            engine.observer.attempt_ended(span, State.FAILED, error)
        self._failed(error)

    def _first_step(self, task: Runnable, ctx: TaskContext) -> Awaitable[Any]:
        """``task.run(ctx)``, its first step taken now: if it waits, RUNNING is published
        before it does.

        The rest runs in this same task (``_Continue``), so the attempt's cancel scopes and
        ``current_task`` stay what they were.
        """
        try:
            run = task.run(ctx)  # a run that is not a coroutine may fail in the call
        except BaseException:
            self._publish()  # the attempt failed in its first step; its end follows
            raise
        if type(run) is not CoroutineType:
            self._publish()
            return run
        try:
            waits_on = run.send(None)
        except StopIteration as stop:
            return _Done(stop.value)
        except BaseException:
            self._publish()  # the attempt failed in its first step; its end follows
            raise
        self._publish()
        return _Continue(run, waits_on)

    def _failed(self, error: BaseException) -> None:
        retry = self.scope.flow.retry_for(self.task.id)
        now = self.scope.engine.clock.now()
        due = None
        # A retry as a new execution leaves this one to fail (see ExecutionActor._finish).
        if retry is not None and not retry.new_execution:
            due = retry.next_start(
                attempts_done=len(self.record.attempts),
                first_start=self.record.attempts[0].start,
                last_end=now,
                error=error,
            )
        if due is None:
            self._end_attempt(self._allowed(State.FAILED), attempt_state=State.FAILED, exc=error)
            return
        self._to(State.RETRYING, due=due, **self._close_attempt(State.FAILED, exc=error))
        self._publish()
        self._arm_retry(due)

    def _arm_retry(self, due: float) -> None:
        ref = self.context.self_ref
        self._timer = self.scope.engine.timers.call_at(due, lambda: ref.tell_nowait(Retry()))

    def _allowed(self, state: State) -> State:
        if state is State.FAILED and self.task.allow_failure:
            state = State.WARNING
        if state is State.WARNING and self.task.allow_warning:
            state = State.SUCCESS
        return state

    def _close_attempt(
        self, state: State, *, error: str | None = None, exc: BaseException | None = None
    ) -> dict[str, Any]:
        """``attempts=`` with the open attempt ended, for :meth:`_to` (empty if none is open)."""
        attempts = self.record.attempts
        if not attempts or attempts[-1].end is not None:
            return {}
        closed = msgspec.structs.replace(
            attempts[-1],
            state=state,
            end=self.scope.engine.clock.now(),
            error=_describe(exc) if exc is not None else error,
            error_type=type(exc).__name__ if exc is not None else None,
        )
        return {"attempts": (*attempts[:-1], closed)}

    def _end_attempt(
        self,
        state: State,
        *,
        attempt_state: State | None = None,
        outputs: dict[str, Any] | None = None,
        error: str | None = None,
        exc: BaseException | None = None,
    ) -> None:
        changes = self._close_attempt(attempt_state or state, error=error, exc=exc)
        if outputs is not None:
            changes["outputs"] = outputs
        if exc is not None or error is not None:
            changes["error"] = _describe(exc) if exc is not None else error
        self._to(state, **changes)
        self._publish()

    def _kill(self) -> None:
        state = self.record.state
        if state.terminal:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if isinstance(self.task, Subflow) and self.record.child_execution_id:
            self.scope.engine.kill_child(self.record.child_execution_id)
        if state is State.RUNNING and self.record.attempts:
            self._end_attempt(State.KILLED, error="killed")
        else:
            self._to(State.KILLED)
            self._publish()

    # -- Pause -----------------------------------------------------------------------
    def _start_pause(self) -> None:
        self._to(State.RUNNING)
        self._to(State.PAUSED)
        self._publish()
        self._arm_pause()

    def _arm_pause(self) -> None:
        assert isinstance(self.task, Pause)
        paused_at = self.record.history[-1].date
        ref = self.context.self_ref
        delay = self.task.delay
        if isinstance(delay, str):  # a template (``{{ inputs.delay }}``), rendered now
            try:
                delay = self._pause_delay(delay)
            except Exception as exc:
                self._to(State.FAILED, error=f"delay: {_describe(exc)}")
                self._publish()
                return
        if delay is not None:
            when, kind = paused_at + delay, "delay"
        elif self.task.timeout is not None:
            when, kind = paused_at + self.task.timeout, "timeout"
        else:
            return
        self._timer = self.scope.engine.timers.call_at(
            when, lambda: ref.tell_nowait(PauseElapsed(kind))
        )

    def _pause_delay(self, template: str) -> float:
        ctx = self.scope.task_context(self.record, 1)
        rendered = ctx.render(template, field="delay")
        return check_duration(
            parse_duration_text(rendered), f"task {self.task.id!r}: delay {rendered!r}"
        )

    def _resume_pause(self, inputs: dict[str, Any]) -> None:
        if self.record.state is not State.PAUSED:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Kestra's place is outputs.<pause>.onResume.<input>; the top level is kept for flows
        # written before (outputs.<pause>.<input>).
        outputs = {**inputs, "onResume": dict(inputs)} if inputs else {}
        self._to(State.RUNNING, outputs=outputs)
        self._continue_pause(State.SUCCESS)

    def _continue_pause(self, state: State, error: str | None = None) -> None:
        """After the pause: run the Pause's own tasks (the execution takes over), or end."""
        assert isinstance(self.task, Pause)
        if state is State.SUCCESS and self.task.tasks:
            self.scope.engine.save_task_run(self.record, self._pending)
            task_run_event(self.scope.record, self.record)
            self._pending = ()
            self.scope.exec_ref.post(TaskRunChanged(self.record))
            self.context.stop()
            return
        self._to(state, error=error)
        self._publish()

    def _pause_elapsed(self, kind: str) -> None:
        if self.record.state is not State.PAUSED:
            return  # resumed by hand first: a leftover timer must not act (Kestra #18507)
        assert isinstance(self.task, Pause)
        self._timer = None
        behavior = self.task.behavior
        if behavior is None:
            behavior = PauseBehavior.RESUME if kind == "delay" else PauseBehavior.FAIL
        target = {
            PauseBehavior.RESUME: State.SUCCESS,
            PauseBehavior.WARN: State.WARNING,
            PauseBehavior.FAIL: State.FAILED,
            PauseBehavior.CANCEL: State.CANCELLED,
        }[behavior]
        error = f"pause {kind} elapsed" if target is State.FAILED else None
        if target is State.SUCCESS:
            self._to(State.RUNNING)
            self._continue_pause(target)
            return
        # Any other end comes straight from PAUSED (Kestra marks the task run with it).
        self._to(self._allowed(target), error=error)
        self._publish()

    # -- Subflow ---------------------------------------------------------------------
    async def _start_subflow(self) -> None:
        assert isinstance(self.task, Subflow)
        self._to(State.RUNNING, due=None)
        engine = self.scope.engine
        attempt = Attempt(
            number=len(self.record.attempts) + 1, state=State.RUNNING, start=engine.clock.now()
        )
        self.record = msgspec.structs.replace(
            self.record, attempts=(*self.record.attempts, attempt)
        )
        self._publish()  # before the child: its execution span is a child of this task run's
        ctx = self.scope.task_context(self.record, attempt.number)
        task = self.task
        try:
            inputs = ctx.render(dict(task.inputs), field="inputs")
            parent_labels = self.scope.record.labels
            labels = (
                dict(parent_labels)
                if task.inherit_labels
                # Kestra's children always carry their parent's system labels.
                else {k: v for k, v in parent_labels.items() if k.startswith("system.")}
            )
            if task.labels:
                rendered = ctx.render(dict(task.labels), field="labels")
                labels.update(labels_mapping(rendered, f"task {task.id!r} labels"))
            child_id = await engine.submit_child(
                self.scope.record,
                self.record,
                task,
                inputs,
                watcher=self.context.self_ref,
                flow_id=str(ctx.render(task.flow_id, field="flow_id")),
                namespace=(
                    None
                    if task.namespace is None
                    else str(ctx.render(task.namespace, field="namespace"))
                ),
                labels=labels,
                attempt=attempt.number,
            )
        except Exception as exc:
            self._end_attempt(self._allowed(State.FAILED), attempt_state=State.FAILED, exc=exc)
            return
        self.record = msgspec.structs.replace(self.record, child_execution_id=child_id)
        if not self.task.wait:
            self._end_attempt(
                State.SUCCESS, outputs={"execution_id": child_id, "executionId": child_id}
            )
            return
        self._publish()

    async def _found_child(self) -> bool:
        """After a crash that came between storing the child of the running attempt and
        storing its id here: take that child (its id is derived) instead of a second one."""
        attempts = self.record.attempts
        if not attempts or attempts[-1].end is not None:
            return False
        assert isinstance(self.task, Subflow)
        child_id = child_execution_id(self.record.id, attempts[-1].number)
        watcher = self.context.self_ref if self.task.wait else None
        if not await self.scope.engine.adopt_child(child_id, watcher):
            return False
        self.record = msgspec.structs.replace(self.record, child_execution_id=child_id)
        if watcher is None:
            self._end_attempt(State.SUCCESS, outputs={"execution_id": child_id})
        else:
            self._publish()
        return True

    def _subflow_ended(self, msg: Complete) -> None:
        assert isinstance(self.task, Subflow)
        if self.record.state is not State.RUNNING:
            return
        child_outputs: Any = msg.outputs
        if self.task.outputs is not None:
            ctx = self.scope.task_context(self.record, len(self.record.attempts) or 1)
            try:
                child_outputs = render(
                    dict(self.task.outputs),
                    {**ctx.variables, "outputs": msg.outputs},
                    where=f"task {self.task.id!r} field 'outputs'",
                )
            except Exception as exc:  # as Kestra: the task run fails, the child's state kept
                self.record = msgspec.structs.replace(
                    self.record,
                    outputs={
                        "execution_id": self.record.child_execution_id,
                        "state": msg.state.value,
                    },
                )
                self._end_attempt(self._allowed(State.FAILED), attempt_state=State.FAILED, exc=exc)
                return
        outputs = {
            "execution_id": self.record.child_execution_id,
            "executionId": self.record.child_execution_id,
            "state": msg.state.value,
            "outputs": child_outputs,
        }
        state = State.SUCCESS
        if self.task.transmit_failed and msg.state in (State.FAILED, State.KILLED, State.WARNING):
            state = msg.state
        if state in (State.FAILED, State.KILLED):
            self.record = msgspec.structs.replace(self.record, outputs=outputs)
            if state is State.KILLED:
                self._end_attempt(State.KILLED, error="child execution killed")
            else:
                self._failed(RuntimeError(msg.error or f"child execution {msg.state.value}"))
            return
        self._end_attempt(self._allowed(state), attempt_state=state, outputs=outputs)


class _Done:
    """An awaitable of a value already there (an attempt that ended in its first step)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return self.value
        yield  # a generator, never reached


_HANDED: Any = object()


class _Continue(Generator[Any, Any, Any]):
    """The rest of a coroutine that was stepped once by hand and waits on ``waits_on``:
    awaiting this hands what it yields to the event loop and sends back what comes in,
    as ``await`` would have (cancellation included).

    Its own iterator, not a generator: a generator's frame would be held for the whole
    attempt, by every running task run.
    """

    __slots__ = ("coro", "waits_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], waits_on: Any) -> None:
        self.coro = coro
        self.waits_on = waits_on

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        """What the coroutine yields next (StopIteration with its result once it returns)."""
        waits_on = self.waits_on
        if waits_on is not _HANDED:  # the step taken by hand: hand on what it yielded
            self.waits_on = _HANDED
            return waits_on
        return self.coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """Raise into the coroutine (a cancellation, say), as ``await`` would."""
        self.waits_on = _HANDED
        if val is None and tb is None:
            return self.coro.throw(typ)
        return self.coro.throw(typ, val, tb)  # the old three-argument form, passed on

    def close(self) -> None:
        """Close the coroutine (the awaiting one is being closed)."""
        self.waits_on = _HANDED
        self.coro.close()


def _merge(old: tuple[Any, ...], new: tuple[Any, ...]) -> tuple[Any, ...]:
    """Sum metrics of several attempts by (name, kind, tags)."""
    out: dict[tuple[Any, ...], Any] = {}
    for m in (*old, *new):
        key = (m.name, m.kind, tuple(sorted(m.tags.items())))
        prev = out.get(key)
        out[key] = (
            m
            if prev is None
            else msgspec.structs.replace(
                prev, value=prev.value + m.value, count=prev.count + m.count
            )
        )
    return tuple(out.values())


def validate_resume(task: Pause, inputs: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """Check resume inputs against the Pause task's ``on_resume`` declarations."""
    if not task.on_resume:
        if inputs:
            raise InputError(f"{where}: this pause takes no inputs, got {sorted(inputs)}")
        return {}
    return validate_inputs(task.on_resume, inputs, where=where)
