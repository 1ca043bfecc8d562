"""What the web UI needs from the API beyond the plain records: keyset paging, Server-Sent
Event streams of execution changes, and a flow's graph (its topology).

The streams push what the runtime's change notices say for the executions this process runs,
and look at the store (slowly) for the ones other workers on the database run; the page only
listens.
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
    Change,
    ChangeWatch,
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
    State,
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
    """The API's SSE streams over one runtime.

    Pushed, not polled: each stream watches the runtime's change notices
    (:meth:`Runtime.watch`) for the executions this process runs. The store has no change
    notifications to offer for the executions other workers run (its doorbells and
    PostgreSQL's LISTEN/NOTIFY carry commands to an execution's owner, not its changes), so
    for those alone a stream falls back to a slow look at the store: every ``interval``
    seconds for the list, every ``remote_interval`` for one execution run elsewhere.
    """

    #: Seconds between two looks at the store for the list (other workers' executions).
    interval = 2.0
    #: Seconds between two looks at the store for one execution another worker runs.
    remote_interval = 1.0
    #: Seconds a stream gathers a burst of notices into one event (a 1,000-task-run
    #: ForEach changes a thousand times; the page needs the tree once per frame or so).
    coalesce = 0.05

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def executions(
        self, to_json: Callable[[Execution], dict[str, Any]], limit: int, **filters: Any
    ) -> AsyncIterator[bytes]:
        """``execution`` events: the newest ``limit`` executions matching ``filters`` at once
        (what a page loaded just before may have missed), then each one that appears or
        changes state."""
        seen: dict[str, tuple[str, int]] = {}
        floor = -math.inf  # the window's oldest start: an older execution is not shown
        yield b": connected\n\n"
        # Watch before the first read: no change slips between the read and the watch.
        with self.rt.watch(maxsize=4 * limit + 64) as changes:
            scan = True
            now = anyio.current_time()
            next_scan = now
            quiet_since = now
            while True:
                if scan:
                    window = await self.rt.executions(limit=limit, **filters)
                    floor = window[-1].start_date if len(window) >= limit else -math.inf
                    if len(seen) > 4 * limit:  # forget the ones pushed out of the window
                        keep = {ex.id for ex in window}
                        seen = {k: v for k, v in seen.items() if k in keep}
                    for ex in reversed(window):
                        mark = _mark(ex)
                        if seen.get(ex.id) != mark:
                            seen[ex.id] = mark
                            quiet_since = anyio.current_time()
                            yield sse("execution", to_json(ex))
                    next_scan = anyio.current_time() + self.interval
                    scan = False
                got = await _next_changes(
                    changes, min(next_scan, quiet_since + KEEPALIVE) - anyio.current_time()
                )
                for change in got:
                    if change.kind == "resync":
                        scan = True
                        continue
                    rec = change.execution
                    if rec is None or not _matches(rec, filters):
                        continue
                    if rec.id not in seen and rec.start_date < floor:
                        continue
                    mark = _mark(rec)
                    if seen.get(rec.id) != mark:
                        seen[rec.id] = mark
                        quiet_since = anyio.current_time()
                        yield sse("execution", to_json(rec))
                now = anyio.current_time()
                if now >= next_scan:
                    scan = True
                if now - quiet_since >= KEEPALIVE:
                    quiet_since = now
                    yield b": keep-alive\n\n"

    async def execution(
        self, ex_id: str, to_json: Callable[[Execution], dict[str, Any]]
    ) -> AsyncIterator[bytes]:
        """The whole tree of one execution as an ``execution`` event at once and on every
        change, then ``end`` once it ended."""
        last = b""
        with self.rt.watch(ex_id, maxsize=1024) as changes:
            quiet_since = anyio.current_time()
            while True:
                ex = await self.rt.get(ex_id)
                data = msgspec.json.encode(ex)
                if data != last:
                    last = data
                    quiet_since = anyio.current_time()
                    yield sse("execution", to_json(ex))
                if ex.state.terminal:
                    yield sse("end", {"state": ex.state.value})
                    return
                # Run here: its notices wake us, and the slow look only notices a move to
                # another worker (a lost lease). Run elsewhere: the store is all there is.
                wait = self.interval if self.rt.runs_here(ex_id) else self.remote_interval
                wait = min(wait, quiet_since + KEEPALIVE - anyio.current_time())
                if await _next_changes(changes, wait):
                    await anyio.sleep(self.coalesce)
                    changes.pending()  # the tree read next has them all
                elif anyio.current_time() - quiet_since >= KEEPALIVE:
                    quiet_since = anyio.current_time()
                    yield b": keep-alive\n\n"


async def _next_changes(changes: ChangeWatch, timeout: float) -> list[Change]:
    """The notices that come within ``timeout`` seconds (at least one unless it passed)."""
    first: Change | None = None
    with anyio.move_on_after(max(timeout, 0.0)):
        first = await anext(changes, None)
    if first is None:
        return []
    return [first, *changes.pending()]


def _matches(ex: Execution, filters: dict[str, Any]) -> bool:
    """Whether ``ex`` passes the list's filters (as the store's query applies them)."""
    if filters.get("flow") is not None and ex.flow_id != filters["flow"]:
        return False
    if filters.get("namespace") is not None and ex.namespace != filters["namespace"]:
        return False
    states = filters.get("state")
    if states and ex.state.value not in {State(s).value for s in states}:
        return False
    since, until = filters.get("since"), filters.get("until")
    if since is not None and ex.start_date < since:
        return False
    return until is None or ex.start_date < until


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
