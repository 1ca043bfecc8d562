"""One task run on its own (Mistral's action execution): retries, records, stored like any."""

from __future__ import annotations

import pytest

import actorflow as af
from actorflow.runtime import Runtime

pytestmark = pytest.mark.anyio


@af.task(retry=af.Retry.constant(0, max_attempts=3))
async def flaky_add(ctx: af.TaskContext, a: int, b: int) -> dict[str, int]:
    if ctx.attempt < 2:
        raise ConnectionError("try again")
    return {"sum": a + b}


async def test_a_task_runs_alone_with_retries_and_is_stored(rt: Runtime) -> None:
    """run_task gives an execution with one task run of two attempts (the first failed), the
    inputs rendered into its params, listed among executions like any other."""
    done = await rt.run_task(flaky_add("add", a="{{ inputs.x }}", b=2), {"x": 40})
    assert done.state is af.State.SUCCESS
    tr = done.task_run("add")
    assert [a.state for a in tr.attempts] == [af.State.FAILED, af.State.SUCCESS]
    assert tr.outputs == {"sum": 42}
    assert done.flow_id == "task-add" and done.namespace == "adhoc"
    assert done.labels["actorflow.adhoc"] == "true"
    (listed,) = await rt.executions(namespace="adhoc")
    assert listed.id == done.id


async def test_a_registered_type_runs_alone_and_a_flowable_is_refused(rt: Runtime) -> None:
    """A built-in task runs on its own; a flowable is refused with a clear error."""
    done = await rt.run_task(af.Return(id="r", value="{{ inputs.v }}!"), {"v": "hi"})
    assert done.task_run("r").outputs == {"value": "hi!"}
    with pytest.raises(af.IllegalOperation, match="flowable"):
        await rt.run_task(af.Sequential(id="s", tasks=[af.Log(id="l", message="m")]))
