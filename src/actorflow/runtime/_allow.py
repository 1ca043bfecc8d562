"""Task types a runtime runs only when it was opened to allow them (``allow_types``)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection

from actorflow._errors import Problem, TaskNotAllowed
from actorflow.runtime._flow import Flow
from actorflow.runtime._tasks import Subflow, Task

# Per flow object: its gated tasks and its subflow calls (submit checks every execution, so
# a flow is walked once, not once per execution).
_scans: dict[int, tuple[weakref.ref[Flow], tuple[Task, ...], tuple[Subflow, ...]]] = {}


def allowed_types(names: Collection[str] | str) -> frozenset[str]:
    """``allow_types`` as a set (a single string is one name, not its letters)."""
    return frozenset((names,) if isinstance(names, str) else (str(n) for n in names))


def _scan(flow: Flow) -> tuple[tuple[Task, ...], tuple[Subflow, ...]]:
    key = id(flow)
    hit = _scans.get(key)
    if hit is not None and hit[0]() is flow:
        return hit[1], hit[2]
    gated: list[Task] = []
    calls: list[Subflow] = []
    for task, _ in flow._walk(flow.top_level(), None):
        if task.requires_allow is not None and not task.disabled:
            gated.append(task)
        if isinstance(task, Subflow):
            calls.append(task)
    ref = weakref.ref(flow, lambda _, key=key: _scans.pop(key, None))  # type: ignore[misc]
    _scans[key] = (ref, tuple(gated), tuple(calls))
    return tuple(gated), tuple(calls)


def refused(
    flow: Flow,
    allowed: frozenset[str],
    find_flow: Callable[[str, str], Flow | None] | None = None,
) -> list[Problem]:
    """A problem per task of ``flow`` (and of the registered subflows it calls) whose type
    needs an allowance that ``allowed`` does not give."""
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    todo = [flow]
    while todo:
        current = todo.pop()
        if (current.namespace, current.id) in seen:
            continue
        seen.add((current.namespace, current.id))
        gated, calls = _scan(current)
        for task in gated:
            need = task.requires_allow
            if need in allowed:
                continue
            where = "" if current is flow else f" (in subflow {current.namespace}.{current.id})"
            problems.append(
                Problem(
                    f"task type {need!r} is off unless the runtime allows it{where}: "
                    f"`actorflow run --allow {need}`, or "
                    f"Runtime.open(..., allow_types={{{need!r}}})",
                    file=current.source_path,
                    field=f"tasks.{task.id}",
                )
            )
        if find_flow is not None:
            for call in calls:
                child = find_flow(call.namespace or current.namespace, call.flow_id)
                if child is not None:
                    todo.append(child)
    return problems


def check_allowed(
    flow: Flow,
    allowed: frozenset[str],
    find_flow: Callable[[str, str], Flow | None] | None = None,
) -> None:
    """Raise :class:`TaskNotAllowed` naming every task that ``allowed`` does not cover."""
    problems = refused(flow, allowed, find_flow)
    if problems:
        raise TaskNotAllowed(problems)
