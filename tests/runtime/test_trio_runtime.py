"""The runtime on trio with the SQLite store: runs, retries, pauses, kills, and resumes a
stored execution after a reopen (its SQLite calls go through anyio worker threads)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import actorflow as af
from actorflow.storage import SQLiteStore
from actorflow.storage._sqlite import ThreadConnection

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@af.task(retry=af.Retry.constant(0, max_attempts=3))
async def flaky(ctx: af.TaskContext, n: int) -> int:
    if ctx.attempt < 2:
        raise ConnectionError("again")
    await anyio.sleep(0)
    return n * 2


@af.task
async def forever(ctx: af.TaskContext) -> None:
    await anyio.sleep_forever()


async def test_a_flow_runs_on_trio_with_sqlite(tmp_path: Path) -> None:
    """Parallel steps with a retry and a ForEach finish SUCCESS on trio; the store wrote
    through worker threads and the tree reads back after a reopen."""
    a = flaky("a", n=2)
    flow = af.Flow(id="trio", tasks=[
        af.Parallel(id="p", tasks=[a, flaky("b", n=3)]),
        af.ForEach(id="each", values=["x", "y"], tasks=[af.Log(id="l", message="{{ taskrun.value }}")]),
    ])  # fmt: skip
    async with af.Runtime.open(tmp_path / "t.db") as rt:
        store = rt.engine.store
        assert isinstance(store, SQLiteStore) and isinstance(store._writer, ThreadConnection)
        done = await rt.run(flow)
        assert done.state is af.State.SUCCESS
        assert done.output(a) == 4 and len(done.task_run("a").attempts) == 2
    async with af.Runtime.open(tmp_path / "t.db") as rt:
        again = await rt.get(done.id)
        assert again.state is af.State.SUCCESS
        assert {tr.task_id for tr in again.task_runs} == {"p", "a", "b", "each", "l"}
        assert [r.message for r in await rt.logs(done.id) if r.task_run_id is not None][-2:] == [
            "x",
            "y",
        ]


async def test_pause_survives_a_reopen_and_kill_interrupts_on_trio(tmp_path: Path) -> None:
    """An execution paused in one runtime is resumed by the next one on the same file; a
    running task is killed at once (its cancel scope), all on trio."""
    flow = af.Flow(id="gate", tasks=[af.Pause(id="wait"), af.Return(id="r", value="done")])
    long = af.Flow(id="long", tasks=[forever("f")])
    async with af.Runtime.open(tmp_path / "g.db", flows=[flow]) as rt:
        handle = await rt.submit(flow)
        await rt.wait_for(handle.id, af.State.PAUSED)
        running = await rt.submit(long)
        await rt.wait_for(running.id, af.State.RUNNING)
        await rt.kill(running.id)
        assert (await rt.wait(running.id)).state is af.State.KILLED
    async with af.Runtime.open(tmp_path / "g.db", flows=[flow]) as rt:
        assert (await rt.get(handle.id)).state is af.State.PAUSED
        await rt.resume(handle.id)
        done = await rt.wait(handle.id)
        assert done.state is af.State.SUCCESS
        assert done.task_run("r").outputs == {"value": "done"}
