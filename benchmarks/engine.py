"""Engine workloads of issue 7, each beside a bare-asyncio figure measured in the same run.

2. one execution of N sequential no-op tasks: SQLite with tracing off and on, memory;
   baseline: the same N no-op coroutines awaited one after another, each in its own task.
3. C concurrent executions of a 5-task flow: task runs/s, p50/p99 submit-to-terminal, peak RSS.
4. E executions submitted at once: completes with bounded memory; peak RSS, bytes per
   idle (paused) execution.
5. retry overhead: a task failing twice then succeeding vs a task succeeding at once.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import actorflow as af
from benchmarks._common import noop, peak_rss_mb, row, seq_flow, tmpdb

RESULTS = Path(__file__).parent / "results"


class _Discard(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _provider() -> TracerProvider:
    p = TracerProvider()
    p.add_span_processor(BatchSpanProcessor(_Discard()))
    return p


async def seq_rate(path: str, n: int, tracing: Any = None) -> float:
    async with af.Runtime.open(path, tracing=tracing) as rt:
        start = time.perf_counter()
        ex = await rt.run(seq_flow(n))
        elapsed = time.perf_counter() - start
    assert ex.state is af.State.SUCCESS
    return n / elapsed


async def bare_seq(n: int) -> float:
    async def task() -> None:
        return None

    start = time.perf_counter()
    for _ in range(n):
        await asyncio.ensure_future(task())
    return n / (time.perf_counter() - start)


async def concurrent(path: str, executions: int) -> dict[str, float]:
    flow = af.Flow(id="five", namespace="bench", tasks=[noop(f"t{i}") for i in range(5)])
    latencies: list[float] = []

    async def one(rt: af.Runtime, limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            t = time.perf_counter()
            ex = await rt.run(flow)
            latencies.append(time.perf_counter() - t)
            assert ex.state is af.State.SUCCESS

    async with af.Runtime.open(path) as rt:
        limiter = anyio.CapacityLimiter(executions)
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(executions):
                tg.start_soon(one, rt, limiter)
        elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {"rate": executions * 5 / elapsed, "p50": q[49], "p99": q[98]}


async def bare_concurrent(executions: int) -> float:
    async def five() -> None:
        for _ in range(5):
            await asyncio.ensure_future(asyncio.sleep(0))

    start = time.perf_counter()
    await asyncio.gather(*(five() for _ in range(executions)))
    return executions * 5 / (time.perf_counter() - start)


async def idle_executions(n: int) -> dict[str, float]:
    """n paused executions held in memory: bytes each (tracemalloc) and the peak RSS."""
    flow = af.Flow(id="idle", namespace="bench", tasks=[af.Pause(id="wait"), noop("after")])
    async with af.Runtime.open(":memory:") as rt:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        handles = [await rt.submit(flow) for _ in range(n)]
        for h in handles:
            await rt.wait_for(h.id, af.State.PAUSED)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        for h in handles:
            await rt.resume(h.id)
        for h in handles:
            await h.wait()
        elapsed = time.perf_counter() - start
    return {"bytes_per_idle": held / n, "seconds": elapsed}


async def retry_cost(path: str, n: int) -> tuple[float, float]:
    @af.task(retry=af.Retry.constant(0, max_attempts=3))
    async def twice(ctx: af.TaskContext) -> None:
        if ctx.attempt < 3:
            raise ConnectionError("flaky")

    flaky = af.Flow(id="retry", namespace="bench", tasks=[twice("t")])
    plain = af.Flow(id="plain", namespace="bench", tasks=[noop("t")])
    async with af.Runtime.open(path) as rt:
        out = []
        for f in (flaky, plain):
            start = time.perf_counter()
            for _ in range(n):
                await rt.run(f)
            out.append((time.perf_counter() - start) / n * 1e3)
    return out[0], out[1]


def run(quick: bool = False) -> list[dict[str, Any]]:
    seq_n = 300 if quick else 1000
    conc = 500 if quick else 10_000
    idle = 2_000 if quick else 100_000
    rows: list[dict[str, Any]] = []
    bare = anyio.run(bare_seq, seq_n)
    mem = anyio.run(seq_rate, ":memory:", seq_n)
    rows.append(row("engine", f"(2) {seq_n} sequential tasks, memory store", mem, bare,
                    "task runs/s", per_task_run_us=1e6 / mem))  # fmt: skip
    disk = anyio.run(seq_rate, str(tmpdb()), seq_n)
    rows.append(row("engine", f"(2) {seq_n} sequential tasks, SQLite, tracing off", disk, bare,
                    "task runs/s"))  # fmt: skip
    traced = anyio.run(seq_rate, str(tmpdb()), seq_n, _provider())
    rows.append(row("engine", f"(2) {seq_n} sequential tasks, SQLite, tracing on", traced, disk,
                    "task runs/s", note="baseline = tracing off"))  # fmt: skip
    res = anyio.run(concurrent, str(tmpdb()), conc)
    bare_c = anyio.run(bare_concurrent, conc)
    rows.append(row("engine", f"(3) {conc} concurrent executions x 5 tasks, SQLite", res["rate"],
                    bare_c, "task runs/s", peak_rss_mb=peak_rss_mb()))  # fmt: skip
    rows.append(row("engine", "(3) submit-to-terminal p50", res["p50"] * 1e3, None, "ms",
                    higher_is_better=False))  # fmt: skip
    rows.append(row("engine", "(3) submit-to-terminal p99", res["p99"] * 1e3, None, "ms",
                    higher_is_better=False))  # fmt: skip
    idle_res = anyio.run(idle_executions, idle)
    rows.append(row("engine", f"(4) {idle} paused executions held, memory store",
                    idle_res["bytes_per_idle"], None, "bytes/execution", higher_is_better=False,
                    peak_rss_mb=peak_rss_mb(), seconds=idle_res["seconds"]))  # fmt: skip
    flaky_ms, plain_ms = anyio.run(retry_cost, str(tmpdb()), 20 if quick else 100)
    rows.append(row("engine", "(5) fails twice then succeeds vs succeeds at once", flaky_ms,
                    plain_ms, "ms/execution", higher_is_better=False))  # fmt: skip
    return rows


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine.json").write_text(json.dumps(result, indent=2))
