"""Engine workloads of issue 7, each beside the bare-asyncio limit measured in the same run.

2. one execution of N sequential no-op tasks: in memory, and on SQLite with every transition
   persisted, tracing off and on; limit: N no-op tasks awaited one after another.
3. C concurrent executions of a 5-task flow on SQLite: task runs/s, p50/p99 submit-to-terminal,
   peak RSS; limit: C coroutines each awaiting 5 no-op tasks, gathered.
4. E executions submitted at once on SQLite: it must finish with bounded memory and
   backpressure (admission parks what exceeds ``max_active``; ``submit`` waits beyond
   ``max_queued``); peak RSS, the largest parked / running counts seen; bytes per idle (paused)
   execution; limit: E gathered coroutines of 2 no-op tasks each.
5. retry overhead: a task failing twice then succeeding vs one succeeding at once; limit: the
   same three calls with try/except.

Workloads 3 and 4 run in a subprocess each (ours and the limit separately), so each peak RSS
is that workload's own. Workload 6 (crash recovery) is in ``benchmarks/persistence.py``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import actorflow as af
from benchmarks._common import (
    Window,
    cpu_us,
    median_of,
    noop,
    row,
    seq_flow,
    spread,
    tmpdb,
    writer_pid,
)

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent


class _Discard(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _provider() -> TracerProvider:
    p = TracerProvider()
    # A queue big enough that nothing is dropped at these rates (the default holds 2,048).
    p.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=1 << 16))
    return p


# -- 2: sequential ------------------------------------------------------------------------------
async def seq_run(path: str, n: int, tracing: Any = None) -> dict[str, float]:
    """One execution of ``n`` sequential tasks: a :class:`Window` result."""
    flow = seq_flow(n)
    async with af.Runtime.open(path, tracing=tracing) as rt:
        with Window(writer_pid(rt)) as w:  # collects the previous run's garbage first
            ex = await rt.run(flow)
    assert ex.state is af.State.SUCCESS
    return w.result


async def bare_seq(n: int) -> float:
    async def task() -> None:
        return None

    gc.collect()  # the previous run's garbage is not this run's cost

    start = time.perf_counter()
    for _ in range(n):
        await asyncio.ensure_future(task())
    return n / (time.perf_counter() - start)


# -- 5: retries ---------------------------------------------------------------------------------
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
            gc.collect()  # the previous run's garbage is not this run's cost
            start = time.perf_counter()
            for _ in range(n):
                assert (await rt.run(f)).state is af.State.SUCCESS
            out.append((time.perf_counter() - start) / n * 1e3)
    return out[0], out[1]


async def bare_retry(n: int) -> float:
    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts % 3:
            raise ConnectionError("flaky")

    gc.collect()  # the previous run's garbage is not this run's cost

    start = time.perf_counter()
    for _ in range(n):
        for _attempt in range(3):
            try:
                await asyncio.ensure_future(flaky())
                break
            except ConnectionError:
                continue
    return (time.perf_counter() - start) / n * 1e3


# -- isolated runs ----------------------------------------------------------------------------
def isolated(name: str, quick: bool) -> dict[str, float]:
    """Run one workload in a fresh interpreter; its peak RSS is its own."""
    args = [sys.executable, "-m", "benchmarks._isolated", name, *(["--quick"] * quick)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool = False) -> list[dict[str, Any]]:
    seq_n = 300 if quick else 1000
    reps = 1 if quick else 5
    rows: list[dict[str, Any]] = []

    def med(fn: Any, *args: Any) -> float:
        return median_of([anyio.run(fn, *args) for _ in range(reps)])

    def seq(path: Any, tracing: Any = None) -> tuple[float, dict[str, Any]]:
        """Median rate of ``reps`` fresh runs, and the columns of its row (CPU, spread)."""
        runs = [anyio.run(seq_run, path() if callable(path) else path, seq_n, tracing)
                for _ in range(reps)]  # fmt: skip
        rate = median_of([seq_n / r["seconds"] for r in runs])
        med_run = {k: median_of([r[k] for r in runs]) for k in runs[0]}
        return rate, {**cpu_us(med_run, seq_n), "per_task_run_us": 1e6 / rate,
                      "spread": spread([seq_n / r["seconds"] for r in runs]),
                      "runs": reps}  # fmt: skip

    # Warm-up of every path measured below: imports, first-time caches, and CPython's
    # specializing interpreter, which takes a few thousand calls to settle on the storage path.
    for _ in range(3):
        anyio.run(seq_run, ":memory:", seq_n)
        anyio.run(seq_run, str(tmpdb()), seq_n)
    anyio.run(seq_run, str(tmpdb()), seq_n, _provider())
    bare = med(bare_seq, seq_n)
    mem, cols = seq(":memory:")
    rows.append(row("engine", f"(2) {seq_n} sequential tasks, memory store", mem, bare,
                    "task runs/s", engine_overhead_us=1e6 / mem - 1e6 / bare,
                    **cols))  # fmt: skip
    rows.append(row("engine", "(2) engine overhead per task run, memory store",
                    1e6 / mem - 1e6 / bare, None, "µs", higher_is_better=False,
                    note="our time per task run minus the bare-asyncio limit's"))  # fmt: skip
    disk, cols = seq(lambda: str(tmpdb()))
    rows.append(row("engine", f"(2) {seq_n} sequential tasks, SQLite, tracing off", disk, bare,
                    "task runs/s", **cols))  # fmt: skip
    traced, cols = seq(lambda: str(tmpdb()), _provider())
    rows.append(row("engine", f"(2) {seq_n} sequential tasks, SQLite, tracing on", traced, bare,
                    "task runs/s", vs_tracing_off=traced / disk, **cols))  # fmt: skip

    conc = 1_000 if quick else 10_000
    # One run, for its latency quantiles and peak RSS: the rate of this workload, median of
    # three beside the naive durable loop's, is benchmarks/durable.py's row (3).
    runs = [isolated("concurrent", quick)]
    ours, limit = runs[0], isolated("bare_concurrent", quick)
    rows.append(row("engine", f"(3) {conc:,} concurrent executions x 5 tasks, SQLite",
                    ours["rate"], limit["rate"], "task runs/s", peak_rss_mb=ours["rss"],
                    baseline_peak_rss_mb=limit["rss"], main_process_us=ours["main_process_us"],
                    writer_process_us=ours["writer_process_us"],
                    spread=spread([r["rate"] for r in runs]), runs=len(runs)))  # fmt: skip
    for q in ("p50", "p99"):
        rows.append(row("engine", f"(3) submit-to-terminal {q}", ours[q] * 1e3, limit[q] * 1e3,
                        "ms", higher_is_better=False))  # fmt: skip

    many = 10_000 if quick else 100_000
    ours, limit = isolated("flood", quick), isolated("bare_flood", quick)
    rows.append(row("engine", f"(4) {many:,} executions submitted at once, SQLite: peak RSS",
                    ours["rss"], limit["rss"], "MiB", higher_is_better=False,
                    seconds=ours["seconds"], task_runs_per_s=ours["rate"],
                    max_parked=ours["max_parked"], max_running=ours["max_running"],
                    max_waiting_submitters=ours["max_waiting_submitters"]))  # fmt: skip
    idle = isolated("idle", quick)
    rows.append(row("engine", "(4) bytes per idle (paused) execution", idle["bytes_per_idle"],
                    None, "bytes", higher_is_better=False))  # fmt: skip

    n = 20 if quick else 200
    flaky_ms, plain_ms = anyio.run(retry_cost, str(tmpdb()), n)
    rows.append(row("engine", "(5) fails twice then succeeds, per execution", flaky_ms,
                    anyio.run(bare_retry, n), "ms", higher_is_better=False,
                    succeeds_at_once_ms=plain_ms,
                    retry_overhead_ms=flaky_ms - plain_ms))  # fmt: skip
    return rows


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine.json").write_text(json.dumps(result, indent=2))
