"""Actor kernel benchmarks beside bare asyncio measured in the same run.

tell throughput vs an asyncio.Queue producer/consumer; ask round trip vs a bare Future round
trip through a queue-served task; 10,000-actor fan-out; spawn rate vs asyncio.TaskGroup.

Targets: tell ratio >= 0.5; ask p50 ratio (baseline / ours) > 1/3, i.e. under 3x the bare
round trip. Self-contained (only ``actorflow.actors``) so ``python benchmarks/actors.py`` runs
from a checkout without the rest of the package importing.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from actorflow.actors import Actor, open_actor_system

RESULTS = Path(__file__).parent / "results"


def row(
    metric: str, ours: float, baseline: float, unit: str, higher_is_better: bool = True
) -> dict[str, Any]:
    """One result row; ratio > 1 means we beat the baseline (rates: ours/base, times: base/ours)."""
    ratio = ours / baseline if higher_is_better else baseline / ours
    return {"benchmark": "actors", "metric": metric, "ours": ours, "baseline": baseline,
            "ratio": ratio, "unit": unit}  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    """Metric, ours, baseline, ratio, unit: one line each."""
    width = max(len(r["metric"]) for r in rows)
    print(f"{'metric':<{width}}  {'ours':>12}  {'baseline':>12}  {'ratio':>6}  unit")
    for r in rows:
        print(f"{r['metric']:<{width}}  {r['ours']:>12,.1f}  {r['baseline']:>12,.1f}"
              f"  {r['ratio']:>6.2f}  {r['unit']}")  # fmt: skip


class Counter(Actor):
    def __init__(self, done: anyio.Event, expected: int) -> None:
        self.n = 0
        self.done = done
        self.expected = expected

    async def receive(self, message: Any) -> Any:
        self.n += 1
        if self.n == self.expected:
            self.done.set()
        return message


class Echo(Actor):
    async def receive(self, message: Any) -> Any:
        return message


async def ours_tell(n: int) -> float:
    async with open_actor_system() as system:
        done = anyio.Event()
        ref = system.spawn(lambda: Counter(done, n), mailbox_size=1000)
        start = time.perf_counter()
        for i in range(n):
            await ref.tell(i)
        await done.wait()
        return n / (time.perf_counter() - start)


async def bare_tell(n: int) -> float:
    q: asyncio.Queue[int] = asyncio.Queue(maxsize=1000)
    done = asyncio.Event()

    async def consumer() -> None:
        for _ in range(n):
            await q.get()
        done.set()

    task = asyncio.ensure_future(consumer())
    start = time.perf_counter()
    for i in range(n):
        await q.put(i)
    await done.wait()
    elapsed = time.perf_counter() - start
    await task
    return n / elapsed


async def ours_ask(n: int) -> list[float]:
    async with open_actor_system() as system:
        ref = system.spawn(Echo)
        lat = []
        for i in range(n):
            t = time.perf_counter()
            await ref.ask(i)
            lat.append(time.perf_counter() - t)
        return lat


async def bare_ask(n: int) -> list[float]:
    q: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()

    async def server() -> None:
        while True:
            v, fut = await q.get()
            fut.set_result(v)

    task = asyncio.ensure_future(server())
    loop = asyncio.get_running_loop()
    lat = []
    for i in range(n):
        t = time.perf_counter()
        fut: asyncio.Future[int] = loop.create_future()
        q.put_nowait((i, fut))
        await fut
        lat.append(time.perf_counter() - t)
    task.cancel()
    return lat


async def ours_fanout(actors: int, per_actor: int) -> float:
    async with open_actor_system() as system:
        done = anyio.Event()
        counter = {"left": actors}

        class Sink(Actor):
            def __init__(self) -> None:
                self.n = 0

            async def receive(self, message: Any) -> Any:
                self.n += 1
                if self.n == per_actor:
                    counter["left"] -= 1
                    if counter["left"] == 0:
                        done.set()
                return None

        refs = [system.spawn(Sink) for _ in range(actors)]
        # Start-up is measured by the spawn benchmark: time the traffic only.
        await system.spawn(Echo).ask(None)  # actors start in spawn order
        start = time.perf_counter()
        for _ in range(per_actor):
            for r in refs:
                r.tell_nowait(1)
        await done.wait()
        return actors * per_actor / (time.perf_counter() - start)


async def bare_fanout(actors: int, per_actor: int) -> float:
    queues = [asyncio.Queue[int]() for _ in range(actors)]

    async def sink(q: asyncio.Queue[int]) -> None:
        for _ in range(per_actor):
            await q.get()

    tasks = [asyncio.ensure_future(sink(q)) for q in queues]
    await asyncio.sleep(0)  # every sink is now waiting on its queue
    start = time.perf_counter()
    for _ in range(per_actor):
        for q in queues:
            q.put_nowait(1)
    await asyncio.gather(*tasks)
    return actors * per_actor / (time.perf_counter() - start)


async def ours_spawn(n: int) -> float:
    async with open_actor_system() as system:
        start = time.perf_counter()
        refs = [system.spawn(Echo) for _ in range(n)]
        await refs[-1].ask("ready")
        return n / (time.perf_counter() - start)


async def bare_spawn(n: int) -> float:
    async def idle(ev: asyncio.Event) -> None:
        await ev.wait()

    ev = asyncio.Event()
    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(idle(ev))
        await asyncio.sleep(0)
        rate = n / (time.perf_counter() - start)
        ev.set()
    return rate


def _median(fn: Any, *args: Any, reps: int) -> Any:
    return statistics.median(asyncio.run(fn(*args)) for _ in range(reps))


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 50_000 if quick else 300_000
    asks = 2_000 if quick else 20_000
    actors = 2_000 if quick else 10_000
    reps = 1 if quick else 3
    rows = []
    ours, bare = _median(ours_tell, n, reps=reps), _median(bare_tell, n, reps=reps)
    rows.append(row(f"tell throughput ({n:,} msgs, mailbox 1000)", ours, bare, "msgs/s"))
    ol, bl = asyncio.run(ours_ask(asks)), asyncio.run(bare_ask(asks))
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        o = statistics.quantiles(ol, n=100)[int(q * 100) - 1] * 1e6
        b = statistics.quantiles(bl, n=100)[int(q * 100) - 1] * 1e6
        rows.append(row(f"ask round trip {name}", o, b, "µs", higher_is_better=False))
    ours, bare = (
        _median(ours_fanout, actors, 10, reps=reps),
        _median(bare_fanout, actors, 10, reps=reps),
    )
    rows.append(row(f"fan-out to {actors:,} actors x 10 msgs", ours, bare, "msgs/s"))
    ours, bare = _median(ours_spawn, actors, reps=reps), _median(bare_spawn, actors, reps=reps)
    rows.append(row(f"spawn {actors:,} actors vs TaskGroup tasks", ours, bare, "per s"))
    return rows


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print_table(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "actors.json").write_text(json.dumps(result, indent=2))
