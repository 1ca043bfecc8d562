"""Growth rows: what one task run costs as the work grows (issue 13, "Cost must not grow").

Each workload runs in a fresh interpreter (``python -m benchmarks.growth NAME N``, one JSON
line), so its peak RSS and collector counts are its own; the table gives the median of
several runs. In memory unless said otherwise, no-op tasks:

* ``foreach``: one ForEach over N values, concurrency 10 and unlimited (N children ending
  together); µs per task run, wall seconds;
* ``parallel``: one Parallel of N tasks, no concurrency limit;
* ``dag``: a Dag chain of N nodes (each depends on the previous one);
* ``outputs``: 300 executions on SQLite, each one task returning an output of 1 KB / 100 KB /
  1 MB: µs per execution, peak RSS and RSS left once they ended;
* ``live``: bytes per live task run (tracemalloc) in a fan-out of N tasks all awaiting;
* ``lag``: M concurrent 5-task executions (submitted at once), M = 1,000 / 10,000 / 100,000:
  µs and main-process CPU µs per task run, the host loop's lag p99 / max (a 5 ms ticker), the
  cycle collector's share of the time and its longest full pass.

Every row that measures task runs carries ``main_process_us``: CPU µs per task run of the
process (in memory, so there is no writer process).

A workload that does not finish in its time limit (LIMIT_S) or fails reports NaN and why.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

import actorflow as af
from benchmarks._common import noop, peak_rss_mb, row, spread, tmpdb

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results"
LIMIT_S = 300.0  # per workload run; the quadratic paths of old took far longer at 100,000


def _rss_mb() -> float:
    """Resident set size now (MiB)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


class GcMeter:
    """Time spent in the cycle collector, by generation (through ``gc.callbacks``)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest_full = 0.0
        self.full_passes = 0
        self._t = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            return
        took = time.perf_counter() - self._t
        self.total += took
        if info["generation"] == 2:
            self.full_passes += 1
            self.longest_full = max(self.longest_full, took)

    def __enter__(self) -> GcMeter:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


_WARM = af.Flow(id="warm", namespace="bench", tasks=[
    af.ForEach(id="each", values=[1, 2], tasks=[noop("w")]),
    af.Parallel(id="all", tasks=[noop("w1"), noop("w2")]),
    af.Dag(id="dag", nodes=[af.DagTask(task=noop("w3"))]),
])  # fmt: skip


async def _one_execution(flow: af.Flow, path: str = ":memory:") -> dict[str, Any]:
    async with af.Runtime.open(path) as rt:
        await rt.run(_WARM)  # first-time imports and caches are not this workload's cost
        gc.collect()
        with GcMeter() as meter:
            cpu, start = time.process_time(), time.perf_counter()
            ex = await rt.run(flow)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = sum(1 for tr in ex.task_runs if tr.task_id.startswith("t"))
    return {"state": ex.state.value, "seconds": elapsed, "us_per_task_run": elapsed / n * 1e6,
            "main_process_us": cpu / n * 1e6, "gc_share": meter.total / elapsed,
            "rss": peak_rss_mb()}  # fmt: skip


def foreach(n: int, concurrency: int) -> dict[str, Any]:
    flow = af.Flow(id="fe", namespace="bench", tasks=[
        af.ForEach(id="each", values=list(range(n)), concurrency=concurrency, tasks=[noop("t")]),
    ])  # fmt: skip
    return anyio.run(_one_execution, flow)


def parallel(n: int) -> dict[str, Any]:
    flow = af.Flow(id="par", namespace="bench", tasks=[
        af.Parallel(id="all", tasks=[noop(f"t{i}") for i in range(n)]),
    ])  # fmt: skip
    return anyio.run(_one_execution, flow)


def dag(n: int) -> dict[str, Any]:
    nodes = [af.DagTask(task=noop(f"t{i}"), depends_on=[f"t{i - 1}"][:i]) for i in range(n)]
    flow = af.Flow(id="dag", namespace="bench", tasks=[af.Dag(id="chain", nodes=nodes)])
    return anyio.run(_one_execution, flow)


def outputs(size: int, executions: int = 300) -> dict[str, Any]:
    @af.task
    async def produce(ctx: af.TaskContext) -> dict[str, str]:
        return {"data": "x" * size}  # a new string each time, as real outputs are

    flow = af.Flow(id="out", namespace="bench", tasks=[produce("t")])

    async def main() -> dict[str, Any]:
        async with af.Runtime.open(str(tmpdb())) as rt:
            gc.collect()
            base = _rss_mb()
            start = time.perf_counter()
            for _ in range(executions):
                assert (await rt.run(flow)).state is af.State.SUCCESS
            elapsed = time.perf_counter() - start
            gc.collect()
            left = _rss_mb() - base
        return {"us_per_execution": elapsed / executions * 1e6, "rss": peak_rss_mb(),
                "rss_left_mb": left}  # fmt: skip

    return anyio.run(main)


def live(n: int) -> dict[str, Any]:
    """Bytes per live task run: N tasks of one Parallel, all started, all waiting."""
    started = 0
    release: asyncio.Event | None = None
    all_in: asyncio.Event | None = None

    @af.task
    async def hold(ctx: af.TaskContext) -> None:
        nonlocal started
        assert release is not None and all_in is not None
        started += 1
        if started == n:
            all_in.set()
        await release.wait()

    flow = af.Flow(id="live", namespace="bench", tasks=[
        af.Parallel(id="all", tasks=[hold(f"t{i}") for i in range(n)]),
    ])  # fmt: skip

    async def main() -> dict[str, Any]:
        nonlocal release, all_in
        release, all_in = asyncio.Event(), asyncio.Event()
        async with af.Runtime.open(":memory:") as rt:
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            handle = await rt.submit(flow)
            await all_in.wait()
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            release.set()
            ex = await handle.wait()
        return {"state": ex.state.value, "bytes_per_live_task_run": held / n, "rss": peak_rss_mb()}

    return anyio.run(main)


def lag(executions: int) -> dict[str, Any]:
    flow = af.Flow(id="c5", namespace="bench", tasks=[noop(f"t{i}") for i in range(5)])

    async def main() -> dict[str, Any]:
        lags: list[float] = []
        done = False

        async def ticker() -> None:
            while not done:
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t - 0.005)

        async with af.Runtime.open(":memory:", max_queued=None) as rt:
            await asyncio.gather(*(rt.run(flow) for _ in range(100)))  # warm-up
            gc.collect()
            tick = asyncio.ensure_future(ticker())
            with GcMeter() as meter:
                cpu, start = time.process_time(), time.perf_counter()
                results = await asyncio.gather(*(rt.run(flow) for _ in range(executions)))
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            done = True
            await tick
        assert all(ex.state is af.State.SUCCESS for ex in results)
        q = statistics.quantiles(lags, n=100, method="inclusive") if len(lags) > 1 else [0.0] * 99
        return {"us_per_task_run": elapsed / (executions * 5) * 1e6,
                "main_process_us": cpu / (executions * 5) * 1e6, "lag_p99_ms": q[98] * 1e3,
                "lag_max_ms": max(lags, default=0.0) * 1e3, "gc_share": meter.total / elapsed,
                "gc_longest_full_ms": meter.longest_full * 1e3,
                "gc_full_passes": meter.full_passes, "rss": peak_rss_mb()}  # fmt: skip

    return anyio.run(main)


WORKLOADS: dict[str, Any] = {"foreach": foreach, "parallel": parallel, "dag": dag,
                             "outputs": outputs, "live": live, "lag": lag}  # fmt: skip


def isolated(name: str, *args: int) -> dict[str, Any]:
    """One workload in a fresh interpreter; ``{"error": ...}`` if it failed or took too long."""
    cmd = [sys.executable, "-m", "benchmarks.growth", name, *map(str, args)]
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {LIMIT_S:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {out.returncode}: {last[:200]}"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result.get("state", "SUCCESS") != "SUCCESS":
        return {"error": f"ended {result['state']}"}
    return result


def median_run(reps: int, name: str, *args: int) -> dict[str, Any]:
    """The median of each figure over ``reps`` runs, and every run under ``"runs"`` (the
    first error, if one failed)."""
    runs: list[dict[str, Any]] = []
    for _ in range(reps):
        runs.append(isolated(name, *args))
        if "error" in runs[-1]:
            return runs[-1]  # no use waiting for the same failure again
    return {**{k: statistics.median(r[k] for r in runs) for k in runs[0]}, "runs": runs}


def run(quick: bool = False) -> list[dict[str, Any]]:
    reps = 1 if quick else 3
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    rows: list[dict[str, Any]] = []

    def add(metric: str, r: dict[str, Any], key: str, unit: str, **extra: str) -> None:
        if "error" in r:
            rows.append(row("growth", metric, float("nan"), None, unit, note=r["error"]))
            return
        rest = {k: v for k, v in r.items() if k not in (key, "runs")}
        rows.append(row("growth", metric, r[key], None, unit, higher_is_better=False,
                        spread=spread([x[key] for x in r["runs"]]), runs=len(r["runs"]),
                        **rest, **extra))  # fmt: skip

    for n in sizes:
        add(f"ForEach of {n:,} values, concurrency 10", median_run(reps, "foreach", n, 10),
            "us_per_task_run", "µs/task run")  # fmt: skip
    for n in sizes:
        add(f"ForEach of {n:,} values, unlimited", median_run(reps, "foreach", n, 0),
            "us_per_task_run", "µs/task run")  # fmt: skip
    for n in sizes:
        add(f"Parallel of {n:,} tasks, unlimited", median_run(reps, "parallel", n),
            "us_per_task_run", "µs/task run")  # fmt: skip
    for n in (1_000, 3_000):
        add(f"Dag chain of {n:,} nodes", median_run(reps, "dag", n), "us_per_task_run",
            "µs/task run")  # fmt: skip
    for size, label in ((1_000, "1 KB"), (100_000, "100 KB"), (1_000_000, "1 MB")):
        r = median_run(reps, "outputs", size, 100 if quick else 300)
        add(f"outputs of {label}, SQLite: per execution", r, "us_per_execution", "µs")
    n = 10_000 if quick else 100_000
    # One run: tracemalloc's count is deterministic (three runs agreed to 1 byte in 6,166),
    # and a run at 100,000 takes 30 s.
    add(f"bytes per live task run ({n:,}-task fan-out)", median_run(1, "live", n),
        "bytes_per_live_task_run", "bytes")  # fmt: skip
    for m in sizes:
        # One set of runs for both rows: the cost per task run and the lag the host sees.
        r = median_run(reps, "lag", m)
        add(f"{m:,} concurrent executions x 5 tasks, memory: per task run", r,
            "us_per_task_run", "µs/task run")  # fmt: skip
        add(f"{m:,} concurrent executions x 5: loop lag p99", r, "lag_p99_ms", "ms")
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in WORKLOADS:
        print(json.dumps(WORKLOADS[sys.argv[1]](*map(int, sys.argv[2:]))))
    else:
        from benchmarks.__main__ import print_table

        result = run(quick="--quick" in sys.argv)
        print_table(result)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "growth.json").write_text(json.dumps(result, indent=2))
