"""Task definitions: runnable tasks (leaves) and flowables (containers).

A task definition is immutable; running it creates task runs. Template strings in task fields
(``"{{ inputs.x }}"``) are rendered when the task run starts.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
import os
import tempfile
import typing
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import CoroutineType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Generic,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

import msgspec

from actorflow._errors import FlowError, OutputError
from actorflow.runtime._clock import check_duration
from actorflow.runtime._retry import Retry
from actorflow.runtime._template_io import KV_TEMPLATES_ATTR

#: The longest task id (Kestra's limit for flow ids).
MAX_ID_LENGTH = 100

P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    from actorflow.runtime._context import TaskContext
    from actorflow.runtime._flow import Flow


@dataclass(frozen=True, kw_only=True)
class Task:
    """Options every task has.

    Attributes:
        id: unique in the flow.
        retry: policy for failed attempts; defaults to the nearest ancestor's, then the flow's.
        timeout: seconds; a slower attempt fails (and retries apply).
        allow_failure: a FAILED task run ends WARNING instead.
        allow_warning: a WARNING task run ends SUCCESS instead.
        run_if: bool, template string or callable of the context variables; false -> SKIPPED.
        disabled: the task is left out entirely (no task run).
        log_level: log lines below this level (DEBUG, INFO, WARNING, ERROR) are dropped.
        log_to_file: the attempt's log lines go to a file in the internal storage (its URI in
            the attempt's ``log_file``), not to the log table.
    """

    id: str
    retry: Retry | None = None
    timeout: float | None = None
    allow_failure: bool = False
    allow_warning: bool = False
    run_if: Any = None
    disabled: bool = False
    description: str = ""
    log_level: str | None = None
    log_to_file: bool = False

    flowable = False
    #: What ``Runtime.open(allow_types=...)`` must name before this task may run (``"shell"``
    #: for tasks that run commands on the runtime's machine); None: it always may.
    requires_allow: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise FlowError(f"task id must be a string, got {type(self.id).__name__}")
        if len(self.id) > MAX_ID_LENGTH:
            raise FlowError(
                f"task id {self.id[:40]!r}... has {len(self.id):,} characters; "
                f"at most {MAX_ID_LENGTH} are allowed"
            )
        if self.timeout is not None:
            check_duration(self.timeout, f"task {self.id!r}: timeout")
        # The slot of kv_templates' cache, made with the fields: added later, the attribute
        # would turn the task's inline attribute values into a dict of its own (768 bytes a
        # task, and a fan-out has one task per branch).
        object.__setattr__(self, KV_TEMPLATES_ATTR, None)


@dataclass(frozen=True, kw_only=True)
class Runnable(Task):
    """A leaf task that does work in its own task-run actor."""

    async def run(self, ctx: TaskContext) -> Any:  # pragma: no cover - abstract
        """Do the work; return outputs (mapping, Struct, other value or None)."""
        raise NotImplementedError


@functools.cache
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        return None


@functools.cache
def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve here: values pass untyped
        return {}


def check_params(task_id: str, fn: Callable[..., Any], params: Mapping[str, Any]) -> None:
    """Refuse ``params`` that ``fn(ctx, **params)`` cannot take (FlowError naming the task, the
    function and the parameter): found when the flow is defined, never in an attempt."""
    sig = _signature(fn)
    if sig is None:
        return
    what = f"task {task_id!r} ({getattr(fn, '__qualname__', fn)!r})"
    parameters = list(sig.parameters.values())
    if not parameters or parameters[0].kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.VAR_KEYWORD,
    ):
        raise FlowError(f"{what}: the function must take the task context as its first argument")
    rest = parameters[1:]
    names = [p.name for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind is p.VAR_KEYWORD for p in rest):
        for name in params:
            if name not in names:
                known = ", ".join(names) or "none"
                raise FlowError(f"{what}: unknown parameter {name!r} (it takes: {known})")
    for p in rest:
        if p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise FlowError(
                f"{what}: parameter {p.name!r} is positional-only; task parameters are passed "
                "by name"
            )
        if p.name not in params:
            raise FlowError(f"{what}: missing required parameter {p.name!r}")


def _whole(annotation: Any) -> bool:
    """Whether a return value of this type is stored as the outputs mapping itself (a Struct,
    dataclass or mapping), not as ``{"value": ...}``."""
    origin = typing.get_origin(annotation) or annotation
    if isinstance(origin, type):
        return (
            issubclass(origin, msgspec.Struct | Mapping)
            or dataclasses.is_dataclass(origin)
            or typing.is_typeddict(origin)
        )
    return False


def _convert(value: Any, annotation: Any, where: str) -> Any:
    if annotation is Any or annotation is None or annotation is inspect.Parameter.empty:
        return value
    try:
        return msgspec.convert(value, annotation, strict=False)
    except (msgspec.ValidationError, TypeError) as exc:
        raise OutputError(f"{where}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class OutputRef:
    """An upstream task's output passed to a downstream task's parameter (resolved when the
    downstream attempt starts): what :meth:`Call.output` returns."""

    step: Call[Any]
    key: str | None = None

    def resolve(
        self, outputs: Mapping[str, Any], reader: str, iteration: Sequence[str] = ()
    ) -> Any:
        """The referenced value among the execution's ``outputs`` so far; ``iteration``: the
        loop values of the reader's iteration around the upstream step, outermost first (its
        outputs are kept by them), whose own output is read."""
        task_id = self.step.id
        if task_id not in outputs:
            raise OutputError(
                f"{reader}: task {task_id!r} has no outputs yet (does it run before?)"
            )
        stored = outputs[task_id]
        for value in iteration:
            if not isinstance(stored, Mapping) or value not in stored:
                raise OutputError(
                    f"{reader}: task {task_id!r} has no outputs for value {value!r} yet"
                    " (does it run before, in the same iteration?)"
                )
            stored = stored[value]
        if self.key is None:
            return self.step.result(stored)
        if not isinstance(stored, Mapping) or self.key not in stored:
            keys = sorted(stored) if isinstance(stored, Mapping) else []
            raise OutputError(
                f"{reader}: task {task_id!r} has no output {self.key!r} (it has {keys})"
            )
        return stored[self.key]


@dataclass(frozen=True, kw_only=True)
class Call(Runnable, Generic[R]):
    """Calls a Python callable with rendered ``params`` as keyword arguments.

    Its parameters are checked against the callable's signature when defined (FlowError). A
    param may be an upstream step's :meth:`output`: resolved when the attempt starts (and
    converted to the parameter's annotated type).
    """

    fn: Callable[..., Any]
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_params(self.id, self.fn, self.params)

    @functools.cached_property
    def refs(self) -> tuple[str, ...]:
        """Names of the params that read an upstream step's output."""
        return tuple(k for k, v in self.params.items() if isinstance(v, OutputRef))

    def output(self, key: str | None = None) -> Any:
        """This step's result (``key``: one key of its outputs mapping) as a parameter of a
        later step: ``load(rows=extract.output())``. Typed ``Any`` so it fits any parameter."""
        return OutputRef(self, key)

    def result(self, outputs: Mapping[str, Any]) -> R:
        """The stored ``outputs`` of a task run of this step as the function's declared return
        type (a Struct or dataclass comes back as one); untyped: the outputs as stored."""
        annotation = _hints(self.fn).get("return", Any)
        if annotation is Any or annotation is None:
            return cast("R", outputs if annotation is Any else None)
        if _whole(annotation):
            return cast("R", _convert(outputs, annotation, f"outputs of task {self.id!r}"))
        value = outputs.get("value") if isinstance(outputs, Mapping) else outputs
        return cast("R", _convert(value, annotation, f"outputs of task {self.id!r}"))

    def run(self, ctx: TaskContext) -> Coroutine[Any, Any, Any]:
        # Not a coroutine itself: the function's own coroutine (or the thread's) is what the
        # attempt awaits, one frame less held by each running task run. What goes wrong
        # before it (a template, a reference) raises from this call.
        params = ctx.render(self.params, field="params") if self.params else {}
        if self.refs:
            hints = _hints(self.fn)
            flow = ctx.engine.find_flow(ctx.namespace, ctx.flow_id, ctx.flow_revision)
            for name in self.refs:
                where = f"task {self.id!r} parameter {name!r}"
                depth = flow.ref_loops(self.id, name) if flow is not None else 0
                keys = _iteration(flow, ctx, depth) if flow is not None and depth else ()
                value = self.params[name].resolve(ctx.outputs, where, keys)
                params[name] = _convert(value, hints.get(name, Any), where)
        if _is_async(self.fn):
            return _awaited(self.fn(ctx, **params))
        return ctx.run_sync(functools.partial(self.fn, ctx, **params))


def _iteration(flow: Flow, ctx: TaskContext, depth: int) -> list[str]:
    """The loop values of ``ctx``'s task run in its ``depth`` outermost ForEach loops, as
    the outputs of a step inside those loops are kept (``ExecutionScope.record_outputs``:
    a value inherited from a parent counts once)."""
    variables = ctx._variables or {}
    chain = [(ctx.task_id, ctx.value)]
    for parent in variables.get("parents", ()):
        chain.append((parent["task"]["id"], parent["taskrun"]["value"]))
    levels: list[str] = []
    for task_id, value in chain:  # nearest first
        try:
            owner = flow.parent_of(task_id)
        except KeyError:
            continue
        if value is not None and isinstance(owner, ForEach):
            levels.append(value)
    levels.reverse()
    keys: list[str] = []
    for value in levels[:depth]:
        if not keys or keys[-1] != value:
            keys.append(value)
    return keys


def _awaited(result: Any) -> Coroutine[Any, Any, Any]:
    """``result`` if it is a coroutine (the rule), else a coroutine awaiting it (a callable
    that returns some other awaitable)."""
    if type(result) is CoroutineType:
        return cast("Coroutine[Any, Any, Any]", result)
    return _await(result)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


@functools.cache
def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


class TaskFunction(Generic[P, R]):
    """What ``@task`` returns: call it with an id and params to get a flow step.

    Type checkers see the function's own parameters: ``extract("e", sourc=...)`` is an error
    for mypy, and for the runtime when the step is made. Task options go through
    :meth:`with_options` (``fetch.with_options(timeout=5)("a", url=...)``); passed inline with
    the params they still work, untyped.
    """

    def __init__(
        self, fn: Callable[Concatenate[TaskContext, P], Any], options: Mapping[str, Any]
    ) -> None:
        self.fn = fn
        self.options = dict(options)
        functools.update_wrapper(self, fn)

    def __call__(self, id: str | None = None, /, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        params: dict[str, Any] = dict(kwargs)
        if args:
            sig = _signature(self.fn)
            names = [p.name for p in sig.parameters.values()][1:] if sig else []
            if len(args) > len(names):
                raise FlowError(
                    f"task {id or self.fn.__name__!r}: {len(args)} positional parameters given, "
                    f"the function takes {len(names)}"
                )
            params.update(zip(names, args, strict=False))
        opts = {k: params.pop(k) for k in list(params) if k in _TASK_OPTIONS}
        call: Call[R] = Call(
            id=id or self.fn.__name__, fn=self.fn, params=params, **{**self.options, **opts}
        )
        return call

    def with_options(
        self,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        allow_failure: bool | None = None,
        allow_warning: bool | None = None,
        run_if: Any = None,
        disabled: bool | None = None,
        description: str | None = None,
    ) -> TaskFunction[P, R]:
        """The same task with these options (the others as they were)."""
        given = {
            "retry": retry,
            "timeout": timeout,
            "allow_failure": allow_failure,
            "allow_warning": allow_warning,
            "run_if": run_if,
            "disabled": disabled,
            "description": description,
        }
        return TaskFunction(
            self.fn, {**self.options, **{k: v for k, v in given.items() if v is not None}}
        )


_TASK_OPTIONS = frozenset(
    {"retry", "timeout", "allow_failure", "allow_warning", "run_if", "disabled", "description"}
)


class _Decorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[Concatenate[TaskContext, P], Awaitable[R]], /
    ) -> TaskFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[TaskContext, P], R], /) -> TaskFunction[P, R]: ...


@overload
def task(fn: Callable[Concatenate[TaskContext, P], Awaitable[R]], /) -> TaskFunction[P, R]: ...
@overload
def task(fn: Callable[Concatenate[TaskContext, P], R], /) -> TaskFunction[P, R]: ...
@overload
def task(
    fn: None = None,
    /,
    *,
    retry: Retry | None = None,
    timeout: float | None = None,
    allow_failure: bool = False,
    allow_warning: bool = False,
    run_if: Any = None,
    disabled: bool = False,
    description: str = "",
) -> _Decorator: ...
def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a function ``fn(ctx, **params)`` (async, or sync run in a worker thread) into a task.

    ``@task`` or ``@task(retry=..., timeout=...)``; then ``fetch("fetch_a", url=...)`` is a step.
    Type checkers keep the function's parameters and return type (``TaskFunction[P, R]``).
    """
    unknown = set(options) - _TASK_OPTIONS
    if unknown:
        raise TypeError(f"@task got unknown options: {sorted(unknown)}")
    if fn is None:
        return lambda f: TaskFunction(f, options)
    return TaskFunction(fn, options)


@dataclass(frozen=True, kw_only=True)
class Log(Runnable):
    """Logs a rendered message."""

    message: str
    level: str = "INFO"

    async def run(self, ctx: TaskContext) -> Any:
        ctx.log.log(self.level, str(ctx.render(self.message, field="message")))
        return None


@dataclass(frozen=True, kw_only=True)
class Return(Runnable):
    """Outputs ``{"value": <rendered value>}``; with ``null_text``, a null value is ``""``
    (Kestra's Return: its ``format`` is text, and Pebble prints null as nothing)."""

    value: Any
    null_text: bool = False

    async def run(self, ctx: TaskContext) -> Any:
        value = ctx.render(self.value, field="value")
        return {"value": "" if value is None and self.null_text else value}


@dataclass(frozen=True, kw_only=True)
class Sleep(Runnable):
    """Sleeps ``duration`` seconds (cancellable by kill and timeout)."""

    duration: float | str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.duration, str):  # a template is checked once rendered
            check_duration(self.duration, f"task {self.id!r}: duration")

    async def run(self, ctx: TaskContext) -> Any:
        rendered = ctx.render(self.duration, field="duration")
        seconds = float(rendered) if isinstance(rendered, str) else rendered
        await ctx.sleep(check_duration(seconds, f"task {self.id!r}: duration"))
        return None


def label_text(value: Any) -> str:
    """A rendered label value as text (Kestra's labels are strings; others as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def labels_mapping(value: Any, where: str) -> dict[str, str]:
    """Labels given as a mapping, a list of ``{key, value}`` or a JSON text of either."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise FlowError(f"{where}: not a mapping, a list or JSON of one: {exc}") from None
    if isinstance(value, Mapping):
        return {str(k): label_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        out: dict[str, str] = {}
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or "key" not in item or "value" not in item:
                raise FlowError(f"{where}[{i}]: expected a mapping with key and value")
            out[str(item["key"])] = label_text(item["value"])
        return out
    raise FlowError(f"{where}: expected a mapping or a list, got {type(value).__name__}")


@dataclass(frozen=True, kw_only=True)
class Labels(Runnable):
    """Sets labels on the running execution (Kestra's execution.Labels): a mapping, a list
    of ``{key, value}`` or a template rendering to JSON of one; later values win."""

    labels: Any = field(default_factory=dict)

    async def run(self, ctx: TaskContext) -> Any:
        rendered = ctx.render(self.labels, field="labels")
        return {"labels": labels_mapping(rendered, f"task {self.id!r} labels")}


class TaskFailure(Exception):
    """Raised by the Fail task."""


TaskFailure.__module__ = "actorflow.runtime"  # its public home, shown in failure log lines


@dataclass(frozen=True, kw_only=True)
class Fail(Runnable):
    """Fails with ``message`` (only when ``condition`` is truthy, if given)."""

    message: str = "Task failure"
    condition: Any = None

    async def run(self, ctx: TaskContext) -> Any:
        if self.condition is None or ctx.truthy(ctx.render(self.condition, field="condition")):
            raise TaskFailure(str(ctx.render(self.message, field="message")))
        return None


class PauseBehavior(enum.StrEnum):
    """What a Pause does when its timeout elapses."""

    RESUME = "RESUME"
    WARN = "WARN"
    FAIL = "FAIL"
    CANCEL = "CANCEL"


#: Nested subflow executions a chain may hold (a flow calling itself through others).
MAX_SUBFLOW_DEPTH = 10


async def check_subflow_depth(
    grandparent_id: str | None,
    parent_of: Callable[[str], Awaitable[str | None]],
    target: str,
) -> None:
    """Refuse a child execution nested more than MAX_SUBFLOW_DEPTH deep (FlowError).

    ``grandparent_id`` is the parent of the execution that starts the child; ``parent_of``
    reads an execution's parent id (None at the top). A top-level parent costs no read.
    """
    depth = 1
    execution_id = grandparent_id
    while execution_id is not None:
        depth += 1
        if depth > MAX_SUBFLOW_DEPTH:
            raise FlowError(
                f"subflow {target}: more than {MAX_SUBFLOW_DEPTH} nested subflow executions "
                "(does a flow call itself through other flows?)"
            )
        execution_id = await parent_of(execution_id)


@dataclass(frozen=True, kw_only=True)
class Subflow(Task):
    """Runs another flow as a child execution and (with ``wait``) takes its outcome."""

    flow_id: str
    namespace: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    wait: bool = True
    transmit_failed: bool = True
    #: Labels of the child execution (templates rendered), on top of the child flow's own.
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The child also gets every label of this execution (Kestra's ``inheritLabels``).
    inherit_labels: bool = False
    #: Rendered against the child's outputs once it ends: this task run's ``outputs.outputs``
    #: (Kestra's deprecated Subflow ``outputs``); None keeps every child task's outputs.
    outputs: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Flowable(Task):
    """A container of tasks, resolved by the execution actor."""

    tasks: Sequence[Task] = ()
    errors: Sequence[Task] = ()
    finally_: Sequence[Task] = ()

    flowable = True

    def children(self) -> Sequence[Task]:
        """Every directly contained task (for validation and lookup)."""
        return (*self.tasks, *self.errors, *self.finally_)


@dataclass(frozen=True, kw_only=True)
class Pause(Flowable):
    """Pauses the execution until resumed, or until ``delay`` / ``timeout`` elapses.

    ``delay`` resumes automatically; ``timeout`` applies ``behavior`` (default FAIL when only a
    timeout is set, as Kestra's maintainers describe). ``on_resume`` declares the inputs a resume
    must give; they become this task run's outputs. ``tasks`` (Kestra's deprecated form) run
    after the resume, inside the Pause task run.
    """

    delay: float | str | None = None
    timeout: float | None = None
    behavior: PauseBehavior | None = None
    on_resume: Sequence[Any] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.delay is not None and not isinstance(self.delay, str):  # templates: at pause
            check_duration(self.delay, f"task {self.id!r}: delay")


@dataclass(frozen=True, kw_only=True)
class Sequential(Flowable):
    """Runs ``tasks`` one after another; a failure stops the rest."""


@dataclass(frozen=True, kw_only=True)
class AllowFailure(Sequential):
    """A Sequential whose failure ends WARNING (its ``errors`` still run)."""

    allow_failure: bool = True


@dataclass(frozen=True, kw_only=True)
class Parallel(Flowable):
    """Runs ``tasks`` at once, at most ``concurrency`` at a time (0 = no limit)."""

    concurrency: int = 0


@dataclass(frozen=True, kw_only=True)
class ForEach(Flowable):
    """Runs ``tasks`` (in order) once per value of ``values``; ``concurrency`` groups at a time.

    ``parallel_tasks`` (Kestra's EachParallel) also runs the tasks of one value at once, every
    (value, task) pair then counting against ``concurrency`` (0: no limit).
    """

    values: Any = ()
    concurrency: int = 1
    parallel_tasks: bool = False


@dataclass(frozen=True, kw_only=True)
class WaitFor(Flowable):
    """Runs ``tasks`` (in order) again and again until ``condition`` is truthy (Kestra's
    WaitFor / LoopUntil).

    The condition is evaluated after an iteration whose tasks all succeeded, with that
    iteration's outputs; ``outputs.<id>.iterationCount`` is the current iteration (from 1).
    The next iteration starts ``interval`` seconds later. After ``max_iterations`` iterations
    or ``max_duration`` seconds the loop ends: FAILED with ``fail_on_max_reached``, else as
    its tasks ended.
    """

    condition: Any = None
    interval: float = 1.0
    max_iterations: int | None = 100
    max_duration: float | None = 3600.0
    fail_on_max_reached: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_duration(self.interval, f"task {self.id!r}: interval")
        if self.max_duration is not None:
            check_duration(self.max_duration, f"task {self.id!r}: max_duration")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise FlowError(f"task {self.id!r}: max_iterations must be at least 1")


def working_dir_path(execution_id: str, task_run_id: str) -> str:
    """The shared directory of one WorkingDirectory task run (made by its first user)."""
    return os.path.join(tempfile.gettempdir(), "actorflow-wd", execution_id, task_run_id)


@dataclass(frozen=True, kw_only=True)
class WorkingDirectory(Sequential):
    """A Sequential whose tasks share one directory (``ctx.working_dir``), removed once it
    ends (Kestra's WorkingDirectory; store files with LocalFiles ``outputs`` to keep them).

    ``collect_from``: the id of its last task whose ``uris`` output becomes this task run's
    ``outputFiles`` output (the file form's ``outputFiles``).
    """

    collect_from: str | None = None


@dataclass(frozen=True, kw_only=True)
class If(Flowable):
    """Runs ``then`` when ``condition`` is truthy, else ``else_``."""

    condition: Any = None
    then: Sequence[Task] = ()
    else_: Sequence[Task] = ()

    def children(self) -> Sequence[Task]:
        return (*self.then, *self.else_, *self.errors, *self.finally_)


@dataclass(frozen=True, kw_only=True)
class Switch(Flowable):
    """Runs the case matching ``value`` (its string form), else ``defaults``; none -> FAILED."""

    value: Any = None
    cases: Mapping[str, Sequence[Task]] = field(default_factory=dict)
    defaults: Sequence[Task] = ()

    def children(self) -> Sequence[Task]:
        return (
            *(t for ts in self.cases.values() for t in ts),
            *self.defaults,
            *self.errors,
            *self.finally_,
        )


def _read_ids(task: Task) -> list[str]:
    """Ids of the steps whose outputs ``task`` (or a task inside it) reads by reference."""
    found: list[str] = []
    stack = [task]
    while stack:
        t = stack.pop()
        if isinstance(t, Call):
            found.extend(t.params[name].step.id for name in t.refs)
        elif isinstance(t, Flowable):
            stack.extend(t.children())
    return found


@dataclass(frozen=True, kw_only=True)
class DagTask:
    """A Dag node: a task and the ids it waits for."""

    task: Task
    depends_on: Sequence[str] = ()


@dataclass(frozen=True, kw_only=True)
class Dag(Flowable):
    """Runs each node once all its ``depends_on`` ended (any terminal state)."""

    nodes: Sequence[DagTask] = ()
    concurrency: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        # A node reading another node's output (``step.output()``) depends on it, said or not.
        ids = {n.task.id for n in self.nodes}
        implied = []
        changed = False
        for node in self.nodes:
            extra = [u for u in _read_ids(node.task) if u in ids and u not in node.depends_on]
            if extra and node.task.id not in extra:
                changed = True
                node = DagTask(task=node.task, depends_on=(*node.depends_on, *dict.fromkeys(extra)))
            implied.append(node)
        if changed:
            object.__setattr__(self, "nodes", tuple(implied))

    def children(self) -> Sequence[Task]:
        return (*(n.task for n in self.nodes), *self.errors, *self.finally_)
