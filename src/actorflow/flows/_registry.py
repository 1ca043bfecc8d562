"""Task types a flow file may name: built-ins, Kestra aliases, and user types from Python.

A flow file only ever names a registered type; it can never import a module. Users register
types from Python with ``@task_type("my.type")`` or through the ``actorflow.task_types`` entry
point group (loaded the first time a flow names a type that is not registered yet).

The ``*Spec`` structs are the file schema: the loader validates against them and the JSON
Schema for editors is generated from them.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import re
import threading
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

import msgspec

from actorflow._errors import FlowError, FlowValidationError, InputError
from actorflow.runtime import (
    Call,
    Concurrency,
    ConcurrencyBehavior,
    Input,
    Retry,
    Runnable,
    Task,
    TaskFunction,
    validate_inputs,
)

ENTRY_POINT_GROUP = "actorflow.task_types"
MAX_ID_LENGTH = 100
ID_PATTERN = "^[a-zA-Z0-9][a-zA-Z0-9_-]*$"
_TYPE_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")

#: A flow, task or input id: letters, digits, ``_`` and ``-`` (usable in ``outputs.<id>``),
#: at most 100 characters (Kestra's limit for flow ids).
Id = Annotated[
    str,
    msgspec.Meta(
        pattern=ID_PATTERN, max_length=MAX_ID_LENGTH, description="letters, digits, _ and -"
    ),
]

if TYPE_CHECKING:
    Duration = float
    DurationOrTemplate = float | str
else:

    class Duration:
        """Marker: seconds as a number, ISO-8601 (``PT1M30S``) or ``5s``/``2m``/``1h``."""

    class DurationOrTemplate:
        """Marker: a :class:`Duration`, or a template rendered to seconds when the task runs."""


class ChildTask:
    """A nested task of a flow file, already validated and built by the loader."""

    __slots__ = ("task",)

    def __init__(self, task: Task) -> None:
        self.task = task


def tasks_of(children: list[ChildTask]) -> tuple[Task, ...]:
    """The engine tasks of a list of nested tasks."""
    return tuple(c.task for c in children)


class SpecError(FlowError):
    """Raised by a builder: ``problems`` are (path relative to the task, message) pairs."""

    def __init__(self, *problems: tuple[tuple[str | int, ...], str]) -> None:
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


class Spec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every file-schema struct. ``aliases`` maps other accepted keys to fields;
    camelCase spellings of every field (``allowFailure``) are accepted too."""

    aliases: ClassVar[Mapping[str, str]] = {}


class RetrySpec(Spec, kw_only=True):
    """``retry:`` of a task or a flow (Kestra's fields and names)."""

    aliases: ClassVar[Mapping[str, str]] = {"maxAttempt": "max_attempts", "delayFactor": "factor"}

    type: Literal["constant", "exponential", "random"]
    interval: Duration | None = None
    max_interval: Duration | None = None
    min_interval: Duration | None = None
    factor: Annotated[float, msgspec.Meta(ge=1)] | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_duration: Duration | None = None
    warning_on_retry: bool = False
    behavior: Literal["RETRY_FAILED_TASK", "CREATE_NEW_EXECUTION"] = "RETRY_FAILED_TASK"

    def to_retry(self) -> Retry:
        """The engine's retry policy."""
        if self.type in ("constant", "exponential") and self.interval is None:
            raise SpecError((("interval",), f"a {self.type} retry needs an interval"))
        if self.type == "exponential" and self.max_interval is None:
            raise SpecError((("max_interval",), "an exponential retry needs max_interval"))
        if self.type == "random" and (self.min_interval is None or self.max_interval is None):
            raise SpecError(((), "a random retry needs min_interval and max_interval"))
        kw: dict[str, Any] = {
            "kind": self.type,
            "max_attempts": self.max_attempts,
            "max_duration": self.max_duration,
            "warning_on_retry": self.warning_on_retry,
            "max_interval": self.max_interval,
            "new_execution": self.behavior == "CREATE_NEW_EXECUTION",
        }
        for name in ("interval", "min_interval", "factor"):
            value = getattr(self, name)
            if value is not None:
                kw[name] = value
        try:
            return Retry(**kw)
        except FlowError as exc:
            raise SpecError(((), str(exc).removeprefix("retry."))) from exc

    def validate(self) -> None:
        """Called by the loader: report what the engine would refuse."""
        self.to_retry()


_INPUT_TYPES: Mapping[str, str] = {
    "string": "string", "str": "string", "int": "int", "integer": "int", "float": "float",
    "number": "float", "bool": "bool", "boolean": "bool", "json": "json", "list": "list",
    "array": "list", "dict": "dict", "object": "dict", "any": "any",
    # Kestra's other input types (INT, STRING... are above, case does not matter).
    "secret": "secret", "datetime": "datetime", "date": "date", "time": "time",
    "duration": "duration", "uri": "uri", "yaml": "yaml", "select": "select", "enum": "select",
    "multiselect": "multiselect", "email": "email", "file": "file",
}  # fmt: skip
#: Input ids: Kestra allows dots (``nested.string`` is ``{{ inputs.nested.string }}``).
InputId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*(?:\.[a-zA-Z0-9][a-zA-Z0-9_-]*)*$",
        max_length=MAX_ID_LENGTH,
        description="letters, digits, _ and -, parts joined by dots",
    ),
]


class InputSpec(Spec, kw_only=True):
    """A declared input of a flow, or of a Pause's ``on_resume``."""

    aliases: ClassVar[Mapping[str, str]] = {
        "name": "id",
        "defaults": "default",
        "allowCustomValue": "allow_custom",
        "displayName": "display_name",
    }

    id: InputId
    type: Annotated[
        str,
        msgspec.Meta(
            description="string, int, float, bool, json, list, dict, any, or Kestra's secret, "
            "datetime, date, time, duration, uri, yaml, select/enum, multiselect, array, "
            "email, file"
        ),
    ] = "string"
    default: Any | msgspec.UnsetType = msgspec.UNSET
    required: bool = True
    description: str = ""
    display_name: str = ""
    values: list[str] | None = None
    allow_custom: bool = False
    item_type: str | None = None
    validator: str | None = None
    #: Numbers, or durations (``PT10S``) for a DURATION input.
    min: float | str | None = None
    max: float | str | None = None
    after: str | None = None
    before: str | None = None
    #: Accepted for Kestra's files, not checked (FILE: the extension the UI offers).
    extension: str | None = None

    def to_input(self) -> Input:
        """The engine's input declaration."""
        kind = _INPUT_TYPES.get(self.type.lower())
        if kind is None:
            choices = ", ".join(sorted(set(_INPUT_TYPES.values())))
            raise SpecError((("type",), f"unknown input type {self.type!r}; use one of {choices}"))
        item = None
        if self.item_type is not None:
            item = _INPUT_TYPES.get(self.item_type.lower())
            if item is None or item in ("file", "list", "multiselect"):
                raise SpecError((("itemType",), f"unsupported item type {self.item_type!r}"))
        if kind in ("select", "multiselect") and not self.values:
            raise SpecError((("values",), f"a {self.type} input needs its values"))
        kw: dict[str, Any] = {}
        if self.default is not msgspec.UNSET:
            kw["default"] = self.default
        try:
            return Input(
                name=self.id,
                type=kind,
                required=self.required,
                description=self.description,
                values=tuple(self.values) if self.values is not None else None,
                allow_custom=self.allow_custom,
                item_type=item,
                validator=self.validator,
                min=self.min,
                max=self.max,
                after=self.after,
                before=self.before,
                **kw,
            )
        except FlowValidationError as exc:
            raise SpecError(
                *((((p.field or "").rsplit(".", 1)[-1],), p.message) for p in exc.problems)
            ) from None

    def validate(self) -> None:
        """Called by the loader: the type must be known and the default must fit it."""
        inp = self.to_input()
        for bound in ("after", "before"):
            text = getattr(self, bound)
            if text is not None:
                try:
                    inp.convert(text)
                except ValueError as exc:
                    raise SpecError(((bound,), f"invalid {bound}: {exc}")) from None
        if self.default is not msgspec.UNSET and self.default is not None and kind_checks(inp):
            try:
                validate_inputs([inp], {inp.name: self.default}, where="bad default")
            except InputError as exc:
                raise SpecError((("default",), str(exc))) from exc


def kind_checks(inp: Input) -> bool:
    """Whether a default of this input can be checked at load (a FILE default is a path or
    URI known only at run time)."""
    return inp.type != "file"


class ConcurrencySpec(Spec, kw_only=True):
    """``concurrency:`` of a flow: at most ``limit`` running or paused executions."""

    limit: Annotated[int, msgspec.Meta(ge=1)]
    behavior: Literal["QUEUE", "CANCEL", "FAIL"] = "QUEUE"

    def to_concurrency(self) -> Concurrency:
        """The engine's concurrency limit."""
        return Concurrency(limit=self.limit, behavior=ConcurrencyBehavior(self.behavior))


#: Log levels of flow files (Kestra's names too).
LogLevel = Literal["TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"]
#: Kestra's level names that are spelled otherwise here.
LEVEL_NAMES: Mapping[str, str] = {"TRACE": "DEBUG", "WARN": "WARNING"}


class TaskSpec(Spec, kw_only=True):
    """Options every task of a flow file has."""

    id: Id
    type: str
    description: str = ""
    retry: RetrySpec | None = None
    timeout: Duration | None = None
    allow_failure: bool = False
    allow_warning: bool = False
    run_if: bool | str | None = None
    disabled: bool = False
    log_level: LogLevel | None = None
    log_to_file: bool = False


class FlowableSpec(TaskSpec, kw_only=True):
    """Options of every container task: ``errors`` after a failure, ``finally`` always."""

    errors: list[ChildTask] = []
    finally_: list[ChildTask] = msgspec.field(default_factory=list, name="finally")


def common(spec: TaskSpec) -> dict[str, Any]:
    """Engine keyword arguments for the options every task has."""
    retry = None
    if spec.retry is not None:
        try:
            retry = spec.retry.to_retry()
        except SpecError as exc:
            raise SpecError(*((("retry", *p), m) for p, m in exc.problems)) from exc
    return {
        "id": spec.id,
        "description": spec.description,
        "retry": retry,
        "timeout": spec.timeout,
        "allow_failure": spec.allow_failure,
        "allow_warning": spec.allow_warning,
        "run_if": spec.run_if,
        "disabled": spec.disabled,
        "log_level": LEVEL_NAMES.get(spec.log_level, spec.log_level) if spec.log_level else None,
        "log_to_file": spec.log_to_file,
    }


def flowable_common(spec: FlowableSpec) -> dict[str, Any]:
    """:func:`common` plus ``errors`` and ``finally``."""
    return {**common(spec), "errors": tasks_of(spec.errors), "finally_": tasks_of(spec.finally_)}


@dataclass(frozen=True)
class TaskType:
    """A task type: the struct that validates its file form and the builder of the task."""

    name: str
    spec: type[TaskSpec]
    build: Callable[[Any], Task]
    aliases: tuple[str, ...] = ()
    source: Any = None


T = TypeVar("T")


class Registry:
    """Task types by name and alias."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}
        self._names: dict[str, TaskType] = {}
        self._entry_points_loaded = False
        self._lock = threading.Lock()

    def add(self, task_type: TaskType, *, replace: bool = False) -> TaskType:
        """Register ``task_type`` under its name and aliases."""
        for name in (task_type.name, *task_type.aliases):
            if not _TYPE_NAME.match(name):
                raise ValueError(f"invalid task type name {name!r}")
            old = self._names.get(name)
            if old is not None and not replace and old.source is not task_type.source:
                raise ValueError(f"task type {name!r} is already registered")
        for name in (task_type.name, *task_type.aliases):
            old = self._names.get(name)
            if old is not None:
                self._types.pop(old.name, None)
            self._names[name] = task_type
        self._types[task_type.name] = task_type
        return task_type

    def remove(self, name: str) -> None:
        """Forget a type (and its aliases)."""
        task_type = self._names.get(name)
        if task_type is None:
            return
        self._types.pop(task_type.name, None)
        for n in (task_type.name, *task_type.aliases):
            self._names.pop(n, None)

    def get(self, name: str) -> TaskType | None:
        """The type registered under ``name`` (loading entry points once if unknown)."""
        found = self._names.get(name)
        if found is None and not self._entry_points_loaded:
            self.load_entry_points()
            found = self._names.get(name)
        return found

    def names(self) -> list[str]:
        """Every accepted type name, aliases included, sorted."""
        return sorted(self._names)

    def __iter__(self) -> Iterator[TaskType]:
        return iter(list(self._types.values()))

    def load_entry_points(self) -> None:
        """Import the ``actorflow.task_types`` entry points (once)."""
        with self._lock:
            if self._entry_points_loaded:
                return
            self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                if not any(t.source is obj for t in self._types.values()):
                    register_task_type(ep.name, obj, registry=self)
            except Exception as exc:
                warnings.warn(
                    f"actorflow task type entry point {ep.name!r} ({ep.value}) failed: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )


REGISTRY = Registry()

_COMMON_FIELDS = frozenset(f.name for f in msgspec.structs.fields(FlowableSpec))


def _own_fields(params: list[tuple[str, Any, Any]], what: str) -> list[Any]:
    fields: list[Any] = []
    for name, annotation, default in params:
        if name in _COMMON_FIELDS:
            raise TypeError(f"{what}: parameter {name!r} clashes with a common task option")
        if default is inspect.Parameter.empty or default is dataclasses.MISSING:
            fields.append((name, annotation))
        else:
            fields.append((name, annotation, default))
    return fields


def _spec_for(name: str, params: list[tuple[str, Any, Any]], what: str) -> type[TaskSpec]:
    fields = _own_fields(params, what)
    cls_name = re.sub(r"\W", "_", name)
    spec: Any = msgspec.defstruct(
        cls_name, fields, bases=(TaskSpec,), kw_only=True, forbid_unknown_fields=True
    )
    try:
        msgspec.json.schema(spec, schema_hook=_schema_hook)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: a parameter type cannot come from a flow file: {exc}") from exc
    return typing.cast(type[TaskSpec], spec)


def _schema_hook(tp: Any) -> dict[str, Any]:
    # Only used to prove at registration that every parameter type has a file form.
    if tp is ChildTask:
        return {"$ref": "#/$defs/Task"}
    if tp in (Duration, DurationOrTemplate):
        return {"type": ["number", "string"]}
    raise NotImplementedError


def _own(spec: TaskSpec) -> dict[str, Any]:
    return {
        f.name: getattr(spec, f.name)
        for f in msgspec.structs.fields(spec)
        if f.name not in _COMMON_FIELDS
    }


def register_task_type(
    name: str,
    obj: Any,
    *,
    aliases: tuple[str, ...] = (),
    registry: Registry | None = None,
    replace: bool = False,
) -> TaskType:
    """Register a function ``fn(ctx, **params)`` (async or sync), a ``@task`` function, or a
    :class:`Runnable` dataclass subclass as the task type ``name``."""
    reg = registry or REGISTRY
    what = f"task type {name!r}"
    fn = obj.fn if isinstance(obj, TaskFunction) else obj
    if isinstance(fn, type) and issubclass(fn, Runnable) and dataclasses.is_dataclass(fn):
        cls = fn
        hints = typing.get_type_hints(cls)
        base = {f.name for f in dataclasses.fields(Task)}
        params = [
            (f.name, hints[f.name], f.default)
            for f in dataclasses.fields(cls)
            if f.name not in base and f.init
        ]
        spec = _spec_for(name, params, what)

        def build_cls(s: Any) -> Task:
            task: Task = cls(**common(s), **_own(s))
            return task

        return reg.add(TaskType(name, spec, build_cls, aliases, obj), replace=replace)
    if callable(fn) and not isinstance(fn, type):
        hints = typing.get_type_hints(fn)
        sig = list(inspect.signature(fn).parameters.values())
        if not sig:
            raise TypeError(f"{what}: the function must take the task context first")
        params = []
        for p in sig[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise TypeError(f"{what}: parameter {p.name!r} must be a plain keyword argument")
            params.append((p.name, hints.get(p.name, Any), p.default))
        spec = _spec_for(name, params, what)
        options = dict(obj.options) if isinstance(obj, TaskFunction) else {}

        def build_fn(s: Any) -> Task:
            kw = common(s)
            for key, value in options.items():
                if kw.get(key) in (None, False, ""):
                    kw[key] = value
            return Call(fn=fn, params=_own(s), **kw)

        return reg.add(TaskType(name, spec, build_fn, aliases, obj), replace=replace)
    raise TypeError(f"{what}: expected a function or a Runnable dataclass, got {obj!r}")


def task_type(
    name: str, *, aliases: tuple[str, ...] = (), registry: Registry | None = None
) -> Callable[[T], T]:
    """Decorator: make a function ``fn(ctx, **params)`` or a Runnable dataclass usable as
    ``type: <name>`` in flow files. Parameters become the task's keys, validated by type."""

    def decorate(obj: T) -> T:
        register_task_type(name, obj, aliases=aliases, registry=registry)
        return obj

    return decorate
