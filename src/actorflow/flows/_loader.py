"""Flow files (YAML or JSON) to :class:`Flow`, with every problem reported at once.

The file is composed with PyYAML first, so each key and list item keeps its line; then every
mapping is checked against its ``Spec`` struct field by field (msgspec converts the leaves),
so one bad field never hides another. Unknown keys, duplicate keys, duplicate task ids, unknown
``depends_on`` ids, cycles and template syntax errors are all reported with file, line and
field path.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import jinja2
import msgspec
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from actorflow._errors import FlowError, FlowValidationError, Problem
from actorflow.flows import _builtin  # noqa: F401  - registers the built-in types
from actorflow.flows._registry import (
    REGISTRY,
    ChildTask,
    ConcurrencySpec,
    Duration,
    DurationOrTemplate,
    Id,
    InputSpec,
    Registry,
    RetrySpec,
    Spec,
    SpecError,
    tasks_of,
)
from actorflow.runtime import MAX_DURATION, Flow, has_template

Path_ = tuple[str | int, ...]
_BAD: Any = object()
_SYNTAX = ImmutableSandboxedEnvironment()
_AT = re.compile(r"\s+- at `\$(?P<sub>[^`]*)`$")
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


class FlowSpec(Spec, kw_only=True):
    """A flow file."""

    id: Id
    namespace: Namespace = "default"
    revision: Annotated[int, msgspec.Meta(ge=1)] = 1
    description: str = ""
    labels: dict[str, str] = {}
    inputs: list[InputSpec] = []
    tasks: list[ChildTask]
    errors: list[ChildTask] = []
    finally_: list[ChildTask] = msgspec.field(default_factory=list, name="finally")
    retry: RetrySpec | None = None
    concurrency: ConcurrencySpec | None = None


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


def _is_special(tp: Any) -> bool:
    if tp is ChildTask or tp is Duration or tp is DurationOrTemplate:
        return True
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return True
    return any(
        _is_special(a) for a in typing.get_args(tp) if typing.get_origin(tp) is not Annotated
    )


class _Checker:
    """Walks a composed flow file against the spec structs, collecting every problem."""

    def __init__(self, registry: Registry, lines: dict[Path_, int], file: str | None) -> None:
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
        path = self.actual(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append(Problem(message, self.file, self.line(path), fmt_path(path) or None))

    # -- checking --------------------------------------------------------------------
    def check(self, value: Any, tp: Any, path: Path_) -> Any:
        if tp is ChildTask:
            return self.task(value, path)
        if tp is Duration or tp is DurationOrTemplate:
            if tp is DurationOrTemplate and isinstance(value, str) and has_template(value):
                return self.template(value, path)
            try:
                return parse_duration(value)
            except ValueError as exc:
                self.problem(path, str(exc))
                return _BAD
        if isinstance(tp, type) and issubclass(tp, Spec):
            return self.struct(value, tp, path)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if _is_special(tp):
            if origin in (typing.Union, types.UnionType):
                if value is None and type(None) in args:
                    return None
                rest = [a for a in args if a is not type(None)]
                if len(rest) == 1:
                    return self.check(value, rest[0], path)
            elif origin is list:
                if not isinstance(value, list):
                    self.problem(path, f"expected a list, got {_kind(value)}")
                    return _BAD
                items = [self.check(v, args[0], (*path, i)) for i, v in enumerate(value)]
                return _BAD if any(i is _BAD for i in items) else items
            elif origin is dict:
                if not isinstance(value, dict):
                    self.problem(path, f"expected a mapping, got {_kind(value)}")
                    return _BAD
                out = {str(k): self.check(v, args[1], (*path, k)) for k, v in value.items()}
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
                try:
                    _SYNTAX.parse(value)
                except jinja2.TemplateSyntaxError as exc:
                    self.problem(path, f"invalid template {value!r}: {exc.message}")
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
        fields = msgspec.structs.fields(cls)
        accept: dict[str, msgspec.structs.FieldInfo] = {}
        for f in fields:
            accept[f.encode_name] = f
            accept.setdefault(_camel(f.encode_name), f)
        by_name = {f.name: f for f in fields}
        for alias, target in cls.aliases.items():
            accept[alias] = by_name[target]
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
        for f in fields:
            if f.required and f.name not in given:
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


def _compose(text: str, file: str | None) -> tuple[Any, dict[Path_, int], list[Problem]]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    dups: list[Problem] = []
    if node is not None:
        lines[()] = node.start_mark.line + 1
        stack: list[tuple[yaml.Node, Path_]] = [(node, ())]
        while stack:
            n, path = stack.pop()
            if isinstance(n, yaml.MappingNode):
                for k, v in n.value:
                    key = (*path, str(k.value))
                    if key in lines and isinstance(k, yaml.ScalarNode):
                        dups.append(
                            Problem(
                                f"duplicate key {k.value!r} (first at line {lines[key]})",
                                file,
                                k.start_mark.line + 1,
                                fmt_path(key),
                            )
                        )
                        continue
                    lines[key] = k.start_mark.line + 1
                    stack.append((v, key))
            elif isinstance(n, yaml.SequenceNode):
                for i, v in enumerate(n.value):
                    lines[(*path, i)] = v.start_mark.line + 1
                    stack.append((v, (*path, i)))
    return data, lines, dups


def load_flow_text(
    text: str, *, path: str | os.PathLike[str] | None = None, registry: Registry | None = None
) -> Flow:
    """Parse and validate a flow file's text; raises FlowValidationError with every problem."""
    file = None if path is None else os.fspath(path)
    try:
        data, lines, problems = _compose(text, file)
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
    checker = _Checker(registry or REGISTRY, lines, file)
    checker.problems.extend(problems)
    if not isinstance(data, dict):
        checker.problem((), f"a flow file must be a mapping with id and tasks, got {_kind(data)}")
        raise FlowValidationError(checker.problems)
    spec = checker.struct(data, FlowSpec, ())
    raw_tasks = data.get("tasks")
    if isinstance(raw_tasks, list) and all(
        isinstance(t, dict) and t.get("disabled") is True for t in raw_tasks
    ):
        checker.problem(("tasks",), "a flow needs at least one (enabled) task")
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
            source=text,
            source_path=file,
        )
    except FlowValidationError as exc:
        # The engine's own checks: point them at the task they name when we can.
        raise FlowValidationError(
            [
                Problem(
                    p.message,
                    file,
                    p.line or checker.line(checker.task_ids.get(p.field or "", (p.field or "",))),
                    p.field,
                )
                for p in exc.problems
            ]
        ) from None


def load_flow(path: str | os.PathLike[str], *, registry: Registry | None = None) -> Flow:
    """Load a flow file (YAML or JSON)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise FlowValidationError(
            [Problem(f"cannot read flow file: {reason}", os.fspath(path))]
        ) from None
    return load_flow_text(text, path=path, registry=registry)


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


__all__ = ["FlowSpec", "fmt_path", "load_flow", "load_flow_text", "load_flows", "parse_duration"]
