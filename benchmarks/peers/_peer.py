"""Helpers shared by the peer benchmark scripts (``bench_dbos.py``, ``bench_prefect.py``).

Standard library only: each script runs with its peer's own virtual environment, where nothing
of actorflow is installed, and imports this module from the script's own folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "results"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def row(
    peer: str,
    workload: str,
    metric: str,
    value: float | None,
    unit: str,
    n: int | None,
    note: str = "",
    reps: list[float] | None = None,
) -> dict[str, Any]:
    """One result row in the shared peers.json shape."""
    return {
        "peer": peer,
        "workload": workload,
        "metric": metric,
        "value": value,
        "unit": unit,
        "n": n,
        "note": note,
        "reps": reps or [],
    }


def log(peer: str, msg: str) -> None:
    """Progress on stdout (the driver streams it; peer noise goes to stderr)."""
    print(f"[{peer}] {msg}", flush=True)


def versions(packages: Iterable[str]) -> dict[str, str]:
    """Python, SQLite and the installed versions of ``packages`` (``-`` if not installed)."""
    out = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the options every script has; each script adds its own after them."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes, 1 rep")
    parser.add_argument("--reps", type=int, default=3)
    return parser


class Tally:
    """Workload 3 across reps: task runs/s and latency percentiles of the runs that finished."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.p50s: list[float] = []
        self.p99s: list[float] = []
        self.errors = 0

    def add(self, results: Sequence[object], wall: float) -> tuple[list[float], list[object]]:
        """One rep: ``results`` of gather(return_exceptions=True), a run's seconds or its error.

        Returns the seconds of the runs that finished and the errors of the others.
        """
        lat = [r for r in results if isinstance(r, float)]
        errs = [r for r in results if not isinstance(r, float)]
        self.errors += len(errs)
        self.rates.append(len(lat) * 5 / wall)  # 5 tasks per run
        if lat:
            self.p50s.append(pct(lat, 0.5) * 1000)
            self.p99s.append(pct(lat, 0.99) * 1000)
        return lat, errs


_ATTEMPTS: dict[str, int] = {}


def fail_twice(key: str) -> int:
    """Raise on the first two calls for ``key``; on the third, return the attempt count (3)."""
    _ATTEMPTS[key] = _ATTEMPTS.get(key, 0) + 1
    if _ATTEMPTS[key] < 3:
        raise RuntimeError("planned failure")
    return _ATTEMPTS[key]


async def time_retries(
    peer: str,
    flaky: Callable[[str], Awaitable[int]],
    once: Callable[[], Awaitable[object]],
    executions: int,
    reps: int,
    digits: int,
) -> tuple[list[float], list[float]]:
    """Workload 5: ``flaky(key)`` (a step calling :func:`fail_twice`) alternating with ``once()``.

    Returns the milliseconds of every execution of each; ``digits`` is the progress line's
    precision. Both peers are timed by this one loop so that their figures stay comparable.
    """
    flaky_ms: list[float] = []
    once_ms: list[float] = []
    for rep in range(reps):
        for i in range(executions):
            start = time.perf_counter()
            attempts = await flaky(f"r{rep}-{i}")
            flaky_ms.append((time.perf_counter() - start) * 1000)
            if attempts != 3:
                raise RuntimeError(f"expected 3 attempts, saw {attempts}")
            start = time.perf_counter()
            await once()
            once_ms.append((time.perf_counter() - start) * 1000)
        log(
            peer,
            f"5 retry rep {rep + 1}: fail x2 then ok "
            f"{statistics.median(flaky_ms[-executions:]):.{digits}f} ms, "
            f"ok at once {statistics.median(once_ms[-executions:]):.{digits}f} ms (medians)",
        )
    return flaky_ms, once_ms


def retry_rows(
    peer: str,
    workload: str,
    flaky_metric: str,
    flaky_ms: list[float],
    once_ms: list[float],
    reps: int,
    executions: int,
    digits: int,
) -> list[dict[str, Any]]:
    """Rows of workload 5: median of every execution, mean and max in the note."""

    def note(ms: list[float]) -> str:
        return (
            f"median of {len(ms)} executions ({reps} reps x {executions}, alternating); "
            f"mean {statistics.fmean(ms):.{digits}f}, max {max(ms):.{digits}f}"
        )

    return [
        row(
            peer,
            workload,
            flaky_metric,
            statistics.median(flaky_ms),
            "ms/execution",
            len(flaky_ms),
            note(flaky_ms),
        ),
        row(
            peer,
            workload,
            "succeeds at once",
            statistics.median(once_ms),
            "ms/execution",
            len(once_ms),
            note(once_ms),
        ),
    ]


def report(
    peer: str,
    out: Path,
    packages: Iterable[str],
    settings: dict[str, Any],
    total_s: float,
    rows: list[dict[str, Any]],
    **extra: Any,
) -> None:
    """Write the script's JSON document to ``out``, print its rows and log where it went.

    ``extra`` are further top-level keys, placed after ``settings``; run.py reads ``versions``,
    ``settings``, ``total_s`` and ``rows``.
    """
    doc = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "peer": peer,
        "versions": versions(packages),
        "settings": settings,
        **extra,
        "total_s": total_s,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:,.2f}"
        print(f"{r['workload'][:44]:44}  {r['metric'][:58]:58}  {value:>10} {r['unit']}")
    log(peer, f"wrote {out} ({total_s:.1f} s)")
