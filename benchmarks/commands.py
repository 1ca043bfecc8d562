"""Commands across processes (issue 14): how fast a pause or resume sent from one process
reaches the process that owns the execution and its answer comes back, and what an idle
owner costs.

An owner process (this module with ``--owner``) runs one execution whose task holds; this
process opens a second runtime on the same SQLite file and sends pause, resume, pause...
(``Runtime.pause/resume`` return once the owner's answer is read). Each call is one sample:
p50/p99 in milliseconds, beside the same with the doorbells off (the owner's 0.2 s poll and
the sender's 20 ms poll alone, the delivery before them). Idle: CPU time of the owner process
and its writer process over a few seconds with nothing to do, as % of one core.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import actorflow as af
from benchmarks._common import row, tmpdb

RESULTS = Path(__file__).parent / "results"
TARGET_P99_MS = 100.0


@af.task
async def hold(ctx: af.TaskContext) -> None:
    """Holds the execution RUNNING until it is killed."""
    await anyio.sleep_forever()


HOLDING = af.Flow(id="holding", namespace="bench", tasks=[hold("h")])


def _no_doorbells() -> None:
    from actorflow.runtime._core import _notify

    _notify._enabled = lambda: False


async def _own(db: str) -> None:
    """The owner process: one held execution; its id on stdout; runs until stdin closes."""
    async with af.Runtime.open(db, flows=[HOLDING]) as rt:
        ex_id = (await rt.submit(HOLDING)).id
        await rt.wait_for(ex_id, af.State.RUNNING, timeout=30)
        print(ex_id, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (the writer process), every thread, from the
    scheduler's nanosecond counters (``/proc/*/task/*/schedstat``)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids.extend(int(c) for c in (task / "children").read_text().split())
    total = 0
    for p in pids:
        for task in Path(f"/proc/{p}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def _round_trips(db: str, ex_id: str, rounds: int) -> list[float]:
    samples: list[float] = []
    async with af.Runtime.open(db, flows=[HOLDING], recover=False) as rt:
        for _ in range(rounds):
            for call in (rt.pause, rt.resume):
                start = time.perf_counter()
                await call(ex_id)
                samples.append((time.perf_counter() - start) * 1000)
        await rt.kill(ex_id)
    return samples


def _measure(rounds: int, doorbells: bool, idle_s: float) -> tuple[list[float], float | None]:
    from actorflow.runtime._core import _notify

    db = str(tmpdb())
    args = [sys.executable, "-m", "benchmarks.commands", "--owner", db]
    if not doorbells:
        args.append("--no-doorbells")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root
    )
    saved = _notify._enabled
    try:
        assert proc.stdout is not None
        ex_id = proc.stdout.readline().strip()
        if not ex_id:
            raise RuntimeError("the owner process did not start")
        idle: float | None = None
        if idle_s > 0 and Path("/proc/self/schedstat").exists():
            time.sleep(0.5)  # start-up settles (recovery, first heartbeat)
            before = _cpu_seconds(proc.pid)
            time.sleep(idle_s)
            idle = (_cpu_seconds(proc.pid) - before) / idle_s * 100
        if not doorbells:
            _no_doorbells()
        samples = anyio.run(_round_trips, db, ex_id, rounds)
    finally:
        _notify._enabled = saved
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return samples, idle


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(quick: bool = False) -> list[dict[str, Any]]:
    rounds = 100 if quick else 250  # two commands a round: 200 / 500 samples
    fast, idle = _measure(rounds, doorbells=True, idle_s=2.0 if quick else 5.0)
    slow, _ = _measure(10 if quick else 40, doorbells=False, idle_s=0)
    bench = "commands"
    n = len(fast)
    rows = [
        row(bench, f"round trip p50 (pause/resume from another process, n={n})",
            statistics.median(fast), statistics.median(slow), "ms", higher_is_better=False),
        row(bench, f"round trip p99 (target <= {TARGET_P99_MS:g} ms)",
            _pct(fast, 0.99), _pct(slow, 0.99), "ms", higher_is_better=False),
        row(bench, "round trip max", max(fast), max(slow), "ms", higher_is_better=False),
    ]  # fmt: skip
    if idle is not None:
        rows.append(row(bench, "owner idle CPU (process + writer)", idle, None, "% of a core"))
    return rows


if __name__ == "__main__":
    if "--owner" in sys.argv:
        if "--no-doorbells" in sys.argv:
            _no_doorbells()
        anyio.run(_own, sys.argv[sys.argv.index("--owner") + 1])
        sys.exit(0)
    from benchmarks.__main__ import print_table

    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "commands.json").write_text(json.dumps(result, indent=2))
