"""Admission: at most max_active executions run, the rest wait parked (FIFO), submit waits
when max_queued are parked; idle executions hold no slot; commands reach parked ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import actorflow as af
from actorflow import State
from actorflow.runtime import FakeClock, Runtime

pytestmark = pytest.mark.anyio


class Gate:
    """A task that blocks until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.running = 0
        self.most = 0
        self.order: list[int] = []

    def flow(self) -> af.Flow:
        gate = self

        @af.task
        async def hold(ctx: af.TaskContext, n: int) -> None:
            gate.order.append(n)
            gate.running += 1
            gate.most = max(gate.most, gate.running)
            try:
                await gate.release.wait()
            finally:
                gate.running -= 1

        return af.Flow(id="gated", inputs=[af.Input(name="n", type="int")],
                       tasks=[hold("hold", n="{{ inputs.n }}")])  # fmt: skip


async def _open(tmp_path: Path, **kw: Any) -> Any:
    return Runtime.open(":memory:", clock=FakeClock(), files=tmp_path / "files", **kw)


async def test_at_most_max_active_run_and_the_rest_start_in_order(tmp_path: Path) -> None:
    """Ten submissions with max_active=3: three run at once, the others start FIFO."""
    gate = Gate()
    flow = gate.flow()
    async with await _open(tmp_path, max_active=3) as rt:
        handles = [await rt.submit(flow, {"n": i}) for i in range(10)]
        await anyio.wait_all_tasks_blocked()
        assert gate.running == 3
        parked = await rt.get(handles[-1].id)
        assert parked.state is State.CREATED and parked.task_runs == ()
        gate.release.set()
        done = [await h.wait(timeout=10) for h in handles]
    assert all(ex.state is State.SUCCESS for ex in done)
    assert gate.most == 3
    assert gate.order == list(range(10))


async def test_paused_executions_hold_no_slot(tmp_path: Path) -> None:
    """Executions paused on a Pause task free their slot: later ones still run."""
    flow = af.Flow(id="approve", tasks=[af.Pause(id="wait"), af.Log(id="after", message="ok")])
    quick = af.Flow(id="quick", tasks=[af.Log(id="hi", message="hi")])
    async with await _open(tmp_path, max_active=2) as rt:
        paused = [await rt.submit(flow) for _ in range(4)]
        for h in paused:
            await rt.wait_for(h.id, State.PAUSED, timeout=10)
        ex = await rt.run(quick, timeout=10)
        assert ex.state is State.SUCCESS
        for h in paused:
            await rt.resume(h.id)
        assert [(await h.wait(timeout=10)).state for h in paused] == [State.SUCCESS] * 4


async def test_a_parked_execution_can_be_killed_and_waited_for(tmp_path: Path) -> None:
    """Kill reaches an execution that never started: KILLED, its task never ran."""
    gate = Gate()
    flow = gate.flow()
    async with await _open(tmp_path, max_active=1) as rt:
        first = await rt.submit(flow, {"n": 1})
        second = await rt.submit(flow, {"n": 2})
        await anyio.wait_all_tasks_blocked()
        await rt.kill(second.id)
        killed = await second.wait(timeout=10)
        assert killed.state is State.KILLED and killed.task_runs == ()
        gate.release.set()
        assert (await first.wait(timeout=10)).state is State.SUCCESS
    assert gate.order == [1]


async def test_submit_waits_while_the_queue_is_full(tmp_path: Path) -> None:
    """With max_queued=2 parked already, a third submit waits until one of them starts."""
    gate = Gate()
    flow = gate.flow()
    async with await _open(tmp_path, max_active=1, max_queued=2) as rt:
        running = await rt.submit(flow, {"n": 0})
        queued = [await rt.submit(flow, {"n": i}) for i in (1, 2)]
        late: list[Any] = []

        async def submit_late() -> None:
            late.append(await rt.submit(flow, {"n": 3}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit_late)
            await anyio.wait_all_tasks_blocked()
            assert late == []  # backpressure: the caller waits
            gate.release.set()
        states = [(await h.wait(timeout=10)).state for h in (running, *queued, *late)]
    assert states == [State.SUCCESS] * 4
    assert gate.order == [0, 1, 2, 3]


async def test_parked_executions_survive_a_restart_of_the_process(tmp_path: Path) -> None:
    """Parked executions are stored CREATED: a runtime opened later runs them."""
    gate = Gate()
    flow = gate.flow()
    db = tmp_path / "parked.db"
    async with Runtime.open(db, flows=[flow], max_active=1) as rt:
        ids = [(await rt.submit(flow, {"n": i})).id for i in range(3)]
        await anyio.wait_all_tasks_blocked()
        stored = await rt.executions(state=State.CREATED)
        assert {e.id for e in stored} == set(ids[1:])
    gate.release.set()
    async with Runtime.open(db, flows=[flow]) as rt:
        done = [await rt.wait(i, timeout=10) for i in ids]
    assert [e.state for e in done[1:]] == [State.SUCCESS, State.SUCCESS]


async def test_bad_limits_are_refused() -> None:
    """max_active and max_queued must be positive (or None)."""
    with pytest.raises(ValueError, match="max_active"):
        async with Runtime.open(":memory:", max_active=0):
            pass
    with pytest.raises(ValueError, match="max_queued"):
        async with Runtime.open(":memory:", max_queued=0):
            pass
