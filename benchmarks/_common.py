"""Shared pieces of the engine benchmarks: flows, timing, CPU seconds, RSS."""

from __future__ import annotations

import gc
import os
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


class Window:
    """Wall time and CPU seconds of this process (its threads included: aiosqlite's) and of
    one child process (actorflow's SQLite writer), over the timed part only."""

    def __init__(self, child_pid: int | None = None) -> None:
        self.child_pid = child_pid

    def __enter__(self) -> Window:
        gc.collect()  # the warm-up's garbage is not this run's cost
        self._child0 = proc_cpu(self.child_pid)
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.result = {
            "seconds": time.perf_counter() - self._t0,
            "cpu_self": time.process_time() - self._cpu0,
            "cpu_children": proc_cpu(self.child_pid) - self._child0,
        }


def proc_cpu(pid: int | None, with_reaped: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 without one, or once gone);
    ``with_reaped`` adds its children that exited and were waited for."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def writer_pid(rt: af.Runtime) -> int | None:
    """The pid of the store's writer process, if it has one."""
    # Private, and fine for a benchmark: nothing public names the writer process.
    proc = getattr(getattr(rt.engine.store, "_proc", None), "_proc", None)
    return None if proc is None else int(proc.pid)


def cpu_us(result: dict[str, float], task_runs: int) -> dict[str, float]:
    """A :class:`Window` result as the table's CPU columns: µs per task run of the main
    process and of the writer process."""
    return {"main_process_us": result["cpu_self"] / task_runs * 1e6,
            "writer_process_us": result["cpu_children"] / task_runs * 1e6}  # fmt: skip


def spread(values: list[float]) -> list[float]:
    """Every run's figure, sorted, rounded to what a table shows (the spread of a median)."""
    return sorted(round(v) if abs(v) >= 1000 else round(v, 3 if abs(v) < 10 else 1) for v in values)
