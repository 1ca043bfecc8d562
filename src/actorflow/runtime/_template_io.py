"""Template values read from outside the execution: ``kv()`` (the namespace key-value store)
and ``globals`` (configuration variables, Kestra's ``kestra.variables.globals``).

Templates render synchronously and the store is asynchronous, so ``kv()`` reads a cache the
attempt fills before the task runs: the task's templates are rendered once beforehand with
``kv()`` noting each key it lacks, those keys are read, and so on until nothing is missing
(a key named by another key's value takes one more round). The store is thus read when the
attempt starts, which is when Kestra's task renders its properties.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from actorflow._errors import TemplateError

if TYPE_CHECKING:
    from actorflow.runtime._context import TaskContext
    from actorflow.storage import Store

#: The file of configuration variables templates read as ``{{ globals.x }}``.
GLOBALS_ENV = "ACTORFLOW_GLOBALS"
_ROUNDS = 8  # keys named by other keys' values, nested this deep at most
#: Where kv_templates keeps its finding on a task (Task.__post_init__ makes the slot).
KV_TEMPLATES_ATTR = "_actorflow_kv_templates"


class KVNotRead(Exception):
    """``kv()`` met a key that was not read before the render (outside a task's own
    templates, e.g. inside ``render()`` of a value built at run time)."""


class KVFunction:
    """``kv(key, namespace=None, errorOnMissing=False)``: the value of ``key`` in the key-value
    store of ``namespace`` (the flow's by default); null when absent, unless
    ``errorOnMissing``."""

    __slots__ = ("default_namespace", "misses", "values")

    def __init__(self, default_namespace: str) -> None:
        self.default_namespace = default_namespace
        #: (namespace, key) -> stored JSON text, None when absent.
        self.values: dict[tuple[str, str], str | None] = {}
        self.misses: set[tuple[str, str]] = set()

    def __call__(self, key: Any = None, namespace: Any = None, errorOnMissing: Any = False) -> Any:
        if not isinstance(key, str) or not key:
            raise ValueError("kv() expects a key (a non-empty string) as its first argument")
        ns = self.default_namespace if namespace is None else str(namespace)
        slot = (ns, key)
        if slot not in self.values:
            self.misses.add(slot)
            raise KVNotRead(f"kv({key!r}): the key was not read before this render")
        text = self.values[slot]
        if text is None:
            if errorOnMissing is True:
                raise ValueError(f"The key '{key}' does not exist in the namespace '{ns}'.")
            return None
        return json.loads(text)

    async def fetch(self, store: Store) -> bool:
        """Read the keys missed so far; False when none was missed."""
        if not self.misses:
            return False
        for ns, key in sorted(self.misses):
            row = await store.kv_get(ns, key)
            self.values[(ns, key)] = None if row is None else row.value
        self.misses.clear()
        return True


def kv_templates(task: Any) -> tuple[Any, ...]:
    """The template strings among ``task``'s fields that call ``kv(``, found once per task."""
    cached = getattr(task, KV_TEMPLATES_ATTR, None)
    if cached is None:
        found: list[Any] = []
        if dataclasses.is_dataclass(task):
            for f in dataclasses.fields(task):
                _collect(getattr(task, f.name), found, 0)
        cached = tuple(found)
        # Tasks are frozen dataclasses shared by every execution of the flow: the scan of
        # its (immutable) fields is kept on the task itself.
        object.__setattr__(task, KV_TEMPLATES_ATTR, cached)
    return cached


def _collect(value: Any, found: list[Any], depth: int) -> None:
    if depth > 20:
        return
    if isinstance(value, str):
        if "kv(" in value and "{{" in value:
            found.append(value)
    elif isinstance(value, Mapping):
        for v in value.values():
            _collect(v, found, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, found, depth + 1)


async def prefetch_kv(task: Any, ctx: TaskContext) -> None:
    """Fill ``ctx``'s ``kv()`` cache with every key ``task``'s templates read."""
    templates = kv_templates(task)
    if not templates:
        return
    kv = ctx.kv_function
    for _ in range(_ROUNDS):
        for text in templates:
            try:
                ctx.render(text)
            except Exception:  # a dry render: the real one reports the error
                continue
        if not await kv.fetch(ctx.engine.store):
            return


_globals_cache: tuple[str, float, dict[str, Any]] | None = None


def global_variables() -> dict[str, Any]:
    """``{{ globals }}``: the mapping in the YAML (or JSON) file ``$ACTORFLOW_GLOBALS``, empty
    without one; read again when the file changes."""
    global _globals_cache
    path = os.environ.get(GLOBALS_ENV)
    if not path:
        return {}
    try:
        mtime = os.stat(path).st_mtime
    except OSError as exc:
        raise TemplateError(f"{GLOBALS_ENV} file {path}: {exc.strerror}") from None
    cached = _globals_cache
    if cached is not None and cached[0] == path and cached[1] == mtime:
        return cached[2]
    import yaml  # only when a template reads globals: the CLI's reads never load yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{GLOBALS_ENV} file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise TemplateError(f"{GLOBALS_ENV} file {path}{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TemplateError(
            f"{GLOBALS_ENV} file {path}: expected a mapping of variables, got {type(data).__name__}"
        )
    _globals_cache = (path, mtime, data)
    return data


class GlobalVariables(Mapping[str, Any]):
    """``{{ globals.x }}``: :func:`global_variables`, read only when a template reads it."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        return global_variables()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(global_variables())

    def __len__(self) -> int:
        return len(global_variables())


GLOBALS = GlobalVariables()

__all__ = [
    "GLOBALS",
    "GLOBALS_ENV",
    "GlobalVariables",
    "KVFunction",
    "KVNotRead",
    "global_variables",
    "kv_templates",
    "prefetch_kv",
]
