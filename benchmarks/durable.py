"""The naive durable loop a user could write instead, beside actorflow in the same run.

Plain asyncio tasks and aiosqlite: one row per state transition (execution and task run), one
commit per batch of whatever is queued, WAL, ``synchronous=NORMAL``; a caller waits for the
commit of its execution's last row, so everything it was told about is recoverable. No actors,
no snapshots, no retries, no tracing: the floor of "durable" on SQLite in Python.

Workloads (as in ``benchmarks/engine.py``):

2. one execution of N sequential no-op tasks; ``SEQ_TIMES`` such executions one after another
   per process in ``make bench``, timed together (one alone lasts 0.1 s: a scheduler hiccup
   or a clock tick of CPU accounting is a large share of it, and its spread was 1.5x);
3. C concurrent executions of 5 no-op tasks, each awaited by its own caller;

and the loop lag a host sees meanwhile: the overshoot of ``asyncio.sleep(0.01)`` in a probe
task while 3,000 such executions are in flight.

Each measurement runs in a fresh interpreter (``python -m benchmarks.durable NAME N [TIMES]``,
one JSON line), ours and the naive loop alternating, so neither inherits the other's heap;
each reports wall time and CPU seconds of its own process and of its children (actorflow's
writer process), per task run: CPU time is steadier than wall time on a noisy machine.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

import actorflow as af
from benchmarks._common import Window, cpu_us, median_of, noop, row, spread, tmpdb, writer_pid

ROOT = Path(__file__).parent.parent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transitions (
    execution_id TEXT NOT NULL, task_id TEXT, state TEXT NOT NULL, date REAL NOT NULL
);
"""
_INSERT = "INSERT INTO transitions VALUES (?, ?, ?, ?)"


class NaiveStore:
    """Rows queued by callers, committed in batches by one writer task (group commit)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.rows: list[tuple[str, str | None, str, float]] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._write())

    def add(self, execution_id: str, task_id: str | None, state: str) -> None:
        self.rows.append((execution_id, task_id, state, time.time()))
        self.wake.set()

    def committed(self) -> asyncio.Future[None]:
        """Resolves once everything added so far is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self.wake.set()
        return fut

    async def _write(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            rows, self.rows = self.rows, []
            waiters, self.waiters = self.waiters, []
            if rows:
                await self.db.executemany(_INSERT, rows)
                await self.db.commit()
            for w in waiters:
                w.set_result(None)


async def _naive_open(path: str) -> tuple[aiosqlite.Connection, NaiveStore]:
    db = await aiosqlite.connect(path)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.executescript(_SCHEMA)
    await db.commit()
    return db, NaiveStore(db)


async def _naive_execution(store: NaiveStore, ex_id: str, tasks: int) -> None:
    async def task() -> None:
        return None

    store.add(ex_id, None, "CREATED")
    store.add(ex_id, None, "RUNNING")
    for i in range(tasks):
        t = f"t{i}"
        store.add(ex_id, t, "CREATED")
        store.add(ex_id, t, "RUNNING")
        await asyncio.ensure_future(task())
        store.add(ex_id, t, "SUCCESS")
    store.add(ex_id, None, "SUCCESS")
    await store.committed()


async def naive_seq(path: str, n: int, executions: int = 1) -> dict[str, float]:
    """``executions`` executions of ``n`` sequential tasks, one after another."""
    db, store = await _naive_open(path)
    with Window() as w:
        for i in range(executions):
            await _naive_execution(store, f"e{i}", n)
    store.task.cancel()
    await db.close()
    return w.result


async def naive_concurrent(path: str, executions: int, tasks: int = 5) -> dict[str, float]:
    db, store = await _naive_open(path)
    with Window() as w:
        await asyncio.gather(*(_naive_execution(store, f"e{i}", tasks) for i in range(executions)))
    store.task.cancel()
    await db.close()
    return w.result


async def ours_seq(path: str, n: int, executions: int = 1) -> dict[str, float]:
    """``executions`` executions of ``n`` sequential tasks, one after another."""
    flow = af.Flow(id=f"seq{n}", namespace="bench", tasks=[noop(f"t{i}") for i in range(n)])
    async with af.Runtime.open(path) as rt:
        with Window(writer_pid(rt)) as w:
            for _ in range(executions):
                ex = await rt.run(flow)
                assert ex.state is af.State.SUCCESS
    return w.result


async def ours_concurrent(path: str, executions: int, tasks: int = 5) -> dict[str, float]:
    flow = af.Flow(id=f"c{tasks}", namespace="bench", tasks=[noop(f"t{i}") for i in range(tasks)])

    async def one(rt: af.Runtime) -> None:
        assert (await rt.run(flow)).state is af.State.SUCCESS

    async with af.Runtime.open(path) as rt:
        with Window(writer_pid(rt)) as w:
            await asyncio.gather(*(one(rt) for _ in range(executions)))
    return w.result


async def _lagging(work: Any) -> dict[str, float]:
    """Overshoot of ``asyncio.sleep(0.01)`` in a probe task while ``work`` runs: how long the
    host's other coroutines wait for the loop (p50, p99, max, in ms)."""
    lags: list[float] = []
    done = False

    async def probe() -> None:
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    gc.collect()
    prober = asyncio.ensure_future(probe())
    await work()
    done = True
    await prober
    q = statistics.quantiles(lags, n=100, method="inclusive") if len(lags) > 1 else lags * 99
    return {"lag_p50": q[49] * 1e3, "lag_p99": q[98] * 1e3, "lag_max": max(lags) * 1e3}


async def ours_lag(path: str, executions: int, tasks: int = 5) -> dict[str, float]:
    flow = af.Flow(id=f"c{tasks}", namespace="bench", tasks=[noop(f"t{i}") for i in range(tasks)])

    async def one(rt: af.Runtime) -> None:
        assert (await rt.run(flow)).state is af.State.SUCCESS

    async with af.Runtime.open(path) as rt:
        return await _lagging(lambda: asyncio.gather(*(one(rt) for _ in range(executions))))


async def naive_lag(path: str, executions: int, tasks: int = 5) -> dict[str, float]:
    db, store = await _naive_open(path)
    try:
        return await _lagging(
            lambda: asyncio.gather(
                *(_naive_execution(store, f"e{i}", tasks) for i in range(executions))
            )
        )
    finally:
        store.task.cancel()
        await db.close()


_WORKLOADS: dict[str, Any] = {
    "ours_lag": ours_lag,
    "naive_lag": naive_lag,
    "ours_seq": ours_seq,
    "naive_seq": naive_seq,
    "ours_concurrent": ours_concurrent,
    "naive_concurrent": naive_concurrent,
}


def _one(name: str, size: int, times: int = 1) -> dict[str, float]:
    """One measurement in this (fresh) process, after a warm-up at a tenth of the size;
    ``times`` executions one after another for the sequential workloads."""
    fn = _WORKLOADS[name]
    anyio.run(fn, str(tmpdb()), max(size // 10, 10))
    kw = {"executions": times} if name.endswith("_seq") else {}
    result: dict[str, float] = anyio.run(functools.partial(fn, str(tmpdb()), size, **kw))
    return result


def measure(name: str, size: int, times: int = 1) -> dict[str, float]:
    args = [sys.executable, "-m", "benchmarks.durable", name, str(size), str(times)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _median_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: median_of([r[k] for r in runs]) for k in runs[0]}


SEQ_TIMES = 10  # workload 2's executions per process: one alone lasts 0.1 s, too short to time


def run(quick: bool = False) -> list[dict[str, Any]]:
    reps = 1 if quick else 5
    times = 2 if quick else SEQ_TIMES
    rows: list[dict[str, Any]] = []
    for label, kind, size, task_runs, each in (
        ("(2) one execution of {n:,} sequential tasks, SQLite ({t} per process, one after "
         "another)", "seq", 300 if quick else 1_000, 1, times),
        ("(3) {n:,} concurrent executions x 5 tasks, SQLite", "concurrent",
         1_000 if quick else 10_000, 5, 1),
    ):  # fmt: skip
        ours_runs: list[dict[str, float]] = []
        naive_runs: list[dict[str, float]] = []
        for _ in range(reps if kind == "seq" else max(1, reps - 2)):
            ours_runs.append(measure(f"ours_{kind}", size, each))
            naive_runs.append(measure(f"naive_{kind}", size, each))
        ours, naive = _median_runs(ours_runs), _median_runs(naive_runs)
        n_runs = size * task_runs * each
        name = label.format(n=size, t=each)
        rate, naive_rate = n_runs / ours["seconds"], n_runs / naive["seconds"]
        rows.append(row("durable", name + " vs the naive durable loop",
                        rate, naive_rate, "task runs/s",
                        spread=spread([n_runs / r["seconds"] for r in ours_runs]),
                        naive_spread=spread([n_runs / r["seconds"] for r in naive_runs]),
                        **cpu_us(ours, n_runs), runs=len(ours_runs),
                        ))  # fmt: skip
        naive_cpu = (naive["cpu_self"] + naive["cpu_children"]) / n_runs * 1e6
        for who, m, runs in (("actorflow", ours, ours_runs), ("naive loop", naive, naive_runs)):
            # actorflow's row has the naive loop's CPU as its baseline: the ratio is naive/ours
            # (the rate ratio's meaning: 0.5 = half the naive loop's speed, CPU-bound).
            rows.append(row("durable", f"{name}: CPU per task run, {who}",
                            (m["cpu_self"] + m["cpu_children"]) / n_runs * 1e6,
                            naive_cpu if m is ours else None, "µs",
                            higher_is_better=False, **cpu_us(m, n_runs),
                            spread=spread([(r["cpu_self"] + r["cpu_children"]) / n_runs * 1e6
                                           for r in runs]),
                            main_spread=spread([r["cpu_self"] / n_runs * 1e6 for r in runs]),
                            writer_spread=spread([r["cpu_children"] / n_runs * 1e6
                                                  for r in runs]),
                            runs=len(runs)))  # fmt: skip
    lag_n = 300 if quick else 3_000
    lag_reps = max(1, reps - 2)
    ours_lags = [measure("ours_lag", lag_n) for _ in range(lag_reps)]
    naive_lags = [measure("naive_lag", lag_n) for _ in range(lag_reps)]
    ours_l, naive_l = _median_runs(ours_lags), _median_runs(naive_lags)
    rows.append(row("durable", f"loop lag p99, {lag_n:,} executions x 5 tasks in flight",
                    ours_l["lag_p99"], naive_l["lag_p99"], "ms", higher_is_better=False,
                    p50_ms=ours_l["lag_p50"], max_ms=ours_l["lag_max"],
                    spread=spread([r["lag_p99"] for r in ours_lags]),
                    naive_spread=spread([r["lag_p99"] for r in naive_lags]), runs=lag_reps,
                    note="sleep(0.01) overshoot of a probe; baseline: naive loop"))  # fmt: skip
    return rows


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] in _WORKLOADS:
        print(json.dumps(_one(sys.argv[1], *map(int, sys.argv[2:]))))
    else:
        from benchmarks.__main__ import print_table

        print_table(run(quick="--quick" in sys.argv))
