"""Shared pieces of the engine benchmarks: flows, timing, RSS."""

from __future__ import annotations

import gc
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import actorflow as af


@af.task
async def noop(ctx: af.TaskContext) -> None:
    """Does nothing: measures the engine alone."""
    return None


def seq_flow(n: int, flow_id: str = "seq") -> af.Flow:
    """One execution of ``n`` sequential no-op tasks."""
    return af.Flow(id=f"{flow_id}{n}", namespace="bench", tasks=[noop(f"t{i}") for i in range(n)])


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tmpdb() -> Path:
    """A fresh database path in a temporary directory."""
    return Path(tempfile.mkdtemp(prefix="actorflow-bench-")) / "bench.db"


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    """Seconds ``fn`` takes."""
    gc.collect()
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


def median_of(values: list[float]) -> float:
    return statistics.median(values)


def row(bench: str, metric: str, ours: float, baseline: float | None, unit: str,
        higher_is_better: bool = True, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A result row; ratio = ours / baseline (for rates) or baseline / ours (for times)."""
    ratio = None
    if baseline:
        ratio = ours / baseline if higher_is_better else baseline / ours
    return {"benchmark": bench, "metric": metric, "ours": ours, "baseline": baseline,
            "ratio": ratio, "unit": unit, **extra}  # fmt: skip
