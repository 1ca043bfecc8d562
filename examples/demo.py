"""`make demo`: a real flow on the embedded SQLite default, then its execution tree.

Parallel fetch-like steps (one flaky, retried), a ForEach over regions, outputs passed
between tasks, a file in the internal storage, and metrics.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import anyio

import actorflow as af
from actorflow.runtime import Execution, TaskRun

_flaky_calls = {"n": 0}


@af.task
async def fetch(ctx: af.TaskContext, source: str, latency: float = 0.01) -> dict[str, object]:
    """Pretend to fetch rows from a source."""
    with ctx.metric.timed("fetch.latency", source=source):
        await anyio.sleep(latency)
    rows = [random.randint(1, 100) for _ in range(5)]
    ctx.metric.counter("rows.fetched", len(rows), source=source)
    ctx.log.info(f"fetched {len(rows)} rows from {source}")
    return {"source": source, "rows": rows}


@af.task(retry=af.Retry.exponential(0.05, max_interval=0.5, max_attempts=4))
async def flaky_fetch(ctx: af.TaskContext, source: str) -> dict[str, object]:
    """Fails on its first two attempts, like a real network."""
    if ctx.attempt < 3:
        raise ConnectionError(f"{source}: connection reset (attempt {ctx.attempt})")
    return {"source": source, "rows": [7, 8, 9]}


@af.task
def summarize(ctx: af.TaskContext, region: str) -> dict[str, object]:
    """A sync task (runs in a worker thread): totals per region."""
    outs = ctx.outputs
    total = sum(sum(outs[k]["rows"]) for k in ("fetch_orders", "fetch_users", "fetch_events"))
    ctx.metric.counter("regions.summarized", 1, region=region)
    return {"region": region, "total": total}


@af.task
async def report(ctx: af.TaskContext) -> dict[str, object]:
    """Write a report file to the internal storage and return its URI."""
    per_region = ctx.outputs["summarize"]
    lines = [f"{r}: {v['total']}" for r, v in sorted(per_region.items())]
    uri = await ctx.storage.put("report.txt", "\n".join(lines) + "\n")
    return {"uri": uri, "regions": len(lines)}


FLOW = af.Flow(
    id="demo",
    namespace="examples",
    inputs=[af.Input(name="regions", type="list", default=["eu", "us", "apac"])],
    tasks=[
        af.Parallel(
            id="fetch_all",
            concurrency=3,
            tasks=[
                fetch("fetch_orders", source="orders"),
                fetch("fetch_users", source="users", latency=0.02),
                flaky_fetch("fetch_events", source="events"),
            ],
        ),
        af.ForEach(
            id="per_region",
            values="{{ inputs.regions }}",
            concurrency=2,
            tasks=[summarize("summarize", region="{{ taskrun.value }}")],
        ),
        report("report"),
        af.Log(id="done", message="report at {{ outputs.report.uri }}"),
    ],
)


def print_tree(ex: Execution) -> None:
    """The execution tree: state, attempts, duration, outputs and metrics per task run."""
    print(f"execution {ex.id}  flow {ex.namespace}.{ex.flow_id}  {ex.state.value}"
          f"  {ex.duration * 1000:.1f} ms")  # fmt: skip
    children: dict[str | None, list[TaskRun]] = {}
    for tr in ex.task_runs:
        children.setdefault(tr.parent_task_run_id, []).append(tr)

    def walk(parent: str | None, depth: int) -> None:
        for tr in children.get(parent, []):
            label = tr.task_id + (f"[{tr.value}]" if tr.value is not None else "")
            attempts = "".join("x" if a.state.failed else "." for a in tr.attempts)
            line = f"{'  ' * depth}- {label:<28} {tr.state.value:<8} {tr.duration * 1000:7.1f} ms"
            if attempts:
                line += f"  attempts {attempts}"
            print(line)
            if tr.outputs and not children.get(tr.id):
                print(f"{'  ' * depth}    outputs {tr.outputs}")
            for m in tr.metrics:
                print(f"{'  ' * depth}    metric {m.kind} {m.name}{m.tags} = {m.value:g}")
            walk(tr.id, depth + 1)

    walk(None, 0)


async def main() -> int:
    db = Path(sys.argv[1] if len(sys.argv) > 1 else "actorflow.db")
    async with af.Runtime.open(db) as rt:
        start = time.perf_counter()
        ex = await rt.run(FLOW)
        print_tree(ex)
        text = await rt.read_file(ex.task_run("report").outputs["uri"])
        print(f"\nreport.txt ({ex.task_run('report').outputs['uri']}):\n{text.decode()}")
        print(f"stored in {db} ({(time.perf_counter() - start) * 1000:.0f} ms)")
        return 0 if ex.state is af.State.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main))
