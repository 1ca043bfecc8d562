"""Pebble as Kestra writes it, read by the Jinja2 sandbox of :mod:`._template`.

Pebble and Jinja share most of their syntax (``{{ }}``, ``{% %}``, filters, tests, ``~``,
``and``/``or``/``not``). What Pebble has and Jinja lacks is translated here, token by token,
before Jinja compiles the template: the translation only rewrites expressions into other Jinja
expressions, so every guarantee of the sandbox (no internals, counted operations, bounded
output and time) still holds.

* ``a ?? b`` (null-coalescing: ``b`` when ``a`` is undefined or null, at any depth of ``a``)
  becomes ``(af_val(S) if af_has(S) else (b))`` where ``S`` reads ``a`` without failing on a
  missing key (:class:`Soft`); ``b`` is evaluated only when needed.
* ``c ? a : b`` becomes ``((a) if (c) else (b))`` (lazy, right-associative).
* ``equals`` becomes ``==``; ``x contains y`` becomes ``x is af_contains y``.

The filters, tests and functions of Kestra's core documentation are defined below, with
values printed as Pebble prints them (:func:`to_text`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import jinja2

# -- translation --------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<num>\d+(?:\.\d+)?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>\?\?|==|!=|<=|>=|//|\*\*|[-+*/%~<>=!?:.,|()\[\]{}])
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_OPEN = {"(": ")", "[": "]", "{": "}"}
_PEBBLE_ONLY = re.compile(r"\?|\bequals\b|\bcontains\b")


class _Group:
    """A bracketed group of tokens: ``(...)``, ``[...]`` or ``{...}``."""

    __slots__ = ("close", "items", "open")

    def __init__(self, open_: str, items: list[Any], close: str) -> None:
        self.open = open_
        self.items = items
        self.close = close


def _tokens(text: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "other", m.group()) for m in _TOKEN.finditer(text)]


def _tree(tokens: list[tuple[str, str]]) -> list[Any]:
    """Nest the tokens by brackets (an unbalanced bracket is left for Jinja to report)."""
    stack: list[tuple[str, list[Any]]] = [("", [])]
    for kind, text in tokens:
        if kind == "op" and text in _OPEN:
            stack.append((text, []))
        elif kind == "op" and text in (")", "]", "}") and len(stack) > 1:
            open_, items = stack.pop()
            if _OPEN[open_] != text:
                raise _Unbalanced()
            stack[-1][1].append(_Group(open_, items, text))
        else:
            stack[-1][1].append((kind, text))
    if len(stack) > 1:
        raise _Unbalanced()
    return stack[0][1]


class _Unbalanced(Exception):
    pass


def _emit(items: Sequence[Any]) -> str:
    out: list[str] = []
    for it in items:
        if isinstance(it, _Group):
            out.append(it.open + _emit(it.items) + it.close)
        else:
            out.append(it[1])
    return "".join(out)


def _is(item: Any, text: str) -> bool:
    return not isinstance(item, _Group) and item[0] == "op" and item[1] == text


def _split(items: list[Any], sep: str) -> list[list[Any]]:
    parts: list[list[Any]] = [[]]
    for it in items:
        if _is(it, sep):
            parts.append([])
        else:
            parts[-1].append(it)
    return parts


def _rewrite(items: list[Any]) -> str:
    """One expression (no top-level comma) in Jinja syntax."""
    items = [_rewrite_group(it) if isinstance(it, _Group) else _word(it) for it in items]
    q = next((i for i, it in enumerate(items) if _is(it, "?")), None)
    if q is not None:
        depth, colon = 0, None
        for j in range(q + 1, len(items)):
            if _is(items[j], "?"):
                depth += 1
            elif _is(items[j], ":"):
                if depth == 0:
                    colon = j
                    break
                depth -= 1
        if colon is not None:
            cond = _coalesce(items[:q])
            then = _rewrite(items[q + 1 : colon])
            other = _rewrite(items[colon + 1 :])
            return f"(({then}) if ({cond}) else ({other}))"
    return _coalesce(items)


def _word(item: tuple[str, str]) -> tuple[str, str]:
    kind, text = item
    if kind == "name" and text == "equals":
        return ("op", "==")
    if kind == "name" and text == "contains":
        return ("raw", "is af_contains")
    return item


def _rewrite_group(group: _Group) -> _Group:
    if not any(
        isinstance(it, _Group)
        or (it[0] == "op" and it[1] in ("?", "??"))
        or it[1] in ("equals", "contains")
        for it in group.items
    ):
        return group
    parts = _split(group.items, ",")
    if group.open == "{":
        # Map literals: the first ':' of an entry is the key separator.
        out = []
        for part in parts:
            colon = next((i for i, it in enumerate(part) if _is(it, ":")), None)
            if colon is None:
                out.append(_rewrite(part))
            else:
                out.append(_rewrite(part[:colon]) + ":" + _rewrite(part[colon + 1 :]))
        return _Group("{", [("raw", ",".join(out))], "}")
    return _Group(group.open, [("raw", ",".join(_rewrite(p) for p in parts))], group.close)


def _coalesce(items: list[Any]) -> str:
    """``a ?? b ?? c`` at this level (``??`` binds its nearest operands, as in Pebble)."""
    if not any(_is(it, "??") for it in items):
        return _emit(items)
    # Split into the operands around each '??': each operand is the postfix chain next to it.
    out: list[Any] = []
    i = 0
    while i < len(items):
        if not _is(items[i], "??"):
            out.append(items[i])
            i += 1
            continue
        # Left operand: the chain just before (whitespace skipped).
        while out and not isinstance(out[-1], _Group) and out[-1][0] == "ws":
            out.pop()
        start = _chain_start(out)
        left = out[start:]
        del out[start:]
        i += 1
        while i < len(items) and not isinstance(items[i], _Group) and items[i][0] == "ws":
            i += 1
        end = _chain_end(items, i)
        right = items[i:end]
        i = end
        soft = _soft(left)
        out.append(("raw", f"(af_val({soft}) if af_has({soft}) else ({_emit(right)}))"))
    return _emit(out)


def _chain_start(items: list[Any]) -> int:
    """Index where the postfix chain (``a.b['c'](d)``) ending ``items`` starts."""
    i = len(items)
    while i > 0:
        it = items[i - 1]
        if isinstance(it, _Group) and it.open in "([":
            i -= 1
            continue
        if not isinstance(it, _Group) and it[0] in ("name", "str", "num", "raw"):
            if i >= 2 and _is(items[i - 2], "."):
                i -= 2
                continue
            return i - 1
        if isinstance(it, _Group):
            return i - 1
        return i
    return i


def _chain_end(items: list[Any], i: int) -> int:
    if i >= len(items):
        return i
    i += 1
    while i < len(items):
        it = items[i]
        if isinstance(it, _Group) and it.open in "([":
            i += 1
        elif _is(it, ".") and i + 1 < len(items) and not isinstance(items[i + 1], _Group):
            i += 2
        else:
            break
    return i


def _soft(chain: list[Any]) -> str:
    """The chain read through :class:`Soft`: its root wrapped, the rest unchanged."""
    if not chain:
        return "none"
    root = 1
    if len(chain) > 1 and isinstance(chain[1], _Group) and chain[1].open == "(":
        root = 2  # a call: kv('k').field
    return f"af_soft({_emit(chain[:root])}){_emit(chain[root:])}"


_SEGMENT = re.compile(r"\{\{|\{%|\{#")


@lru_cache(maxsize=4096)
def translate(text: str) -> str:
    """Pebble-only syntax of a template rewritten as Jinja (the same text when there is none)."""
    if not _PEBBLE_ONLY.search(text):
        return text
    out: list[str] = []
    pos = 0
    for m in _SEGMENT.finditer(text):
        if m.start() < pos:
            continue
        opener = m.group()
        if opener == "{#":
            end = text.find("#}", m.end())
            if end < 0:
                break
            out.append(text[pos : end + 2])
            pos = end + 2
            continue
        closer = "}}" if opener == "{{" else "%}"
        end = _close(text, m.end(), closer)
        if end < 0:
            break
        body = text[m.end() : end]
        out.append(text[pos : m.end()])
        out.append(_translate_body(body, opener == "{%"))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _close(text: str, start: int, closer: str) -> int:
    """Index of ``closer`` ending the segment that starts at ``start`` (strings skipped)."""
    i = start
    quote = ""
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif text.startswith(closer, i):
            return i
        i += 1
    return -1


def _translate_body(body: str, statement: bool) -> str:
    if not _PEBBLE_ONLY.search(body):
        return body
    try:
        items = _tree(_tokens(body))
    except _Unbalanced:
        return body  # Jinja reports the syntax error
    lead = ""
    if statement:
        # ``{% if c ? a : b %}``, ``{% set x = a ?? b %}``: translate after the keyword.
        head = 0
        while head < len(items) and not isinstance(items[head], _Group) and items[head][0] == "ws":
            head += 1
        if head < len(items) and not isinstance(items[head], _Group) and items[head][0] == "name":
            keyword = items[head][1]
            cut = head + 1
            if keyword == "set":
                cut = next((i + 1 for i, it in enumerate(items) if _is(it, "=")), cut)
            elif keyword == "for":
                cut = next(
                    (i + 1 for i, it in enumerate(items)
                     if not isinstance(it, _Group) and it[1] == "in"), cut,
                )  # fmt: skip
            lead = _emit(items[:cut])
            items = items[cut:]
    parts = _split(items, ",")
    return lead + ",".join(_rewrite(p) for p in parts)


# -- values --------------------------------------------------------------------------------


def to_text(value: Any) -> str:
    """A value printed as Pebble prints it: ``true``/``false``, null as nothing, JSON for
    mappings and lists."""
    if type(value) is str:
        return value
    if value is None or isinstance(value, jinja2.Undefined):
        return "" if value is None else str(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Mapping | list | tuple):
        return _dumps(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, jinja2.Undefined):
        return None
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False, default=str)


class Soft:
    """A value read for ``??``: a missing key or attribute gives a missing Soft, never an
    error. Reads go through the sandbox's own ``getattr``/``getitem``."""

    __slots__ = ("_env", "_v")

    def __init__(self, value: Any, env: Any) -> None:
        self._v = value
        self._env = env

    def _child(self, read: Callable[[Any], Any]) -> Soft:
        v = self._v
        if v is None or isinstance(v, jinja2.Undefined):
            return self
        try:
            return Soft(read(v), self._env)
        except (jinja2.UndefinedError, LookupError, TypeError, AttributeError):
            return Soft(None, self._env)

    def __getattr__(self, name: str) -> Soft:
        return self._child(lambda v: self._env.getattr(v, name))

    def __getitem__(self, key: Any) -> Soft:
        return self._child(lambda v: self._env.getitem(v, key))

    def __call__(self, *args: Any, **kwargs: Any) -> Soft:
        return Soft(None, self._env)


def af_has(value: Any) -> bool:
    """Whether the left side of ``??`` is there (defined and not null)."""
    v = value._v if isinstance(value, Soft) else value
    return v is not None and not isinstance(v, jinja2.Undefined)


def af_val(value: Any) -> Any:
    """The value behind a :class:`Soft`."""
    return value._v if isinstance(value, Soft) else value


# -- dates ---------------------------------------------------------------------------------

_JAVA_DATE = re.compile(r"'[^']*'|([A-Za-z])\1*")
_JAVA_FIELDS = {
    "yyyy": "%Y", "uuuu": "%Y", "yy": "%y", "MMMM": "%B", "MMM": "%b", "MM": "%m", "M": "%-m",
    "dd": "%d", "d": "%-d", "HH": "%H", "H": "%-H", "hh": "%I", "h": "%-I", "mm": "%M",
    "m": "%-M", "ss": "%S", "s": "%-S", "EEEE": "%A", "EEE": "%a", "E": "%a", "a": "%p",
    "DDD": "%j", "D": "%-j", "Z": "%z", "XXX": "%:z", "XX": "%z", "X": "%z", "z": "%Z",
    "zzzz": "%Z", "VV": "%Z", "w": "%W", "ww": "%W", "u": "%u",
}  # fmt: skip
_NAMED = {
    "iso": "%Y-%m-%dT%H:%M:%S.%f%:z",
    "iso_date_time": "%Y-%m-%dT%H:%M:%S.%f%:z",
    "iso_date": "%Y-%m-%d",
    "iso_time": "%H:%M:%S.%f",
    "iso_local_date": "%Y-%m-%d",
    "iso_local_time": "%H:%M:%S",
    "iso_local_date_time": "%Y-%m-%dT%H:%M:%S",
    "iso_offset_date_time": "%Y-%m-%dT%H:%M:%S.%f%:z",
    "iso_instant": "%Y-%m-%dT%H:%M:%S.%fZ",
    "sql": "%Y-%m-%d %H:%M:%S.%f",
}


def java_format(pattern: str) -> str:
    """A Java ``DateTimeFormatter`` pattern as a Python ``strftime`` format."""
    named = _NAMED.get(pattern.lower())
    if named is not None:
        return named

    def one(m: re.Match[str]) -> str:
        text = m.group()
        if text.startswith("'"):
            return text[1:-1].replace("%", "%%") or "'"
        if set(text) == {"S"}:
            return "%f" if len(text) >= 6 else f"%f<{len(text)}>"
        return _JAVA_FIELDS.get(text, text)

    return _JAVA_DATE.sub(one, pattern)


def to_datetime(value: Any, timezone: str | None = None) -> dt.datetime:
    """A date from an ISO string, epoch seconds, a date or a datetime (UTC when naive)."""
    if isinstance(value, dt.datetime):
        d = value
    elif isinstance(value, dt.date):
        d = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        d = dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            d = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a date: {value!r}") from None
    else:
        raise ValueError(f"not a date: {value!r}")
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    if timezone:
        from zoneinfo import ZoneInfo

        d = d.astimezone(ZoneInfo(timezone))
    return d


def _strftime(d: dt.datetime, fmt: str) -> str:
    # Python has no %-x on every platform nor %:z before 3.12; the few we use, by hand.
    def sub(m: re.Match[str]) -> str:
        code = m.group(1)
        if code.startswith("-"):
            return str(int(d.strftime("%" + code[1:])))
        if code == ":z":
            z = d.strftime("%z")
            return z[:3] + ":" + z[3:] if z else ""
        if code.startswith("f<"):
            return d.strftime("%f")[: int(code[2:-1])]
        return d.strftime("%" + code)

    return re.sub(r"%(f<\d+>|:z|-?[a-zA-Z]|%)", lambda m: "%" if m.group(1) == "%" else sub(m), fmt)


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds as Kestra prints an instant: ``2024-01-02T03:04:05.678Z``."""
    if timestamp is None:
        return None
    d = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def f_date(value: Any, format: str = "iso", timeZone: str | None = None, **_: Any) -> str:
    """``date(format)``: format a date (Java patterns, or iso/sql...)."""
    return _strftime(to_datetime(value, timeZone), java_format(format))


def f_date_add(value: Any, amount: int, unit: str = "DAYS", **_: Any) -> str:
    """``dateAdd(amount, unit)``: a date moved by ``amount`` units."""
    seconds = {
        "NANOS": 1e-9, "MICROS": 1e-6, "MILLIS": 1e-3, "SECONDS": 1, "MINUTES": 60,
        "HOURS": 3600, "HALF_DAYS": 43200, "DAYS": 86400, "WEEKS": 604800,
    }.get(str(unit).upper())  # fmt: skip
    if seconds is None:
        raise ValueError(f"unknown unit {unit!r}")
    d = to_datetime(value) + dt.timedelta(seconds=amount * seconds)
    return d.isoformat().replace("+00:00", "Z")


def f_timestamp(value: Any, **_: Any) -> int:
    """``timestamp``: epoch seconds of a date."""
    return int(to_datetime(value).timestamp())


def fn_now(**kwargs: Any) -> str:
    """``now()``: the current instant (``timeZone=`` for a local time)."""
    d = dt.datetime.now(dt.UTC)
    tz = kwargs.get("timeZone")
    if tz:
        return to_datetime(d, tz).isoformat()
    return iso(d.timestamp()) or ""


# -- filters ---------------------------------------------------------------------------------


def f_json(value: Any, **_: Any) -> str:
    """``toJson`` / ``json``: the value as JSON text."""
    return _dumps(value)


def fn_from_json(value: Any) -> Any:
    """``fromJson(text)`` / ``json(text)``: parse JSON (a non-string is returned as it is)."""
    if isinstance(value, str):
        return json.loads(value)
    return value


def f_keys(value: Any) -> list[Any]:
    """``keys``: the keys of a mapping."""
    if isinstance(value, Mapping):
        return list(value.keys())
    if isinstance(value, str):
        parsed = json.loads(value)
        if isinstance(parsed, Mapping):
            return list(parsed.keys())
    raise ValueError("keys: expected a mapping")


def f_values(value: Any) -> list[Any]:
    """``values``: the values of a mapping."""
    if isinstance(value, Mapping):
        return list(value.values())
    raise ValueError("values: expected a mapping")


def f_slugify(value: Any) -> str:
    """``slugify``: lower-case ASCII words joined by ``-``."""
    text = unicodedata.normalize("NFKD", to_text(value)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def f_abbreviate(value: Any, length: int) -> str:
    """``abbreviate(n)``: at most ``n`` characters, ending with ``...`` when cut."""
    text = to_text(value)
    if len(text) <= length:
        return text
    return text[: max(length - 3, 0)] + "..."


def f_split(value: Any, delimiter: str, limit: int = -1) -> list[str]:
    """``split(delimiter)``."""
    return to_text(value).split(delimiter, limit if limit >= 0 else -1)


def f_chunk(value: Any, size: int) -> list[list[Any]]:
    """``chunk(n)``: a list cut in lists of ``n``."""
    items = list(value)
    return [items[i : i + size] for i in range(0, len(items), max(size, 1))]


def f_distinct(value: Any) -> list[Any]:
    """``distinct``: the items without repeats, in order."""
    out: list[Any] = []
    for v in value:
        if v not in out:
            out.append(v)
    return out


def f_base64encode(value: Any) -> str:
    """``base64encode``."""
    return base64.b64encode(to_text(value).encode()).decode()


def f_base64decode(value: Any) -> str:
    """``base64decode``."""
    return base64.b64decode(to_text(value)).decode()


def _hash(name: str) -> Callable[[Any], str]:
    def digest(value: Any) -> str:
        return hashlib.new(name, to_text(value).encode()).hexdigest()

    digest.__name__ = name
    return digest


def f_number_format(value: Any, pattern: str = "") -> str:
    """``numberFormat("#.##")``: a number with the decimals of the pattern."""
    decimals = len(pattern.split(".", 1)[1]) if "." in pattern else 0
    grouped = "," in pattern
    return f"{float(value):{',' if grouped else ''}.{decimals}f}"


def f_yaml(value: Any) -> Any:
    """``yaml`` (parse) on text; ``toYaml`` prints."""
    import yaml  # here: read-only commands import templates but must not load PyYAML

    return yaml.safe_load(value) if isinstance(value, str) else value


def f_to_yaml(value: Any) -> str:
    """``toYaml``: the value as YAML text."""
    import yaml

    return yaml.safe_dump(_plain(value), sort_keys=False, allow_unicode=True)


def f_start_with(value: Any, prefix: str) -> bool:
    """``startsWith(prefix)``."""
    return to_text(value).startswith(prefix)


def f_substring_before(value: Any, sep: str) -> str:
    """``substringBefore(sep)``."""
    return to_text(value).split(sep, 1)[0]


def f_substring_after(value: Any, sep: str) -> str:
    """``substringAfter(sep)``."""
    text = to_text(value)
    return text.split(sep, 1)[1] if sep in text else ""


def f_substring_before_last(value: Any, sep: str) -> str:
    """``substringBeforeLast(sep)``."""
    return to_text(value).rsplit(sep, 1)[0]


def f_substring_after_last(value: Any, sep: str) -> str:
    """``substringAfterLast(sep)``."""
    text = to_text(value)
    return text.rsplit(sep, 1)[1] if sep in text else ""


def f_escape_char(value: Any, type: str = "single") -> str:
    """``escapeChar('single'|'double'|'shell')``."""
    text = to_text(value)
    if type == "double":
        return text.replace("\\", "\\\\").replace('"', '\\"')
    if type == "shell":
        return text.replace("'", "'\\''")
    return text.replace("\\", "\\\\").replace("'", "\\'")


def f_class_name(value: Any) -> str:
    """``className``: the Java class name Kestra would show."""
    names = {
        bool: "java.lang.Boolean", int: "java.lang.Integer", float: "java.lang.Double",
        str: "java.lang.String", list: "java.util.ArrayList", dict: "java.util.LinkedHashMap",
    }  # fmt: skip
    return names.get(type(value), type(value).__name__)


def f_merge(value: Any, other: Any) -> Any:
    """``merge(other)``: two mappings (or lists) as one."""
    if isinstance(value, Mapping) and isinstance(other, Mapping):
        return {**value, **other}
    return [*value, *other]


def f_flatten(value: Any) -> list[Any]:
    """``flatten``: a list of lists as one list."""
    out: list[Any] = []
    for v in value:
        if isinstance(v, list | tuple):
            out.extend(v)
        else:
            out.append(v)
    return out


def f_url_encode(value: Any) -> str:
    """``urlencode``."""
    return urllib.parse.quote_plus(to_text(value))


def f_url_decode(value: Any) -> str:
    """``urldecode``."""
    return urllib.parse.unquote_plus(to_text(value))


def f_rsort(value: Any) -> list[Any]:
    """``rsort``: sorted, largest first."""
    return sorted(value, reverse=True)


# A minimal jq: paths (.a.b, .[0], .["k"], .[]), pipes, `keys`, `length`, `values` and `.`.
_JQ_STEP = re.compile(
    r"""\s*(?:\.(?P<name>[A-Za-z_]\w*)|\.?\[\s*(?P<index>-?\d+)\s*\]
    |\.?\[\s*"(?P<key>[^"]*)"\s*\]|\.?\[\s*\](?P<all>)|(?P<dot>\.))""",
    re.VERBOSE,
)


def f_jq(value: Any, expression: str) -> list[Any]:
    """``jq(expr)``: a minimal jq (paths, ``[]``, ``|``, ``keys``, ``length``), on a value or
    JSON text; like Kestra, the results are a list."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    results = [_plain(value)]
    for stage in expression.split("|"):
        stage = stage.strip()
        if stage in ("keys", "keys_unsorted"):
            results = [sorted(r) if stage == "keys" else list(r) for r in results]
            continue
        if stage == "length":
            results = [len(r) if r is not None else 0 for r in results]
            continue
        if stage == "values":
            results = [r for r in results if r is not None]
            continue
        pos = 0
        while pos < len(stage):
            m = _JQ_STEP.match(stage, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"jq: unsupported expression {expression!r} (a minimal jq)")
            pos = m.end()
            nxt: list[Any] = []
            for r in results:
                if m.group("name") is not None or m.group("key") is not None:
                    k = m.group("name") if m.group("name") is not None else m.group("key")
                    nxt.append(r.get(k) if isinstance(r, Mapping) else None)
                elif m.group("index") is not None:
                    i = int(m.group("index"))
                    nxt.append(r[i] if isinstance(r, list) and -len(r) <= i < len(r) else None)
                elif m.group("all") is not None:
                    nxt.extend(r.values() if isinstance(r, Mapping) else (r or []))
                else:
                    nxt.append(r)
            results = nxt
    return results


# -- functions -------------------------------------------------------------------------------


def fn_secret(key: str) -> str:
    """``secret('name')``: Kestra OSS reads ``SECRET_<NAME>``, base64-encoded, from the
    environment."""
    raw = os.environ.get("SECRET_" + str(key).upper())
    if raw is None:
        raise ValueError(f"secret {key!r} not found (set SECRET_{str(key).upper()} to its base64)")
    try:
        return base64.b64decode(raw.strip()).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError(f"secret {key!r}: SECRET_{str(key).upper()} is not base64") from None


# -- tests -----------------------------------------------------------------------------------


def t_json(value: Any) -> bool:
    """``is json``: text that parses as a JSON object or array."""
    if isinstance(value, Mapping | list):
        return True
    if not isinstance(value, str):
        return False
    try:
        return isinstance(json.loads(value), dict | list)
    except ValueError:
        return False


def t_empty(value: Any) -> bool:
    """``is empty``: null, an empty string or an empty collection."""
    if value is None or isinstance(value, jinja2.Undefined):
        return True
    try:
        return len(value) == 0
    except TypeError:
        return False


def t_null(value: Any) -> bool:
    """``is null``."""
    return value is None or isinstance(value, jinja2.Undefined)


def t_map(value: Any) -> bool:
    """``is map``."""
    return isinstance(value, Mapping)


def t_iterable(value: Any) -> bool:
    """``is iterable``."""
    return isinstance(value, list | tuple | Mapping)


def t_contains(value: Any, item: Any) -> bool:
    """``x contains y`` (translated to this test)."""
    if isinstance(value, str):
        return to_text(item) in value
    if isinstance(value, Mapping):
        return item in value
    try:
        return item in value
    except TypeError:
        return False


FILTERS: dict[str, Callable[..., Any]] = {
    "abbreviate": f_abbreviate,
    "base64decode": f_base64decode,
    "base64encode": f_base64encode,
    "chunk": f_chunk,
    "className": f_class_name,
    "date": f_date,
    "dateAdd": f_date_add,
    "distinct": f_distinct,
    "escapeChar": f_escape_char,
    "flatten": f_flatten,
    "jq": f_jq,
    "json": f_json,
    "keys": f_keys,
    "md5": _hash("md5"),
    "merge": f_merge,
    "numberFormat": f_number_format,
    "rsort": f_rsort,
    "sha1": _hash("sha1"),
    "sha256": _hash("sha256"),
    "sha512": _hash("sha512"),
    "slugify": f_slugify,
    "split": f_split,
    "startsWith": f_start_with,
    "substringAfter": f_substring_after,
    "substringAfterLast": f_substring_after_last,
    "substringBefore": f_substring_before,
    "substringBeforeLast": f_substring_before_last,
    "timestamp": f_timestamp,
    "toJson": f_json,
    "toYaml": f_to_yaml,
    "urldecode": f_url_decode,
    "urlencode": f_url_encode,
    "values": f_values,
    "yaml": f_yaml,
}
TESTS: dict[str, Callable[..., bool]] = {
    "af_contains": t_contains,
    "empty": t_empty,
    "iterable": t_iterable,
    "json": t_json,
    "map": t_map,
    "null": t_null,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "fromJson": fn_from_json,
    "json": fn_from_json,
    "now": fn_now,
    "secret": fn_secret,
    "yaml": f_yaml,
    "fromYaml": f_yaml,
}

__all__ = [
    "FILTERS",
    "FUNCTIONS",
    "TESTS",
    "Soft",
    "af_has",
    "af_val",
    "iso",
    "java_format",
    "to_datetime",
    "to_text",
    "translate",
]
