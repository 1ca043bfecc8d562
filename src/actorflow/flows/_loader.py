"""Flow files (YAML or JSON) to :class:`Flow`, with every problem reported at once.

The file is composed with PyYAML first, so each key and list item keeps its line; then every
mapping is checked against its ``Spec`` struct field by field (msgspec converts the leaves),
so one bad field never hides another. Unknown keys, duplicate keys, duplicate task ids, unknown
``depends_on`` ids, cycles and template syntax errors are all reported with file, line and
field path.
"""

from __future__ import annotations

import difflib
import functools
import gc
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import yaml

from actorflow._errors import FlowError, FlowValidationError, Problem
from actorflow.flows import _builtin  # noqa: F401  - registers the built-in types
from actorflow.flows._builtin import ForEachItemRun
from actorflow.flows._registry import (
    _INPUT_TYPES,
    ID_PATTERN,
    MAX_ID_LENGTH,
    REGISTRY,
    ChildTask,
    ConcurrencySpec,
    Duration,
    DurationOrTemplate,
    Id,
    InputId,
    InputSpec,
    Registry,
    RetrySpec,
    Spec,
    SpecError,
    tasks_of,
)
from actorflow.flows._triggers import TriggerSpec
from actorflow.runtime import (
    MAX_DURATION,
    Flow,
    Flowable,
    FlowOutput,
    Sla,
    Subflow,
    Task,
    check_template,
    has_template,
    to_text,
)

Path_ = tuple[str | int, ...]
_ID_RE = re.compile(ID_PATTERN)
_BAD: Any = object()
_AT = re.compile(r"\s+- at `\$(?P<sub>[^`]*)`$")
_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_SUB = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_ISO = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
_SHORT = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: Kestra's limit on namespaces: 150 characters.
Namespace = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$", max_length=150, description="dot-separated"
    ),
]


class OutputSpec(Spec, kw_only=True):
    """One of a flow's ``outputs:``: ``value`` rendered when the execution ends."""

    aliases: ClassVar[Mapping[str, str]] = {"displayName": "display_name"}

    id: InputId
    value: Any
    type: str = "STRING"
    description: str = ""
    display_name: str = ""
    required: bool = True

    def validate(self) -> None:
        """Called by the loader: the type must be one of the input types."""
        if _INPUT_TYPES.get(self.type.lower()) is None:
            choices = ", ".join(sorted(set(_INPUT_TYPES.values())))
            raise SpecError((("type",), f"unknown output type {self.type!r}; use one of {choices}"))


class SlaSpec(Spec, kw_only=True):
    """One of a flow's ``sla:`` rules."""

    id: Id
    type: Literal["MAX_DURATION", "EXECUTION_ASSERTION"]
    behavior: Literal["FAIL", "CANCEL", "NONE"] = "FAIL"
    duration: Duration | None = None
    assert_: str | None = msgspec.field(default=None, name="assert")
    labels: dict[str, str] = {}

    def validate(self) -> None:
        """Called by the loader: each type has its own required field."""
        if self.type == "MAX_DURATION" and self.duration is None:
            raise SpecError((("duration",), "a MAX_DURATION sla needs a duration"))
        if self.type == "EXECUTION_ASSERTION" and not self.assert_:
            raise SpecError((("assert",), "an EXECUTION_ASSERTION sla needs an assert"))


class DefaultsSpec(Spec, kw_only=True):
    """One of ``pluginDefaults:`` (or the older ``taskDefaults:``): ``values`` given to every
    task of ``type`` (a type name or a prefix of one) that does not set them (all of them
    with ``forced``)."""

    type: str
    values: dict[str, Any] = {}
    forced: bool = False


class FlowSpec(Spec, kw_only=True):
    """A flow file."""

    id: Id
    namespace: Namespace = "default"
    revision: Annotated[int, msgspec.Meta(ge=1)] = 1
    description: str = ""
    labels: dict[str, str] = {}
    inputs: list[InputSpec] = []
    variables: dict[str, Any] = {}
    tasks: list[ChildTask]
    errors: list[ChildTask] = []
    finally_: list[ChildTask] = msgspec.field(default_factory=list, name="finally")
    retry: RetrySpec | None = None
    concurrency: ConcurrencySpec | None = None
    triggers: list[TriggerSpec] = []
    outputs: list[OutputSpec] = []
    sla: list[SlaSpec] = []
    plugin_defaults: list[DefaultsSpec] = []
    task_defaults: list[DefaultsSpec] = []


def parse_duration(value: Any) -> float:
    """Seconds from a number, ISO-8601 (``PT1M30S``, ``P1D``) or ``5s``/``2m``/``1h30m``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration, got {_kind(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        iso = _ISO.match(text)
        if iso and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
            parts = {k: float(v) for k, v in iso.groupdict().items() if v is not None}
            seconds = sum(
                parts.get(k, 0.0) * f for k, f in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
            )
        elif text and _SHORT.sub("", text).strip() == "":
            seconds = sum(float(n) * _UNITS[u.lower()] for n, u in _SHORT.findall(text))
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(
                    f"invalid duration {value!r}; use seconds, ISO-8601 (PT1M30S) or 5s/2m/1h"
                ) from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"a duration must be a finite number of seconds, got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration must not be negative, got {value!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration must be at most 100 years, got {value!r}")
    return seconds


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number"}  # fmt: skip
    return kinds.get(type(value), f"a {type(value).__name__}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def fmt_path(path: Path_) -> str:
    """``("tasks", 0, "message")`` as ``tasks[0].message``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


@functools.cache
def _keys_of(
    cls: type[Spec],
) -> tuple[
    tuple[msgspec.structs.FieldInfo, ...],
    dict[str, msgspec.structs.FieldInfo],
    tuple[msgspec.structs.FieldInfo, ...],
]:
    """The fields of a spec struct and every key that names one (camelCase, aliases); cached,
    as msgspec resolves the annotations again on every call."""
    fields = msgspec.structs.fields(cls)
    accept: dict[str, msgspec.structs.FieldInfo] = {}
    for f in fields:
        accept[f.encode_name] = f
        accept.setdefault(_camel(f.encode_name), f)
    by_name = {f.name: f for f in fields}
    for alias, target in cls.aliases.items():
        accept[alias] = by_name[target]
    return fields, accept, tuple(f for f in fields if f.required)


def _shape(tp: Any) -> tuple[str, Any]:
    """How :meth:`_Checker.check` treats a field type (cached: it is asked for every value)."""
    try:
        return _shape_cached(tp)
    except TypeError:  # an unhashable annotation
        return _shape_of(tp)


@functools.cache
def _shape_cached(tp: Any) -> tuple[str, Any]:
    return _shape_of(tp)


def _shape_of(tp: Any) -> tuple[str, Any]:
    if tp is ChildTask:
        return "task", None
    if tp is Duration or tp is DurationOrTemplate:
        return "duration", None
    if isinstance(tp, type) and issubclass(tp, Spec):
        return "struct", None
    if _is_special(tp):
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1 and type(None) in args:
                return "optional", rest[0]
        elif origin is list:
            return "list", args[0]
        elif origin is dict:
            return "dict", args[1]
    return "plain", None


def _is_special(tp: Any) -> bool:
    try:
        return _is_special_cached(tp)
    except TypeError:  # an unhashable annotation
        return _is_special_uncached(tp)


@functools.cache
def _is_special_cached(tp: Any) -> bool:
    return _is_special_uncached(tp)


def _is_special_uncached(tp: Any) -> bool:
    if tp is ChildTask or tp is Duration or tp is DurationOrTemplate:
        return True
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return True
    return any(
        _is_special(a) for a in typing.get_args(tp) if typing.get_origin(tp) is not Annotated
    )


def _wants_text(tp: Any) -> bool:
    """Whether a field of type ``tp`` takes text and no boolean, number or date: there a YAML
    scalar such as ``off``, ``1`` or ``2024-01-01`` is the text it is written as."""
    try:
        return _wants_text_cached(tp)
    except TypeError:  # an unhashable annotation
        return False


@functools.cache
def _wants_text_cached(tp: Any) -> bool:
    if tp is str or tp is Id or tp is InputId:
        return True
    if typing.get_origin(tp) is Annotated:
        return typing.get_args(tp)[0] is str
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        plain = [typing.get_args(a)[0] if typing.get_origin(a) is Annotated else a for a in args]
        # ``str | list[str]`` (a Log message) takes text too; ``str | list[Any]`` does not.
        return str in plain and all(a is str or typing.get_args(a) == (str,) for a in plain)
    return False


class _Checker:
    """Walks a composed flow file against the spec structs, collecting every problem."""

    def __init__(self, registry: Registry, lines: _Lines, file: str | None) -> None:
        self.registry = registry
        self.lines = lines
        self.file = file
        self.problems: list[Problem] = []
        self.renamed: dict[Path_, Path_] = {}
        self.task_ids: dict[str, Path_] = {}

    # -- reporting -------------------------------------------------------------------
    def actual(self, path: Path_) -> Path_:
        out: Path_ = ()
        for comp in path:
            cand = (*out, comp)
            out = self.renamed.get(cand, cand)
        return out

    def line(self, path: Path_) -> int | None:
        return self.lines.nearest(self.actual(path))

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append(Problem(message, self.file, self.line(path), fmt_path(path) or None))

    # -- checking --------------------------------------------------------------------
    def check(self, value: Any, tp: Any, path: Path_) -> Any:
        if type(value) is not str and value is not None and _wants_text(tp):
            raw = self.lines.raw.get(self.actual(path))
            if raw is not None:
                value = raw
        if type(value) is str:
            if tp is str:  # most keys: no conversion to do
                return self.template(value, path)
            if tp is Id and len(value) <= MAX_ID_LENGTH and _ID_RE.match(value):
                return value
        kind, arg = _shape(tp)
        if kind == "task":
            return self.task(value, path)
        if kind == "duration":
            if tp is DurationOrTemplate and isinstance(value, str) and has_template(value):
                return self.template(value, path)
            try:
                return parse_duration(value)
            except ValueError as exc:
                self.problem(path, str(exc))
                return _BAD
        if kind == "struct":
            return self.struct(value, tp, path)
        if kind == "optional":
            return None if value is None else self.check(value, arg, path)
        if kind == "list":
            if not isinstance(value, list):
                self.problem(path, f"expected a list, got {_kind(value)}")
                return _BAD
            items = [self.check(v, arg, (*path, i)) for i, v in enumerate(value)]
            return _BAD if any(i is _BAD for i in items) else items
        if kind == "dict":
            if not isinstance(value, dict):
                self.problem(path, f"expected a mapping, got {_kind(value)}")
                return _BAD
            out = {str(k): self.check(v, arg, (*path, k)) for k, v in value.items()}
            return _BAD if any(v is _BAD for v in out.values()) else out
        try:
            value = msgspec.convert(value, tp, strict=True)
        except msgspec.ValidationError as exc:
            message = str(exc)
            sub: Path_ = ()
            m = _AT.search(message)
            if m:
                message = message[: m.start()]
                sub = tuple(
                    int(i) if i.isdigit() else k
                    for k, i in _SUB.findall(m.group("sub"))
                    if i != "..."
                )
            self.problem((*path, *sub), _polish(message, _MISSING if sub else value, tp))
            return _BAD
        return self.template(value, path)

    def template(self, value: Any, path: Path_) -> Any:
        """Check the syntax of every template inside ``value``."""
        if isinstance(value, str):
            if has_template(value):
                error = check_template(value)
                if error is not None:
                    self.problem(path, f"invalid template {_shown(value)}: {error}")
                    return _BAD
        elif isinstance(value, dict):
            bad = [self.template(v, (*path, k)) is _BAD for k, v in value.items()]
            return _BAD if any(bad) else value
        elif isinstance(value, list):
            bad = [self.template(v, (*path, i)) is _BAD for i, v in enumerate(value)]
            return _BAD if any(bad) else value
        return value

    def struct(self, value: Any, cls: type[Spec], path: Path_, what: str = "") -> Any:
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_kind(value)}")
            return _BAD
        fields, accept, required = _keys_of(cls)
        given: dict[str, str] = {}
        values: dict[str, Any] = {}
        bad = False
        for raw_key, v in value.items():
            key = str(raw_key)
            found = accept.get(key)
            if found is None:
                self.problem((*path, key), _unknown_key(key, what, [f.encode_name for f in fields]))
                bad = True
                continue
            f = found
            if f.name in given:
                self.problem(
                    (*path, key), f"{key!r} and {given[f.name]!r} are the same key; keep one"
                )
                bad = True
                continue
            given[f.name] = key
            if key != f.encode_name:
                self.renamed[(*self.actual(path), f.encode_name)] = (*self.actual(path), key)
            result = self.check(v, f.type, (*path, key))
            if result is _BAD:
                bad = True
            else:
                values[f.name] = result
        for f in required:
            if f.name not in given:
                self.problem(path, f"missing required key {f.encode_name!r}{what}")
                bad = True
        if bad:
            return _BAD
        spec = cls(**values)
        validate = getattr(spec, "validate", None)
        if validate is not None:
            try:
                validate()
            except SpecError as exc:
                for sub, message in exc.problems:
                    self.problem((*path, *sub), message)
                return _BAD
        return spec

    def self_calls(self, spec: FlowSpec) -> None:
        """A flow that calls itself as a subflow never ends: refused (as Kestra does)."""
        stack: list[Task] = [c.task for c in (*spec.tasks, *spec.errors, *spec.finally_)]
        while stack:
            task = stack.pop()
            if isinstance(task, Flowable):
                stack.extend(task.children())
            elif (
                isinstance(task, Subflow)
                and task.flow_id == spec.id
                and (task.namespace or spec.namespace) == spec.namespace
            ):
                where = self.task_ids.get(task.id, ("tasks",))
                self.problem(
                    (*where, "flow_id"),
                    f"recursive call to flow {spec.namespace}.{spec.id}: a flow cannot run "
                    "itself as a subflow",
                )

    def duplicate_inputs(self, spec: FlowSpec) -> None:
        """Two inputs with one id: refused (as Kestra does)."""
        seen: dict[str, int] = {}
        for i, inp in enumerate(spec.inputs):
            if inp.id in seen:
                first = self.line(("inputs", seen[inp.id]))
                self.problem(
                    ("inputs", i, "id"), f"duplicate input id {inp.id!r} (first at line {first})"
                )
            else:
                seen[inp.id] = i

    def task(self, value: Any, path: Path_) -> Any:
        if not isinstance(value, dict):
            self.problem(path, f"expected a task (a mapping with id and type), got {_kind(value)}")
            return _BAD
        task_id = value.get("id")
        if isinstance(task_id, str):
            first = self.task_ids.setdefault(task_id, path)
            if first != path:
                self.problem(
                    (*path, "id"),
                    f"duplicate task id {task_id!r} (first used at line {self.line(first)})",
                )
        type_name = value.get("type")
        if type_name is None:
            self.problem(path, "missing required key 'type'")
            return _BAD
        task_type = self.registry.get(str(type_name))
        if task_type is None:
            near = difflib.get_close_matches(str(type_name), self.registry.names(), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            self.problem((*path, "type"), f"unknown task type {type_name!r}{hint}")
            return _BAD
        spec = self.struct(value, task_type.spec, path, f" (type {task_type.name})")
        if spec is _BAD:
            return _BAD
        try:
            return ChildTask(task_type.build(spec))
        except SpecError as exc:
            for sub, message in exc.problems:
                self.problem((*path, *sub), message)
        except (FlowError, TypeError, ValueError) as exc:
            self.problem(path, str(exc))
        return _BAD


_MISSING: Any = object()
_EXPECTED = re.compile(r"^Expected `(?P<exp>[^`]+)`(?P<rest>.*?)(?:, got `(?P<got>[^`]+)`)?$")
_NAMES = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
    "array": "a list", "object": "a mapping", "null": "null",
}  # fmt: skip


def _literals(tp: Any) -> list[Any]:
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    return [v for a in typing.get_args(tp) for v in _literals(a)]


def _polish(message: str, value: Any, tp: Any) -> str:
    """msgspec's message in our words, with the offending value when it is a scalar."""
    scalar = value is not _MISSING and not isinstance(value, dict | list)
    if message.startswith("Invalid enum value"):
        choices = ", ".join(str(v) for v in _literals(tp))
        got = f" {_shown(value)}" if scalar else ""
        return f"invalid value{got}; expected one of: {choices}"
    m = _EXPECTED.match(message)
    if m is None:
        return message
    exp = " or ".join(_NAMES.get(x.strip(), x.strip()) for x in m.group("exp").split("|"))
    rest = m.group("rest").replace(" matching regex '", " matching ").rstrip("'")
    if scalar:
        got = f", got {_shown(value)}"
    elif m.group("got"):
        got = f", got {_NAMES.get(m.group('got'), m.group('got'))}"
    else:
        got = ""
    return f"expected {exp}{rest}{got}"


def _shown(value: Any) -> str:
    """``repr(value)``, cut when long (a 100,000-character id stays a one-line message)."""
    text = repr(value)
    if len(text) <= 80:
        return text
    size = f"{len(value):,} characters" if isinstance(value, str) else f"{len(text):,} chars"
    return f"{text[:60]}... ({size})"


def _unknown_key(key: str, what: str, allowed: list[str]) -> str:
    near = difflib.get_close_matches(key, allowed, n=1)
    if near:
        return f"unknown key {key!r}{what}; did you mean {near[0]!r}?"
    return f"unknown key {key!r}{what}; expected one of: {', '.join(sorted(allowed))}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadLimits:
    """What a flow file may cost to load; a file over a limit is refused with file and line.

    Attributes:
        max_bytes: size of the file (characters, for text given directly).
        max_depth: nesting of mappings and lists (after aliases are expanded).
        max_nodes: scalars, mappings and lists after aliases are expanded.
        max_alias_expansion: aliases may add at most this many times the nodes the file
            writes, beyond a free allowance of 100,000 (a "billion laughs" file expands to
            10**9 nodes from a few hundred bytes; CVE-2019-11253 in Kubernetes).
    """

    max_bytes: int = 16 << 20
    max_depth: int = 100
    max_nodes: int = 2_000_000
    max_alias_expansion: float = 10.0


DEFAULT_LIMITS = LoadLimits()
_ALIAS_ALLOWANCE = 100_000
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TooBig(Exception):
    """A limit of :class:`LoadLimits` was exceeded (the message says which, and where)."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class _Lines:
    """Lines of the composed file by field path, kept beside the data (no dict of every path:
    a 100,000-task file has a million of them)."""

    __slots__ = ("data", "info", "raw", "root")

    def __init__(self, data: Any, root: int | None) -> None:
        self.data = data
        self.root = root
        # path -> source text of a plain scalar YAML typed (bool, number, date, null)
        self.raw: dict[Path_, str] = {}
        # id(container) -> (container, {str(key): (line, value)} or [line of each item])
        self.info: dict[int, tuple[Any, Any]] = {}

    def nearest(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor in the file."""
        obj, line = self.data, self.root
        for comp in path:
            entry = self.info.get(id(obj))
            if entry is None:
                break
            container, where = entry
            if isinstance(where, dict):
                found = where.get(str(comp))
                if found is None:
                    break
                line, obj = found
            else:
                if not isinstance(comp, int) or not 0 <= comp < len(where):
                    break
                line, obj = where[comp], container[comp]
        return line


def _compose(text: str, file: str | None, limits: LoadLimits) -> tuple[Any, _Lines, list[Problem]]:
    """The data of a YAML/JSON text, its lines and duplicate keys, within ``limits``.

    The data is built straight from libyaml's events (no node graph: a 100,000-task file
    made 260 MB of nodes). An alias gives the anchored value again, shared, as PyYAML does;
    what it would expand to is counted, and an alias inside its own anchor is refused.
    """
    loader = _YAML_LOADER(text)
    try:
        return _Composer(loader, file, limits).run()
    finally:
        loader.dispose()


_NO_KEY: Any = object()
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TYPED_SCALARS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp", "null")
)
_VALUE_TAG = "tag:yaml.org,2002:value"


class _Frame:
    """A mapping or list being composed."""

    __slots__ = ("anchor", "depth", "is_map", "items", "key", "key_line", "key_node",
                 "line", "lines", "mark", "merges", "path", "size", "tag")  # fmt: skip

    def __init__(self, is_map: bool, tag: str, anchor: str | None, mark: Any, path: Path_) -> None:
        self.is_map = is_map
        self.tag = tag
        self.anchor = anchor
        self.mark = mark
        self.line = mark.line + 1
        self.path = path
        self.size = 1
        self.depth = 0
        self.items: Any = {} if is_map else []
        self.lines: Any = {} if is_map else []
        self.key: Any = _NO_KEY
        self.key_line = 0
        self.key_node: Any = None  # the key's event: a scalar key can be a duplicate
        self.merges: list[Any] = []


class _Composer:
    """Builds the data of one document from parser events, counting what aliases expand to."""

    def __init__(self, loader: Any, file: str | None, limits: LoadLimits) -> None:
        self.loader = loader
        self.file = file
        self.limits = limits
        self.constructors = loader.yaml_constructors
        self.lines = _Lines(None, None)
        self.dups: list[Problem] = []
        # anchor -> (value, expanded size, depth, line); open: anchors still being composed
        self.anchors: dict[str, tuple[Any, int, int, int]] = {}
        self.open: set[str] = set()
        self.uses: dict[str, int] = {}
        self.written = 0

    def run(self) -> tuple[Any, _Lines, list[Problem]]:
        loader = self.loader
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None, self.lines, self.dups
        first = loader.get_event()  # DocumentStart
        data = self.document()
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", first.start_mark,
                "but found another document", event.start_mark,
            )  # fmt: skip
        loader.get_event()
        return data, self.lines, self.dups

    def document(self) -> Any:
        loader, limits = self.loader, self.limits
        get, resolve = loader.get_event, loader.resolve
        scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
        seq_start, map_start = yaml.SequenceStartEvent, yaml.MappingStartEvent
        stack: list[_Frame] = []
        root: list[Any] = []
        max_depth = limits.max_depth
        while True:
            if loader.check_event(yaml.DocumentEndEvent) and not stack:
                break
            event = get()
            kind = type(event)
            if kind is scalar_event:
                self.written += 1
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(yaml.ScalarNode, event.value, event.implicit)
                value = self.scalar(tag, event)
                line = event.start_mark.line + 1
                if (
                    type(value) is not str
                    and not event.style
                    and stack
                    and not (stack[-1].is_map and stack[-1].key is _NO_KEY)
                    and tag in _TYPED_SCALARS
                ):
                    # Kestra reads ``id: off`` or ``id: 1`` as the text it is in a string
                    # field: keep the text for the checker.
                    self.lines.raw[self.child_path(stack)] = event.value
                if event.anchor is not None:
                    self.anchor(event, (value, 1, 0, line))
                self.add(stack, root, value, 1, 0, line, event if tag != _MERGE_TAG else _MERGE_TAG)
            elif kind is alias_event:
                name = event.anchor
                found = self.anchors.get(name)
                if found is None:
                    if name in self.open:
                        raise _TooBig(
                            f"alias *{name} is inside its own anchor &{name} (a recursive "
                            "alias never ends)",
                            event.start_mark.line + 1,
                        )
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {name!r}", event.start_mark
                    )
                self.uses[name] = self.uses.get(name, 1) + 1
                value, size, depth, line = found
                self.add(stack, root, value, size, depth, line, None)
            elif kind is seq_start or kind is map_start:
                self.written += 1
                is_map = kind is map_start
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolve(
                        yaml.MappingNode if is_map else yaml.SequenceNode, None, event.implicit
                    )
                if len(stack) >= max_depth:
                    raise _TooBig(
                        f"nested more than {max_depth} levels deep (load limit max_depth)",
                        event.start_mark.line + 1,
                    )
                if event.anchor is not None:
                    self.check_anchor(event)
                    self.open.add(event.anchor)
                stack.append(
                    _Frame(is_map, tag, event.anchor, event.start_mark, self.child_path(stack))
                )
            else:  # SequenceEnd / MappingEnd
                frame = stack.pop()
                value = self.finish(frame)
                if frame.anchor is not None:
                    self.open.discard(frame.anchor)
                    self.anchor_value(frame.anchor, (value, frame.size, frame.depth, frame.line))
                self.add(stack, root, value, frame.size, frame.depth, frame.line, None)
        data = root[0] if root else None
        self.check_expansion(root[1] if root else 0)
        self.lines.data = data
        return data

    @staticmethod
    def child_path(stack: list[_Frame]) -> Path_:
        if not stack:
            return ()
        top = stack[-1]
        if top.is_map:
            return top.path if top.key is _NO_KEY else (*top.path, str(top.key))
        return (*top.path, len(top.items))

    def check_anchor(self, event: Any) -> None:
        name = event.anchor
        if name in self.anchors or name in self.open:
            raise yaml.composer.ComposerError(
                f"found duplicate anchor {name!r}; first occurrence", None,
                "second occurrence", event.start_mark,
            )  # fmt: skip

    def anchor(self, event: Any, entry: tuple[Any, int, int, int]) -> None:
        self.check_anchor(event)
        self.anchors[event.anchor] = entry

    def anchor_value(self, name: str, entry: tuple[Any, int, int, int]) -> None:
        self.anchors[name] = entry

    def scalar(self, tag: str, event: Any) -> Any:
        if tag in (_STR_TAG, _VALUE_TAG):
            return event.value
        if tag == _MERGE_TAG:
            return "<<"
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        make = self.constructors.get(tag)
        if make is not None:
            return make(self.loader, node)
        return self.loader.construct_object(node)  # raises: no constructor for this tag

    def add(
        self, stack: list[_Frame], root: list[Any], value: Any, size: int, depth: int,
        line: int, key_event: Any,
    ) -> None:  # fmt: skip
        if not stack:
            root[:] = [value, size]
            self.lines.root = line
            return
        top = stack[-1]
        top.size += size
        if depth > top.depth:
            top.depth = depth
        if not top.is_map:
            top.items.append(value)
            top.lines.append(line)
            return
        if top.key is _NO_KEY:
            top.key, top.key_line, top.key_node = value, line, key_event
            return
        key, key_event = top.key, top.key_node
        top.key = _NO_KEY
        if key_event is _MERGE_TAG:
            top.merges.append((value, line))
            return
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", top.mark, "found unhashable key", None
            ) from None
        name = str(key)
        first = top.lines.get(name)
        if first is not None and key_event is not None:
            self.dups.append(
                Problem(
                    f"duplicate key {key_event.value!r} (first at line {first[0]})",
                    self.file,
                    top.key_line,
                    fmt_path((*top.path, name)),
                )
            )
        else:
            top.lines[name] = (top.key_line, value)
        top.items[key] = value

    def finish(self, frame: _Frame) -> Any:
        depth = frame.depth + 1
        frame.depth = depth
        if depth > self.limits.max_depth:
            raise _TooBig(
                f"nested more than {self.limits.max_depth} levels deep after aliases "
                "(load limit max_depth)",
                frame.line,
            )
        if frame.size > self.limits.max_nodes:
            raise _TooBig(
                f"this {'mapping' if frame.is_map else 'list'} holds more than "
                f"{self.limits.max_nodes:,} values once its aliases are expanded "
                "(load limit max_nodes)",
                frame.line,
            )
        value = frame.items
        if frame.merges:
            value, frame.lines = self.merge(frame)
        tag = frame.tag
        if tag in (_MAP_TAG, _SEQ_TAG):
            self.lines.info[id(value)] = (value, frame.lines)
            return value
        if frame.is_map and tag == "tag:yaml.org,2002:set":
            return set(value)
        if not frame.is_map and tag in ("tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs"):
            if not all(isinstance(d, dict) and len(d) == 1 for d in value):
                raise yaml.constructor.ConstructorError(
                    "while constructing an ordered map", frame.mark,
                    "expected a list of mappings with one item each", None,
                )  # fmt: skip
            return [next(iter(d.items())) for d in value]
        raise yaml.constructor.ConstructorError(
            None, None, f"could not determine a constructor for the tag {tag!r}", frame.mark
        )

    def merge(self, frame: _Frame) -> tuple[dict[Any, Any], dict[str, tuple[int, Any]]]:
        """``<<: *a`` or ``<<: [*a, *b]``: keys of the mappings, overridden by the frame's own
        (and by earlier mappings of the list), as PyYAML does."""
        sources: list[dict[Any, Any]] = []
        for value, _line in frame.merges:
            group = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in group):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", frame.mark,
                    "expected a mapping or list of mappings for merging", None,
                )  # fmt: skip
            sources.extend(group)
        merged: dict[Any, Any] = {}
        where: dict[str, tuple[int, Any]] = {}
        for source in reversed(sources):
            merged.update(source)
            entry = self.lines.info.get(id(source))
            if entry is not None:
                where.update(entry[1])
        merged.update(frame.items)
        where.update(frame.lines)
        return merged, where

    def check_expansion(self, expanded: int) -> None:
        limits, written = self.limits, self.written
        allowed = _ALIAS_ALLOWANCE + limits.max_alias_expansion * written
        if expanded - written <= allowed:
            return
        # The anchor whose uses expand the most (its size times its uses).
        worst = max(self.uses, key=lambda a: self.uses[a] * self.anchors[a][1], default=None)
        line = self.anchors[worst][3] if worst is not None else None
        raise _TooBig(
            f"aliases expand {written:,} written values to {expanded:,}, more than "
            f"{limits.max_alias_expansion:g} times as many (load limit max_alias_expansion); "
            "the anchor used the most is here",
            line,
        )


def load_flow_text(
    text: str,
    *,
    path: str | os.PathLike[str] | None = None,
    registry: Registry | None = None,
    limits: LoadLimits | None = None,
) -> Flow:
    """Parse and validate a flow file's text; raises FlowValidationError with every problem."""
    file = None if path is None else os.fspath(path)
    limits = limits or DEFAULT_LIMITS
    if len(text) > limits.max_bytes:
        raise FlowValidationError(
            [
                Problem(
                    f"the flow file has {len(text):,} characters, more than "
                    f"{limits.max_bytes:,} (load limit max_bytes)",
                    file,
                )
            ]
        )
    # Loading allocates millions of objects that all live on: the cyclic collector would
    # walk them again and again (it made a 100,000-task file five times slower).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_text(text, file, registry or REGISTRY, limits)
    except RecursionError:
        raise FlowValidationError(
            [Problem("the flow file is nested too deeply to read", file)]
        ) from None
    except MemoryError:
        raise FlowValidationError(
            [Problem("out of memory while reading the flow file", file)]
        ) from None
    finally:
        if collecting:
            gc.enable()


def _load_text(text: str, file: str | None, registry: Registry, limits: LoadLimits) -> Flow:
    try:
        data, lines, problems = _compose(text, file, limits)
    except _TooBig as exc:
        raise FlowValidationError([Problem(str(exc), file, exc.line)]) from None
    except yaml.MarkedYAMLError as exc:
        # The context (where the bad construct starts) is more useful than the end of stream.
        mark = exc.context_mark or exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        message = ", ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        if exc.context_mark is not None and exc.problem_mark is not None:
            message += f" (line {exc.problem_mark.line + 1})"
        raise FlowValidationError([Problem(f"invalid YAML: {message}", file, line)]) from None
    except yaml.YAMLError as exc:
        raise FlowValidationError([Problem(f"invalid YAML: {exc}", file)]) from None
    checker = _Checker(registry, lines, file)
    checker.problems.extend(problems)
    if not isinstance(data, dict):
        checker.problem((), f"a flow file must be a mapping with id and tasks, got {_kind(data)}")
        raise FlowValidationError(checker.problems)
    _kestra_forms(data, checker)
    spec = checker.struct(data, FlowSpec, ())
    raw_tasks = data.get("tasks")
    if isinstance(raw_tasks, list) and all(
        isinstance(t, dict) and t.get("disabled") is True for t in raw_tasks
    ):
        checker.problem(("tasks",), "a flow needs at least one (enabled) task")
    if isinstance(spec, FlowSpec):
        checker.self_calls(spec)
        checker.duplicate_inputs(spec)
    if checker.problems:
        raise FlowValidationError(sorted(checker.problems, key=lambda p: p.line or 0))
    assert isinstance(spec, FlowSpec)
    try:
        return Flow(
            id=spec.id,
            namespace=spec.namespace,
            revision=spec.revision,
            description=spec.description,
            labels=spec.labels,
            inputs=tuple(i.to_input() for i in spec.inputs),
            tasks=tasks_of(spec.tasks),
            errors=tasks_of(spec.errors),
            finally_=tasks_of(spec.finally_),
            retry=spec.retry.to_retry() if spec.retry is not None else None,
            concurrency=spec.concurrency.to_concurrency() if spec.concurrency else None,
            triggers=tuple(t.to_trigger() for t in spec.triggers),
            source=text,
            source_path=file,
            variables=spec.variables,
            outputs=tuple(
                FlowOutput(
                    id=o.id, value=o.value, type=_INPUT_TYPES[o.type.lower()], required=o.required
                )
                for o in spec.outputs
            ),
            sla=tuple(
                Sla(
                    id=r.id,
                    type=r.type,
                    behavior=r.behavior,
                    duration=r.duration,
                    assert_=r.assert_,
                    labels=r.labels,
                )
                for r in spec.sla
            ),
        )
    except FlowValidationError as exc:
        # The engine's own checks: point them at the task they name when we can.
        raise FlowValidationError(
            [
                Problem(
                    p.message,
                    file,
                    p.line
                    or checker.line(checker.task_ids.get(p.field or "") or _field_path(p.field)),
                    p.field,
                )
                for p in exc.problems
            ]
        ) from None


def _kestra_forms(data: dict[Any, Any], checker: _Checker) -> None:
    """Kestra's other spellings, made ours before the flow is checked: ``labels`` as a list
    of ``{key, value}`` (and non-text label values), and ``pluginDefaults``/``taskDefaults``
    applied to the tasks of their type."""
    labels = data.get("labels")
    if isinstance(labels, list) and all(
        isinstance(x, dict) and set(x) == {"key", "value"} for x in labels
    ):
        data["labels"] = labels = {str(x["key"]): x["value"] for x in labels}
    if isinstance(labels, dict) and any(
        not isinstance(k, str) or isinstance(v, bool | int | float) for k, v in labels.items()
    ):
        raw = checker.lines.raw
        data["labels"] = {
            to_text(k): (
                raw.get(("labels", str(k)), to_text(v)) if isinstance(v, bool | int | float) else v
            )
            for k, v in labels.items()
        }
    defaults: list[dict[str, Any]] = []
    for key in ("pluginDefaults", "plugin_defaults", "taskDefaults", "task_defaults"):
        given = data.get(key)
        if isinstance(given, list):
            defaults.extend(
                d for d in given if isinstance(d, dict) and isinstance(d.get("type"), str)
            )
    if not defaults:
        return
    stack: list[Any] = [data.get(k) for k in ("tasks", "errors", "finally", "triggers")]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and "id" in node:
                for d in defaults:
                    wanted = d["type"]
                    values = d.get("values")
                    if (kind == wanted or kind.startswith(wanted + ".")) and isinstance(
                        values, dict
                    ):
                        forced = d.get("forced") is True
                        for k, v in values.items():
                            if forced or k not in node:
                                node[k] = v
            stack.extend(v for v in node.values() if isinstance(v, list | dict))


def _field_path(field: str | None) -> Path_:
    """``triggers[0].cron`` -> ``("triggers", 0, "cron")``: the engine's field names as paths."""
    if not field:
        return ()
    return tuple(int(i) if i else k for k, i in _FIELD_PART.findall(field))


def load_flow(
    path: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
    limits: LoadLimits | None = None,
) -> Flow:
    """Load a flow file (YAML or JSON)."""
    limits = limits or DEFAULT_LIMITS
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limits.max_bytes:
                raise FlowValidationError(
                    [
                        Problem(
                            f"the flow file has {size:,} bytes, more than {limits.max_bytes:,} "
                            "(load limit max_bytes)",
                            os.fspath(path),
                        )
                    ]
                )
            # One byte more than allowed: a file that grows while read is still refused.
            text = f.read(limits.max_bytes + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FlowValidationError(
            [Problem(f"cannot read flow file: {reason}", os.fspath(path))]
        ) from None
    return load_flow_text(text, path=path, registry=registry, limits=limits)


def load_flows(
    directory: str | os.PathLike[str], *, registry: Registry | None = None
) -> tuple[list[Flow], list[FlowValidationError]]:
    """Every flow file (``*.yaml``, ``*.yml``, ``*.json``) of a directory, and the failures."""
    flows: list[Flow] = []
    failures: list[FlowValidationError] = []
    for p in sorted(Path(directory).iterdir()):
        if p.suffix.lower() in (".yaml", ".yml", ".json") and p.is_file():
            try:
                flows.append(load_flow(p, registry=registry))
            except FlowValidationError as exc:
                failures.append(exc)
    return flows, failures


_FLOW_SUFFIXES = (".yaml", ".yml", ".json")
_SNIFF_BYTES = 64 << 10
# A top-level (column 0) ``id:`` or ``namespace:`` line of a block-style YAML file.
_TOP_KEY = re.compile(
    r"""^(id|namespace)[ \t]*:[ \t]*(?:"([^"\n]*)"|'([^'\n]*)'|([^\s#]+))""", re.MULTILINE
)


def _sniff(path: Path) -> tuple[str | None, str | None]:
    """The top-level id and namespace a flow file seems to declare, from its first 64 KiB
    (None when not found there: a JSON or flow-style file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None, None
    found: dict[str, str] = {}
    for m in _TOP_KEY.finditer(head):
        found.setdefault(m.group(1), next(g for g in m.groups()[1:] if g is not None))
    return found.get("id"), found.get("namespace")


def _called(flow: Flow) -> set[tuple[str, str]]:
    """The (namespace, id) of every flow that ``flow`` runs as a subflow."""
    out: set[tuple[str, str]] = set()
    stack: list[Task] = list(flow.top_level())
    while stack:
        task = stack.pop()
        if isinstance(task, Flowable):
            stack.extend(task.children())
        elif isinstance(task, Subflow | ForEachItemRun):
            if has_template(task.flow_id) or has_template(task.namespace or ""):
                out.add(_ANY_FLOW)  # known only when it runs: any flow of the directories
            else:
                out.add((task.namespace or flow.namespace, task.flow_id))
    return out


#: What ``_called`` names for a subflow whose flow id or namespace is a template.
_ANY_FLOW = ("*", "*")


def load_subflows(
    flow: Flow,
    directories: Sequence[str | os.PathLike[str]],
    *,
    registry: Registry | None = None,
    limits: LoadLimits | None = None,
) -> tuple[list[Flow], list[FlowValidationError]]:
    """The flows that ``flow`` runs as subflows (and theirs, transitively), from the flow
    files of ``directories``; and the failures of files that were read for them.

    A file is parsed only when it may hold a flow still wanted: first the files whose
    top-level ``id:`` (and ``namespace:``) say so, then, for a flow still missing, the files
    that do not say what they hold. Other files, broken or not, are never read past their
    first 64 KiB.
    """
    files = [
        p
        for d in directories
        for p in sorted(Path(d).iterdir())
        if p.suffix.lower() in _FLOW_SUFFIXES and p.is_file()
    ]
    own = Path(flow.source_path).resolve() if flow.source_path else None
    files = [p for p in files if p.resolve() != own]
    sniffed = {p: _sniff(p) for p in files}
    loaded: dict[tuple[str, str], Flow] = {(flow.namespace, flow.id): flow}
    failures: list[FlowValidationError] = []
    tried: set[Path] = set()
    wanted = sorted(_called(flow) - loaded.keys())

    def parse(path: Path) -> None:
        tried.add(path)
        try:
            found = load_flow(path, registry=registry, limits=limits)
        except FlowValidationError as exc:
            failures.append(exc)
            return
        key = (found.namespace, found.id)
        if key not in loaded:
            loaded[key] = found
            wanted.extend(sorted(_called(found) - loaded.keys()))

    while wanted:
        namespace, flow_id = key = wanted.pop()
        if key in loaded:
            continue
        if key == _ANY_FLOW:
            loaded[key] = flow  # once: every file is read now
            for path in [p for p in sniffed if p not in tried]:
                parse(path)
            continue
        named = [
            p
            for p, (sid, sns) in sniffed.items()
            if p not in tried and sid == flow_id and sns in (None, namespace)
        ]
        # The file named after the flow first, as flows usually are.
        for path in sorted(named, key=lambda p: p.stem != flow_id):
            parse(path)
            if key in loaded:
                break
        else:
            for path in [p for p, (sid, _) in sniffed.items() if sid is None and p not in tried]:
                parse(path)
                if key in loaded:
                    break
    return [
        f for k, f in loaded.items() if k not in ((flow.namespace, flow.id), _ANY_FLOW)
    ], failures


__all__ = [
    "FlowSpec",
    "LoadLimits",
    "fmt_path",
    "load_flow",
    "load_flow_text",
    "load_flows",
    "load_subflows",
    "parse_duration",
]
