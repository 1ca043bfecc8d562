"""Flows: the definition an execution runs, with inputs, validation and a task index."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actorflow._errors import FlowValidationError, InputError, Problem, UnstorableValue
from actorflow.runtime._retry import Retry
from actorflow.runtime._tasks import Call, Dag, Flowable, Task
from actorflow.runtime._triggers import Trigger, trigger_problems
from actorflow.runtime._values import (
    check_labels,
    check_sql_int,
    check_text,
    safe_text,
    to_plain,
)

_MISSING: Any = object()
# Deepest task nesting a flow may have (a top-level task is at level 1). Far beyond what a
# flow needs; it keeps every walk over the tree, ours and the host's, clear of the
# interpreter's recursion limit.
MAX_NESTING = 200


@dataclass(frozen=True, kw_only=True)
class Input:
    """A declared input of a flow (or of a Pause's resume).

    ``type`` is one of string, int, float, bool, json, list, dict, any.
    """

    name: str
    type: str = "string"
    default: Any = _MISSING
    required: bool = True
    description: str = ""

    @property
    def has_default(self) -> bool:
        """Whether a default was given (None is a default too)."""
        return self.default is not _MISSING

    def __post_init__(self) -> None:
        if self.type not in _COERCE:
            raise FlowValidationError(
                [Problem(f"unknown input type {self.type!r}", field=f"inputs.{self.name}.type")]
            )


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in {"true", "false", "1", "0", "yes", "no"}:
        return v.lower() in {"true", "1", "yes"}
    if isinstance(v, int):
        return bool(v)
    raise ValueError(f"not a boolean: {v!r}")


def _to_int(v: Any) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"not an integer: {v!r}")
    return int(v)


def _to_json(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def _typed(kind: type) -> Any:
    def conv(v: Any) -> Any:
        v = _to_json(v)
        if not isinstance(v, kind):
            raise ValueError(f"expected a {kind.__name__}, got {type(v).__name__}")
        return v

    return conv


_COERCE: Mapping[str, Any] = {
    "string": str,
    "int": _to_int,
    "float": float,
    "bool": _to_bool,
    "json": _to_json,
    "list": _typed(list),
    "dict": _typed(dict),
    "any": lambda v: v,
}


def validate_inputs(
    declared: Sequence[Input], given: Mapping[str, Any] | None, *, where: str
) -> dict[str, Any]:
    """Coerce ``given`` to the declared inputs; InputError lists every problem.

    Every value becomes plain data the store keeps exactly (see ``runtime._values``): a
    value it cannot keep (an int beyond 64 bits, a lone surrogate, an object, nesting deeper
    than 100 levels) is refused here, naming the input and the path inside it.
    """
    given = dict(given or {})
    out: dict[str, Any] = {}
    problems: list[str] = []
    for inp in declared:
        if inp.name in given:
            raw = given.pop(inp.name)
            try:
                out[inp.name] = to_plain(_COERCE[inp.type](raw), f"inputs.{inp.name}")
            except UnstorableValue as exc:
                problems.append(str(exc))
            except RecursionError:
                problems.append(f"inputs.{inp.name} ({inp.type}): nested too deeply")
            except (ValueError, TypeError) as exc:
                problems.append(f"input {inp.name!r} ({inp.type}): {safe_text(str(exc))}")
        elif inp.default is not _MISSING:
            try:
                out[inp.name] = to_plain(inp.default, f"inputs.{inp.name} (its default)")
            except UnstorableValue as exc:
                problems.append(str(exc))
        elif inp.required:
            problems.append(f"missing required input {inp.name!r}")
        else:
            out[inp.name] = None
    for extra in given:
        problems.append(f"unknown input {safe_text(repr(extra))}")
    if problems:
        raise InputError(f"{where}: " + "; ".join(problems))
    return out


class ConcurrencyBehavior(enum.StrEnum):
    """What happens to an execution over the flow's concurrency limit."""

    QUEUE = "QUEUE"
    CANCEL = "CANCEL"
    FAIL = "FAIL"


@dataclass(frozen=True, kw_only=True)
class Concurrency:
    """At most ``limit`` RUNNING or PAUSED executions of the flow."""

    limit: int
    behavior: ConcurrencyBehavior = ConcurrencyBehavior.QUEUE


@dataclass(frozen=True, kw_only=True)
class Flow:
    """A workflow definition.

    Attributes:
        id, namespace, revision: identity; executions record them.
        inputs: declared inputs, validated at submit.
        tasks, errors, finally_: the top level; ``errors`` run after a failure,
            ``finally_`` always.
        retry: default retry for every runnable task without its own (or an ancestor's).
        concurrency: limit on concurrent executions of this flow.
        triggers: what starts executions by itself (Schedule, FlowTrigger, Webhook).
        source: the flow file's text, kept with executions so recovery can reload it.
    """

    id: str
    namespace: str = "default"
    revision: int = 1
    inputs: Sequence[Input] = ()
    tasks: Sequence[Task] = ()
    errors: Sequence[Task] = ()
    finally_: Sequence[Task] = ()
    retry: Retry | None = None
    concurrency: Concurrency | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    triggers: Sequence[Trigger] = ()
    source: str | None = None
    source_path: str | None = None
    _index: dict[str, tuple[Task, Flowable | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if any((isinstance(t, Call) and t.refs) or isinstance(t, Flowable) for t in self.tasks):
            ordered = self._upstreams_first(self.tasks)
            if ordered is not None:
                object.__setattr__(self, "tasks", ordered)
        problems: list[Problem] = []
        if not self.id:
            problems.append(Problem("flow id must not be empty", field="id"))
        if not [t for t in self.tasks if not t.disabled]:
            problems.append(Problem("a flow needs at least one task", field="tasks"))
        problems.extend(trigger_problems(self.triggers))
        for task, parent in self._walk(self.top_level(), None):
            if not task.id:
                problems.append(Problem("task id must not be empty", field="tasks"))
            elif task.id in self._index:
                problems.append(Problem(f"duplicate task id {task.id!r}", field=task.id))
            else:
                self._index[task.id] = (task, parent)
            if isinstance(task, Dag):
                problems.extend(_check_dag(task))
        for task, _ in self._index.values():
            if isinstance(task, Call):
                for name in task.refs:
                    upstream = task.params[name].step.id
                    if upstream not in self._index:
                        problems.append(Problem(
                            f"parameter {name!r} reads the output of task {upstream!r}, which "
                            "is not in this flow", field=f"{task.id}.{name}",
                        ))  # fmt: skip
        problems.extend(self._storable())
        if self.concurrency is not None and self.concurrency.limit < 1:
            problems.append(Problem("concurrency.limit must be >= 1", field="concurrency.limit"))
        if problems:
            raise FlowValidationError([_with_file(p, self.source_path) for p in problems])

    def _storable(self) -> list[Problem]:
        """Identity fields every execution row carries: the store must keep them exactly."""
        problems: list[Problem] = []
        bad_revision = check_sql_int(self.revision, "revision")
        if bad_revision is not None:
            problems.append(Problem(bad_revision, field="revision"))
        for name in ("id", "namespace"):
            try:
                check_text(getattr(self, name), name)
            except UnstorableValue as exc:
                problems.append(Problem(str(exc), field=name))
        try:
            check_labels(self.labels, "labels")
        except UnstorableValue as exc:
            problems.append(Problem(str(exc), field="labels"))
        for task_id in self._index:
            try:
                check_text(task_id, f"task id {task_id!r}")
            except UnstorableValue as exc:
                problems.append(Problem(str(exc), field="tasks"))
        return problems

    def _upstreams_first(self, tasks: Sequence[Task]) -> tuple[Task, ...] | None:
        """``tasks`` with every step whose output a later one reads (``step.output()``) before
        it: one listed later moves up, one in no part of the flow is added; None if unchanged.
        """
        present = {t.id for t, _ in self._walk(self.top_level(), None)}
        top = {id(t) for t in tasks}

        def upstreams(t: Task) -> list[Task]:
            inner = (
                [t, *(c for c, _ in self._walk(t.children(), None))]
                if isinstance(t, Flowable)
                else [t]
            )
            own = {id(c) for c in inner}
            found = []
            for c in inner:
                if isinstance(c, Call):
                    for name in c.refs:
                        step = c.params[name].step
                        if id(step) not in own and (id(step) in top or step.id not in present):
                            found.append(step)
            return found

        placed: list[Task] = []
        done: set[int] = set()
        for first in tasks:
            stack = [(first, iter(upstreams(first)))]
            while stack:  # depth first, iterative: a long chain of references is no recursion
                node, pending = stack[-1]
                nxt = next((u for u in pending if id(u) not in done), None)
                if nxt is None:
                    stack.pop()
                    if id(node) not in done:
                        done.add(id(node))
                        placed.append(node)
                elif all(n is not nxt for n, _ in stack):
                    stack.append((nxt, iter(upstreams(nxt))))
        if len(placed) == len(tasks) and all(a is b for a, b in zip(placed, tasks, strict=True)):
            return None
        return tuple(placed)

    def top_level(self) -> Sequence[Task]:
        """The flow's own tasks, errors and finally tasks."""
        return (*self.tasks, *self.errors, *self.finally_)

    def _walk(
        self, tasks: Sequence[Task], parent: Flowable | None
    ) -> Iterator[tuple[Task, Flowable | None]]:
        """Every task under ``tasks`` with its parent, depth first, each before its children.

        Iterative: no recursion however deep the tree; deeper than MAX_NESTING is refused.
        """
        stack: list[tuple[Iterator[Task], Flowable | None]] = [(iter(tasks), parent)]
        while stack:
            children, owner = stack[-1]
            t = next(children, None)
            if t is None:
                stack.pop()
                continue
            yield t, owner
            if isinstance(t, Flowable):
                kids = t.children()
                if not kids:
                    continue
                if len(stack) >= MAX_NESTING:
                    raise FlowValidationError([_with_file(Problem(
                        f"tasks nest more than {MAX_NESTING} levels deep (under {t.id!r})",
                        field=t.id,
                    ), self.source_path)])  # fmt: skip
                stack.append((iter(kids), t))

    def task(self, task_id: str) -> Task:
        """The task with that id (KeyError if none)."""
        return self._index[task_id][0]

    def parent_of(self, task_id: str) -> Flowable | None:
        """The flowable that contains ``task_id`` (None at top level)."""
        return self._index[task_id][1]

    def retry_for(self, task_id: str) -> Retry | None:
        """The task's retry, else its nearest ancestor's, else the flow's."""
        task: Task | None = self.task(task_id)
        while task is not None:
            if task.retry is not None:
                return task.retry
            task = self.parent_of(task.id)
        return self.retry

    def error_task_ids(self) -> frozenset[str]:
        """Ids of every task inside an ``errors`` branch (removed by restart)."""
        ids: set[str] = set()
        stack: list[Sequence[Task]] = [self.errors]
        for t, _ in self._walk(self.top_level(), None):
            if isinstance(t, Flowable):
                stack.append(t.errors)
        for branch in stack:
            for t, _ in self._walk(branch, None):
                ids.add(t.id)
        return frozenset(ids)


def _with_file(p: Problem, path: str | None) -> Problem:
    return p if p.file is not None or path is None else Problem(p.message, path, p.line, p.field)


def _check_dag(dag: Dag) -> list[Problem]:
    problems: list[Problem] = []
    ids = [n.task.id for n in dag.nodes]
    deps = {n.task.id: list(n.depends_on) for n in dag.nodes}
    for node in dag.nodes:
        for d in node.depends_on:
            if d not in deps:
                problems.append(
                    Problem(f"depends on unknown task id {d!r}", field=f"{node.task.id}.depends_on")
                )
    # Kahn's algorithm, counting: whatever is never freed is on a cycle (or waits on one).
    waiting = {i: {d for d in deps[i] if d in deps} for i in ids}
    dependents: dict[str, list[str]] = {}
    for i, ds in waiting.items():
        for d in ds:
            dependents.setdefault(d, []).append(i)
    count = {i: len(ds) for i, ds in waiting.items()}
    free = [i for i, c in count.items() if not c]
    while free:
        for j in dependents.get(free.pop(), ()):
            count[j] -= 1
            if not count[j]:
                free.append(j)
    remaining = [i for i, c in count.items() if c]
    if remaining:
        problems.append(
            Problem(f"cyclic dependency between {sorted(remaining)}", field=f"{dag.id}.nodes")
        )
    return problems


# The engine keeps a file flow's source with its executions; turning it back into a Flow is the
# flow-file language's job, a room above this one, so that room installs the loader here.
_source_loader: Callable[[str], Flow] | None = None


def set_source_loader(loader: Callable[[str], Flow] | None) -> None:
    """Install how a stored flow source becomes a :class:`Flow` (``actorflow.flows`` does)."""
    global _source_loader
    _source_loader = loader


def load_source(source: str) -> Flow | None:
    """The flow of a stored source, or None when no flow language is installed."""
    return None if _source_loader is None else _source_loader(source)
