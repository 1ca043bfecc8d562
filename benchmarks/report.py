"""The README's Performance table, generated from what ``make bench`` wrote.

``python -m benchmarks.report [JSON] [-o FILE]`` reads ``benchmarks/results/all.json`` (or
JSON) and prints the Markdown table (or writes it to FILE); ``make bench`` writes it to
``benchmarks/results/README.md`` after every full run. Each row of the table is a row of the
JSON, picked by module and metric; a required row that is missing is an error
(:class:`MissingRows`), so a table never silently drops a figure. A module that could not run
here (no PostgreSQL) says so in a row whose metric is ``skipped``; its rows are then not
required, and the table says why they are absent.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
SIZES = ("1,000", "10,000", "100,000")
QUICK_SIZES = ("1,000", "10,000")  # ``--quick`` skips the largest growth size


class MissingRows(Exception):
    """Required rows absent from the results: the table would not be what was promised."""


@dataclass(frozen=True)
class Pick:
    """One table row: the first result row of ``benchmark`` whose metric matches ``pattern``."""

    benchmark: str
    pattern: str
    baseline: str = ""  # what the baseline column holds, e.g. "naive loop"
    required: bool = True


def _growth() -> list[Pick]:
    return [
        Pick("growth", r"^ForEach of {n} values, concurrency 10$"),
        Pick("growth", r"^ForEach of {n} values, unlimited$"),
        Pick("growth", r"^Parallel of {n} tasks, unlimited$"),
        Pick("growth", r"^{n} concurrent executions x 5 tasks, memory: per task run$"),
        Pick("growth", r"^{n} concurrent executions x 5: loop lag p99$"),
    ]


# Sections of the table, in order. ``{n}`` in a pattern stands for every growth size.
SECTIONS: list[tuple[str, list[Pick]]] = [
    (
        "Durable workloads on SQLite vs the naive durable loop",
        [
            Pick("durable", r"^\(2\) .* vs the naive durable loop$", "naive loop"),
            Pick("durable", r"^\(2\) .*: CPU per task run, actorflow$", "naive loop"),
            Pick("durable", r"^\(2\) .*: CPU per task run, naive loop$"),
            Pick("durable", r"^\(3\) .* vs the naive durable loop$", "naive loop"),
            Pick("durable", r"^\(3\) .*: CPU per task run, actorflow$", "naive loop"),
            Pick("durable", r"^\(3\) .*: CPU per task run, naive loop$"),
            Pick("durable", r"^loop lag p99", "naive loop"),
        ],
    ),
    (
        "Tracing on vs off",
        [
            Pick("tracing", r"on SQLite, tracing off$"),
            Pick("tracing", r"on SQLite, tracing on$", "tracing off"),
            Pick("tracing", r"on SQLite, tracing unsampled$", "tracing off", required=False),
            Pick("tracing", r"in memory, tracing on$", "tracing off"),
            Pick("tracing", r"concurrent .*, tracing on$", "tracing off"),
        ],
    ),
    (
        "Growth: cost per task run as the work grows (in memory unless said)",
        [
            *_growth(),
            Pick("growth", r"^Dag chain of [\d,]+ nodes$", required=False),
            Pick("growth", r"^outputs of 1 KB, SQLite: per execution$"),
            Pick("growth", r"^outputs of 100 KB, SQLite: per execution$"),
            Pick("growth", r"^outputs of 1 MB, SQLite: per execution$"),
            Pick("growth", r"^bytes per live task run", required=False),
        ],
    ),
    (
        "Queries",
        [
            Pick("queries", r"^executions\(state=FAILED\) p50", "v6 indexes"),
            Pick("queries", r"^executions\(namespace=\) p50", "v6 indexes"),
            Pick("queries", r"^unfinished scan", "v6 indexes and query"),
        ],
    ),
    (
        "PostgreSQL vs SQLite",
        [
            Pick("postgres", r"^\(2\) .*: PostgreSQL vs SQLite$", "SQLite"),
            Pick("postgres", r"^\(2\) .*: CPU per task run, PostgreSQL$"),
            Pick("postgres", r"^\(2\) .*: CPU per task run, SQLite$"),
            Pick("postgres", r"^\(3\) .*: PostgreSQL vs SQLite$", "SQLite"),
            Pick("postgres", r"^\(3\) .*: CPU per task run, PostgreSQL$"),
            Pick("postgres", r"^\(3\) .*: CPU per task run, SQLite$"),
        ],
    ),
    (
        "Workers",
        [
            Pick("workers", r"^\(a\) SQLite, .*, 2 workers vs 1$", "1 worker"),
            Pick("workers", r"^\(a\) SQLite, .*, 1 worker: CPU"),
            Pick("workers", r"^\(b\) SQLite, submit -> start .* p99"),
            Pick("workers", r"^\(a\) PostgreSQL, .*, 1 worker$"),
            Pick("workers", r"^\(a\) PostgreSQL, .*, 2 workers vs 1$", "1 worker"),
            Pick("workers", r"^\(a\) PostgreSQL, .*, 4 workers vs 1$", "1 worker"),
            Pick("workers", r"^\(a\) PostgreSQL, .*, 4 workers vs 1, projected", required=False),
            Pick("workers", r"^\(b\) PostgreSQL, submit -> start .* p99"),
        ],
    ),
    (
        "Engine, other workloads",
        [
            Pick("engine", r"^\(2\) .*, memory store$", "bare asyncio", required=False),
            Pick("engine", r"^\(2\) engine overhead", required=False),
            Pick("engine", r"^\(3\) .* concurrent executions", "bare asyncio", required=False),
            Pick("engine", r"^\(3\) submit-to-terminal p99", "bare asyncio", required=False),
            Pick("engine", r"^\(4\) .*peak RSS", "bare asyncio", required=False),
            Pick("engine", r"^\(4\) bytes per idle", required=False),
            Pick("engine", r"^\(5\) ", "bare asyncio", required=False),
            Pick("persistence", r"^\(c\) / \(6\) recover", "read + decode", required=False),
            Pick("actors", r"^tell throughput", "asyncio.Queue", required=False),
            Pick("actors", r"^ask round trip p99", "future", required=False),
        ],
    ),
]


def _expand(pick: Pick, quick: bool) -> list[Pick]:
    if "{n}" not in pick.pattern:
        return [pick]
    sizes = QUICK_SIZES if quick else SIZES
    return [
        Pick(pick.benchmark, pick.pattern.replace("{n}", re.escape(n)), pick.baseline,
             pick.required)
        for n in sizes
    ]  # fmt: skip


def num(v: float) -> str:
    """A figure as a table shows it: three significant digits or so, thousands separated."""
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _spread(values: Any) -> str:
    if not isinstance(values, list) or len(values) < 2:
        return ""
    return f" [{num(min(values))}-{num(max(values))}]"


def _cpu(r: dict[str, Any]) -> str:
    if r.get("unit") == "ms":
        return ""  # a latency or lag row: the CPU of its run is on the row of its cost
    parts = [(r.get(k), k) for k in ("main_process_us", "writer_process_us", "server_process_us")]
    if parts[0][0] is None:  # benchmarks/tracing.py's name for the main process's CPU
        parts[0] = (r.get("cpu_us_per_task_run"), "main_process_us")
    # A writer or server that spent nothing is one that does not exist (PostgreSQL has no
    # writer process, SQLite no server): at these sizes a real one always spends something.
    present = [(v, k) for v, k in parts if isinstance(v, int | float)
               and (v or k == "main_process_us")]  # fmt: skip
    if not present:
        return ""
    names = {"main_process_us": "", "writer_process_us": "writer ", "server_process_us": "server "}
    if len(present) == 1:
        return num(present[0][0])
    total = sum(v for v, _ in present)
    return " + ".join(f"{names[k]}{num(v)}" for v, k in present) + f" = {num(total)}"


def _line(r: dict[str, Any], pick: Pick) -> str:
    unit = r.get("unit", "")
    runs = r.get("runs")
    # benchmarks/tracing.py keeps every run's rate under "runs" rather than "spread".
    spread = r.get("spread") if r.get("spread") is not None else runs
    ours = f"{num(r['ours'])} {unit}{_spread(spread)}"
    base = ""
    if r.get("baseline") is not None:
        others = r.get("naive_spread") or r.get("sqlite_spread") or r.get("one_worker_spread")
        label = f"{pick.baseline}: " if pick.baseline else ""
        base = f"{label}{num(r['baseline'])}{_spread(others)}"
    ratio = f"{r['ratio']:.2f}x" if isinstance(r.get("ratio"), int | float) else ""
    runs_s = str(len(runs)) if isinstance(runs, list) else "" if runs is None else str(runs)
    note = f" ({r['note']})" if r.get("note") and math.isnan(r["ours"]) else ""
    cells = [r["metric"] + note, ours, base, ratio, _cpu(r), runs_s]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _machine(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    load = m.get("load_average_start"), m.get("load_average_end")
    load_s = " -> ".join(f"{x:.2f}" for x in load if isinstance(x, int | float))
    took = m.get("total_seconds")
    took_s = f"; `make bench` took {took / 60:.1f} min" if isinstance(took, int | float) else ""
    return (
        f"Machine: {m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, Python "
        f"{m.get('python', '?')}, SQLite {m.get('sqlite', '?')}; load average (1 min) "
        f"{load_s or '?'} from start to end; {m.get('when', '?')}{took_s}"
        f"{' (--quick: smoke-run sizes, not figures to quote)' if m.get('quick') else ''}."
    )


def markdown(data: dict[str, Any]) -> str:
    """The Performance table of ``data`` (``{"machine": ..., "rows": [...]}``).

    Raises:
        MissingRows: a required row is not in ``data``.
    """
    rows: list[dict[str, Any]] = data["rows"]
    quick = bool(data.get("machine", {}).get("quick"))
    skipped = {r["benchmark"]: r.get("note", "") for r in rows if r.get("metric") == "skipped"}
    missing: list[str] = []
    out = [
        "| workload | actorflow [spread of runs] | baseline [spread] | ratio "
        "| CPU µs per task run: main + writer (+ server) | runs |",
        "|---|---|---|---|---|---|",
    ]
    for title, picks in SECTIONS:
        lines: list[str] = []
        for pick in (p for group in picks for p in _expand(group, quick)):
            found = next((r for r in rows if r.get("benchmark") == pick.benchmark
                          and re.search(pick.pattern, r.get("metric", ""))), None)  # fmt: skip
            if found is not None:
                lines.append(_line(found, pick))
            elif pick.benchmark in skipped:
                note = f"| {pick.benchmark} skipped: {skipped[pick.benchmark]} | | | | | |"
                if note not in lines:
                    lines.append(note)
            elif pick.required:
                missing.append(f"{pick.benchmark}: {pick.pattern}")
        if lines:
            out.append(f"| **{title}** | | | | | |")
            out.extend(lines)
    if missing:
        raise MissingRows("required rows missing from the results:\n  " + "\n  ".join(missing))
    return "\n".join([
        _machine(data),
        "Medians of several runs (the spread of the runs in brackets, their count in the last "
        "column); ratio = actorflow / baseline for rates, baseline / actorflow for times and "
        "CPU; CPU seconds per task run are steadier than wall time on a shared machine (a "
        "single CPU figure is the main process's alone: in memory, or not measured).",
        "",
        *out,
        "",
        "Reproduce: `make bench` (prints every row, writes `benchmarks/results/all.json` and "
        "this table to `benchmarks/results/README.md`); `python -m benchmarks.report "
        "benchmarks/results/all.json` prints the table again from the JSON.",
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("json", nargs="?", default=str(RESULTS / "all.json"))
    parser.add_argument("-o", "--output", help="write the table here instead of printing it")
    args = parser.parse_args(argv)
    try:
        text = markdown(json.loads(Path(args.json).read_text()))
    except MissingRows as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
