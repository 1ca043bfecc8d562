"""Workloads 3 and 4 of ``benchmarks/engine.py``, one per fresh interpreter.

``python -m benchmarks._isolated NAME [--quick]`` prints one JSON line. Run this way, each peak
RSS is the workload's own, and the interpreter holds only what the workload imports (no
OpenTelemetry SDK whose objects every collector pass would walk too).
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
import tracemalloc

import anyio

import actorflow as af
from benchmarks._common import Window, cpu_us, noop, peak_rss_mb, tmpdb, writer_pid


# -- 3: concurrent executions -------------------------------------------------------------------
async def concurrent(path: str, executions: int, tasks: int = 5) -> dict[str, float]:
    """``executions`` of a ``tasks``-task flow run by as many concurrent callers (as in a
    service: their submits share group commits); rate, latency quantiles, peak RSS."""
    flow = af.Flow(id=f"c{tasks}", namespace="bench", tasks=[noop(f"t{i}") for i in range(tasks)])
    latencies: list[float] = []

    async def one(rt: af.Runtime) -> None:
        t = time.perf_counter()
        ex = await rt.run(flow)
        latencies.append(time.perf_counter() - t)
        assert ex.state is af.State.SUCCESS

    async with af.Runtime.open(path) as rt:
        with Window(writer_pid(rt)) as w:  # collects the previous run's garbage first
            await asyncio.gather(*(one(rt) for _ in range(executions)))
    q = statistics.quantiles(latencies, n=100)
    return {"rate": executions * tasks / w.result["seconds"], "p50": q[49], "p99": q[98],
            "rss": peak_rss_mb(), **cpu_us(w.result, executions * tasks)}  # fmt: skip


async def bare_concurrent(executions: int, steps: int = 5) -> dict[str, float]:
    latencies: list[float] = []

    async def step() -> None:
        return None

    async def one() -> None:
        t = time.perf_counter()
        for _ in range(steps):
            await asyncio.ensure_future(step())
        latencies.append(time.perf_counter() - t)

    gc.collect()  # the previous run's garbage is not this run's cost

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(executions)))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {"rate": executions * steps / elapsed, "p50": q[49], "p99": q[98],
            "rss": peak_rss_mb()}  # fmt: skip


# -- 4: many at once ----------------------------------------------------------------------------
async def flood(path: str, executions: int) -> dict[str, float]:
    """``executions`` submitted at once by as many callers; each waits for its end."""
    flow = af.Flow(id="two", namespace="bench", tasks=[noop("a"), noop("b")])
    seen = {"parked": 0, "running": 0, "waiting": 0}
    async with af.Runtime.open(path) as rt:
        engine = rt.engine
        submitted = 0

        async def one() -> None:
            nonlocal submitted
            handle = await rt.submit(flow)
            submitted += 1
            ex = await handle.wait()
            assert ex.state is af.State.SUCCESS

        async def watch() -> None:
            while True:
                seen["parked"] = max(seen["parked"], len(engine.admission.parked))
                seen["running"] = max(seen["running"], len(engine.live))
                seen["waiting"] = max(seen["waiting"], executions - submitted)
                await asyncio.sleep(0.05)

        watcher = asyncio.ensure_future(watch())
        gc.collect()  # the previous run's garbage is not this run's cost
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(executions)))
        elapsed = time.perf_counter() - start
        watcher.cancel()
    return {"rate": executions * 2 / elapsed, "seconds": elapsed, "rss": peak_rss_mb(),
            "max_parked": seen["parked"], "max_running": seen["running"],
            "max_waiting_submitters": seen["waiting"]}  # fmt: skip


async def idle_executions(path: str, n: int) -> dict[str, float]:
    """``n`` paused executions held: bytes each (tracemalloc), then all resumed to the end."""
    flow = af.Flow(id="idle", namespace="bench", tasks=[af.Pause(id="wait"), noop("after")])
    async with af.Runtime.open(path) as rt:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        handles = [await rt.submit(flow) for _ in range(n)]
        for h in handles:
            await rt.wait_for(h.id, af.State.PAUSED)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        for h in handles:
            await rt.resume(h.id)
        for h in handles:
            assert (await h.wait()).state is af.State.SUCCESS
    return {"bytes_per_idle": held / n, "rss": peak_rss_mb()}


def _one(name: str, quick: bool) -> dict[str, float]:
    """One workload in this process (the subprocess side)."""
    conc = 1_000 if quick else 10_000
    many = 10_000 if quick else 100_000
    # A per-execution figure, the same at 3,000 as at 10,000 (7.8 KB); 10,000 under
    # tracemalloc took 35 s of `make bench`.
    idle = 1_000 if quick else 3_000
    if name == "concurrent":
        anyio.run(concurrent, str(tmpdb()), conc // 10)  # warm-up: a fresh interpreter
        return anyio.run(concurrent, str(tmpdb()), conc)
    if name == "bare_concurrent":
        anyio.run(bare_concurrent, conc // 10)
        return anyio.run(bare_concurrent, conc)
    if name == "flood":
        return anyio.run(flood, str(tmpdb()), many)
    if name == "bare_flood":
        return anyio.run(bare_concurrent, many, 2)
    if name == "idle":
        return anyio.run(idle_executions, str(tmpdb()), idle)
    raise ValueError(name)


if __name__ == "__main__":
    print(json.dumps(_one(sys.argv[1], "--quick" in sys.argv)))
