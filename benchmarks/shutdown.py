"""Closing a runtime with N attempts running (issue 17): how long the close takes beyond its
grace, and how long recording the interrupted attempts takes, for N = 1,000 and 3,000 on an
SQLite file (``shutdown_timeout=2``: a grace of 1.6 s, 0.4 s kept for the record).

The close must stay within ``shutdown_timeout`` whatever N: the grace is shared, the actors
left are cancelled at once, and the records are one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio

import actorflow as af
from actorflow.runtime import _runtime
from benchmarks._common import row, tmpdb

RESULTS = Path(__file__).parent / "results"
TIMEOUT = 2.0


class _Gate:
    count = 0
    want = 0
    all_in = anyio.Event()


@af.task
async def stuck(ctx: af.TaskContext) -> None:
    """Never ends in its first attempt."""
    _Gate.count += 1
    if _Gate.count == _Gate.want:
        _Gate.all_in.set()
    await anyio.sleep_forever()


FLOW = af.Flow(id="stuck", namespace="bench", tasks=[stuck("work")])


async def _close(n: int) -> tuple[float, float, int]:
    """Seconds the close took, of which recording, and the attempts stored interrupted."""
    _Gate.count, _Gate.want, _Gate.all_in = 0, n, anyio.Event()
    db = tmpdb()
    recording: list[float] = []
    record = _runtime.Runtime._record_interrupted

    async def timed_record(self: Any, deadline: float) -> set[str]:
        start = time.perf_counter()
        try:
            return await record(self, deadline)
        finally:
            recording.append(time.perf_counter() - start)

    _runtime.Runtime._record_interrupted = timed_record  # type: ignore[method-assign]
    try:
        async with af.Runtime.open(
            db, flows=[FLOW], max_active=None, shutdown_timeout=TIMEOUT
        ) as rt:
            for _ in range(n):
                await rt.submit(FLOW)
            await _Gate.all_in.wait()
            start = time.perf_counter()
        took = time.perf_counter() - start
    finally:
        _runtime.Runtime._record_interrupted = record  # type: ignore[method-assign]
    with closing(sqlite3.connect(db)) as conn:
        (stored,) = conn.execute(
            "SELECT count(*) FROM attempts WHERE error = 'interrupted'"
        ).fetchone()
    return took, recording[0], int(stored)


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows = []
    for n in (1_000,) if quick else (1_000, 3_000):
        took, recording, stored = anyio.run(_close, n)
        assert stored == n, f"{stored} of {n} interrupted attempts recorded"
        rows.append(row("shutdown", f"close, {n:,} attempts running (timeout {TIMEOUT:g} s)",
                        took, TIMEOUT, "s", higher_is_better=False))  # fmt: skip
        rows.append(row("shutdown", f"  of which recording {n:,} interrupted attempts",
                        recording, None, "s", higher_is_better=False))  # fmt: skip
    return rows


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "shutdown.json").write_text(json.dumps(result, indent=2))
