"""Runtime.watch: notices of the changes of what runs here, in order, ends once stored; a
watcher that falls behind gets one resync instead of slowing the engine."""

from __future__ import annotations

import pytest

import actorflow as af
from actorflow.runtime import Change, Runtime, State

pytestmark = pytest.mark.anyio

FLOW = af.Flow(
    id="watched",
    namespace="w",
    tasks=[af.Log(id="one", message="1"), af.Log(id="two", message="2")],
)
OTHER = af.Flow(id="other", namespace="w", tasks=[af.Log(id="x", message="x")])


async def test_a_watcher_hears_every_state_of_an_execution_and_its_task_runs(
    rt: Runtime,
) -> None:
    """A watcher of all hears the execution's states in order, each task run's changes up to
    its end, and the execution's end last, marked stored."""
    heard: list[Change] = []
    with rt.watch() as changes:
        done = await rt.run(FLOW)
        heard = changes.pending()
    mine = [c for c in heard if c.execution_id == done.id]
    ex_states = [c.state for c in mine if c.kind == "execution"]
    assert ex_states == [s.state for s in done.history]
    for tr in done.task_runs:
        # One notice per save: states a task run passed through in one save (CREATED then
        # RUNNING) are in the history of the notice's task run.
        runs = [c.task_run for c in mine if c.task_run and c.task_run.id == tr.id]
        assert runs and runs[-1].state is State.SUCCESS
        assert [r.history for r in runs] == sorted((r.history for r in runs), key=len)
        assert runs[-1].history == tr.history
    end = [c for c in mine if c.stored]
    assert len(end) == 1 and end[0] is mine[-1] and end[0].state is State.SUCCESS
    assert end[0].execution is not None and end[0].execution.id == done.id


async def test_a_watcher_of_one_execution_hears_only_it(rt: Runtime) -> None:
    """watch(id) hears nothing of another execution running at the same time."""
    handle = await rt.submit(FLOW)
    with rt.watch(handle.id) as changes:
        other = await rt.run(OTHER)
        await handle.wait()
        heard = changes.pending()
    assert heard and {c.execution_id for c in heard} == {handle.id}
    assert other.id != handle.id


async def test_a_slow_watcher_gets_one_resync_and_the_engine_goes_on(rt: Runtime) -> None:
    """A watcher that reads nothing while ten executions run falls behind its two-notice
    queue: the executions all end, and it holds at most two notices, a resync first."""
    with rt.watch(maxsize=2) as changes:
        for _ in range(10):
            assert (await rt.run(FLOW)).state is State.SUCCESS
        heard = changes.pending()
    assert 1 <= len(heard) <= 2
    assert heard[0].kind == "resync"


async def test_closing_the_last_watcher_detaches_it_from_the_engine(rt: Runtime) -> None:
    """Once every watcher closed, the engine has no listener of the watch left, and a closed
    watcher's iteration ends."""
    before = (len(rt.engine.state_listeners), len(rt.engine.end_listeners))
    a, b = rt.watch(), rt.watch()
    assert rt.engine.task_run_listeners
    a.close()
    assert rt.engine.task_run_listeners
    b.close()
    assert rt.engine.task_run_listeners == []
    assert (len(rt.engine.state_listeners), len(rt.engine.end_listeners)) == before
    assert [c async for c in b] == []


async def test_a_watch_needs_room_for_one_notice(rt: Runtime) -> None:
    """maxsize 0 is refused with a message naming it."""
    with pytest.raises(ValueError, match="maxsize"):
        rt.watch(maxsize=0)
