"""Expressions ``{{ ... }}`` rendered by Jinja2's sandbox, with bounded cost.

A string that is exactly one expression keeps its native type (``"{{ inputs.n }}"`` gives an
int); mixed text renders to a string. Strings without ``{{``/``{%`` are returned untouched and
cost nothing.

Rendering runs on the event loop, so what one template may cost is bounded
(:class:`TemplateLimits`): every loop iteration, call, operator and filter
counts against an operation budget; everything a render outputs (text, ``~``, filters,
``*``) counts against an output budget and is refused *before* it is built when it would be
too large; a render is stopped after ``max_seconds`` or when the task's ``timeout`` passes
(then it fails as a timeout). The sandbox itself (no access to internals) is Jinja's.
"""

from __future__ import annotations

import functools
import math
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import anyio
import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import LoopContext, markup_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import generate_lorem_ipsum
from markupsafe import EscapeFormatter, Markup

from actorflow._errors import TemplateError
from actorflow.runtime import _pebble
from actorflow.runtime._pebble import to_text, translate


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateLimits:
    """What one render (one field of a task, with everything inside it) may cost.

    Attributes:
        max_output: characters a render may produce, counting every piece of text it builds
            (output, ``~``, ``*``, padding filters...), so the final result is at most this.
        max_ops: operations (loop iterations, calls, operators; a filter on a collection
            counts its items, building a long string or list counts its length).
        max_seconds: wall-clock time of one render (rendering holds the event loop).
        max_int_bits: size of an integer an operator may produce (``10**(10**8)`` is refused).
    """

    max_output: int = 1 << 20
    max_ops: int = 2_000_000
    max_seconds: float = 1.0
    max_int_bits: int = 1 << 16

    def __post_init__(self) -> None:
        for name in ("max_output", "max_ops", "max_int_bits"):
            if getattr(self, name) < 1:
                raise ValueError(f"TemplateLimits.{name} must be >= 1")
        if not self.max_seconds > 0:
            raise ValueError("TemplateLimits.max_seconds must be > 0")


_limits = TemplateLimits()


def template_limits() -> TemplateLimits:
    """The limits every render applies."""
    return _limits


def set_template_limits(limits: TemplateLimits) -> TemplateLimits:
    """Set the limits of every render in this process; returns the previous ones."""
    global _limits
    previous, _limits = _limits, limits
    return previous


class _LimitExceeded(jinja2.TemplateError):
    """A render went over one of its limits (wrapped in TemplateError by :func:`render`)."""


_CHECK_EVERY = 512


class _Budget:
    """What the render in progress has spent so far."""

    __slots__ = ("deadline", "limits", "next_check", "ops", "out", "start", "task_deadline")

    def __init__(self, limits: TemplateLimits) -> None:
        self.limits = limits
        self.ops = 0
        self.out = 0
        self.next_check = _CHECK_EVERY
        self.start = time.monotonic()
        self.deadline = self.start + limits.max_seconds
        self.task_deadline: float | None = None

    def check(self) -> None:
        limits = self.limits
        if self.ops > limits.max_ops:
            raise _LimitExceeded(
                f"more than {limits.max_ops:,} operations (template limit max_ops)"
            )
        self.next_check = self.ops + _CHECK_EVERY
        now = time.monotonic()
        if self.task_deadline is None:
            self.task_deadline = now + _task_time_left()
        if now >= self.task_deadline:
            # A bare TimeoutError: the task run reports it as its own timeout.
            raise TimeoutError()
        if now >= self.deadline:
            raise _LimitExceeded(
                f"took longer than {limits.max_seconds:g}s (template limit max_seconds)"
            )


def _task_time_left() -> float:
    """Seconds until the innermost anyio deadline of the calling task (its ``timeout``)."""
    try:
        return anyio.current_effective_deadline() - anyio.current_time()
    except Exception:  # not inside an async task (a worker thread, a plain call)
        return float("inf")


_BUDGET: ContextVar[_Budget | None] = ContextVar("actorflow_template_budget", default=None)


def _tick(n: int = 1) -> None:
    b = _BUDGET.get()
    if b is not None:
        b.ops += n
        if b.ops >= b.next_check:
            b.check()


def _fits(size: int, what: str, shift: int = 12) -> None:
    """Refuse to build a string (or list) of ``size`` items when it exceeds max_output."""
    b = _BUDGET.get()
    limit = (b.limits if b is not None else _limits).max_output
    if size > limit:
        raise _LimitExceeded(
            f"{what} would be {size:,} long, more than {limit:,} (template limit max_output)"
        )
    # Building it costs time in proportion to its size (a list item more than a character).
    _tick(1 + (size >> shift))


def _produce(size: int) -> None:
    """Count ``size`` characters of output against the render's output budget."""
    b = _BUDGET.get()
    if b is not None:
        b.out += size
        if b.out > b.limits.max_output:
            raise _LimitExceeded(
                f"the output is longer than {b.limits.max_output:,} characters "
                "(template limit max_output)"
            )


def _int_bits(value: int, what: str) -> None:
    b = _BUDGET.get()
    limit = (b.limits if b is not None else _limits).max_int_bits
    if value > limit:
        raise _LimitExceeded(
            f"{what} would have about {value:,} bits, more than {limit:,} "
            "(template limit max_int_bits)"
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_SEQ = (str, bytes, list, tuple)


def _count(v: Any) -> int:
    try:
        return len(v)
    except TypeError:
        return 0


def _shift(seq: Any) -> int:
    return 12 if isinstance(seq, str | bytes) else 8


def _check_mul(left: Any, right: Any) -> None:
    if isinstance(left, _SEQ) and _is_int(right):
        _fits(len(left) * max(right, 0), "a repetition", _shift(left))
    elif isinstance(right, _SEQ) and _is_int(left):
        _fits(len(right) * max(left, 0), "a repetition", _shift(right))
    elif _is_int(left) and _is_int(right):
        _int_bits(left.bit_length() + right.bit_length(), "a product")


def _check_pow(base: Any, exp: Any) -> None:
    if _is_int(base) and _is_int(exp) and exp > 0 and abs(base) > 1:
        _int_bits(int(math.log2(abs(base)) * exp) + 1, "a power")


def _check_add(left: Any, right: Any) -> None:
    if isinstance(left, _SEQ) and isinstance(right, _SEQ):
        _fits(len(left) + len(right), "a concatenation", _shift(left))


# One conversion of printf-style formatting: its width and precision.
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


def _check_percent(fmt: str, args: Any) -> None:
    """``fmt % args``: refuse a result that could exceed max_output, before building it."""
    specs = _PERCENT.findall(fmt)
    widest = 0
    for width, precision in specs:
        if width == "*" or precision == "*":
            raise _LimitExceeded("'*' widths are not allowed (template limit)")
        widest = max(widest, int(width or 0), int(precision or 0))
    if isinstance(args, Mapping):
        values = list(args.values())
    else:
        values = list(args) if isinstance(args, tuple) else [args]
    longest = max((len(str(v)) for v in values), default=0)
    _fits(len(fmt) + len(specs) * (widest + longest), "a formatted string")


def _check_spec(spec: str) -> None:
    """A ``str.format`` field spec: its numbers (width, precision) stay within max_output."""
    for digits in _DIGITS.findall(spec):
        _fits(int(digits) if len(digits) < 12 else 10**12, "a formatted field")


class _Formatter(SandboxedFormatter):
    """``str.format`` in the sandbox, with field widths and the output counted."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_spec(format_spec)
        result = super().format_field(value, format_spec)
        _produce(len(result))
        return result


class _EscapeFormatter(_Formatter, EscapeFormatter):
    """:class:`_Formatter` for ``Markup`` strings (escapes what it inserts)."""


def _check_str_method(obj: Any, name: str, args: tuple[Any, ...]) -> None:
    """Methods of str/bytes/int whose result size is given by an argument."""
    if isinstance(obj, str | bytes):
        if name in ("center", "ljust", "rjust", "zfill") and args and _is_int(args[0]):
            _fits(args[0], f"{name}()")
        elif name == "expandtabs":
            size = args[0] if args and _is_int(args[0]) else 8
            tabs = obj.count("\t") if isinstance(obj, str) else obj.count(b"\t")
            _fits(len(obj) + tabs * size, name)
        elif name == "replace" and len(args) >= 2:
            _check_replace(obj, args[0], args[1], args[2] if len(args) > 2 else -1)
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((_count(v) for v in args[0].values()), default=1)
            _fits(len(obj) * max(longest, 1), "translate()")
        else:
            _tick(1 + (len(obj) >> 6))
    elif _is_int(obj) and name == "to_bytes":
        length = args[0] if args else 1
        if _is_int(length):
            _fits(length, "to_bytes()")


def _check_replace(s: Any, old: Any, new: Any, count: Any) -> None:
    if not isinstance(s, str | bytes) or type(old) is not type(s) or type(new) is not type(s):
        return
    hits = len(s) + 1 if not old else s.count(old)  # type: ignore[arg-type]
    if _is_int(count) and count >= 0:
        hits = min(hits, count)
    _fits(len(s) + hits * max(len(new) - len(old), 0), "replace()")


def _check_join(sep: Any, items: list[Any]) -> None:
    size = sum(_count(x) if isinstance(x, str | bytes) else len(str(x)) for x in items)
    _fits(size + max(len(items) - 1, 0) * _count(sep), "a join")


class _CountedIter:
    """Iterates ``iterable``, counting each item as an operation (loops, recursive loops)."""

    __slots__ = ("_budget", "_it")

    def __init__(self, iterable: Iterable[Any], budget: _Budget) -> None:
        self._it = iter(iterable)
        self._budget = budget

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item = next(self._it)
        b = self._budget
        b.ops += 1
        if b.ops >= b.next_check:
            b.check()
        return item


def _counted(iterable: Any) -> Any:
    b = _BUDGET.get()
    if b is None or isinstance(iterable, jinja2.Undefined):
        return iterable  # an undefined loop target raises its own error when iterated
    return _CountedIter(iterable, b)


def _concat(items: tuple[Any, ...]) -> str:
    """``a ~ b ~ ...``, refused before it is built when too long."""
    if any(hasattr(x, "__html__") for x in items):
        result: str = markup_join(items)
        _fits(len(result), "a concatenation")
        return result
    parts = [x if type(x) is str else str(x) for x in items]
    _fits(sum(map(len, parts)), "a concatenation")
    return "".join(parts)


def _const(text: str) -> str:
    _produce(len(text))
    return text


def _finalize(value: Any) -> Any:
    # Every ``{{ }}`` printed in text goes through here: count it as output. Printed as
    # Pebble prints (true/false, null as nothing, JSON for collections).
    text = value if type(value) is str else to_text(value)
    _produce(len(text))
    return text


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with loops, constants and ``~`` going through the budget."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("af_counted"), [node.iter], [], None, None
        ).set_lineno(node.lineno)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.af_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.af_const({super()._output_const_repr(group)})"


def _filter_guard(fn: Callable[..., Any], guard: Callable[..., Any] | None) -> Callable[..., Any]:
    """``fn`` with its input counted as operations and ``guard(value, *args, **kwargs)``
    run first (it may return a materialized value to filter instead)."""
    skip = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > skip:
            value = args[skip]
            n = _count(value)
            _tick(1 + (n >> 6 if isinstance(value, str | bytes) else n))
            if guard is not None:
                value = guard(value, *args[skip + 1 :], **kwargs)
                args = (*args[:skip], value, *args[skip + 1 :])
        return fn(*args, **kwargs)

    return functools.update_wrapper(guarded, fn)


def _g_center(value: Any, width: Any = 80, *_: Any, **kw: Any) -> Any:
    width = kw.get("width", width)
    if _is_int(width):
        _fits(max(width, len(str(value))), "center")
    return value


def _g_indent(s: Any, width: Any = 4, *_: Any, **kw: Any) -> Any:
    width = kw.get("width", width)
    text = str(s)
    prefix = width if _is_int(width) else _count(width)
    _fits(len(text) + (text.count("\n") + 1) * max(prefix, 0), "indent")
    return s


def _g_wordwrap(s: Any, width: Any = 79, *args: Any, **kw: Any) -> Any:
    width = kw.get("width", width)
    wrap = kw.get("wrapstring", args[1] if len(args) > 1 else None)
    text = str(s)
    lines = len(text) // max(width, 1) + text.count("\n") + 1 if _is_int(width) else 1
    _fits(len(text) + lines * max(_count(wrap) if wrap is not None else 1, 1), "wordwrap")
    return s


def _g_replace(s: Any, old: Any = "", new: Any = "", count: Any = None, **kw: Any) -> Any:
    count = kw.get("count", count)
    _check_replace(str(s), str(old), str(new), -1 if count is None else count)
    return s


def _g_join(value: Any, d: Any = "", attribute: Any = None, **kw: Any) -> Any:
    items = list(value) if not isinstance(value, str) else value
    if kw.get("attribute", attribute) is None:
        _check_join(kw.get("d", d), list(items))
    return items


def _g_format(value: Any, *args: Any, **kwargs: Any) -> Any:
    _check_percent(str(value), kwargs or args)
    return value


def _g_tojson(value: Any, indent: Any = None, **kw: Any) -> Any:
    indent = kw.get("indent", indent)
    if _is_int(indent) and indent > 100:
        raise _LimitExceeded(f"tojson indent {indent} is more than 100 (template limit)")
    return value


def _g_fill(value: Any, count: Any = 1, fill_with: Any = None, **kw: Any) -> Any:
    count = kw.get("linecount", kw.get("slices", count))
    if _is_int(count):
        _fits(count, "a batch or slice count")
    return value


def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's ``sum``, linear when it adds lists or tuples (``+`` copies each time)."""
    items = list(iterable)
    if attribute is not None:
        from jinja2.filters import make_attrgetter

        items = list(map(make_attrgetter(environment, attribute), items))
    if isinstance(start, list | tuple) and all(type(x) is type(start) for x in items):
        _fits(len(start) + sum(len(x) for x in items), "a sum")
        out = list(start)
        for x in items:
            out.extend(x)
        return out if isinstance(start, list) else tuple(out)
    return sum(items, start)


_sum.jinja_pass_arg = jinja2.utils._PassArg.environment  # type: ignore[attr-defined]

_GUARDS: Mapping[str, Callable[..., Any] | None] = {
    "center": _g_center,
    "indent": _g_indent,
    "wordwrap": _g_wordwrap,
    "replace": _g_replace,
    "join": _g_join,
    "format": _g_format,
    "tojson": _g_tojson,
    "batch": _g_fill,
    "slice": _g_fill,
}


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    words = n * max if _is_int(n) and _is_int(max) else 0
    _fits(words * 8, "lipsum()")
    return generate_lorem_ipsum(n, html, min, max)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox with every costly construct counted or bounded (see the module doc)."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//", "/", "-"})
    code_generator_class = _CodeGenerator

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, finalize=_finalize)
        self.af_counted = _counted
        self.af_concat = _concat
        self.af_const = _const
        self.globals["lipsum"] = _lipsum
        for name, fn in list(self.filters.items()):
            self.filters[name] = _filter_guard(fn, _GUARDS.get(name))
        self.filters["sum"] = _filter_guard(_sum, None)
        # Kestra's (Pebble's) filters, tests and functions; every filter's input is counted.
        for name, fn in _pebble.FILTERS.items():
            self.filters[name] = _filter_guard(_sized(fn), None)
        self.filters["default"] = _filter_guard(_default, None)
        self.tests.update(_pebble.TESTS)
        for name, fn in _pebble.FUNCTIONS.items():
            self.globals[name] = _sized(fn)
        self.globals["null"] = None
        self.globals["af_soft"] = lambda value: _pebble.Soft(value, self)
        self.globals["af_has"] = _pebble.af_has
        self.globals["af_val"] = _pebble.af_val

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Pebble reads a mapping's keys before any attribute: ``values.who`` is the key
        # ``values``, never the dict method.
        if isinstance(obj, Mapping) and isinstance(attribute, str):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "*":
            _check_mul(left, right)
        elif operator == "**":
            _check_pow(left, right)
        elif operator == "+":
            _check_add(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right if isinstance(right, tuple | Mapping) else (right,))
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja's wrapper, with a formatter that bounds field widths and counts output.
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        f_self = value.__self__
        if not isinstance(f_self, str):
            return None
        is_map = value.__name__ == "format_map"
        formatter: _Formatter
        if isinstance(f_self, Markup):
            formatter = _EscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = _Formatter(self)
        vformat = formatter.vformat

        def formatted(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return type(f_self)(vformat(f_self, (), args[0]))
            return type(f_self)(vformat(f_self, args, kwargs))

        return functools.update_wrapper(formatted, value)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        if isinstance(__obj, LoopContext) and args:
            args = (_counted(args[0]), *args[1:])  # a recursive loop's next level
        else:
            owner = getattr(__obj, "__self__", None)
            if owner is not None:
                _check_str_method(owner, getattr(__obj, "__name__", ""), args)
        return super().call(__context, __obj, *args, **kwargs)


def _sized(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a text or list result counted against max_output before it is kept."""

    def sized(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except (ValueError, TypeError, LookupError, OverflowError) as exc:
            raise jinja2.TemplateRuntimeError(f"{fn.__name__}: {exc}") from None
        if isinstance(result, str | list):
            _fits(len(result), f"the result of {fn.__name__}")
        return result

    return functools.update_wrapper(sized, fn)


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Pebble's ``default``: also for null and empty text."""
    if isinstance(value, jinja2.Undefined) or value is None or value == "":
        return default_value
    if boolean and not value:
        return default_value
    return value


_ENV = _Environment()
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)
# Text with plain ``{{ a.b[0] | f }}`` expressions only: valid syntax without parsing it.
_SIMPLE = re.compile(
    r"(?:[^{]|\{(?![{%#]))*"
    r"(?:\{\{\s*(?!not\b)[A-Za-z_]\w*(?:\.\w+|\[\d+\])*(?:\s*\|\s*[A-Za-z_]\w*)*\s*\}\}"
    r"(?:[^{]|\{(?![{%#]))*)*",
)
_TOO_DEEP = "the template is nested too deeply or is too long an expression to compile"


@lru_cache(maxsize=4096)
def _compile(text: str) -> tuple[bool, Any]:
    text = translate(text)
    try:
        m = _SINGLE.match(text)
        if m:
            return True, _ENV.compile_expression(m.group("expr"), undefined_to_none=False)
        return False, _ENV.from_string(text)
    except (RecursionError, MemoryError) as exc:
        raise _LimitExceeded(_TOO_DEEP) from exc
    except SyntaxError as exc:  # Python's own limits on the generated code (nesting)
        if isinstance(exc, jinja2.TemplateSyntaxError):
            raise
        raise _LimitExceeded(_TOO_DEEP) from exc


def check_template(text: str) -> str | None:
    """The syntax problem of a template string, or None (the loader calls it on every field)."""
    if _SIMPLE.fullmatch(text):
        return None
    try:
        _ENV.parse(translate(text))
    except jinja2.TemplateSyntaxError as exc:
        return exc.message or str(exc)
    except (RecursionError, MemoryError):
        return _TOO_DEEP
    return None


def has_template(value: Any) -> bool:
    """Whether ``value`` (or anything inside it) contains an expression."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_template(v) for v in value)
    return False


def _short(text: str, limit: int = 120) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text):,} chars)"


def render(value: Any, variables: Mapping[str, Any], *, where: str = "") -> Any:
    """Render every template string inside ``value`` (dicts and lists recursively).

    The whole value shares one budget (:class:`TemplateLimits`); a render over a limit
    raises TemplateError naming ``where``, one past the task's timeout a TimeoutError.
    """
    if _BUDGET.get() is not None:
        return _render(value, variables, where)
    token = _BUDGET.set(_Budget(_limits))
    try:
        return _render(value, variables, where)
    finally:
        _BUDGET.reset(token)


def _render(value: Any, variables: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            single, tmpl = _compile(value)
            if single:
                result = tmpl(**variables)
                if isinstance(result, jinja2.Undefined):
                    str(result)  # raises UndefinedError with the missing name
                elif isinstance(result, str):
                    _produce(len(result))
                return result
            return tmpl.render(**variables)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{where}: cannot render {_short(value)}: {exc}") from exc
        except RecursionError as exc:
            raise TemplateError(f"{where}: cannot render {_short(value)}: {_TOO_DEEP}") from exc
        except MemoryError as exc:
            raise TemplateError(f"{where}: cannot render {_short(value)}: out of memory") from exc
    if isinstance(value, Mapping):
        return {k: _render(v, variables, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_render(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


class LazyVariables(Mapping[str, Any]):
    """Flow ``variables:`` as ``{{ vars.x }}`` reads them: each rendered when read, with the
    variables of the render that reads it (so ``vars.b`` may use ``vars.a`` or ``inputs``)."""

    __slots__ = ("_context", "_raw")

    def __init__(self, raw: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        self._raw = raw
        self._context = context

    def bound(self, context: Mapping[str, Any]) -> LazyVariables:
        """The same variables rendered with ``context`` (the whole set a render sees)."""
        return LazyVariables(self._raw, context)

    def __getitem__(self, key: str) -> Any:
        return _render(self._raw[key], self._context, f"vars.{key}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


@jinja2.pass_context
def _render_again(context: Any, value: Any) -> Any:
    """``render(text)``: render a value that is itself a template (Kestra's ``render``)."""
    return _render(value, context.get_all(), "render()")


_ENV.globals["render"] = _render_again


_FALSE_TEXTS = frozenset({"false", "0", "-0", ""})


def truthy(value: Any) -> bool:
    """Kestra's truthiness (``TruthUtils``): exactly ``false``, ``0``, ``-0`` and ``""`` are
    false, and null; every other text is true (``False``, ``" "``, ``none`` included).

    A value a template gave natively counts as the text Pebble would print for it: false and
    zero are false, an empty list (``[]``) is true.
    """
    if isinstance(value, str):
        return value not in _FALSE_TEXTS
    if value is None or value is False:
        return False
    if isinstance(value, int | float):
        return value != 0
    return True
