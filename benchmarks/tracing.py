"""What tracing costs: task runs/s with tracing off, on, and on for executions not sampled.

Workloads:

* ``seq on SQLite``: workload 2 of ``benchmarks/engine.py``, one execution of 1,000 sequential
  no-op tasks with every transition persisted (the target: tracing on costs at most 25% of
  tracing off, i.e. runs at 0.8x or better);
* ``seq``: the same in memory, so the figure is the engine's and the tracer's alone;
* ``concurrent``: 1,000 executions of a 5-task flow submitted at once, in memory.

"on": an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` feeding an exporter that drops
everything; two spans per task run (task run + attempt) plus one per execution, every state
change an event, every duration stored. "unsampled": the SDK's parent-based sampler with an
always-off root, i.e. the executions a sampler drops (90% of them at a 10% ratio): one
non-recording span per execution, none per task run, durations still stored. A sampled
workload costs about ``ratio * on + (1 - ratio) * unsampled``. The ``vs off`` column is the
median of the per-round ratios x / off (each round runs every mode once, back to back, so a
busy spell of the machine hits a round's modes alike: steadier than a ratio of medians);
``+us/run`` is the extra time per task run against tracing off, ``cpu us/run`` this process's
CPU time per task run (its threads included; steadier than wall time on a busy machine, but
the SQLite writer process is not in it) and ``+cpu us`` its extra against tracing off. Modes
are interleaved in one process and medians of the repeats are reported; the closing lines say
what tracing on costs against off on SQLite and in memory (the target: at most 25%).

Run: ``python -m benchmarks.tracing [--quick] [--repeats N]``.
"""

from __future__ import annotations

import functools
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

import actorflow as af
from benchmarks._common import noop, seq_flow, tmpdb

RESULTS = Path(__file__).parent / "results"
MODES = ("off", "on", "unsampled")
TARGET = 0.8  # tracing on costs at most 25% of tracing off


class _Discard(SpanExporter):
    """Counts spans and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _tracing(mode: str) -> tuple[Any, _Discard | None]:
    if mode == "off":
        return False, None
    exporter = _Discard()
    sampler = ParentBased(ALWAYS_OFF) if mode == "unsampled" else None
    provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536))
    return provider, exporter


async def seq(n: int, mode: str, path: str = ":memory:") -> tuple[float, int, float]:
    """Task runs/s of one execution of ``n`` sequential tasks; spans exported."""
    tracing, exporter = _tracing(mode)
    flow = seq_flow(n)
    async with af.Runtime.open(path, tracing=tracing) as rt:
        gc.collect()  # the previous run's garbage is not this run's cost
        cpu, start = time.process_time(), time.perf_counter()
        ex = await rt.run(flow)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert ex.state is af.State.SUCCESS
    if isinstance(tracing, TracerProvider):
        tracing.shutdown()
    return n / elapsed, exporter.spans if exporter else 0, cpu / n * 1e6


async def concurrent(executions: int, mode: str) -> tuple[float, int, float]:
    """Task runs/s of ``executions`` 5-task executions submitted at once; spans exported."""
    tracing, exporter = _tracing(mode)
    flow = af.Flow(id="five", namespace="bench", tasks=[noop(f"t{i}") for i in range(5)])
    async with af.Runtime.open(":memory:", tracing=tracing) as rt:

        async def one() -> None:
            ex = await rt.run(flow)
            assert ex.state is af.State.SUCCESS

        gc.collect()
        cpu, start = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(executions):
                tg.start_soon(one)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if isinstance(tracing, TracerProvider):
        tracing.shutdown()
    return executions * 5 / elapsed, exporter.spans if exporter else 0, cpu / executions / 5 * 1e6


async def seq_sqlite(n: int, mode: str) -> tuple[float, int, float]:
    """:func:`seq` on a fresh SQLite database."""
    return await seq(n, mode, str(tmpdb()))


async def _measure(quick: bool, repeats: int | None) -> list[dict[str, Any]]:
    n = 200 if quick else 1000
    execs = 200 if quick else 1000
    repeats = repeats or (1 if quick else 5)
    rows: list[dict[str, Any]] = []
    workloads: list[tuple[str, int, Callable[[str], Awaitable[tuple[float, int, float]]]]] = [
        (f"seq {n} tasks on SQLite", n, functools.partial(seq_sqlite, n)),
        (f"seq {n} tasks in memory", n, functools.partial(seq, n)),
        (f"{execs} concurrent 5-task executions", execs * 5, functools.partial(concurrent, execs)),
    ]
    for name, task_runs, fn in workloads:
        await fn("off")  # warm-up: imports, first-time caches
        results: dict[str, list[tuple[float, int, float]]] = {m: [] for m in MODES}
        for _ in range(repeats):  # modes interleaved, so drift hits them alike
            for mode in MODES:
                results[mode].append(await fn(mode))
        rates = {m: statistics.median(r[0] for r in results[m]) for m in MODES}
        paired = {
            m: statistics.median(
                r[0] / o[0] for r, o in zip(results[m], results["off"], strict=True)
            )
            for m in MODES
        }
        spans = {m: max(r[1] for r in results[m]) for m in MODES}
        cpus = {m: statistics.median(r[2] for r in results[m]) for m in MODES}
        for mode in MODES:
            rows.append(
                {
                    "benchmark": "tracing",
                    "metric": f"{name}, tracing {mode}",
                    "ours": rates[mode],
                    "baseline": rates["off"] if mode != "off" else None,
                    "ratio": paired[mode] if mode != "off" else None,
                    "ratio_of_medians": rates[mode] / rates["off"] if mode != "off" else None,
                    "unit": "task runs/s",
                    "extra_us_per_task_run": (1 / rates[mode] - 1 / rates["off"]) * 1e6,
                    "runs": [round(r[0]) for r in results[mode]],
                    "cpu_us_per_task_run": cpus[mode],
                    "extra_cpu_us_per_task_run": cpus[mode] - cpus["off"],
                    "spans_per_task_run": spans[mode] / task_runs,
                }
            )
    return rows


def run(quick: bool = False, repeats: int | None = None) -> list[dict[str, Any]]:
    """Measure, print a table, write benchmarks/results/tracing.json; returns the rows."""
    rows = anyio.run(_measure, quick, repeats)
    width = max(len(r["metric"]) for r in rows)
    print(
        f"{'workload':<{width}}  {'task runs/s':>12}  {'vs off':>7}  {'+us/run':>8}  "
        f"{'cpu us/run':>10}  {'+cpu us':>7}  {'spans/run':>9}  runs"
    )
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else ""
        extra = f"{r['extra_us_per_task_run']:.1f}" if r["ratio"] else ""
        extra_cpu = f"{r['extra_cpu_us_per_task_run']:.1f}" if r["ratio"] else ""
        print(
            f"{r['metric']:<{width}}  {r['ours']:>12,.0f}  {ratio:>7}  {extra:>8}  "
            f"{r['cpu_us_per_task_run']:>10.1f}  {extra_cpu:>7}  "
            f"{r['spans_per_task_run']:>9.2f}  {r['runs']}"
        )
    off_cpu = {
        r["metric"].rsplit(",", 1)[0]: r["cpu_us_per_task_run"]
        for r in rows
        if r["metric"].endswith("tracing off")
    }
    for r in rows:
        if r["metric"].startswith("seq") and r["metric"].endswith("tracing on"):
            where = "on SQLite" if "SQLite" in r["metric"] else "in memory"
            cost = 1 / r["ratio"] - 1
            cpu_cost = r["extra_cpu_us_per_task_run"] / off_cpu[r["metric"].rsplit(",", 1)[0]]
            verdict = "met" if r["ratio"] >= TARGET else "NOT met"
            print(
                f"tracing on {where}: {r['ratio']:.2f}x of off, i.e. costs {cost:.0%} "
                f"(+{r['extra_us_per_task_run']:.1f} us per task run; CPU +{cpu_cost:.0%}, "
                f"+{r['extra_cpu_us_per_task_run']:.1f} us); target >= {TARGET}x: {verdict}"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracing.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]
    count = int(args[args.index("--repeats") + 1]) if "--repeats" in args else None
    run(quick="--quick" in args, repeats=count)
