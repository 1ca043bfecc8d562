"""Scheduling of containers (the flow's top level and each flowable task run).

A frame decides which child task runs come next and, once nothing more can run, its own
terminal state (worst child wins, then allow_failure / allow_warning). Frames keep counters and
ready sets updated per child change, so each decision costs the same whether the frame has ten
children or a hundred thousand (Kestra's executor rescans the whole execution on every
message; an earlier version here rescanned every ForEach group and every Dag node). A frame can
always be rebuilt from the task runs alone, in any order they are added, which is how restart
and crash recovery reconstruct it.
"""

from __future__ import annotations

import heapq
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Any, NamedTuple

from actorflow.runtime._pebble import to_text
from actorflow.runtime._records import TaskRun
from actorflow.runtime._states import State, worst
from actorflow.runtime._tasks import (
    Dag,
    Flowable,
    ForEach,
    If,
    Parallel,
    Switch,
    Task,
    WaitFor,
)

MAIN, ERRORS, FINALLY = "tasks", "errors", "finally"
ALL = sys.maxsize  # no limit on how many next children to list


class Spec(NamedTuple):
    """A child task run to create."""

    task: Task
    branch: str
    value: str | None = None
    iteration: int | None = None


class Lane:
    """Children of one branch: their ids in creation order, how many run, whether one failed."""

    __slots__ = ("active", "failed", "ids")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.active = 0
        self.failed = False

    def add(self, tr: TaskRun) -> None:
        self.ids.append(tr.id)
        if not tr.state.terminal:
            self.active += 1
        elif tr.state.failed:
            self.failed = True


_NO_LANE = Lane()  # read-only stand-in for a lane nothing was added to (see Frame.lane)


def _enabled(tasks: Sequence[Task]) -> Sequence[Task]:
    for t in tasks:
        if t.disabled:
            return [t for t in tasks if not t.disabled]
    return tasks  # the flow's own (immutable) sequence: nothing to copy per frame


def loop_value(v: Any) -> str:
    """A loop value as stored on task runs: strings as they are, the rest as JSON."""
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


class Frame:
    """Sequential scheduling of ``tasks``, then ``errors`` after a failure, then ``finally``."""

    __slots__ = ("allow_failure", "allow_warning", "err", "error", "errors", "fin", "finally_",
                 "main", "owner_id", "runs", "tasks", "value")  # fmt: skip

    #: Whether :meth:`prepare` can decide anything (WaitFor): the others skip the call, and
    #: the clock read for it, on every look at the frame.
    waits = False

    def __init__(
        self,
        runs: Mapping[str, TaskRun],
        owner: TaskRun | None,
        tasks: Sequence[Task],
        errors: Sequence[Task] = (),
        finally_: Sequence[Task] = (),
        *,
        allow_failure: bool = False,
        allow_warning: bool = False,
    ) -> None:
        self.runs = runs
        self.owner_id = owner.id if owner is not None else None
        self.value = owner.value if owner is not None else None
        self.tasks = _enabled(tasks)
        self.errors = _enabled(errors)
        self.finally_ = _enabled(finally_)
        self.allow_failure = allow_failure
        self.allow_warning = allow_warning
        self.main = Lane()
        # Most frames never run errors or finally tasks: their lanes are made on first use.
        self.err = _NO_LANE
        self.fin = _NO_LANE
        self.error: str | None = None

    # -- bookkeeping ----------------------------------------------------------------
    def lane(self, tr: TaskRun) -> Lane:
        """The lane a child belongs to."""
        if tr.branch == ERRORS:
            if self.err is _NO_LANE:
                self.err = Lane()
            return self.err
        if tr.branch == FINALLY:
            if self.fin is _NO_LANE:
                self.fin = Lane()
            return self.fin
        return self.main

    def add(self, tr: TaskRun) -> None:
        """Register a child (new, or restored from a snapshot)."""
        (self.main if tr.branch == MAIN else self.lane(tr)).add(tr)

    def changed(self, old: State, tr: TaskRun) -> None:
        """A child moved from ``old`` to ``tr.state``."""
        state = tr.state
        if old.terminal or not state.terminal:
            return
        lane = self.main if tr.branch == MAIN else self.lane(tr)
        lane.active -= 1
        if state.failed:
            lane.failed = True

    def outputs(self) -> dict[str, Any]:
        """What this flowable records as its own outputs when it starts."""
        return {}

    def prepare(self, now: float) -> float | None:
        """Take the decisions that need templates or time before :meth:`nexts` (called by
        the execution each time it looks at the frame); returns when to wake it, if it waits."""
        return None

    # -- decisions ------------------------------------------------------------------
    def main_active(self) -> bool:
        """Whether a main child is still running."""
        return self.main.active > 0

    def main_failed(self) -> bool:
        """Whether a main child failed (so main stops and ``errors`` run)."""
        return self.main.failed

    def main_nexts(self, limit: int) -> list[Spec]:
        """Next main children (at most ``limit``, ``limit`` >= 1); default: one after
        another, stopping at a failure."""
        main = self.main  # _seq inlined: asked twice per child of a sequence
        if main.active or main.failed:
            return []
        i, tasks = len(main.ids), self.tasks
        return [Spec(tasks[i], MAIN, self.value)] if i < len(tasks) else []

    def nexts(self, limit: int = ALL) -> list[Spec]:
        """Children to create now, the first ``limit`` of them (pure: creating them changes
        the answer). Costs what it returns, not what the frame holds."""
        specs = self.main_nexts(limit)
        if specs or self.main.active > 0:
            return specs
        if self.main_failed() and self.errors:
            specs = _seq(self.errors, self.err, ERRORS, self.value)
            if specs or self.err.active:
                return specs
        if self.finally_:
            return _seq(self.finally_, self.fin, FINALLY, self.value)
        return []

    def main_states(self) -> list[State]:
        """States of the main children that decide the result."""
        return [self.runs[i].state for i in self.main.ids]

    def result(self, killing: bool = False) -> State | None:
        """This frame's terminal state, or None while something can still run."""
        if self.main.active > 0 or self.err.active or self.fin.active:
            return None
        if killing:
            return State.KILLED
        if self.error is not None:
            state = State.FAILED
        else:
            if self.nexts(1):
                return None
            state = worst(self.main_states())
            if self.fin.failed:
                state = worst([state, State.FAILED])
        if state is State.FAILED and self.allow_failure:
            state = State.WARNING
        if state is State.WARNING and self.allow_warning:
            state = State.SUCCESS
        return state


def _seq(tasks: Sequence[Task], lane: Lane, branch: str, value: str | None) -> list[Spec]:
    if lane.active or lane.failed:
        return []
    i = len(lane.ids)
    return [Spec(tasks[i], branch, value)] if i < len(tasks) else []


class ParallelFrame(Frame):
    """All main children at once, at most ``concurrency`` running (0 = no limit).

    After a failure no new child starts; running ones finish, then the frame is FAILED.
    """

    __slots__ = ("concurrency",)

    def __init__(self, *args: Any, concurrency: int = 0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.concurrency = concurrency

    def main_nexts(self, limit: int) -> list[Spec]:
        if self.main.failed:
            return []
        started = len(self.main.ids)
        room = min(len(self.tasks) - started, limit)
        if self.concurrency:
            room = min(room, self.concurrency - self.main.active)
        value = self.value
        return [Spec(t, MAIN, value) for t in self.tasks[started : started + max(room, 0)]]


class DagFrame(ParallelFrame):
    """Each node starts once all its dependencies ended.

    Each node counts its dependencies not ended yet; a node whose count reaches zero goes on a
    heap of ready node indexes (lowest first: the order the nodes are declared in), so a child
    end costs its dependents' count, not a scan of every node.
    """

    __slots__ = ("_dependents", "_index", "_ready", "_staged", "_started", "_waiting")

    def set_deps(self, deps: Mapping[str, Sequence[str]]) -> None:
        """Declare each node's dependencies (before any child is added)."""
        self._index = {t.id: k for k, t in enumerate(self.tasks)}
        self._dependents: dict[str, list[int]] = {}
        self._waiting = [0] * len(self.tasks)
        for k, t in enumerate(self.tasks):
            needs = deps.get(t.id, ())
            # A dependency on a disabled node never ends: the node never starts, as before.
            self._waiting[k] = len(needs)
            for d in needs:
                self._dependents.setdefault(d, []).append(k)
        self._ready = [k for k, w in enumerate(self._waiting) if not w]  # sorted: a heap
        # Ready nodes taken off the heap by main_nexts but not created yet: nexts() must give
        # the same answer until they are (result() asks without creating).
        self._staged: dict[int, None] = {}
        self._started = bytearray(len(self.tasks))

    def _ended(self, task_id: str) -> None:
        waiting, ready = self._waiting, self._ready
        for k in self._dependents.get(task_id, ()):
            waiting[k] -= 1
            if not waiting[k]:
                heapq.heappush(ready, k)

    def add(self, tr: TaskRun) -> None:
        super().add(tr)
        if tr.branch == MAIN:
            k = self._index.get(tr.task_id)
            if k is not None:
                self._started[k] = 1
                self._staged.pop(k, None)
            if tr.state.terminal:
                self._ended(tr.task_id)

    def changed(self, old: State, tr: TaskRun) -> None:
        super().changed(old, tr)
        if tr.branch == MAIN and not old.terminal and tr.state.terminal:
            self._ended(tr.task_id)

    def main_nexts(self, limit: int) -> list[Spec]:
        if self.main.failed:
            return []
        room = self.concurrency - self.main.active if self.concurrency else len(self.tasks)
        room = min(room, limit)
        staged, ready, started = self._staged, self._ready, self._started
        while len(staged) < room and ready:
            k = heapq.heappop(ready)
            if not started[k]:  # a rebuilt frame may have started it before it was ready
                staged[k] = None
        if room <= 0:
            return []
        tasks, value = self.tasks, self.value
        return [Spec(tasks[k], MAIN, value) for k in islice(staged, room)]


class ForEachFrame(Frame):
    """Main tasks once per value: a group per value, in order inside a group;
    at most ``concurrency`` groups open at once (0 = no limit).

    Groups are counters, not lanes: children created and running per group, a failed flag,
    the count of open groups, the groups whose next child can start (an ordered set) and the
    first group not started yet. ``main`` holds the totals (every main child's id, how many
    run, whether one failed), so the inherited decisions read one counter.
    """

    __slots__ = ("_created", "_failed", "_next_group", "_open", "_ready", "_running",
                 "concurrency", "values")  # fmt: skip

    def __init__(self, *args: Any, values: Sequence[Any], concurrency: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.values = [loop_value(v) for v in values]  # make_frame gives them converted
        self.concurrency = concurrency
        n = len(self.values)
        self._created = [0] * n  # children created in each group
        self._running = [0] * n  # of those, not terminal (one at most, in a sequence)
        self._failed = bytearray(n)
        self._open = 0  # groups started and not (done and idle)
        self._ready: dict[int, None] = {}  # started groups whose next child may start now
        self._next_group = 0  # no group before this one is unstarted

    def outputs(self) -> dict[str, Any]:
        return {"values": self.values}

    def _is_open(self, i: int) -> bool:
        created = self._created[i]
        if not created:
            return False
        return self._running[i] > 0 or not (self._failed[i] or created >= len(self.tasks))

    def _track(self, i: int, was_open: bool) -> None:
        """Group ``i`` changed: update the open count and the ready set."""
        now_open = self._is_open(i)
        self._open += now_open - was_open
        if now_open and not self._running[i] and not self._failed[i]:
            self._ready[i] = None
        else:
            self._ready.pop(i, None)

    def add(self, tr: TaskRun) -> None:
        i = tr.iteration
        if tr.branch != MAIN or i is None:
            super().add(tr)
            return
        was_open = self._is_open(i)
        self._created[i] += 1
        main = self.main
        main.ids.append(tr.id)
        if not tr.state.terminal:
            self._running[i] += 1
            main.active += 1
        elif tr.state.failed:
            self._failed[i] = 1
            main.failed = True
        if i == self._next_group:
            created, k = self._created, i
            n = len(created)
            while k < n and created[k]:
                k += 1
            self._next_group = k
        self._track(i, was_open)

    def changed(self, old: State, tr: TaskRun) -> None:
        i = tr.iteration
        if tr.branch != MAIN or i is None:
            super().changed(old, tr)
            return
        if old.terminal or not tr.state.terminal:
            return
        was_open = self._is_open(i)
        self._running[i] -= 1
        self.main.active -= 1
        if tr.state.failed:
            self._failed[i] = 1
            self.main.failed = True
        self._track(i, was_open)

    def main_nexts(self, limit: int) -> list[Spec]:
        tasks, values, created = self.tasks, self.values, self._created
        specs = [Spec(tasks[created[i]], MAIN, values[i], i) for i in islice(self._ready, limit)]
        if self.main.failed or not tasks:
            return specs
        n = len(values)
        room = min(n - self._next_group, limit - len(specs))
        if self.concurrency:
            room = min(room, self.concurrency - self._open)
        first = tasks[0]
        i = self._next_group
        while room > 0 and i < n:
            if not created[i]:  # a rebuilt frame may have later groups started already
                specs.append(Spec(first, MAIN, values[i], i))
                room -= 1
            i += 1
        return specs


class EachParallelFrame(Frame):
    """Kestra's EachParallel: every (value, task) pair at once, at most ``concurrency``
    running (0 = no limit); after a failure nothing new starts."""

    __slots__ = ("concurrency", "pairs")

    def __init__(self, *args: Any, values: Sequence[str], concurrency: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.concurrency = concurrency
        self.pairs = [(t, v, i) for i, v in enumerate(values) for t in self.tasks]

    def outputs(self) -> dict[str, Any]:
        return {"values": list(dict.fromkeys(v for _, v, _ in self.pairs))}

    def main_nexts(self, limit: int) -> list[Spec]:
        if self.main.failed:
            return []
        started = len(self.main.ids)
        room = min(len(self.pairs) - started, limit)
        if self.concurrency:
            room = min(room, self.concurrency - self.main.active)
        return [Spec(t, MAIN, v, i) for t, v, i in self.pairs[started : started + max(room, 0)]]


#: What a WaitFor decides after an iteration whose tasks all succeeded.
AGAIN, DONE, MAXED = "again", "done", "maxed"


class WaitForFrame(Frame):
    """WaitFor: the tasks in sequence, iteration after iteration, until ``decide`` (the
    condition and the limits, given the iteration count) says DONE or MAXED.

    Between iterations the frame waits (``prepare`` returns when to :meth:`wake` it). The
    current iteration is stored as the owner's ``iterationCount`` output, so a rebuilt frame
    continues where it stood.
    """

    __slots__ = ("_count", "_decide", "_fail_on_max", "_interval", "done", "iteration",
                 "waiting")  # fmt: skip

    waits = True

    def __init__(
        self,
        *args: Any,
        decide: Callable[[int], str],
        interval: float,
        fail_on_max: bool,
        iteration: int = 0,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self._decide = decide
        self._interval = interval
        self._fail_on_max = fail_on_max
        self._count: dict[int, int] = {}  # children created per iteration
        self.iteration = iteration  # 0-based; iterationCount is this + 1
        self.done = False
        self.waiting = False

    def outputs(self) -> dict[str, Any]:
        return {"iterationCount": self.iteration + 1}

    def add(self, tr: TaskRun) -> None:
        super().add(tr)
        if tr.branch == MAIN and tr.iteration is not None:
            self._count[tr.iteration] = self._count.get(tr.iteration, 0) + 1
            self.iteration = max(self.iteration, tr.iteration)

    def main_nexts(self, limit: int) -> list[Spec]:
        main = self.main
        if main.failed or main.active or self.waiting or self.done or not self.tasks:
            return []
        created = self._count.get(self.iteration, 0)
        if created < len(self.tasks):
            return [Spec(self.tasks[created], MAIN, self.value, self.iteration)]
        return []

    def prepare(self, now: float) -> float | None:
        main = self.main
        if self.done or self.waiting or main.active or main.failed or self.error is not None:
            return None
        if not self.tasks or self._count.get(self.iteration, 0) < len(self.tasks):
            return None
        try:
            verdict = self._decide(self.iteration + 1)
        except Exception as exc:  # a condition that cannot render fails the loop
            self.error = f"condition: {exc}"
            return None
        if verdict == AGAIN:
            self.waiting = True
            return now + self._interval
        self.done = True
        if verdict == MAXED and self._fail_on_max:
            self.error = "maximum iterations or duration reached"
        return None

    def wake(self) -> None:
        """The interval elapsed: start the next iteration."""
        if self.waiting:
            self.waiting = False
            self.iteration += 1

    def result(self, killing: bool = False) -> State | None:
        if self.waiting and not killing:
            return None
        return super().result(killing)


class BranchFrame(Frame):
    """If / Switch: the chosen branch runs in sequence; no branch at all is a failure."""

    __slots__ = ("_outputs",)

    def __init__(
        self, *args: Any, chosen: Sequence[Task] | None, outputs: dict[str, Any], **kw: Any
    ):
        super().__init__(*args, **kw)
        self._outputs = outputs
        if chosen is None:
            self.error = "no case matches and there are no defaults"
        else:
            self.tasks = _enabled(chosen)

    def outputs(self) -> dict[str, Any]:
        return self._outputs


def make_frame(
    runs: Mapping[str, TaskRun],
    owner: TaskRun,
    task: Flowable,
    render: Any,
    truthy: Any,
    now: Callable[[], float] | None = None,
) -> Frame:
    """A frame for a flowable task run; ``render(value, field)`` evaluates templates,
    ``now()`` is the clock's time (for WaitFor's limits).

    Choices that depend on templates (ForEach values, If condition, Switch value) are taken
    from the owner's stored outputs when present, so a rebuilt frame decides as before.
    """
    kw: dict[str, Any] = {
        "allow_failure": task.allow_failure,
        "allow_warning": task.allow_warning,
    }
    stored = owner.outputs
    if isinstance(task, ForEach):
        values = stored["values"] if "values" in stored else render(task.values, "values")
        if isinstance(values, str):
            values = json.loads(values)
        if not isinstance(values, list | tuple):
            raise ValueError(f"values must be a list, got {type(values).__name__}")
        nulls = sum(1 for v in values if v is None)
        if nulls:
            raise ValueError(f"found {nulls} null value(s) in values {values!r}")
        unique = dict.fromkeys(loop_value(v) for v in values)  # first occurrence wins
        if task.parallel_tasks:
            return EachParallelFrame(
                runs, owner, task.tasks, task.errors, task.finally_,
                values=list(unique), concurrency=task.concurrency, **kw,
            )  # fmt: skip
        return ForEachFrame(
            runs, owner, task.tasks, task.errors, task.finally_,
            values=list(unique), concurrency=task.concurrency, **kw,
        )  # fmt: skip
    if isinstance(task, WaitFor):
        return _wait_for_frame(runs, owner, task, render, truthy, now, kw)
    if isinstance(task, If):
        if "evaluation_result" in stored:
            result = bool(stored["evaluation_result"])
        else:
            result = truthy(render(task.condition, "condition"))
        return BranchFrame(
            runs, owner, (), task.errors, task.finally_,
            chosen=task.then if result else task.else_,
            outputs={"evaluation_result": result}, **kw,
        )  # fmt: skip
    if isinstance(task, Switch):
        value = stored["value"] if "value" in stored else to_text(render(task.value, "value"))
        chosen = task.cases.get(value)
        defaults = chosen is None
        if chosen is None:
            chosen = task.defaults or None
        return BranchFrame(
            runs, owner, (), task.errors, task.finally_,
            chosen=chosen, outputs={"value": value, "defaults": defaults}, **kw,
        )  # fmt: skip
    if isinstance(task, Dag):
        dag = DagFrame(
            runs, owner, [n.task for n in task.nodes], task.errors, task.finally_,
            concurrency=task.concurrency, **kw,
        )  # fmt: skip
        dag.set_deps({n.task.id: tuple(n.depends_on) for n in task.nodes})
        return dag
    if isinstance(task, Parallel):
        return ParallelFrame(
            runs, owner, task.tasks, task.errors, task.finally_,
            concurrency=task.concurrency, **kw,
        )  # fmt: skip
    return Frame(runs, owner, task.tasks, task.errors, task.finally_, **kw)


def _wait_for_frame(
    runs: Mapping[str, TaskRun],
    owner: TaskRun,
    task: WaitFor,
    render: Any,
    truthy: Any,
    now: Callable[[], float] | None,
    kw: dict[str, Any],
) -> WaitForFrame:
    started = owner.history[0].date

    def decide(count: int) -> str:
        if truthy(render(task.condition, "condition")):
            return DONE
        if task.max_iterations is not None and count >= task.max_iterations:
            return MAXED
        # Checked after an iteration, as Kestra does.
        if (
            task.max_duration is not None
            and now is not None
            and now() > started + task.max_duration
        ):
            return MAXED
        return AGAIN

    count = owner.outputs.get("iterationCount")
    iteration = count - 1 if isinstance(count, int) and count >= 1 else 0
    return WaitForFrame(
        runs, owner, task.tasks, task.errors, task.finally_,
        decide=decide, interval=task.interval, fail_on_max=task.fail_on_max_reached,
        iteration=iteration, **kw,
    )  # fmt: skip
