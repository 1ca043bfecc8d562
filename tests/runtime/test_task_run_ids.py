"""Task-run ids are derived from what the task run is: unique, and the same when made again."""

from __future__ import annotations

import pytest

import actorflow as af
from actorflow import State
from actorflow.runtime import Runtime
from actorflow.runtime._core._frames import Spec
from actorflow.runtime._core._ids import task_run_id

pytestmark = pytest.mark.anyio


@af.task
async def always_fails(ctx: af.TaskContext) -> None:
    raise ValueError(f"no ({ctx.idempotency_key})")


NESTED = af.Flow(
    id="nested",
    tasks=[
        af.ForEach(id="outer", values=["a", "b", 3], tasks=[
            af.Parallel(id="par", tasks=[
                af.ForEach(id="inner", values=[1, 2], tasks=[af.Log(id="x", message="x")]),
                af.Log(id="y", message="y"),
            ]),
        ]),
        af.Log(id="z", message="z"),
    ],
)  # fmt: skip
FAILING = af.Flow(
    id="failing",
    tasks=[af.Log(id="ok", message="ok"), always_fails("boom")],
    errors=[af.Log(id="handler", message="handled")],
)


async def test_ids_are_unique_in_nested_loops_and_repeatable(rt: Runtime) -> None:
    """Every task run of nested loops has its own id, and the id derives from the execution,
    the parent and the task run's place, so making it again gives the same id."""
    done = await rt.run(NESTED)
    assert done.state is State.SUCCESS
    ids = [tr.id for tr in done.task_runs]
    assert len(ids) == 1 + 3 * (1 + 1 + 2 + 1) + 1 == len(set(ids))  # outer, par inner x x y, z
    for tr in done.task_runs:
        spec = Spec(NESTED.task(tr.task_id), tr.branch, tr.value, tr.iteration)
        assert task_run_id(done, tr.parent_task_run_id, spec) == tr.id
    other = await rt.run(NESTED)
    assert not set(ids) & {tr.id for tr in other.task_runs}


async def test_a_restart_creates_its_new_task_runs_under_new_ids(rt: Runtime) -> None:
    """The errors branch a restart runs again gets a new id (its first run was removed); the
    restarted task run keeps its id, and its idempotency key changes with the run."""
    first = await rt.run(FAILING)
    assert first.state is State.FAILED
    handler_1, boom = first.task_run("handler"), first.task_run("boom")
    assert boom.attempts[-1].error == f"ValueError: no ({boom.id}-1)"
    again = await (await rt.restart(first.id)).wait()
    assert again.state is State.FAILED and again.attempt_number == 2
    assert again.task_run("boom").id == boom.id
    assert again.task_run("boom").attempts[-1].error == f"ValueError: no ({boom.id}-2)"
    handler_2 = again.task_run("handler")
    assert handler_2.id != handler_1.id
    assert [tr.task_id for tr in again.task_runs].count("handler") == 1
    assert len({tr.id for tr in again.task_runs}) == len(again.task_runs)
