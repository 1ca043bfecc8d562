"""The storage writer alone: rows/s through ``Store.write`` from many concurrent writers.

30,000 task-run upserts, each with a history row (60,000 rows), from 1,000 concurrent
writers, SQLiteStore (group commit, WAL) beside MemoryStore (no persistence). Two kinds of
caller: durable (each awaits its commit before the next write) and fire-and-forget (writes,
then one flush at the end). Also the durable case with a few ``batch_max`` values.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from actorflow.storage import (
    AppendHistory,
    ExecutionRow,
    HistoryRow,
    MemoryStore,
    SQLiteStore,
    Store,
    TaskRunRow,
    UpsertExecution,
    UpsertTaskRun,
)
from benchmarks._common import median_of, row, spread, tmpdb

RESULTS = Path(__file__).parent / "results"
_SNAPSHOT = b"\x8a" + b"x" * 200  # about the size of a small task-run snapshot


async def _load(store: Store, writers: int, per_writer: int, durable: bool) -> float:
    """Seconds for ``writers`` tasks to write ``per_writer`` task runs (+ history) each."""
    await store.write(
        [UpsertExecution(ExecutionRow(f"e{w}", "bench", "f", 1, "RUNNING", 1.0, 1.0))
         for w in range(writers)]
    )  # fmt: skip

    async def writer(w: int) -> None:
        eid = f"e{w}"
        for i in range(per_writer):
            tid = f"{eid}-t{i}"
            run = TaskRunRow(tid, eid, "task", "SUCCESS", 1.0, 2.0, 2.0, data=_SNAPSHOT)
            commit = store.write(
                (UpsertTaskRun(run), AppendHistory(HistoryRow(eid, tid, "SUCCESS", 2.0)))
            )
            if durable:
                await commit
            elif i % 10 == 9:
                await anyio.lowlevel.checkpoint()

    gc.collect()
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in range(writers):
            tg.start_soon(writer, w)
    await store.flush()
    return time.perf_counter() - start


async def _run_one(
    kind: str, writers: int, per_writer: int, durable: bool, batch_max: int
) -> dict[str, Any]:
    store: SQLiteStore | MemoryStore = (
        SQLiteStore(tmpdb(), batch_max=batch_max) if kind == "sqlite" else MemoryStore()
    )
    async with store:
        seconds = await _load(store, writers, per_writer, durable)
        assert len(await store.task_runs(f"e{writers - 1}")) == per_writer
        stats = store.stats if isinstance(store, SQLiteStore) else None
    rows = writers * per_writer * 2
    out: dict[str, Any] = {"rows_per_s": rows / seconds, "seconds": seconds}
    if stats is not None:
        out["transactions"] = stats.batches
        out["ops_per_transaction"] = stats.ops / max(stats.batches, 1)
    return out


def _measure(kind: str, writers: int, per_writer: int, durable: bool, batch_max: int,
             reps: int) -> dict[str, Any]:  # fmt: skip
    runs = [anyio.run(_run_one, kind, writers, per_writer, durable, batch_max) for _ in range(reps)]
    best = dict(runs[0])
    best["rows_per_s"] = median_of([r["rows_per_s"] for r in runs])
    best["spread"] = spread([r["rows_per_s"] for r in runs])
    best["runs"] = reps
    return best


def run(quick: bool = False) -> list[dict[str, Any]]:
    writers = 1000
    # 30 each: the rate is steady well before that (100 each took 100 s of `make bench`).
    per_writer = 10 if quick else 30
    reps = 1 if quick else 3
    task_runs = writers * per_writer
    results: list[dict[str, Any]] = []
    for durable in (True, False):
        how = "each awaits its commit" if durable else "fire-and-forget + flush"
        disk = _measure("sqlite", writers, per_writer, durable, 1000, reps)
        mem = _measure("memory", writers, per_writer, durable, 1000, reps)
        extra = {k: v for k, v in disk.items() if k != "rows_per_s"}
        results.append(row("storage_writer",
                           f"{task_runs:,} task runs + history, {writers} writers, {how};"
                           " sqlite vs memory", disk["rows_per_s"], mem["rows_per_s"], "rows/s",
                           **extra))  # fmt: skip
    for batch_max in (100, 5000):
        disk = _measure("sqlite", writers, per_writer, True, batch_max, reps)
        extra = {k: v for k, v in disk.items() if k != "rows_per_s"}
        results.append(row("storage_writer", f"same, durable, sqlite batch_max={batch_max}",
                           disk["rows_per_s"], None, "rows/s", **extra))  # fmt: skip
    return results


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "storage_writer.json").write_text(json.dumps(result, indent=2))
