"""Workers (issue 14): task runs/s with one and two worker processes on one SQLite file, and
submit -> start latency through the work queue.

A client runtime (``worker=False``, in this process) submits; worker processes (``python -m
benchmarks.workers --worker DB``) claim and run. (a) E executions of T no-op tasks, from the
first submit to the last end, one worker beside two (the ratio is two / one); (b) an idle
worker: each of S executions submitted alone, the time from its CREATED entry (client's
clock) to its RUNNING entry (worker's clock; one host), p50 and p99.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio

import actorflow as af
from benchmarks._common import noop, row, tmpdb

RESULTS = Path(__file__).parent / "results"
TASKS = 5
FLOW = af.Flow(id="work", namespace="bench", tasks=[noop(f"t{i}") for i in range(TASKS)])


async def _serve(db: str) -> None:
    """A worker process: runs queued executions until SIGTERM."""
    async with af.Runtime.open(db, flows=[FLOW], shutdown_timeout=2.0):
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            print("ready", flush=True)
            async for _ in signals:
                break


def _start_workers(db: Path, n: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.workers", "--worker", str(db)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(n)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return procs


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


def _ended(db: Path) -> int:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return int(
            conn.execute("SELECT count(*) FROM executions WHERE ended IS NOT NULL").fetchone()[0]
        )


async def _throughput(workers: int, executions: int) -> float:
    db = tmpdb()
    async with af.Runtime.open(db, worker=False):
        pass  # the schema, before the workers race to create it
    procs = _start_workers(db, workers)
    try:
        async with af.Runtime.open(db, worker=False, flows=[FLOW]) as client:
            start = time.perf_counter()
            for base in range(0, executions, 200):
                async with anyio.create_task_group() as tg:
                    for _ in range(min(200, executions - base)):
                        tg.start_soon(client.submit, FLOW)
            while _ended(db) < executions:
                await anyio.sleep(0.02)
            elapsed = time.perf_counter() - start
    finally:
        _stop(procs)
    return executions * TASKS / elapsed


async def _latency(samples: int) -> tuple[float, float]:
    db = tmpdb()
    async with af.Runtime.open(db, worker=False):
        pass
    procs = _start_workers(db, 1)
    delays: list[float] = []
    try:
        async with af.Runtime.open(db, worker=False, flows=[FLOW]) as client:
            for _ in range(samples):
                handle = await client.submit(FLOW)
                done = await handle.wait()
                created = done.history[0].date
                running = next(e.date for e in done.history if e.state is af.State.RUNNING)
                delays.append(running - created)
    finally:
        _stop(procs)
    delays.sort()
    return statistics.median(delays), delays[min(len(delays) - 1, int(len(delays) * 0.99))]


def run(quick: bool = False) -> list[dict[str, Any]]:
    executions = 300 if quick else 2000
    samples = 30 if quick else 200
    one = anyio.run(_throughput, 1, executions)
    two = anyio.run(_throughput, 2, executions)
    p50, p99 = anyio.run(_latency, samples)
    return [
        row("workers", f"(a) {executions} executions x {TASKS} tasks, 2 workers vs 1", two, one,
            "task runs/s", one_worker=one),
        row("workers", f"(b) submit -> start through the queue p50 ({samples})", p50 * 1000,
            None, "ms", higher_is_better=False),
        row("workers", f"(b) submit -> start through the queue p99 ({samples})", p99 * 1000,
            None, "ms", higher_is_better=False),
    ]  # fmt: skip


if __name__ == "__main__":
    if "--worker" in sys.argv:
        anyio.run(_serve, sys.argv[sys.argv.index("--worker") + 1])
        sys.exit(0)
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workers.json").write_text(json.dumps(result, indent=2))
