"""Scheduling of containers (the flow's top level and each flowable task run).

A frame decides which child task runs come next and, once nothing more can run, its own
terminal state (worst child wins, then allow_failure / allow_warning). Frames keep counters
updated per child change, so deciding is O(1) for sequences instead of rescanning children
(Kestra's executor rescans the whole execution on every message). A frame can always be
rebuilt from the task runs alone, which is how restart and crash recovery reconstruct it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from actorflow.runtime._records import TaskRun
from actorflow.runtime._states import State, worst
from actorflow.runtime._tasks import Dag, Flowable, ForEach, If, Parallel, Switch, Task

MAIN, ERRORS, FINALLY = "tasks", "errors", "finally"


class Spec(NamedTuple):
    """A child task run to create."""

    task: Task
    branch: str
    value: str | None = None
    iteration: int | None = None


class Lane:
    """Children of one branch (or one ForEach value group)."""

    __slots__ = ("active", "by_task", "failed", "ids")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.by_task: dict[str, str] = {}
        self.active = 0
        self.failed = False

    def add(self, tr: TaskRun) -> None:
        self.ids.append(tr.id)
        self.by_task[tr.task_id] = tr.id
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
        self.lane(tr).add(tr)

    def changed(self, old: State, tr: TaskRun) -> None:
        """A child moved from ``old`` to ``tr.state``."""
        if old.terminal or not tr.state.terminal:
            return
        lane = self.lane(tr)
        lane.active -= 1
        if tr.state.failed:
            lane.failed = True

    def outputs(self) -> dict[str, Any]:
        """What this flowable records as its own outputs when it starts."""
        return {}

    # -- decisions ------------------------------------------------------------------
    def main_active(self) -> bool:
        """Whether a main child is still running."""
        return self.main.active > 0

    def main_failed(self) -> bool:
        """Whether a main child failed (so main stops and ``errors`` run)."""
        return self.main.failed

    def main_nexts(self) -> list[Spec]:
        """Next main children; default: one after another, stopping at a failure."""
        return _seq(self.tasks, self.main, MAIN, self.value)

    def nexts(self) -> list[Spec]:
        """Children to create now (pure: creating them changes the answer)."""
        specs = self.main_nexts()
        if specs or self.main_active():
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
        if self.main_active() or self.err.active or self.fin.active:
            return None
        if killing:
            return State.KILLED
        if self.error is not None:
            state = State.FAILED
        else:
            if self.nexts():
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

    concurrency = 0

    def main_nexts(self) -> list[Spec]:
        if self.main.failed:
            return []
        started = len(self.main.ids)
        room = len(self.tasks) - started
        if self.concurrency:
            room = min(room, self.concurrency - self.main.active)
        return [Spec(t, MAIN, self.value) for t in self.tasks[started : started + max(room, 0)]]


class DagFrame(ParallelFrame):
    """Each node starts once all its dependencies ended."""

    deps: dict[str, tuple[str, ...]]

    def main_nexts(self) -> list[Spec]:
        if self.main.failed:
            return []
        room = len(self.tasks)
        if self.concurrency:
            room = self.concurrency - self.main.active
        specs: list[Spec] = []
        by_task = self.main.by_task
        for t in self.tasks:
            if len(specs) >= room:
                break
            if t.id in by_task:
                continue
            if all(d in by_task and self.runs[by_task[d]].state.terminal for d in self.deps[t.id]):
                specs.append(Spec(t, MAIN, self.value))
        return specs


class ForEachFrame(Frame):
    """Main tasks once per value: a group per value, in order inside a group;
    at most ``concurrency`` groups open at once (0 = no limit)."""

    def __init__(self, *args: Any, values: Sequence[Any], concurrency: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.values = [loop_value(v) for v in values]
        self.concurrency = concurrency
        self.groups = [Lane() for _ in self.values]

    def outputs(self) -> dict[str, Any]:
        return {"values": self.values}

    def lane(self, tr: TaskRun) -> Lane:
        if tr.branch == MAIN and tr.iteration is not None:
            return self.groups[tr.iteration]
        return super().lane(tr)

    def add(self, tr: TaskRun) -> None:
        super().add(tr)
        if tr.branch == MAIN:
            self.main.ids.append(tr.id)

    def main_active(self) -> bool:
        return any(g.active for g in self.groups)

    def main_failed(self) -> bool:
        return any(g.failed for g in self.groups)

    def main_nexts(self) -> list[Spec]:
        specs: list[Spec] = []
        failed = self.main_failed()
        open_groups = 0
        for i, g in enumerate(self.groups):
            started = bool(g.ids)
            done = g.failed or len(g.ids) == len(self.tasks)
            if started and not done and not g.active:
                specs.append(Spec(self.tasks[len(g.ids)], MAIN, self.values[i], i))
            if started and not (done and not g.active):
                open_groups += 1
        if failed:
            return specs
        for i, g in enumerate(self.groups):
            if g.ids or not self.tasks:
                continue
            if self.concurrency and open_groups >= self.concurrency:
                break
            specs.append(Spec(self.tasks[0], MAIN, self.values[i], i))
            open_groups += 1
        return specs


class BranchFrame(Frame):
    """If / Switch: the chosen branch runs in sequence; no branch at all is a failure."""

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
    runs: Mapping[str, TaskRun], owner: TaskRun, task: Flowable, render: Any, truthy: Any
) -> Frame:
    """A frame for a flowable task run; ``render(value, field)`` evaluates templates.

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
        unique: dict[str, Any] = {}
        for v in values:
            unique.setdefault(loop_value(v), v)
        return ForEachFrame(
            runs, owner, task.tasks, task.errors, task.finally_,
            values=list(unique.values()), concurrency=task.concurrency, **kw,
        )  # fmt: skip
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
        value = stored["value"] if "value" in stored else str(render(task.value, "value"))
        chosen = task.cases.get(value)
        defaults = chosen is None
        if chosen is None:
            chosen = task.defaults or None
        return BranchFrame(
            runs, owner, (), task.errors, task.finally_,
            chosen=chosen, outputs={"value": value, "defaults": defaults}, **kw,
        )  # fmt: skip
    if isinstance(task, Dag):
        dag = DagFrame(runs, owner, [n.task for n in task.nodes], task.errors, task.finally_, **kw)
        dag.deps = {n.task.id: tuple(n.depends_on) for n in task.nodes}
        dag.concurrency = task.concurrency
        return dag
    if isinstance(task, Parallel):
        par = ParallelFrame(runs, owner, task.tasks, task.errors, task.finally_, **kw)
        par.concurrency = task.concurrency
        return par
    return Frame(runs, owner, task.tasks, task.errors, task.finally_, **kw)
