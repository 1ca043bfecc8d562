"""Cost of durability (issue 4): task runs/s with every transition persisted vs in memory.

(a) one execution of 1,000 sequential no-op tasks; (b) 1,000 concurrent executions of 10 tasks;
(c) recovery time for 10,000 unfinished (paused) executions (issue 7's workload 6), beside
the floor of reading and decoding the same rows.
(a) and (b) beside a no-persistence run of the same workload in the same process.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import actorflow as af
from actorflow.runtime._core._persist import decode_execution, decode_task_run
from actorflow.storage import SQLiteStore
from benchmarks._common import median_of, noop, row, seq_flow, spread, tmpdb
from benchmarks._isolated import concurrent

RESULTS = Path(__file__).parent / "results"


async def _seq(path: str, n: int) -> float:
    flow = seq_flow(n)
    async with af.Runtime.open(path) as rt:
        gc.collect()  # the previous run's garbage is not this run's cost
        start = time.perf_counter()
        ex = await rt.run(flow)
        elapsed = time.perf_counter() - start
    assert ex.state is af.State.SUCCESS, ex.state
    return n / elapsed


async def _concurrent(path: str, executions: int, tasks: int) -> float:
    return (await concurrent(path, executions, tasks))["rate"]


async def _recovery(n: int) -> tuple[float, float, float]:
    """Seconds to reopen a database with ``n`` paused executions and have them all live; and
    the floor: reading and decoding the same rows, nothing else."""
    path = str(tmpdb())
    flow = af.Flow(id="paused", namespace="bench", tasks=[af.Pause(id="wait"), noop("after")])
    async with af.Runtime.open(path, flows=[flow]) as rt:
        handles = [await rt.submit(flow) for _ in range(n)]
        for h in handles:
            await rt.wait_for(h.id, af.State.PAUSED)
    gc.collect()  # the previous run's garbage is not this run's cost
    start = time.perf_counter()
    async with af.Runtime.open(path, flows=[flow]) as rt:
        opened = time.perf_counter() - start
        live = len(rt.engine.live)
    assert live == n, f"recovered {live} of {n}"
    gc.collect()  # the previous run's garbage is not this run's cost
    start = time.perf_counter()
    async with SQLiteStore(path) as store:
        rows = await store.unfinished_executions(["SUCCESS"])
        runs = await store.task_runs_of([r.id for r in rows])
        decoded = [decode_execution(r.data) for r in rows]
        decoded_runs = [decode_task_run(t.data) for ts in runs.values() for t in ts]
    floor = time.perf_counter() - start
    assert len(decoded) == n and len(decoded_runs) == n
    return opened, n / opened, floor


def run(quick: bool = False) -> list[dict[str, Any]]:
    seq_n = 300 if quick else 1000
    conc = (200, 10) if quick else (1000, 10)
    rec_n = 1000 if quick else 10_000
    reps = 1 if quick else 3
    rows: list[dict[str, Any]] = []
    for _ in range(3):  # warm-up: imports, caches, CPython's specializing interpreter
        anyio.run(_seq, ":memory:", seq_n)
        anyio.run(_seq, str(tmpdb()), seq_n)

    def pair(fn: Any, *args: Any) -> tuple[float, float, dict[str, Any]]:
        """Medians of memory and SQLite runs, interleaved so drift hits both alike."""
        mem, disk = [], []
        for _ in range(reps):
            mem.append(anyio.run(fn, ":memory:", *args))
            disk.append(anyio.run(fn, str(tmpdb()), *args))
        return median_of(mem), median_of(disk), {"spread": spread(disk), "runs": reps,
                                                 "memory_spread": spread(mem)}  # fmt: skip

    mem, disk, extra = pair(_seq, seq_n)
    rows.append(row("persistence", f"(a) {seq_n} sequential tasks, sqlite vs memory",
                    disk, mem, "task runs/s", **extra))  # fmt: skip
    mem, disk, extra = pair(_concurrent, *conc)
    rows.append(row("persistence", f"(b) {conc[0]} executions x {conc[1]} tasks, sqlite vs memory",
                    disk, mem, "task runs/s", **extra))  # fmt: skip
    seconds, rate, floor = anyio.run(_recovery, rec_n)
    rows.append(row("persistence", f"(c) / (6) recover {rec_n:,} unfinished executions", seconds,
                    floor, "s", higher_is_better=False, executions_per_s=rate,
                    note="baseline = reading and decoding the same rows"))  # fmt: skip
    return rows


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "persistence.json").write_text(json.dumps(result, indent=2))
