"""Mistral's engine scenarios that fit the Kestra model, with their asserted outcomes."""

from __future__ import annotations

import pytest

import actorflow as af
from actorflow.runtime import Runtime, State

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every scenario on both backends: the runtime is anyio's, not asyncio's only."""
    return str(request.param)


@af.task
async def fail(ctx: af.TaskContext, kind: str = "error") -> None:
    if kind == "value":
        raise ValueError("bad value")
    raise ConnectionError("unreachable")


@af.task
async def echo(ctx: af.TaskContext, output: object = None) -> dict[str, object]:
    return {"result": output}


async def test_m1_retry_count_two_means_three_attempts(rt: Runtime) -> None:
    """M-S1: Mistral `retry: {count: 2}` is max_attempts=3: ERROR after 3 attempts."""
    f = af.Flow(id="wf_fail", tasks=[fail("task1", retry=af.Retry.constant(0, max_attempts=3))])
    ex = await rt.run(f)
    assert ex.state is State.FAILED and ex.state.mistral.value == "ERROR"
    assert len(ex.task_run("task1").attempts) == 3


async def test_m4_break_on_stops_retrying(rt: Runtime) -> None:
    """M-S4: break-on (abort_on) fails at once without further attempts."""
    retry = af.Retry.constant(0, max_attempts=4, abort_on=(ValueError,))
    ex = await rt.run(af.Flow(id="break", tasks=[fail("task1", kind="value", retry=retry)]))
    assert ex.state is State.FAILED
    assert len(ex.task_run("task1").attempts) == 1
    retry_on = af.Retry.constant(0, max_attempts=4, retry_on=(ConnectionError,))
    ex = await rt.run(af.Flow(id="continue", tasks=[fail("task1", retry=retry_on)]))
    assert len(ex.task_run("task1").attempts) == 4


async def test_m8_with_items_retry_then_handled_error_is_success(rt: Runtime) -> None:
    """M-S8/S23: with-items failing after retries, handled by on-error: workflow SUCCESS."""
    f = af.Flow(
        id="with_items",
        tasks=[
            af.ForEach(
                id="task1",
                values=[1, 2],
                concurrency=0,
                allow_failure=True,
                allow_warning=True,
                retry=af.Retry.constant(0, max_attempts=2),
                tasks=[fail("item")],
                errors=[echo("task2", output="handled")],
            )
        ],
    )
    ex = await rt.run(f)
    assert ex.state is State.SUCCESS
    items = [tr for tr in ex.task_runs if tr.task_id == "item"]
    assert len(items) == 2 and all(len(tr.attempts) == 2 for tr in items)
    assert ex.task_run("task2").state is State.SUCCESS


async def test_m9_timeout_with_on_error_is_success(rt: Runtime) -> None:
    """M-S9: a timed-out task handled by on-error ends SUCCESS; unhandled it is ERROR."""
    handled = af.Flow(
        id="timeout_handled",
        tasks=[
            af.Sequential(
                id="guard",
                allow_failure=True,
                allow_warning=True,
                tasks=[af.Sleep(id="task1", duration=60, timeout=0.01)],
                errors=[echo("task2", output="Hi!")],
            )
        ],
    )
    ex = await rt.run(handled)
    assert ex.state is State.SUCCESS
    assert ex.task_run("task1").state is State.FAILED
    bare = af.Flow(id="timeout_bare", tasks=[af.Sleep(id="task1", duration=60, timeout=0.01)])
    assert (await rt.run(bare)).state.mistral.value == "ERROR"


async def test_m12_pause_before(rt: Runtime) -> None:
    """M-S12: pause-before: PAUSED with nothing of task1 run; resume -> task1, task2 SUCCESS."""
    f = af.Flow(id="pause_before", tasks=[af.Pause(id="before_task1"), echo("task1", output="Hi!"),
                                          echo("task2", output="Bye!")])  # fmt: skip
    handle = await rt.submit(f)
    ex = await rt.wait_for(handle.id, State.PAUSED)
    assert ex.state.mistral.value == "PAUSED"
    assert [tr.task_id for tr in ex.task_runs] == ["before_task1"]
    await rt.resume(handle.id)
    ex = await handle.wait()
    assert ex.state is State.SUCCESS
    assert ex.task_run("task2").outputs == {"result": "Bye!"}


async def test_m19_join_waits_for_all_inbound(rt: Runtime) -> None:
    """M-S19: a full join runs after both branches, one of them failed and handled."""
    f = af.Flow(
        id="join",
        tasks=[
            af.Dag(
                id="dag",
                nodes=[
                    af.DagTask(task=echo("task1", output=1)),
                    af.DagTask(task=fail("task2", allow_failure=True, allow_warning=True)),
                    af.DagTask(
                        task=echo("task3", output="{{ outputs.task1.result }}-"
                                                  "{{ outputs.task1.result }}"),
                        depends_on=["task1", "task2"],
                    ),
                ],
            )
        ],
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.SUCCESS
    assert ex.task_run("task2").attempts[-1].state is State.FAILED
    assert ex.task_run("task3").outputs == {"result": "1-1"}


async def test_m24_pause_command_then_resume(rt: Runtime) -> None:
    """M-S24: pausing a running workflow stops new tasks; resume finishes it."""
    gate = af.Flow(id="resume_direct", tasks=[echo("task1", output="Hi!"), af.Pause(id="pause"),
                                              echo("task2")])  # fmt: skip
    handle = await rt.submit(gate)
    await rt.wait_for(handle.id, State.PAUSED)
    await rt.resume(handle.id)
    assert (await handle.wait()).state is State.SUCCESS


async def test_m33_operations_on_terminal_workflows(rt: Runtime) -> None:
    """M-S33: pause, kill and resume of a finished execution are refused, nothing changes."""
    ex = await rt.run(af.Flow(id="done", tasks=[echo("t")]))
    for op in (rt.pause, rt.kill, rt.resume):
        with pytest.raises(af.ActorflowError):
            await op(ex.id)
    assert (await rt.get(ex.id)).state is State.SUCCESS
