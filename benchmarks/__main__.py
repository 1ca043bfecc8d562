"""`make bench`: every benchmark module, one table, one JSON file (benchmarks/results/all.json)
and the README's Performance table generated from it (benchmarks/results/README.md).

Each module exposes ``run(quick: bool = False) -> list[dict]``; rows share the keys
``benchmark``, ``metric``, ``ours``, ``baseline``, ``unit`` and ``ratio`` where they apply,
``spread`` (every run's figure) and ``runs`` for medians, and ``main_process_us`` /
``writer_process_us`` (CPU µs per task run) where a row measures task runs. A module that
fails is reported and the others still run; the exit status is then 1. The time each module
took and the total are printed at the end and stored in the JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import sqlite3
import sys
import time
import traceback
from pathlib import Path
from typing import Any

MODULES = [
    "actors",
    "storage_writer",
    "persistence",
    "queries",
    "engine",
    "durable",
    "postgres",
    "tracing",
    "flow_loading",
    "growth",
    "commands",
    "host_logging",
    "web",
    "workers",
    "schedule",
    "shutdown",
]
RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on (the load average is taken again at the end)."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": os.getloadavg()[0],
    }


def fmt(v: Any) -> str:
    if isinstance(v, list) and v and all(isinstance(x, int | float) for x in v):
        return f"[{fmt(float(min(v)))}-{fmt(float(max(v)))}]"  # a spread: its range
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return "" if v is None else str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["benchmark", "metric", "ours", "baseline", "ratio", "unit"]
    # CPU seconds per task run of each process, where a row measured them: steadier than
    # wall time on a shared machine.
    cols += [
        c
        for c in ("main_process_us", "writer_process_us", "server_process_us", "spread", "runs")
        if any(c in r for r in rows)
    ]
    heads = {"main_process_us": "cpu main µs", "writer_process_us": "cpu writer µs",
             "server_process_us": "cpu server µs"}  # fmt: skip
    widths = {c: max([len(heads.get(c, c)), *(len(fmt(r.get(c))) for r in rows)]) for c in cols}
    print("  ".join(heads.get(c, c).ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(widths[c]) for c in cols))


def cpu_seconds() -> float:
    """CPU seconds so far of this process and of its children that ended (the fresh
    interpreters most modules measure in, their writer processes): what a module costs
    whatever else the machine is doing, where its wall time depends on the load."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--markdown", metavar="FILE",
                        help="also write the README's Performance table here (a full run "
                        "always writes benchmarks/results/README.md)")  # fmt: skip
    parser.add_argument("only", nargs="*", help="module names to run (default: all)")
    args = parser.parse_args()
    from benchmarks import report

    info = {**machine(), "quick": args.quick, "modules": args.only or MODULES}
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name in args.only or MODULES:
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            failed[name] = repr(exc)
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t, c = time.perf_counter(), cpu_seconds()
        try:
            rows.extend(mod.run(quick=args.quick))
        except Exception as exc:  # the other modules' figures are still worth having
            traceback.print_exc()
            failed[name] = repr(exc)
        timings[name], cpu[name] = time.perf_counter() - t, cpu_seconds() - c
        print(f"  {name} took {timings[name]:.0f} s (CPU {cpu[name]:.0f} s)", file=sys.stderr,
              flush=True)  # fmt: skip
    total = time.perf_counter() - start
    info.update(load_average_end=os.getloadavg()[0], total_seconds=total,
                module_seconds=timings, module_cpu_seconds=cpu, failed=failed)  # fmt: skip
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "all.json"
    data = {"machine": info, "rows": rows}
    out.write_text(json.dumps(data, indent=2))
    print(f"\nwrote {out}")
    status = 1 if failed else 0
    targets = [Path(args.markdown)] if args.markdown else []
    if not args.only:
        targets.append(RESULTS / "README.md")
    if targets:
        try:
            table = report.markdown(data)
        except report.MissingRows as exc:
            print(exc, file=sys.stderr)
            status = 1
        else:
            for target in targets:
                target.write_text(table)
                print(f"wrote {target}")
    per = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    print(
        f"\ntook {total / 60:.1f} min ({total:.0f} s, CPU {sum(cpu.values()):.0f} s, load "
        f"average {info['load_average_start']:.1f} -> {info['load_average_end']:.1f}): {per}"
    )
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
