"""`make bench`: every benchmark module, one table, one JSON file (benchmarks/results/all.json).

Each module exposes ``run(quick: bool = False) -> list[dict]``; rows share the keys
``benchmark``, ``metric``, ``ours``, ``baseline``, ``unit`` and ``ratio`` where they apply.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
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
    """What the numbers were measured on."""
    import os

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return "" if v is None else str(v)


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["benchmark", "metric", "ours", "baseline", "ratio", "unit"]
    # CPU seconds per task run of each process, where a row measured them: steadier than
    # wall time on a shared machine.
    cols += [
        c for c in ("main_process_us", "writer_process_us", "spread") if any(c in r for r in rows)
    ]
    heads = {"main_process_us": "cpu main µs", "writer_process_us": "cpu writer µs"}
    widths = {c: max(len(heads.get(c, c)), *(len(fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(heads.get(c, c).ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(widths[c]) for c in cols))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("only", nargs="*", help="module names to run (default: all)")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for name in args.only or MODULES:
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.extend(mod.run(quick=args.quick))
    print_table(rows)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "all.json"
    out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
