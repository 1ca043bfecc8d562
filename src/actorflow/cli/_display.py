"""Terminal views of executions for the CLI: live progress, the task-run tree, the timeline
(a Gantt chart of task runs and their attempts), tables and JSON forms."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

from actorflow.runtime import Execution, Observer, State, TaskRun

STYLE: dict[State, str] = {
    State.CREATED: "dim",
    State.QUEUED: "dim",
    State.RUNNING: "cyan",
    State.PAUSED: "yellow",
    State.RETRYING: "yellow",
    State.SUCCESS: "green",
    State.WARNING: "yellow",
    State.FAILED: "red",
    State.KILLING: "magenta",
    State.KILLED: "magenta",
    State.CANCELLED: "magenta",
    State.SKIPPED: "dim",
    State.RESTARTED: "cyan",
    State.RETRIED: "red",
}
ICON: dict[State, str] = {
    State.RUNNING: "▶",
    State.PAUSED: "⏸",
    State.RETRYING: "↻",
    State.SUCCESS: "✔",
    State.WARNING: "!",
    State.FAILED: "✘",
    State.KILLING: "✘",
    State.KILLED: "✘",
    State.CANCELLED: "✘",
    State.SKIPPED: "-",
    State.RESTARTED: "↺",
    State.RETRIED: "↻",
}


def fmt_duration(seconds: float | None) -> str:
    """``0.012`` as ``12ms``, ``75`` as ``1m15s``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_time(ts: float) -> str:
    """Local date and time of an epoch timestamp."""
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def state_text(state: State) -> Text:
    """A state name in its color."""
    return Text(state.value, style=STYLE.get(state, ""))


#: Keys of records that hold epoch seconds: JSON output adds ``<key>_iso`` beside each.
_DATE_KEYS = frozenset({"date", "start", "end", "ts", "created", "heartbeat"})


def _with_iso(value: Any) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out[k] = _with_iso(v)
            if k in _DATE_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
                out[f"{k}_iso"] = iso_date(v)
            elif k == "history" and isinstance(v, list | tuple):
                # Entries stay [state, date] pairs (scripts unpack them); the dates in ISO
                # come beside, in the same order.
                out["history_iso"] = [
                    iso_date(e[1]) for e in v if isinstance(e, list | tuple) and len(e) == 2
                ]
        return out
    if isinstance(value, list | tuple):
        return [_with_iso(v) for v in value]
    return value


def iso_date(epoch: float) -> str:
    """ISO-8601 in UTC with milliseconds: ``2026-12-01T21:10:41.123Z``."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_json(value: Any) -> str:
    """Plain JSON of records (structs, lists, dicts) for scripts: epoch seconds as stored,
    each with its ISO-8601 form beside it (``date`` and ``date_iso``)."""
    return json.dumps(_with_iso(msgspec.to_builtins(value)), indent=2, default=str)


def _label(tr: TaskRun) -> str:
    return f"{tr.task_id}[{tr.value}]" if tr.value is not None else tr.task_id


def _compact(value: Any, limit: int = 160) -> str:
    text = json.dumps(msgspec.to_builtins(value), default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def walk(ex: Execution) -> Iterator[tuple[int, TaskRun]]:
    """Task runs in tree order with their depth."""
    children: dict[str | None, list[TaskRun]] = {}
    ids = {tr.id for tr in ex.task_runs}
    for tr in ex.task_runs:
        parent = tr.parent_task_run_id if tr.parent_task_run_id in ids else None
        children.setdefault(parent, []).append(tr)
    stack: list[tuple[int, TaskRun]] = [(0, tr) for tr in reversed(children.get(None, []))]
    while stack:
        depth, tr = stack.pop()
        yield depth, tr
        stack.extend((depth + 1, c) for c in reversed(children.get(tr.id, [])))


def _run_end(tr: TaskRun) -> float | None:
    return tr.history[-1].date if tr.state.terminal else None


# -- live progress ---------------------------------------------------------------------------
class Progress(Observer):
    """Prints task runs as they start and finish (every execution of this process)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.main: str | None = None
        self.flows: dict[str, str] = {}
        self.depth: dict[str, int] = {}
        self.paused_hint = True

    def execution_changed(self, ex: Execution) -> None:
        if self.main is None:
            self.main = ex.id
            self.console.print(execution_header(ex))
        self.flows[ex.id] = f"{ex.namespace}.{ex.flow_id}"
        if ex.state in (State.PAUSED, State.KILLING, State.QUEUED):
            line = Text.assemble(
                ("  execution ", "dim"), (ex.id, "bold"), " ", state_text(ex.state)
            )
            if ex.state is State.PAUSED and ex.id == self.main:
                line.append(f"  (resume: actorflow resume {ex.id})", style="dim")
            self.console.print(line)

    def task_run_changed(self, tr: TaskRun, ex: Execution | None) -> None:
        state = tr.state
        depth = self.depth.get(tr.parent_task_run_id or "", -1) + 1
        self.depth.setdefault(tr.id, depth)
        if state in (State.CREATED, State.RESTARTED):
            return
        if state is State.RUNNING and len(tr.attempts) > 1:
            return  # the retry itself was printed
        prefix = ""
        if self.main is not None and tr.execution_id != self.main:
            prefix = f"{self.flows.get(tr.execution_id, tr.execution_id)} > "
        line = Text("  " * depth)
        line.append(f"{ICON.get(state, '·')} ", style=STYLE.get(state, ""))
        line.append(prefix, style="dim")
        line.append(_label(tr), style="bold")
        line.append(" ")
        line.append_text(state_text(state))
        if state.terminal and state is not State.SKIPPED:
            line.append(f"  {fmt_duration(tr.duration)}", style="dim")
        if len(tr.attempts) > 1 and state.terminal:
            line.append(f"  attempts {len(tr.attempts)}", style="dim")
        if state is State.RETRYING and tr.attempts:
            line.append(f"  attempt {len(tr.attempts)} failed: {tr.attempts[-1].error}", "dim")
        elif tr.error and state.failed:
            line.append(f"  {tr.error}", style="red")
        self.console.print(line)


# -- tree ------------------------------------------------------------------------------------
def execution_header(ex: Execution) -> Text:
    """One line: id, flow, state, duration."""
    return Text.assemble(
        ("execution ", "dim"),
        (ex.id, "bold"),
        ("  flow ", "dim"),
        f"{ex.namespace}.{ex.flow_id} r{ex.flow_revision}",
        "  ",
        state_text(ex.state),
        ("  " + fmt_duration(ex.duration), "dim"),
    )


def execution_tree(ex: Execution) -> Tree:
    """The execution with its task runs, attempts, outputs and metrics."""
    root = Tree(execution_header(ex))
    info = root
    if ex.inputs:
        info.add(Text(f"inputs {_compact(ex.inputs)}", style="dim"))
    if ex.original_execution_id:
        info.add(Text(f"replay of {ex.original_execution_id}", style="dim"))
    if ex.error:
        info.add(Text(f"error: {ex.error}", style="red"))
    nodes: dict[str, Tree] = {}
    for _, tr in walk(ex):
        parent = nodes.get(tr.parent_task_run_id or "", root)
        label = Text.assemble((_label(tr), "bold"), "  ", state_text(tr.state))
        if tr.state is not State.SKIPPED:
            label.append(f"  {fmt_duration(tr.duration)}", style="dim")
        if tr.attempts:
            label.append(f"  attempts {len(tr.attempts)}", style="dim")
        if tr.child_execution_id:
            label.append(f"  subflow execution {tr.child_execution_id}", style="dim")
        node = parent.add(label)
        nodes[tr.id] = node
        if len(tr.attempts) > 1 or any(a.state is State.FAILED for a in tr.attempts):
            for a in tr.attempts:
                text = Text.assemble(
                    (f"attempt {a.number} ", "dim"), state_text(a.state),
                    (f"  {fmt_duration(a.duration)}", "dim"),
                )  # fmt: skip
                if a.error:
                    text.append(f"  {a.error}", style="red")
                node.add(text)
        if tr.error and not tr.attempts:
            node.add(Text(f"error: {tr.error}", style="red"))
        if tr.outputs:
            node.add(Text(f"outputs {_compact(tr.outputs)}", style="blue"))
        for m in tr.metrics:
            tags = ",".join(f"{k}={v}" for k, v in sorted(m.tags.items()))
            value = fmt_duration(m.value) if m.kind == "timer" else f"{m.value:g}"
            node.add(
                Text(f"metric {m.name}{{{tags}}} = {value} ({m.kind}, n={m.count})", "magenta")
            )
    if ex.outputs:
        root.add(Text(f"outputs {_compact(ex.outputs)}", style="blue"))
    return root


# -- timeline --------------------------------------------------------------------------------
def timeline_rows(ex: Execution) -> list[dict[str, Any]]:
    """Task runs and attempts with start/end in seconds from the execution start."""
    t0 = ex.start_date
    rows: list[dict[str, Any]] = []
    for depth, tr in walk(ex):
        end = _run_end(tr)
        rows.append(
            {
                "task_run_id": tr.id,
                "task_id": tr.task_id,
                "value": tr.value,
                "depth": depth,
                "state": tr.state.value,
                "start": tr.start_date - t0,
                "end": None if end is None else end - t0,
                "attempts": [
                    {
                        "number": a.number,
                        "state": a.state.value,
                        "start": a.start - t0,
                        "end": None if a.end is None else a.end - t0,
                    }
                    for a in tr.attempts
                ],
            }
        )
    return rows


def timeline(ex: Execution, width: int) -> Text:
    """A Gantt chart: ``█`` attempts (by state), ``━`` container or pause spans, ``·`` waits."""
    rows = timeline_rows(ex)
    now = time.time()
    total = max((ex.end_date or now) - ex.start_date, 1e-6)
    labels = ["  " * r["depth"] + (f"{r['task_id']}[{r['value']}]" if r["value"] else r["task_id"])
              for r in rows]  # fmt: skip
    label_w = min(max([len(label) for label in labels] + [9]), 40)
    bar_w = max(width - label_w - 12, 10)

    def col(t: float) -> int:
        return min(bar_w - 1, max(0, int(t / total * bar_w)))

    out = Text()
    axis = f"0s{'':{bar_w - 2 - len(fmt_duration(total))}}{fmt_duration(total)}"
    out.append(f"{'':{label_w}}  {axis}\n", style="dim")
    for label, r in zip(labels, rows, strict=True):
        cells: list[tuple[str, str]] = [(" ", "")] * bar_w
        end = r["end"] if r["end"] is not None else now - ex.start_date
        state = State(r["state"])
        style = STYLE.get(state, "")
        if r["attempts"]:
            for i in range(col(r["start"]), col(end) + 1):
                cells[i] = ("·", "dim")
            for a in r["attempts"]:
                a_end = a["end"] if a["end"] is not None else end
                a_style = STYLE.get(State(a["state"]), "")
                for i in range(col(a["start"]), col(a_end) + 1):
                    cells[i] = ("█", a_style)
        else:
            for i in range(col(r["start"]), col(end) + 1):
                cells[i] = ("━", style)
        out.append(f"{label[:label_w]:{label_w}}  ")
        for ch, st in cells:
            out.append(ch, style=st)
        out.append(f" {fmt_duration(end - r['start']):>8}", style="dim")
        out.append("\n")
    return out


def executions_table(rows: Sequence[Execution]) -> Any:
    """A table of executions, newest first."""
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for name in ("ID", "FLOW", "STATE", "STARTED", "DURATION"):
        table.add_column(name)
    for ex in rows:
        table.add_row(
            ex.id,
            escape(f"{ex.namespace}.{ex.flow_id}"),
            state_text(ex.state),
            fmt_time(ex.start_date),
            fmt_duration(ex.duration),
        )
    return table
