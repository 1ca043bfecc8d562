"""What forwarding task lines and runtime events to the host's logging costs.

1. one task writing N log lines (``ctx.log.info``), in memory: microseconds per line with
   nobody listening (logging unconfigured: the lines are only stored), and with a host
   handler at INFO (every line also becomes a ``LogRecord`` with its extras);
2. one execution of N sequential no-op tasks (runtime events only): task runs/s with nobody
   listening, and with a host handler at DEBUG (every state change is a record).

Baseline of each row: nobody listening.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio

import actorflow as af
from benchmarks._common import median_of, row, seq_flow


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@contextmanager
def _listening(level: int | None) -> Iterator[_Count]:
    """A host handler on the root logger at ``level`` (None: nobody listens)."""
    handler = _Count()
    root = logging.getLogger()
    old = root.level
    if level is not None:
        root.addHandler(handler)
        root.setLevel(level)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


async def _lines(n: int) -> float:
    @af.task
    async def talk(ctx: af.TaskContext) -> None:
        for _ in range(n):
            ctx.log.info("line")

    flow = af.Flow(id="talk", namespace="bench", tasks=[talk("t")])
    async with af.Runtime.open(":memory:") as rt:
        gc.collect()
        start = time.perf_counter()
        done = await rt.run(flow)
        elapsed = time.perf_counter() - start
    assert done.state is af.State.SUCCESS
    return elapsed / n * 1e6


async def _events(n: int) -> float:
    flow = seq_flow(n, "events")
    async with af.Runtime.open(":memory:") as rt:
        gc.collect()
        start = time.perf_counter()
        done = await rt.run(flow)
        elapsed = time.perf_counter() - start
    assert done.state is af.State.SUCCESS
    return n / elapsed


async def _measure(quick: bool) -> list[dict[str, Any]]:
    lines, tasks, reps = (2_000, 200, 3) if quick else (20_000, 2_000, 5)
    out: dict[str, float] = {}
    for label, level in (("quiet", None), ("info", logging.INFO)):
        with _listening(level) as h:
            out[f"lines_{label}"] = median_of([await _lines(lines) for _ in range(reps)])
        if level is not None:
            assert h.count >= lines, "the host handler saw the lines"
    for label, level in (("quiet", None), ("debug", logging.DEBUG)):
        with _listening(level) as h:
            out[f"events_{label}"] = median_of([await _events(tasks) for _ in range(reps)])
        if level is not None:
            assert h.count >= tasks, "the host handler saw the events"
    quiet_lines, quiet_events = out["lines_quiet"], out["events_quiet"]
    return [
        row("host_logging", "us per ctx.log line, nobody listening", quiet_lines, None, "us",
            higher_is_better=False),
        row("host_logging", "us per ctx.log line, host handler at INFO", out["lines_info"],
            quiet_lines, "us", higher_is_better=False),
        row("host_logging", f"task runs/s, {tasks} sequential, nobody listening", quiet_events,
            None, "runs/s"),
        row("host_logging", f"task runs/s, {tasks} sequential, host handler at DEBUG",
            out["events_debug"], quiet_events, "runs/s"),
    ]  # fmt: skip


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and print; returns the rows."""
    rows = anyio.run(_measure, quick)
    for r in rows:
        ratio = f"  ({r['ratio']:.2f}x of quiet)" if r["ratio"] else ""
        print(f"{r['metric']:<52} {r['ours']:>10,.2f} {r['unit']}{ratio}")
    return rows


if __name__ == "__main__":
    run(quick="--quick" in sys.argv[1:])
