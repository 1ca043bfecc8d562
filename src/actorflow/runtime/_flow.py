"""Flows: the definition an execution runs, with inputs, validation and a task index."""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actorflow._errors import FlowValidationError, InputError, Problem, UnstorableValue
from actorflow.runtime._retry import Retry
from actorflow.runtime._tasks import Call, Dag, Flowable, ForEach, Task
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

    ``type`` is one of string, int, float, bool, json, list, dict, any, and Kestra's
    secret, datetime, date, time, duration, uri, yaml, select, multiselect, array (of
    ``item_type``), email and file (a local path or bytes, stored in the internal storage:
    the execution sees its URI).

    Constraints: ``values`` (the choices of select/multiselect), ``allow_custom`` (a select
    also takes other values), ``validator`` (a regex a string must match entirely),
    ``min``/``max`` (numbers; durations for a duration), ``after``/``before`` (datetime, date,
    time, duration bounds, exclusive).
    """

    name: str
    type: str = "string"
    default: Any = _MISSING
    required: bool = True
    description: str = ""
    values: tuple[str, ...] | None = None
    allow_custom: bool = False
    item_type: str | None = None
    validator: str | None = None
    min: Any = None
    max: Any = None
    after: Any = None
    before: Any = None

    @property
    def has_default(self) -> bool:
        """Whether a default was given (None is a default too)."""
        return self.default is not _MISSING

    def __post_init__(self) -> None:
        problems = []
        if self.type not in _COERCE:
            problems.append(
                Problem(f"unknown input type {self.type!r}", field=f"inputs.{self.name}.type")
            )
        if self.item_type is not None and self.item_type not in _COERCE:
            problems.append(
                Problem(
                    f"unknown item type {self.item_type!r}", field=f"inputs.{self.name}.itemType"
                )
            )
        if self.validator is not None:
            try:
                re.compile(self.validator)
            except re.error as exc:
                problems.append(
                    Problem(f"invalid regex: {exc}", field=f"inputs.{self.name}.validator")
                )
        if problems:
            raise FlowValidationError(problems)

    def convert(self, raw: Any) -> Any:
        """``raw`` as this input's type (ValueError), constraints not checked."""
        value = _COERCE[self.type](raw)
        if self.type == "list" and self.item_type is not None:
            value = [_COERCE[self.item_type](v) for v in value]
        return value

    def coerce(self, raw: Any) -> Any:
        """``raw`` as this input's type, checked against its constraints (ValueError)."""
        value = self.convert(raw)
        if self.values is not None and not self.allow_custom:
            chosen = value if isinstance(value, list) else [value]
            for v in chosen:
                if v not in self.values:
                    raise ValueError(f"{v!r} is not one of {list(self.values)}")
        if (
            self.validator is not None
            and isinstance(value, str)
            and re.fullmatch(self.validator, value) is None
        ):
            raise ValueError(f"{value!r} does not match the validator {self.validator!r}")
        # min/max: numbers, or durations for a duration input (both inclusive).
        measure = duration_seconds(value) if self.type == "duration" else value
        if isinstance(measure, int | float) and not isinstance(measure, bool):
            checks = ((self.min, float.__lt__, "less than the minimum"),
                      (self.max, float.__gt__, "more than the maximum"))  # fmt: skip
            for bound, bad, what in checks:
                if bound is None:
                    continue
                limit = duration_seconds(bound) if self.type == "duration" else float(bound)
                if bad(float(measure), limit):
                    raise ValueError(f"{value!r} is {what} {bound!r}")
        if self.after is not None or self.before is not None:
            key = _ORDER.get(self.type)
            if key is not None:
                if self.after is not None and not key(value) > key(_COERCE[self.type](self.after)):
                    raise ValueError(f"{value!r} is not after {self.after!r}")
                if self.before is not None and not key(value) < key(
                    _COERCE[self.type](self.before)
                ):
                    raise ValueError(f"{value!r} is not before {self.before!r}")
        return value


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


def _to_string(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | int | float):
        return str(v)
    raise ValueError(f"expected a string, got {type(v).__name__}")


def _to_datetime(v: Any) -> str:
    """An instant, kept as ISO-8601 text in UTC (``2019-10-06T18:27:49Z``)."""
    if isinstance(v, dt.datetime):
        d = v
    elif isinstance(v, str):
        text = v.strip()
        try:
            d = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ValueError(f"not a date-time (ISO-8601): {v!r}") from None
    else:
        raise ValueError(f"not a date-time (ISO-8601): {v!r}")
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    d = d.astimezone(dt.UTC)
    return d.isoformat().replace("+00:00", "Z")


def _to_date(v: Any) -> str:
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        return v.isoformat()
    try:
        return dt.date.fromisoformat(str(v).strip()).isoformat()
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD): {v!r}") from None


def _to_time(v: Any) -> str:
    if isinstance(v, dt.time):
        return v.isoformat()
    try:
        return dt.time.fromisoformat(str(v).strip()).isoformat()
    except ValueError:
        raise ValueError(f"not a time (HH:MM[:SS]): {v!r}") from None


_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)


def duration_seconds(v: Any) -> float:
    """Seconds of an ISO-8601 duration (``PT5M6S``) or a number of seconds."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    text = str(v).strip()
    m = _DURATION.match(text)
    if m is None or text.upper() in ("P", "PT") or text.upper().endswith("T"):
        raise ValueError(f"not a duration (ISO-8601, e.g. PT5M): {v!r}")
    parts = {k: float(x) for k, x in m.groupdict().items() if x is not None}
    return sum(parts.get(k, 0.0) * f for k, f in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)))


def _to_duration(v: Any) -> str:
    seconds = duration_seconds(v)
    if isinstance(v, str):
        return v.strip().upper()
    return f"PT{seconds:g}S"


def _to_uri(v: Any) -> str:
    text = _to_string(v)
    parsed = urllib.parse.urlparse(text)
    if not parsed.scheme or not (parsed.netloc or parsed.path):
        raise ValueError(f"not a URI: {v!r}")
    return text


def _to_yaml(v: Any) -> Any:
    if isinstance(v, str):
        import yaml  # only for YAML inputs: read-only commands never load PyYAML

        try:
            return yaml.safe_load(v)
        except yaml.YAMLError as exc:
            raise ValueError(f"invalid YAML: {exc}") from None
    return v


def _to_email(v: Any) -> str:
    text = _to_string(v)
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text) is None:
        raise ValueError(f"not an email address: {v!r}")
    return text


def _to_multi(v: Any) -> list[Any]:
    v = _to_json(v) if isinstance(v, str) and v.strip().startswith("[") else v
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list):
        raise ValueError(f"expected a list, got {type(v).__name__}")
    return v


def _to_file(v: Any) -> Any:
    """A file input: a URI of the internal storage, a local path, or bytes (stored at
    submit, see ``Runtime.submit``)."""
    if isinstance(v, bytes | bytearray):
        return bytes(v)
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, str) and v:
        return v
    raise ValueError(f"expected a file (path, URI or bytes), got {type(v).__name__}")


_COERCE: Mapping[str, Any] = {
    "string": lambda v: ("true" if v else "false") if isinstance(v, bool) else str(v),
    "int": _to_int,
    "float": float,
    "bool": _to_bool,
    "json": _to_json,
    "list": _typed(list),
    "dict": _typed(dict),
    "any": lambda v: v,
    "secret": _to_string,
    "datetime": _to_datetime,
    "date": _to_date,
    "time": _to_time,
    "duration": _to_duration,
    "uri": _to_uri,
    "yaml": _to_yaml,
    "select": _to_string,
    "multiselect": _to_multi,
    "email": _to_email,
    "file": _to_file,
}
_ORDER: Mapping[str, Callable[[Any], Any]] = {
    "datetime": lambda v: dt.datetime.fromisoformat(v.replace("Z", "+00:00")),
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "duration": duration_seconds,
}


def validate_inputs(
    declared: Sequence[Input],
    given: Mapping[str, Any] | None,
    *,
    where: str,
    ignore_unknown: bool = False,
) -> dict[str, Any]:
    """Coerce ``given`` to the declared inputs; InputError lists every problem.

    Every value becomes plain data the store keeps exactly (see ``runtime._values``): a
    value it cannot keep (an int beyond 64 bits, a lone surrogate, an object, nesting deeper
    than 100 levels) is refused here, naming the input and the path inside it. Inputs the
    flow does not declare are refused, or dropped with ``ignore_unknown`` (Kestra's way).
    """
    given = dict(given or {})
    out: dict[str, Any] = {}
    problems: list[str] = []
    for inp in declared:
        if inp.name in given:
            raw = given.pop(inp.name)
            try:
                value = inp.coerce(raw)
                out[inp.name] = (
                    value if isinstance(value, bytes) else to_plain(value, f"inputs.{inp.name}")
                )
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
    if given and not ignore_unknown:
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
class FlowOutput:
    """One output of a flow: ``value`` (a template) rendered when the execution ends, then
    coerced to ``type`` (an input type)."""

    id: str
    value: Any
    type: str = "any"
    required: bool = True


def flow_outputs(flow: Flow, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The flow's outputs rendered with the execution's variables, each of its type."""
    from actorflow.runtime._pebble import to_text
    from actorflow.runtime._template import render

    out: dict[str, Any] = {}
    for o in flow.outputs:
        value = render(o.value, variables, where=f"flow output {o.id!r}")
        if o.type in ("string", "file") and not isinstance(value, str):
            value = to_text(value)
        elif o.type not in ("any", "string", "file"):
            value = validate_inputs(
                [Input(name=o.id, type=o.type)], {o.id: value}, where=f"flow output {o.id!r}"
            )[o.id]
        out[o.id] = to_plain(value, f"outputs.{o.id}")
    return out


@dataclass(frozen=True, kw_only=True)
class Sla:
    """A service-level rule: MAX_DURATION (``duration`` seconds) or EXECUTION_ASSERTION
    (``assert_`` a template that must stay true), with a behavior (FAIL, CANCEL, NONE) and
    labels added to the execution when violated."""

    id: str
    type: str
    behavior: str = "FAIL"
    duration: float | None = None
    assert_: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


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
        variables: ``{{ vars.x }}``, each rendered when read.
        outputs: the flow's outputs, rendered when the execution ends (Execution.outputs).
        sla: service-level rules checked while the execution runs.
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
    variables: Mapping[str, Any] = field(default_factory=dict)
    outputs: Sequence[FlowOutput] = ()
    sla: Sequence[Sla] = ()
    _index: dict[str, tuple[Task, Flowable | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # (reading task id, parameter) -> how many ForEach loops around the upstream step (and
    # the reader): the reference means the upstream output of the reader's own iteration.
    _ref_loops: dict[tuple[str, str], int] = field(
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
                        continue
                    depth, why = self._loop_reference(upstream, task.id)
                    if why is not None:
                        problems.append(Problem(
                            f"parameter {name!r} reads the output of task {upstream!r}, but {why}",
                            field=f"{task.id}.{name}",
                        ))  # fmt: skip
                    elif depth:
                        self._ref_loops[(task.id, name)] = depth
        problems.extend(self._storable())
        if self.concurrency is not None and self.concurrency.limit < 1:
            problems.append(Problem("concurrency.limit must be >= 1", field="concurrency.limit"))
        if problems:
            raise FlowValidationError([_with_file(p, self.source_path) for p in problems])

    def _loops(self, task_id: str) -> list[tuple[ForEach, Task]]:
        """The ForEach loops whose iterations run ``task_id``, outermost first, each with its
        task on the way down to ``task_id``."""
        found: list[tuple[ForEach, Task]] = []
        child, parent = self._index[task_id]
        for _ in range(MAX_NESTING + 1):
            if parent is None:
                break
            if isinstance(parent, ForEach) and any(t is child for t in parent.tasks):
                found.append((parent, child))
            child = parent
            parent = self._index[parent.id][1] if parent.id in self._index else None
        found.reverse()
        return found

    def _loop_reference(self, upstream: str, reader: str) -> tuple[int, str | None]:
        """How ``reader``'s ``upstream.output()`` resolves across loops: the number of ForEach
        loops around ``upstream`` (each iteration of them reads its own upstream output), or
        why it cannot resolve to one output."""
        outer = self._loops(upstream)
        if not outer:
            return 0, None
        around = self._loops(reader)
        for depth, (loop, _) in enumerate(outer):
            if depth >= len(around) or around[depth][0] is not loop:
                return 0, (
                    f"{upstream!r} runs once per value of ForEach {loop.id!r} and {reader!r} is"
                    f" not inside {loop.id!r}: there is no one output to pass (a template,"
                    f" {{{{ outputs.{upstream} }}}}, reads every iteration's by value)"
                )
        loop, up_child = outer[-1]
        own_child = around[len(outer) - 1][1]
        if own_child is not up_child:
            if loop.parallel_tasks:
                return 0, (
                    f"ForEach {loop.id!r} runs the tasks of one value at the same time"
                    f" (parallel_tasks), so {up_child.id!r} may not have ended when"
                    f" {own_child.id!r} starts: put them in a Sequential inside it"
                )
            order = [t.id for t in loop.tasks]
            if order.index(own_child.id) < order.index(up_child.id):
                return 0, (
                    f"{own_child.id!r} comes before {up_child.id!r} in each iteration of"
                    f" ForEach {loop.id!r}: list {up_child.id!r} first"
                )
        return len(outer), None

    def ref_loops(self, task_id: str, param: str) -> int:
        """How many ForEach loops around the upstream step of ``task_id``'s reference
        ``param`` (0: it is outside loops); the reader reads its own iteration's output."""
        return self._ref_loops.get((task_id, param), 0)

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
