"""Cost of durability (issue 4): task runs/s with every transition persisted vs in memory.

(a) one execution of 1,000 sequential no-op tasks; (b) 1,000 concurrent executions of 10 tasks;
(c) recovery time for 10,000 unfinished (paused) executions.
Each beside a no-persistence run of the same workload in the same process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import actorflow as af
from benchmarks._common import median_of, noop, row, seq_flow, tmpdb

RESULTS = Path(__file__).parent / "results"


async def _seq(path: str, n: int) -> float:
    flow = seq_flow(n)
    async with af.Runtime.open(path) as rt:
        start = time.perf_counter()
        ex = await rt.run(flow)
        elapsed = time.perf_counter() - start
    assert ex.state is af.State.SUCCESS, ex.state
    return n / elapsed


async def _concurrent(path: str, executions: int, tasks: int) -> float:
    flow = af.Flow(id=f"c{tasks}", namespace="bench", tasks=[noop(f"t{i}") for i in range(tasks)])

    async def one(rt: af.Runtime) -> None:
        ex = await rt.run(flow)
        assert ex.state is af.State.SUCCESS

    async with af.Runtime.open(path) as rt:
        start = time.perf_counter()
        # Concurrent callers, as in a service: submits share group commits.
        async with anyio.create_task_group() as tg:
            for _ in range(executions):
                tg.start_soon(one, rt)
        elapsed = time.perf_counter() - start
    return executions * tasks / elapsed


async def _recovery(n: int) -> tuple[float, float]:
    """Seconds to reopen a database with ``n`` paused executions and have them all live."""
    path = str(tmpdb())
    flow = af.Flow(id="paused", namespace="bench", tasks=[af.Pause(id="wait"), noop("after")])
    async with af.Runtime.open(path, flows=[flow]) as rt:
        handles = [await rt.submit(flow) for _ in range(n)]
        for h in handles:
            await rt.wait_for(h.id, af.State.PAUSED)
    start = time.perf_counter()
    async with af.Runtime.open(path, flows=[flow]) as rt:
        opened = time.perf_counter() - start
        live = len(rt.engine.live)
    assert live == n, f"recovered {live} of {n}"
    return opened, n / opened


def run(quick: bool = False) -> list[dict[str, Any]]:
    seq_n = 300 if quick else 1000
    conc = (200, 10) if quick else (1000, 10)
    rec_n = 1000 if quick else 10_000
    reps = 1 if quick else 3
    rows: list[dict[str, Any]] = []

    def med(fn: Any, *args: Any) -> float:
        return median_of([anyio.run(fn, *args) for _ in range(reps)])

    mem = med(_seq, ":memory:", seq_n)
    disk = med(lambda: _seq(str(tmpdb()), seq_n))
    rows.append(row("persistence", f"(a) {seq_n} sequential tasks, sqlite vs memory",
                    disk, mem, "task runs/s"))  # fmt: skip
    mem = med(_concurrent, ":memory:", *conc)
    disk = med(lambda: _concurrent(str(tmpdb()), *conc))
    rows.append(row("persistence", f"(b) {conc[0]} executions x {conc[1]} tasks, sqlite vs memory",
                    disk, mem, "task runs/s"))  # fmt: skip
    seconds, rate = anyio.run(_recovery, rec_n)
    rows.append(row("persistence", f"(c) recover {rec_n} unfinished executions", seconds, None, "s",
                    higher_is_better=False, executions_per_s=rate))  # fmt: skip
    return rows


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "persistence.json").write_text(json.dumps(result, indent=2))
