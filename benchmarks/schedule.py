"""Schedule accuracy (issue 14): how late a Schedule trigger's execution starts after its tick.

A flow with a Schedule firing every second (``with_seconds``) runs under a real
:class:`~actorflow.Scheduler` on SQLite for some seconds; for each fire, the lag is the
execution's creation (stored) and its first RUNNING, minus the tick it fired for (``trigger
.date``). The baseline is the bare limit on the same loop: an asyncio task sleeping until each
second and measuring how late it woke.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import actorflow as af
from benchmarks._common import row, tmpdb

RESULTS = Path(__file__).parent / "results"

EVERY_SECOND = af.Flow(
    id="every-second",
    namespace="bench",
    tasks=[af.Log(id="tick", message="{{ trigger.date }}")],
    triggers=[af.Schedule(id="s", cron="* * * * * *", with_seconds=True)],
)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _fires(seconds: float) -> tuple[list[float], list[float]]:
    """(created - tick, first RUNNING - tick) in ms for each fire of ``seconds`` seconds."""
    db = tmpdb()
    async with af.Runtime.open(db, flows=[EVERY_SECOND]) as rt:
        async with af.Scheduler(rt):
            await anyio.sleep(seconds)
        created: list[float] = []
        started: list[float] = []
        for ex in await rt.executions(flow="every-second", limit=10_000):
            done = await rt.wait(ex.id, timeout=30)
            assert done.trigger is not None
            tick = datetime.datetime.fromisoformat(done.trigger["date"]).timestamp()
            created.append((done.history[0].date - tick) * 1000)
            running = next(e.date for e in done.history if e.state is af.State.RUNNING)
            started.append((running - tick) * 1000)
    return created, started


async def _bare(seconds: float) -> list[float]:
    """How late an asyncio task wakes for each whole second (the loop's own limit)."""
    lags: list[float] = []
    end = time.time() + seconds
    while time.time() < end:
        tick = math.floor(time.time()) + 1.0
        await anyio.sleep(tick - time.time())
        lags.append((time.time() - tick) * 1000)
    return lags


def run(quick: bool = False) -> list[dict[str, Any]]:
    seconds = 6.0 if quick else 15.0  # twice: ours, then the bare limit
    created, started = anyio.run(_fires, seconds)
    bare = anyio.run(_bare, seconds)
    bench = "schedule"
    n = len(created)
    return [
        row(bench, f"fire -> stored p50 (every second, n={n})", statistics.median(created),
            statistics.median(bare), "ms", higher_is_better=False),
        row(bench, "fire -> stored p99", _pct(created, 0.99), _pct(bare, 0.99), "ms",
            higher_is_better=False),
        row(bench, "fire -> RUNNING p99", _pct(started, 0.99), _pct(bare, 0.99), "ms",
            higher_is_better=False),
    ]  # fmt: skip


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "schedule.json").write_text(json.dumps(result, indent=2))
