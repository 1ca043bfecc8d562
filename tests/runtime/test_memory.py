"""Memory that must not grow with data: the ended-execution cache keeps no trees, outputs are
encoded and stored once."""

from __future__ import annotations

import gc
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import pytest

import actorflow as af
from actorflow.actors import Actor
from actorflow.runtime._core._messages import Complete
from actorflow.runtime._core._persist import decode_task_run, task_run_rows

pytestmark = pytest.mark.anyio


@af.task
async def big(ctx: af.TaskContext, size: int) -> dict[str, str]:
    return {"data": "x" * size}  # a new string each time, as real outputs are


def big_flow(size: int) -> af.Flow:
    return af.Flow(id="big", tasks=[big("t", size=size)])


async def test_ended_executions_keep_no_outputs_in_memory(tmp_path: Path) -> None:
    """20 executions with a 1 MB output each leave well under 1 MB each behind once they ended
    (the cache of ended executions held every tree: 20 MB and more)."""
    async with af.Runtime.open(tmp_path / "rt.db") as rt:
        await rt.run(big_flow(10))  # first-time imports and caches are not what is measured
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(20):
                assert (await rt.run(big_flow(1 << 20))).state is af.State.SUCCESS
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert held < 4 << 20, f"{held / 2**20:.1f} MiB held after the executions ended"


@pytest.mark.parametrize("where", ["memory", "sqlite"])
async def test_wait_and_get_after_the_end_read_the_full_tree(tmp_path: Path, where: str) -> None:
    """Once an execution ended, wait() and get() still give its whole tree with outputs."""
    path = ":memory:" if where == "memory" else tmp_path / "rt.db"
    async with af.Runtime.open(path, files=tmp_path / "files") as rt:
        first = await rt.run(big_flow(1000))
        assert rt.engine._ended[first.id].task_runs == ()
        for ex in (await rt.wait(first.id), await rt.get(first.id)):
            assert ex.state is af.State.SUCCESS
            assert ex.task_run("t").outputs == {"data": "x" * 1000}


async def test_outputs_are_encoded_once_and_stored_once(tmp_path: Path) -> None:
    """An ended task run's rows carry its outputs once (in its snapshot); the outputs table
    gets no copy, and the stored snapshot has them."""
    async with af.Runtime.open(tmp_path / "rt.db") as rt:
        ex = await rt.run(big_flow(5000))
    tr = ex.task_run("t")
    rows = task_run_rows(tr)
    blobs = [getattr(op.row, "data", b"") for op in rows if hasattr(op, "row")]
    assert sum(1 for b in blobs if b"x" * 5000 in b) == 1
    assert decode_task_run(blobs[0]).outputs == {"data": "x" * 5000}
    with sqlite3.connect(tmp_path / "rt.db") as db:
        assert db.execute("SELECT count(*) FROM outputs").fetchone() == (0,)
        (data,) = db.execute("SELECT data FROM task_runs WHERE id = ?", (tr.id,)).fetchone()
    assert decode_task_run(data).outputs == {"data": "x" * 5000}


class _Inbox(Actor):
    def __init__(self, got: list[Any], event: anyio.Event) -> None:
        self.got = got
        self.event = event

    async def receive(self, message: Any) -> Any:
        self.got.append(message)
        self.event.set()
        return None


async def test_watching_a_child_that_already_ended_reads_its_outputs(rt: af.Runtime) -> None:
    """watch_child of a child execution that ended here already (recovery of its parent)
    answers with the child's outputs, read back from the store."""
    child = await rt.run(big_flow(100))
    got: list[Any] = []
    event = anyio.Event()
    ref = rt.engine.system.spawn(lambda: _Inbox(got, event))
    rt.engine.watch_child(child.id, ref)
    await event.wait()
    assert got == [Complete(af.State.SUCCESS, {"t": {"data": "x" * 100}}, None)]
    await anyio.wait_all_tasks_blocked()  # the reading task finishes and drops itself
    assert not rt.engine._loads


async def test_a_task_stepped_once_by_hand_continues_as_await_would() -> None:
    """``_Continue`` (an iterator, not a generator, to hold less per running task run) passes
    on what the coroutine yields, what is sent back, a cancellation it catches, and a close."""
    import asyncio

    from actorflow.runtime._core._taskrun import _Continue

    seen: list[str] = []

    async def body() -> str:
        await asyncio.sleep(0)  # yields None: handed on as it is
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
        return "done"

    coro = body()
    first = coro.send(None)
    task = asyncio.ensure_future(_Continue(coro, first))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    assert await task == "done" and seen == ["cancelled"]

    closed = body()
    stepped = _Continue(closed, closed.send(None))
    outer = stepped.__await__()
    assert outer.send(None) is None
    outer.close()
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        closed.send(None)  # the coroutine was closed with it
