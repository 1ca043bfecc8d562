"""Values at the edge: what the store can keep, checked once where a value enters.

Inputs (at submit, resume and subflow start), outputs (when an attempt ends), metrics and log
lines (when recorded) become *plain data* here, or are refused with an
:class:`~actorflow.UnstorableValue` naming where the value is (``inputs.cfg.a[3]``,
``outputs.x``, ``metric 'rows'``) and why. Whatever passes is something the store encodes and
decodes back unchanged, so one bad value fails one task run (or one submit) and never the
writer that every execution shares.

Plain data is what :func:`msgspec.to_builtins` makes of a value (Structs and dataclasses
become dicts, datetimes and UUIDs strings, bytes base64 text, dict keys strings), with:

* integers within msgpack's 64 bits (``-2**63`` to ``2**64 - 1``);
* strings that are valid Unicode (no lone surrogates: UTF-8 cannot carry them);
* at most :data:`MAX_DEPTH` nested containers (deeper values hit recursion limits when they
  are encoded, decoded or rendered, in this process or the next one that recovers them).

Floats may be NaN or infinite inside inputs and outputs (msgpack keeps them); a metric value
must be finite (its SQL column cannot hold NaN).

The check is msgpack's own encoder (C): a bad int or string makes it fail, and only then a
walk in Python names the place; nesting is walked only when the encoding is long enough to
be that deep.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from actorflow._errors import UnstorableValue

MAX_DEPTH = 100
"""Most containers (dicts, lists) nested inside one value."""

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
"""The integers msgpack encodes."""

SQL_INT_MAX = 2**63 - 1
"""The largest integer of an SQL column (flow revisions)."""

_encode = msgspec.msgpack.Encoder().encode
_PLAIN = "use dicts, lists, strings, numbers, booleans and None"


class _Bad(Exception):
    """Raised inside the walk; each level on the way out adds its step to the path."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str] = []


def _short(value: Any, limit: int = 40) -> str:
    text = ascii(value)  # ASCII: the message itself must be storable (it becomes a log line)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _key_step(key: Any) -> str:
    if type(key) is str and key.isidentifier() and key.isascii():
        return f".{key}"
    return f"[{_short(key)}]"


def _text_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.start + 1]
        return (
            f"the string has a lone surrogate {_short(bad)} at position {exc.start}"
            " (not valid Unicode, UTF-8 cannot carry it)"
        )
    return None


def _show_int(value: int) -> str:
    # str() of a huge int is slow, and refused past 4,300 digits.
    return str(value) if abs(value) < 10**30 else "an integer of more than 30 digits"


def _int_problem(value: int) -> str:
    return f"{_show_int(value)} is beyond 64 bits (the store keeps -2**63 to 2**64-1)"


def _bad_str(value: str) -> None:
    problem = _text_problem(value)
    if problem is not None:
        raise _Bad(problem)


def _check(value: Any, depth: int) -> None:
    """Raise :class:`_Bad` if ``value`` (made by ``to_builtins``) cannot be stored exactly."""
    t = type(value)
    if t is dict or t is list or t is tuple:
        if depth > MAX_DEPTH:
            raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
        items = value.items() if t is dict else enumerate(value)
        key: Any = None
        try:
            for key, item in items:
                if t is dict and not (type(key) is str and key.isascii()):
                    _check_key(key)
                ti = type(item)
                if ti is str:
                    if not item.isascii():
                        _bad_str(item)
                elif ti is int:
                    if not INT_MIN <= item <= INT_MAX:
                        raise _Bad(_int_problem(item))
                elif ti is not float and ti is not bool and item is not None:
                    _check(item, depth + 1)  # a container (or an unexpected type)
        except _Bad as bad:
            bad.path.append(_key_step(key) if t is dict else f"[{key}]")
            raise
    elif isinstance(value, str):
        _bad_str(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT_MIN <= value <= INT_MAX:
            raise _Bad(_int_problem(value))
    elif not (value is None or isinstance(value, bool | float)):
        raise _Bad(f"a value of type {type(value).__name__} is not plain data ({_PLAIN})")


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise _Bad(f"a dict key of type {type(key).__name__} (keys are strings)")
    problem = _text_problem(key)
    if problem is not None:
        raise _Bad(f"the key: {problem}")


def _locate(value: Any, depth: int) -> None:
    """Find what ``to_builtins`` refused (it names no path): raise :class:`_Bad` there."""
    if depth > MAX_DEPTH:
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        key: Any = None
        try:
            for key, item in value.items():
                if not isinstance(key, str | int | float) or isinstance(key, bool):
                    raise _Bad(
                        f"a dict key of type {type(key).__name__} (keys are strings or numbers)"
                    )
                _locate(item, depth + 1)
        except _Bad as bad:
            bad.path.append(_key_step(key))
            raise
        return
    if isinstance(value, list | tuple | set | frozenset):
        index = 0
        try:
            for index, item in enumerate(value):  # noqa: B007 - the except reads it
                _locate(item, depth + 1)
        except _Bad as bad:
            bad.path.append(f"[{index}]")
            raise
        return
    try:
        msgspec.to_builtins(value, str_keys=True)
    except RecursionError:
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        raise _Bad(
            f"a value of type {type(value).__name__} is not plain data ({_PLAIN}): {exc}"
        ) from None


def _refusal(where: str, bad: _Bad) -> UnstorableValue:
    steps = bad.path[::-1]
    if len(steps) > 10:  # a value nested too deeply: its path is as long as it is deep
        steps = [*steps[:5], "...", *steps[-2:]]
    return UnstorableValue(f"{where}{''.join(steps)}: {bad.reason}")


def to_plain(value: Any, where: str) -> Any:
    """``value`` as plain data the store keeps exactly, else :class:`UnstorableValue`.

    ``where`` names the value in the error (``"outputs"``, ``"inputs.cfg"``); the path inside
    it is added (``inputs.cfg.a[3]``).
    """
    plain = to_builtins(value, where)
    check_plain(plain, where)
    return plain


def to_builtins(value: Any, where: str) -> Any:
    """:func:`msgspec.to_builtins` (string keys); a refusal names the place (unchecked)."""
    try:
        return msgspec.to_builtins(value, str_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        try:
            _locate(value, 1)
        except _Bad as bad:
            raise _refusal(where, bad) from None
        raise UnstorableValue(f"{where}: cannot be stored: {safe_text(str(exc))}") from None


def check_plain(value: Any, where: str) -> bytes:
    """Refuse (:class:`UnstorableValue`) plain data the store cannot keep exactly; returns
    its msgpack encoding."""
    # msgpack's encoder in C finds a bad int or string far faster than a walk in Python;
    # the walk runs only to name the place, or when the value may be too deep (each nested
    # container takes at least one byte, so a short encoding is a shallow value).
    try:
        data = _encode(value)
    except (OverflowError, UnicodeEncodeError, TypeError, ValueError, RecursionError) as exc:
        try:
            _check(value, 1)
        except _Bad as bad:
            raise _refusal(where, bad) from None
        raise UnstorableValue(f"{where}: cannot be stored: {safe_text(str(exc))}") from None
    if len(data) > MAX_DEPTH and _too_deep(value, 1):
        try:
            _depth(value, 1)
        except _Bad as bad:
            raise _refusal(where, bad) from None
    return data


_CONTAINERS = frozenset({dict, list, tuple})


def _too_deep(value: Any, depth: int) -> bool:
    """Whether containers nest deeper than :data:`MAX_DEPTH` (fast: no path kept)."""
    if depth > MAX_DEPTH:
        return True
    items = value.values() if type(value) is dict else value
    if _CONTAINERS.isdisjoint(map(type, items)):  # the common leaf: scalars only, looked at in C
        return False
    depth += 1
    for item in items:
        t = type(item)
        if (t is dict or t is list or t is tuple) and _too_deep(item, depth):
            return True
    return False


def _depth(value: Any, depth: int) -> None:
    """Raise :class:`_Bad` where containers nest deeper than :data:`MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
    t = type(value)
    if t is dict:
        key: Any = None
        try:
            for key, item in value.items():  # noqa: B007 - the except reads it
                ti = type(item)
                if ti is dict or ti is list or ti is tuple:
                    _depth(item, depth + 1)
        except _Bad as bad:
            bad.path.append(_key_step(key))
            raise
    elif t is list or t is tuple:
        index = 0
        try:
            for index, item in enumerate(value):  # noqa: B007 - the except reads it
                ti = type(item)
                if ti is dict or ti is list or ti is tuple:
                    _depth(item, depth + 1)
        except _Bad as bad:
            bad.path.append(f"[{index}]")
            raise


def check_text(text: Any, where: str) -> str:
    """``text`` if it is a str the store can keep, else :class:`UnstorableValue`."""
    if not isinstance(text, str):
        raise UnstorableValue(f"{where}: a str is required, not a {type(text).__name__} value")
    if not text.isascii():
        problem = _text_problem(text)
        if problem is not None:
            raise UnstorableValue(f"{where}: {problem}")
    return text


def check_labels(labels: Mapping[Any, Any], where: str) -> dict[str, str]:
    """Labels as a dict of storable strings (their type is ``dict[str, str]`` when read back)."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        name = check_text(key, f"{where} key {_short(key)}")
        out[name] = check_text(value, f"{where}{_key_step(name)}")
    return out


def check_sql_int(value: Any, where: str) -> str | None:
    """What is wrong with ``value`` as an integer column (None if nothing)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{where} must be an integer, not {type(value).__name__}"
    if not INT_MIN <= value <= SQL_INT_MAX:
        return f"{where} {_show_int(value)} is beyond 64 bits (at most {SQL_INT_MAX})"
    return None


def metric_value(name: str, value: Any) -> float:
    """A metric's value as a finite float, else :class:`UnstorableValue`."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UnstorableValue(
            f"metric {_short(name)}: the value {_short(value)} is not a number"
        ) from None
    if not math.isfinite(number):
        raise UnstorableValue(
            f"metric {_short(name)}: the value {number} cannot be stored (it must be finite)"
        )
    return number


def metric_tags(name: str, tags: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Tags as sorted (name, text) pairs; values are strings, numbers or booleans."""
    pairs: list[tuple[str, str]] = []
    for key, value in tags.items():
        where = f"metric {_short(name)} tag {_short(key)}"
        check_text(key, where)
        if isinstance(value, str):
            text = value
        elif isinstance(value, int | float):
            text = str(value)
        else:
            raise UnstorableValue(
                f"{where}: a {type(value).__name__} value is not a tag (use a str or a number)"
            )
        pairs.append((key, check_text(text, where)))
    pairs.sort()
    return tuple(pairs)


def safe_text(text: str) -> str:
    """``text`` with lone surrogates escaped (``\\udc80``): for messages built from errors."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "SQL_INT_MAX",
    "check_labels",
    "check_plain",
    "check_sql_int",
    "check_text",
    "metric_tags",
    "metric_value",
    "safe_text",
    "to_builtins",
    "to_plain",
]
