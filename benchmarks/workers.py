"""Workers (issues 14, 15): task runs/s with 1 and 2 worker processes on one SQLite file and
with 1, 2 and 4 on one PostgreSQL database, the CPU they and the server spend, and submit ->
start latency through the work queue.

A client runtime (``worker=False``, in this process) submits; worker processes (``python -m
benchmarks.workers --worker DB``) claim and run. (a) E executions of T no-op tasks, from the
first submit to the last end; besides the rate, CPU seconds per 1,000 task runs of the
worker processes (with their SQLite writer processes) and of the PostgreSQL server (the
postmaster and every backend), from ``/proc``. (b) an idle worker: each of S executions
submitted alone, the time from its CREATED entry (client's clock) to its RUNNING entry
(worker's clock; one host), p50 and p99.

This machine has 2 cores for the client, the workers and the server together, so measured
ratios flatten past one worker. The "projected" row says what the CPU seconds imply when
each worker has a core of its own: a worker that spends C_W CPU seconds per task run can do
1 / C_W task runs/s, so W workers do W / C_W, and the ratio to one worker is W * C_1 / C_W
(as long as the server has the cores its own row asks for at that rate).

The PostgreSQL server is a throwaway cluster (``benchmarks/_pgcluster.py``) with
``fsync=on``, ``synchronous_commit=off`` (as ``benchmarks/postgres.py``); skipped with the
reason when none can start here.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio

import actorflow as af
from actorflow.storage import is_postgres_url
from benchmarks import _pgcluster
from benchmarks._common import noop, proc_cpu, row, spread, tmpdb
from benchmarks.postgres import postmaster_pid, tree_cpu

RESULTS = Path(__file__).parent / "results"
TASKS = 5
FLOW = af.Flow(id="work", namespace="bench", tasks=[noop(f"t{i}") for i in range(TASKS)])
ENDED = "SELECT count(*) FROM executions WHERE ended IS NOT NULL"


async def _serve(db: str) -> None:
    """A worker process: runs queued executions until SIGTERM."""
    async with af.Runtime.open(db, flows=[FLOW], shutdown_timeout=2.0):
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            print("ready", flush=True)
            async for _ in signals:
                break


def _start_workers(db: str, n: int, files: str) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "ACTORFLOW_FILES": files}  # one folder: a shared mount
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.workers", "--worker", db],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
            env=env,
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


class _Counter:
    """How many executions ended, read from SQLite or PostgreSQL."""

    def __init__(self, db: str) -> None:
        self.db = db
        self._conn: Any = None

    async def ended(self) -> int:
        if not is_postgres_url(self.db):
            with closing(sqlite3.connect(self.db, timeout=30)) as conn:
                return int(conn.execute(ENDED).fetchone()[0])
        import asyncpg

        if self._conn is None:
            self._conn = await asyncpg.connect(self.db)
        return int(await self._conn.fetchval(ENDED))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def _throughput(
    db: str, workers: int, executions: int, postmaster: int | None
) -> dict[str, float]:
    """Task runs/s and CPU seconds of the workers and the server over one run."""
    files = tempfile.mkdtemp(prefix="actorflow-bench-files-")
    async with af.Runtime.open(db, worker=False, files=files):
        pass  # the schema, before the workers race to create it
    procs = _start_workers(db, workers, files)
    counter = _Counter(db)
    try:
        async with af.Runtime.open(db, worker=False, flows=[FLOW], files=files) as client:
            worker0 = sum(tree_cpu(p.pid) for p in procs)
            own0 = sum(proc_cpu(p.pid) for p in procs)
            server0 = tree_cpu(postmaster)
            client0 = time.process_time()
            start = time.perf_counter()
            for base in range(0, executions, 200):
                async with anyio.create_task_group() as tg:
                    for _ in range(min(200, executions - base)):
                        tg.start_soon(client.submit, FLOW)
            while await counter.ended() < executions:
                await anyio.sleep(0.02)
            elapsed = time.perf_counter() - start
            worker_s = sum(tree_cpu(p.pid) for p in procs) - worker0
            own_s = sum(proc_cpu(p.pid) for p in procs) - own0
            server_s = tree_cpu(postmaster) - server0
            client_s = time.process_time() - client0
    finally:
        await counter.close()
        _stop(procs)
    runs = executions * TASKS
    return {"rate": runs / elapsed, "seconds": elapsed,
            "worker_cpu_per_1000": worker_s / runs * 1000,
            "server_cpu_per_1000": server_s / runs * 1000,
            "client_cpu_per_1000": client_s / runs * 1000,
            # The same in µs per task run, the worker processes split from their writers.
            "main_process_us": own_s / runs * 1e6,
            "writer_process_us": (worker_s - own_s) / runs * 1e6,
            "server_process_us": server_s / runs * 1e6}  # fmt: skip


async def _latency(db: str, samples: int) -> tuple[float, float]:
    files = tempfile.mkdtemp(prefix="actorflow-bench-files-")
    async with af.Runtime.open(db, worker=False, files=files):
        pass
    procs = _start_workers(db, 1, files)
    delays: list[float] = []
    try:
        async with af.Runtime.open(db, worker=False, flows=[FLOW], files=files) as client:
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


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Each figure's median over repeated runs (the machine is shared: one run is noisy), and
    the rate of every run (``rate_spread``)."""
    return {**{k: statistics.median(r[k] for r in runs) for k in runs[0]},
            "rate_spread": spread([r["rate"] for r in runs])}  # fmt: skip


def _cpu(m: dict[str, Any]) -> dict[str, Any]:
    """The table's CPU columns of a median run (µs per task run)."""
    return {k: m[k] for k in ("main_process_us", "writer_process_us", "server_process_us")}


def _pg_database(cluster: _pgcluster.Cluster) -> str:
    return cluster.dsn(asyncio.run(_pgcluster.create_database(cluster)))


def _sqlite_rows(executions: int, samples: int, reps: int) -> list[dict[str, Any]]:
    one, two = (
        _median([anyio.run(_throughput, str(tmpdb()), w, executions, None) for _ in range(reps)])
        for w in (1, 2)
    )
    p50, p99 = anyio.run(_latency, str(tmpdb()), samples)
    label = f"(a) SQLite, {executions} executions x {TASKS} tasks, median of {reps}"
    return [
        row("workers", f"{label}, 2 workers vs 1", two["rate"], one["rate"], "task runs/s",
            one_worker=one["rate"], worker_cpu_s_per_1000=[one["worker_cpu_per_1000"],
                                                           two["worker_cpu_per_1000"]],
            spread=two["rate_spread"], one_worker_spread=one["rate_spread"], runs=reps,
            **_cpu(two)),
        row("workers", f"{label}, 1 worker: CPU s per 1,000 task runs (workers)",
            one["worker_cpu_per_1000"], None, "s", higher_is_better=False, **_cpu(one)),
        row("workers", f"(b) SQLite, submit -> start through the queue p50 ({samples})",
            p50 * 1000, None, "ms", higher_is_better=False),
        row("workers", f"(b) SQLite, submit -> start through the queue p99 ({samples})",
            p99 * 1000, None, "ms", higher_is_better=False),
    ]  # fmt: skip


def _postgres_rows(executions: int, samples: int, reps: int) -> list[dict[str, Any]]:
    try:
        cluster = _pgcluster.start(fsync=True)
    except _pgcluster.Unavailable as exc:
        print(f"skipping the PostgreSQL workers: {exc}", file=sys.stderr)
        return [{"benchmark": "workers", "metric": "skipped", "note": f"no PostgreSQL: {exc}"}]
    try:
        pm = postmaster_pid(cluster)
        by = {
            w: _median(
                [anyio.run(_throughput, _pg_database(cluster), w, executions, pm)
                 for _ in range(reps)]
            )
            for w in (1, 2, 4)
        }  # fmt: skip
        p50, p99 = anyio.run(_latency, _pg_database(cluster), samples)
    finally:
        cluster.stop()
    label = f"(a) PostgreSQL, {executions} executions x {TASKS} tasks, median of {reps}"
    one = by[1]
    rows = []
    for w, m in by.items():
        rows.append(row("workers", f"{label}, {w} worker{'s' if w > 1 else ''}"
                        + (" vs 1" if w > 1 else ""), m["rate"], one["rate"] if w > 1 else None,
                        "task runs/s", worker_cpu_s_per_1000=round(m["worker_cpu_per_1000"], 3),
                        server_cpu_s_per_1000=round(m["server_cpu_per_1000"], 3),
                        spread=m["rate_spread"], runs=reps, **_cpu(m)))  # fmt: skip
        rows.append(row("workers", f"{label}, {w} worker{'s' if w > 1 else ''}: CPU s per "
                        "1,000 task runs, workers + server",
                        m["worker_cpu_per_1000"] + m["server_cpu_per_1000"], None, "s",
                        higher_is_better=False, workers_s=m["worker_cpu_per_1000"],
                        server_s=m["server_cpu_per_1000"],
                        client_s=m["client_cpu_per_1000"], **_cpu(m)))  # fmt: skip
    for w in (2, 4):
        projected = w * one["worker_cpu_per_1000"] / by[w]["worker_cpu_per_1000"]
        rate = w * 1000 / by[w]["worker_cpu_per_1000"]  # each worker busy on its own core
        rows.append(row("workers", f"{label}, {w} workers vs 1, projected with a core each "
                        "(from CPU s)", projected, None, "x", projected_rate=round(rate),
                        one_worker_cores_busy=round(one["rate"] * one["worker_cpu_per_1000"]
                                                    / 1000, 2),
                        server_cores_needed=round(rate * by[w]["server_cpu_per_1000"] / 1000,
                                                  2)))  # fmt: skip
    rows += [
        row("workers", f"(b) PostgreSQL, submit -> start through the queue p50 ({samples})",
            p50 * 1000, None, "ms", higher_is_better=False),
        row("workers", f"(b) PostgreSQL, submit -> start through the queue p99 ({samples})",
            p99 * 1000, None, "ms", higher_is_better=False),
    ]  # fmt: skip
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    executions = 300 if quick else 2000
    samples = 30 if quick else 200
    reps = 1 if quick else 3
    return _sqlite_rows(executions, samples, reps) + _postgres_rows(executions, samples, reps)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        anyio.run(_serve, sys.argv[sys.argv.index("--worker") + 1])
        sys.exit(0)
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workers.json").write_text(json.dumps(result, indent=2))
