"""Expressions ``{{ ... }}`` rendered by Jinja2's sandbox.

A string that is exactly one expression keeps its native type (``"{{ inputs.n }}"`` gives an
int); mixed text renders to a string. Strings without ``{{``/``{%`` are returned untouched and
cost nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from actorflow._errors import TemplateError

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)


@lru_cache(maxsize=4096)
def _compile(text: str) -> tuple[bool, Any]:
    m = _SINGLE.match(text)
    if m:
        return True, _ENV.compile_expression(m.group("expr"), undefined_to_none=False)
    return False, _ENV.from_string(text)


def has_template(value: Any) -> bool:
    """Whether ``value`` (or anything inside it) contains an expression."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_template(v) for v in value)
    return False


def render(value: Any, variables: Mapping[str, Any], *, where: str = "") -> Any:
    """Render every template string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            single, tmpl = _compile(value)
            if single:
                result = tmpl(**variables)
                if isinstance(result, jinja2.Undefined):
                    str(result)  # raises UndefinedError with the missing name
                return result
            return tmpl.render(**variables)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{where}: cannot render {value!r}: {exc}") from exc
    if isinstance(value, Mapping):
        return {k: render(v, variables, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, variables, where=f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def truthy(value: Any) -> bool:
    """Kestra's truthiness: 0, '', None, 'false' and empty collections are false."""
    if isinstance(value, str):
        return value.strip().lower() not in {"", "false", "0", "null", "none"}
    return bool(value)
