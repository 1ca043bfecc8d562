"""Random Pause/Resume/Kill/Restart sequences never break the transition tables."""

from __future__ import annotations

import itertools

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actorflow as af
from actorflow import ActorflowError
from actorflow.runtime import Execution, FakeClock, Runtime, State
from actorflow.runtime._states import check_transition


@af.task
async def quick(ctx: af.TaskContext) -> dict[str, int]:
    await anyio.sleep(0)
    return {"attempt": ctx.attempt}


@af.task
async def flaky(ctx: af.TaskContext) -> None:
    await anyio.sleep(0)
    if ctx.attempt == 1:
        raise ConnectionError("first attempt fails")


FLOW = af.Flow(
    id="controlled",
    namespace="props",
    tasks=[
        quick("a"),
        af.Parallel(id="p", tasks=[quick("b"), flaky("c"), af.Sleep(id="nap", duration=3600)]),
        af.Pause(id="gate"),
        af.ForEach(id="each", values=[1, 2], tasks=[quick("d")]),
    ],
    retry=af.Retry.constant(1.0, max_attempts=2),
)

OPS = st.sampled_from(["pause", "resume", "kill", "restart", "settle", "advance"])


def check_history(ex: Execution) -> None:
    for a, b in itertools.pairwise(ex.history):
        check_transition("execution", ex.id, a.state, b.state)
    for tr in ex.task_runs:
        assert tr.history[0].state is State.CREATED
        for a, b in itertools.pairwise(tr.history):
            check_transition("task run", tr.id, a.state, b.state)


async def scenario(ops: list[str]) -> None:
    clock = FakeClock()
    async with Runtime.open(":memory:", clock=clock) as rt:
        handle = await rt.submit(FLOW)
        eid = handle.id
        for op in ops:
            try:
                if op == "pause":
                    await rt.pause(eid)
                elif op == "resume":
                    await rt.resume(eid)
                elif op == "kill":
                    await rt.kill(eid)
                elif op == "restart":
                    await rt.restart(eid)
                elif op == "advance":
                    clock.advance(1.0)
                await anyio.wait_all_tasks_blocked()
            except ActorflowError:
                pass  # refused operations are part of the contract: they change nothing
            check_history(await rt.get(eid))
        ex = await rt.get(eid)
        if not ex.state.terminal:
            await rt.kill(eid)
        with anyio.fail_after(10):
            final = await rt.wait(eid)
        assert final.state.terminal
        assert all(tr.state.terminal for tr in final.task_runs), final.task_runs
        check_history(final)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=12))
def test_random_control_sequences_follow_the_tables(ops: list[str]) -> None:
    """Every recorded history follows the tables and every execution ends terminal."""
    anyio.run(scenario, ops)
