"""What the web UI needs from the API beyond the plain records: keyset paging, Server-Sent
Event streams of execution changes, and a flow's graph (its topology).

The streams read the store, not the engine's memory, so they show executions run by any
worker on the database; they look again every :attr:`LiveFeeds.interval` seconds, server
side (the page only listens).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import msgspec

from actorflow.runtime import (
    Dag,
    Execution,
    Flow,
    Flowable,
    FlowTrigger,
    ForEach,
    If,
    Input,
    Parallel,
    Pause,
    Runtime,
    Schedule,
    Subflow,
    Switch,
    Task,
    Trigger,
    Webhook,
)

#: Seconds between two SSE comments that keep idle connections (and proxies) open.
KEEPALIVE = 15.0


class CursorError(ValueError):
    """A paging cursor the API did not make."""


def encode_cursor(ex: Execution) -> str:
    """The cursor after ``ex`` in newest-first order: its creation time and id."""
    raw = json.dumps([ex.start_date, ex.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(created, id) from :func:`encode_cursor`; CursorError if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, ex_id = json.loads(raw)
        if not isinstance(created, float | int) or not isinstance(ex_id, str):
            raise TypeError
        return float(created), ex_id
    except (ValueError, TypeError) as exc:
        raise CursorError(f"cursor {cursor[:40]!r} is not a cursor this API gave") from exc


async def page_after(
    rt: Runtime,
    cursor: tuple[float, str] | None,
    limit: int,
    **filters: Any,
) -> tuple[list[Execution], str | None]:
    """Up to ``limit`` executions older than ``cursor`` (newest first) and the next cursor.

    Keyset paging on (created, id) through the ``created`` index: each page costs the same at
    any depth, unlike an offset. Rows created at the cursor's very instant are told apart by
    id (the store orders ties by id too).
    """
    until = filters.pop("until", None)
    skip = 0
    if cursor is not None:
        # created <= the cursor's instant, then drop the ties already shown (id >= its id).
        bound = math.nextafter(cursor[0], math.inf)
        until = bound if until is None else min(until, bound)
    out: list[Execution] = []
    while True:
        batch = await rt.executions(until=until, limit=limit + 1, offset=skip, **filters)
        for ex in batch:
            if cursor is not None and ex.start_date == cursor[0] and ex.id >= cursor[1]:
                continue
            out.append(ex)
        if len(out) > limit or len(batch) < limit + 1:
            break
        skip += len(batch)  # a page of nothing but ties at the cursor: read on
    page = out[:limit]
    more = len(out) > limit
    return page, encode_cursor(page[-1]) if more and page else None


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class LiveFeeds:
    """The API's SSE streams over one runtime."""

    def __init__(self, rt: Runtime, *, interval: float = 0.25) -> None:
        self.rt = rt
        self.interval = interval

    async def _ticks(self) -> AsyncIterator[bool]:
        """Yields every ``interval``; True when a keep-alive comment is due."""
        waited = 0.0
        while True:
            await anyio.sleep(self.interval)
            waited += self.interval
            keepalive = waited >= KEEPALIVE
            if keepalive:
                waited = 0.0
            yield keepalive

    async def executions(
        self, to_json: Callable[[Execution], dict[str, Any]], limit: int, **filters: Any
    ) -> AsyncIterator[bytes]:
        """``execution`` events: the newest ``limit`` executions matching ``filters`` at once
        (what a page loaded just before may have missed), then each one that appears or
        changes state."""
        seen: dict[str, tuple[str, int]] = {}
        yield b": connected\n\n"
        ticks = self._ticks()
        keepalive = False
        while True:
            for ex in reversed(await self.rt.executions(limit=limit, **filters)):
                mark = _mark(ex)
                if seen.get(ex.id) != mark:
                    seen[ex.id] = mark
                    yield sse("execution", to_json(ex))
            if len(seen) > 4 * limit:  # forget the ones pushed out of the window
                keep = {ex.id for ex in await self.rt.executions(limit=limit, **filters)}
                seen = {k: v for k, v in seen.items() if k in keep}
            if keepalive:
                yield b": keep-alive\n\n"
            keepalive = await anext(ticks)

    async def execution(
        self, ex_id: str, to_json: Callable[[Execution], dict[str, Any]]
    ) -> AsyncIterator[bytes]:
        """The whole tree of one execution as an ``execution`` event at once and on every
        change, then ``end`` once it ended."""
        last = b""
        while True:
            ex = await self.rt.get(ex_id)
            data = msgspec.json.encode(ex)
            if data != last:
                last = data
                yield sse("execution", to_json(ex))
            if ex.state.terminal:
                yield sse("end", {"state": ex.state.value})
                return
            await anyio.sleep(self.interval)


def _mark(ex: Execution) -> tuple[str, int]:
    return ex.state.value, len(ex.history)


# -- a flow's graph ---------------------------------------------------------------------------
def input_json(i: Input) -> dict[str, Any]:
    """A declared input as a form needs it."""
    data: dict[str, Any] = {
        "name": i.name,
        "type": i.type,
        "required": i.required,
        "description": i.description,
    }
    if i.has_default:
        data["default"] = i.default
    return data


def trigger_json(t: Trigger) -> dict[str, Any]:
    """A trigger's kind and settings."""
    data: dict[str, Any] = {
        "id": t.id, "type": type(t).__name__, "disabled": t.disabled,
        "description": t.description, "conditions": list(t.conditions),
    }  # fmt: skip
    if isinstance(t, Schedule):
        data.update(cron=t.cron, timezone=t.timezone)
    elif isinstance(t, FlowTrigger):
        data.update(
            namespace=t.namespace, flowId=t.flow_id, states=[s.value for s in t.states]
        )  # fmt: skip
    elif isinstance(t, Webhook):
        data.update(key="(secret)")  # the key starts executions: never shown
    return data


def _group(name: str, mode: str, tasks: Sequence[Task]) -> dict[str, Any]:
    return {"name": name, "mode": mode, "nodes": [task_node(t) for t in tasks]}


def task_node(task: Task) -> dict[str, Any]:
    """One task of the graph, with its groups of children for a flowable.

    A group's ``mode`` says how its nodes run: ``sequential``, ``parallel``, ``dag`` (nodes
    carry ``dependsOn``) or ``foreach`` (the group runs once per value).
    """
    node: dict[str, Any] = {"id": task.id, "type": type(task).__name__}
    if task.description:
        node["description"] = task.description
    if isinstance(task, Subflow):
        node["subflow"] = f"{task.namespace or ''}.{task.flow_id}".lstrip(".")
    if isinstance(task, Pause):
        node["onResume"] = [input_json(i) for i in task.on_resume if isinstance(i, Input)]
    if not isinstance(task, Flowable):
        return node
    groups: list[dict[str, Any]] = []
    if isinstance(task, Dag):
        nodes = []
        for n in task.nodes:
            one = task_node(n.task)
            one["dependsOn"] = list(n.depends_on)
            nodes.append(one)
        groups.append({"name": "tasks", "mode": "dag", "nodes": nodes})
    elif isinstance(task, If):
        groups.append(_group("then", "sequential", task.then))
        groups.append(_group("else", "sequential", task.else_))
    elif isinstance(task, Switch):
        groups += [_group(f"case {k}", "sequential", v) for k, v in task.cases.items()]
        groups.append(_group("defaults", "sequential", task.defaults))
    if task.tasks:
        mode = (
            "parallel" if isinstance(task, Parallel)
            else "foreach" if isinstance(task, ForEach)
            else "sequential"
        )  # fmt: skip
        groups.append(_group("tasks", mode, task.tasks))
    groups.append(_group("errors", "sequential", task.errors))
    groups.append(_group("finally", "sequential", task.finally_))
    node["groups"] = [g for g in groups if g["nodes"]]
    return node


def flow_graph(flow: Flow) -> dict[str, Any]:
    """The flow's topology: its tasks, errors and finally branches as nested groups."""
    groups = [
        _group("tasks", "sequential", flow.tasks),
        _group("errors", "sequential", flow.errors),
        _group("finally", "sequential", flow.finally_),
    ]
    return {"id": flow.id, "type": "Flow", "groups": [g for g in groups if g["nodes"]]}


__all__ = [
    "CursorError",
    "LiveFeeds",
    "decode_cursor",
    "encode_cursor",
    "flow_graph",
    "input_json",
    "page_after",
    "sse",
    "task_node",
    "trigger_json",
]
