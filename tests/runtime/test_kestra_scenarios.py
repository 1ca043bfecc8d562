"""Kestra's conformance scenarios (research notes S1-S35) with their asserted outcomes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from actorflow.runtime import (
    Concurrency,
    ConcurrencyBehavior,
    Dag,
    DagTask,
    Execution,
    Fail,
    FakeClock,
    Flow,
    ForEach,
    If,
    Input,
    Log,
    Parallel,
    Pause,
    Retry,
    Return,
    Runtime,
    Sequential,
    Sleep,
    State,
    Subflow,
    Switch,
    TaskRun,
)
from actorflow.runtime._tasks import AllowFailure
from actorflow.runtime._tasks import task as af_task

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every scenario on both backends: the runtime is anyio's, not asyncio's only."""
    return str(request.param)


NS = "io.kestra.tests"
KO_UNTIL_3 = "{{ 'ok' if taskrun.attemptsCount == 3 else ko }}"


def flow(id: str, *tasks: Any, **kw: Any) -> Flow:
    return Flow(id=id, namespace=NS, tasks=list(tasks), **kw)


def states(ex: Execution) -> dict[str, State]:
    return {tr.task_id: tr.state for tr in ex.task_runs}


def run_of(ex: Execution, task_id: str) -> TaskRun:
    return ex.task_run(task_id)


def hist(tr: TaskRun | Execution) -> list[State]:
    return [e.state for e in tr.history]


# -- retries ---------------------------------------------------------------------------


async def test_s1_retry_success_on_fourth_attempt_is_warning(rt: Runtime) -> None:
    """S1: success on the 4th attempt with warning_on_retry ends WARNING with 4 attempts."""
    f = flow(
        "retry-success",
        Log(id="failed", message=KO_UNTIL_3,
            retry=Retry.constant(0, max_attempts=4, max_duration=15, warning_on_retry=True)),
        errors=[Log(id="never-happen", message="Never {{ task.id }}")],
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.WARNING
    assert len(ex.task_runs) == 1
    assert len(run_of(ex, "failed").attempts) == 4
    assert [a.state for a in run_of(ex, "failed").attempts] == [State.FAILED] * 3 + [State.SUCCESS]


async def test_s2_success_first_attempt_has_no_warning(rt: Runtime) -> None:
    """S2: a first-attempt success stays SUCCESS with one attempt."""
    f = flow(
        "not-retry-and-no-warning",
        Log(id="failed", message="foo",
            retry=Retry.constant(0, max_attempts=5, warning_on_retry=True)),
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.SUCCESS
    assert len(run_of(ex, "failed").attempts) == 1


async def test_s3_retry_failed_runs_errors_once_after_last_attempt(rt: Runtime) -> None:
    """S3: FAILED, 2 task runs, the failing one with 5 attempts; errors run only at the end."""
    f = flow(
        "retry-failed",
        Fail(id="failed", retry=Retry.constant(0, max_attempts=5, max_duration=15)),
        errors=[Log(id="t2", message="second {{ task.id }}")],
    )
    ex = await rt.run(f)
    assert ex.state is State.FAILED
    assert len(ex.task_runs) == 2
    assert len(run_of(ex, "failed").attempts) == 5


async def test_s4_retry_and_fail_stops_the_sequence(rt: Runtime) -> None:
    """S4: 3 attempts, the next task never runs, the errors branch runs."""
    f = flow(
        "retry-and-fail",
        Fail(id="keepFailingWithRetry", retry=Retry.constant(0, max_attempts=3)),
        Log(id="thisTaskShouldNotBeExecuted", message="The previous task should fail"),
        errors=[Log(id="error", message="once")],
    )
    ex = await rt.run(f)
    assert ex.state is State.FAILED
    assert [tr.task_id for tr in ex.task_runs] == ["keepFailingWithRetry", "error"]
    assert len(run_of(ex, "keepFailingWithRetry").attempts) == 3


async def test_s5_s6_exponential_and_random_count_attempts(rt: Runtime) -> None:
    """S5/S6: exponential and random policies stop at max_attempts (3)."""
    expo = flow(
        "retry-expo",
        Fail(
            id="failed", retry=Retry.exponential(0, max_interval=5, max_attempts=3, max_duration=15)
        ),
    )
    rand = flow(
        "retry-random",
        Fail(id="failed", retry=Retry.random(0, 0, max_attempts=3, max_duration=15)),
    )
    for f in (expo, rand):
        ex = await rt.run(f)
        assert ex.state is State.FAILED
        assert len(ex.task_runs) == 1
        assert len(run_of(ex, "failed").attempts) == 3


async def test_s8_max_duration_bounds_attempts(rt: Runtime, clock: FakeClock) -> None:
    """S8: interval 2s and max_duration 6s give 3 attempts (the 4th would start after 6s)."""
    f = flow("retry-failed-task-duration",
             Fail(id="fail", retry=Retry.constant(2, max_duration=6)))  # fmt: skip
    handle = await rt.submit(f)
    for _ in range(10):
        await anyio.wait_all_tasks_blocked()
        ex = await rt.get(handle.id)
        if ex.state.terminal:
            break
        clock.advance(2)
    ex = await handle.wait()
    assert ex.state is State.FAILED
    assert len(run_of(ex, "fail").attempts) == 3


async def test_s9_flow_level_retry_applies_to_tasks(rt: Runtime) -> None:
    """S9: a flow-level retry gives a task without its own retry 4 attempts."""
    f = flow("retry-failed-flow-attempts", Fail(id="fail"), retry=Retry.constant(0, max_attempts=4))
    ex = await rt.run(f)
    assert ex.state is State.FAILED
    assert len(run_of(ex, "fail").attempts) == 4


async def test_s11_flowable_retry_applies_to_children(rt: Runtime) -> None:
    """S11: a Sequential's retry applies to its child (3 attempts), nested too."""
    f = flow(
        "retry-flowable",
        Sequential(id="flowable", retry=Retry.constant(0, max_attempts=3),
                   tasks=[Sequential(id="inner", tasks=[Fail(id="child")])]),
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.FAILED
    assert len(run_of(ex, "child").attempts) == 3
    assert run_of(ex, "flowable").attempts == ()


async def test_s12_foreach_concurrent_children_retry(rt: Runtime) -> None:
    """S12: each ForEach child retries under the ForEach's policy."""
    f = flow(
        "retry-flowable-parallel",
        ForEach(id="flowable", concurrency=0, values=[0, 1],
                retry=Retry.constant(0, max_attempts=3), tasks=[Fail(id="child")]),
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.FAILED
    children = [tr for tr in ex.task_runs if tr.task_id == "child"]
    assert len(children) == 2
    assert all(len(c.attempts) == 3 for c in children)


async def test_s13_subflow_task_is_retried_with_new_child_executions(rt: Runtime) -> None:
    """S13: a failing subflow under a flow-level retry gets 3 attempts (3 child executions)."""
    child = flow("failed-first", Return(id="t1", value="{{ missingVar }}"),
                 Return(id="t2", value="Never Happen"))  # fmt: skip
    rt.register(child)
    parent = flow(
        "retry-subflow",
        Subflow(id="subflow", namespace=NS, flow_id="failed-first"),
        retry=Retry.constant(0, max_attempts=3),
    )
    ex = await rt.run(parent)
    assert ex.state is State.FAILED
    assert len(run_of(ex, "subflow").attempts) == 3
    children = await rt.executions(flow="failed-first")
    assert len(children) == 3
    assert all(c.state is State.FAILED and c.parent_execution_id == ex.id for c in children)


# -- allow failure / warning, run_if, timeout ----------------------------------------------


async def test_s14_allow_failure_runnable(rt: Runtime) -> None:
    """S14: allow_failure turns the failed task run WARNING after 3 attempts; the flow goes on."""
    f = flow(
        "task-allow-failure-runnable",
        Fail(id="fail", allow_failure=True, retry=Retry.constant(0, max_attempts=3)),
        Log(id="log", message="I'm allowed"),
    )
    ex = await rt.run(f)
    assert ex.state is State.WARNING
    assert len(ex.task_runs) == 2
    assert len(run_of(ex, "fail").attempts) == 3
    assert run_of(ex, "fail").attempts[-1].state is State.FAILED
    f2 = flow(
        "task-allow-warning-runnable",
        Fail(id="fail", allow_failure=True, allow_warning=True,
             retry=Retry.constant(0, max_attempts=3)),
        Log(id="log", message="I'm allowed"),
    )  # fmt: skip
    assert (await rt.run(f2)).state is State.SUCCESS


async def test_s15_allow_failure_flowable(rt: Runtime) -> None:
    """S15: a failing Sequential with allow_failure ends WARNING; the next task runs."""
    f = flow(
        "task-allow-failure-flowable",
        Sequential(id="seq", allow_failure=True, tasks=[
            Fail(id="fail"), Log(id="log-not-allowed", message="not allowed")]),
        Log(id="log-allowed", message="I'm allowed"),
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.WARNING
    assert sorted(states(ex)) == ["fail", "log-allowed", "seq"]


def _allow_failure_flow() -> Flow:
    ret = "{{ task.id }}"
    return flow(
        "allow-failure",
        Sequential(id="first", tasks=[
            AllowFailure(id="1-1-allow-failure", tasks=[
                Sequential(id="1-1-1_seq", tasks=[
                    Return(id="1-1-1-1", value=ret), Fail(id="ko"), Return(id="1-1-1-3", value=ret),
                ]),
            ], errors=[Return(id="local-error", value="Error Trigger ! {{ task.id }}")]),
            Return(id="1-2-todo", value=ret),
        ]),
        Switch(id="switch", value="{{ inputs.crash is not none }}",
               cases={"true": [Fail(id="crash")]}, defaults=[Return(id="last", value=ret)]),
        inputs=[Input(name="crash", required=False)],
        errors=[Return(id="global-error", value="Error Trigger ! {{ task.id }}")],
    )  # fmt: skip


async def test_s16_allow_failure_flowable_tree(rt: Runtime) -> None:
    """S16: WARNING with 9 task runs without crash; FAILED with 10 with crash."""
    ex = await rt.run(_allow_failure_flow())
    assert ex.state is State.WARNING
    assert len(ex.task_runs) == 9
    s = states(ex)
    assert s["first"] is State.WARNING and s["1-1-allow-failure"] is State.WARNING
    assert s["1-1-1_seq"] is State.FAILED and s["ko"] is State.FAILED
    assert s["local-error"] is State.SUCCESS and s["1-2-todo"] is State.SUCCESS
    assert s["last"] is State.SUCCESS and "global-error" not in s
    ex = await rt.run(_allow_failure_flow(), {"crash": "1"})
    assert ex.state is State.FAILED
    assert len(ex.task_runs) == 10
    s = states(ex)
    assert s["switch"] is State.FAILED and s["crash"] is State.FAILED
    assert s["global-error"] is State.SUCCESS


async def test_s17_run_if_skips_and_render_errors_fail(rt: Runtime) -> None:
    """S17: run_if true runs, false SKIPPED, unrenderable FAILED; execution FAILED, 4 runs."""
    f = flow(
        "task-runif",
        Return(id="output", value={"taskrun_data": 1}),
        Log(id="executed", message="success",
            run_if="{{ outputs.output['value']['taskrun_data'] == 1 }}"),
        Log(id="notexecuted", message="no",
            run_if="{{ outputs.output['value']['taskrun_data'] == 2 }}"),
        Log(id="willfailedtheflow", message="no", run_if="{{ outputs.notexists.x == 2 }}"),
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.FAILED
    s = states(ex)
    assert len(s) == 4
    assert s["executed"] is State.SUCCESS
    assert s["notexecuted"] is State.SKIPPED
    assert s["willfailedtheflow"] is State.FAILED
    assert run_of(ex, "notexecuted").attempts == ()


async def test_s18_timeout_fails_the_attempt(rt: Runtime) -> None:
    """S18: a task slower than its timeout FAILS (not KILLED) and logs the timeout."""
    f = flow("timeout", Sleep(id="test", duration=100, timeout=0.01))
    ex = await rt.run(f)
    assert ex.state is State.FAILED
    attempt = run_of(ex, "test").attempts[0]
    assert attempt.state is State.FAILED and "Timeout" in (attempt.error or "")
    logs = await rt.logs(ex.id)
    assert any("Timeout" in line.message for line in logs)


# -- pause and resume ------------------------------------------------------------------


def _pause_flow(**pause: Any) -> Flow:
    return flow(
        "pause",
        Pause(id="pause", tasks=[Log(id="subtask", message="after")], **pause),
        Return(id="last", value="{{ task.id }}"),
    )


async def test_s19_manual_pause_and_resume(rt: Runtime) -> None:
    """S19: PAUSED with 1 task run; resume gives RESTARTED then SUCCESS; resuming twice fails."""
    handle = await rt.submit(_pause_flow())
    ex = await rt.wait_for(handle.id, State.PAUSED)
    assert ex.state is State.PAUSED
    assert [tr.state for tr in ex.task_runs] == [State.PAUSED]
    await rt.resume(handle.id)
    ex = await handle.wait()
    assert ex.state is State.SUCCESS
    assert hist(ex)[:4] == [State.CREATED, State.RUNNING, State.PAUSED, State.RESTARTED]
    assert len(ex.task_runs) == 3
    with pytest.raises(Exception, match=r"already SUCCESS|not paused"):
        await rt.resume(handle.id)


async def test_s20_pause_delay_resumes_itself(rt: Runtime, clock: FakeClock) -> None:
    """S20: a delayed pause resumes by itself: SUCCESS, 3 task runs, PAUSED once."""
    handle = await rt.submit(_pause_flow(delay=1.0))
    await rt.wait_for(handle.id, State.PAUSED)
    clock.advance(1.0)
    ex = await handle.wait()
    assert ex.state is State.SUCCESS
    assert len(ex.task_runs) == 3
    assert hist(run_of(ex, "pause")).count(State.PAUSED) == 1


async def test_s21_pause_timeout_fails(rt: Runtime, clock: FakeClock) -> None:
    """S21: a pause timeout FAILS the pause straight from PAUSED (its tasks never run): 1 task
    run, one RUNNING in its history (Kestra's PauseTest.runTimeout)."""
    handle = await rt.submit(_pause_flow(timeout=1.0))
    await rt.wait_for(handle.id, State.PAUSED)
    clock.advance(1.0)
    ex = await handle.wait()
    assert ex.state is State.FAILED
    assert len(ex.task_runs) == 1
    assert hist(run_of(ex, "pause")) == [State.CREATED, State.RUNNING, State.PAUSED,
                                          State.FAILED]  # fmt: skip


async def test_s23_on_resume_inputs_become_outputs(rt: Runtime) -> None:
    """S23: resume inputs are validated and exposed as the pause's outputs."""
    f = flow(
        "pause_on_resume",
        Pause(id="pause", on_resume=[Input(name="asked"),
                                     Input(name="opt", required=False, default="MISSING")]),
        Return(id="last", value={"asked": "{{ outputs.pause.asked }}",
                                 "opt": "{{ outputs.pause.opt }}"}),
    )  # fmt: skip
    handle = await rt.submit(f)
    await rt.wait_for(handle.id, State.PAUSED)
    with pytest.raises(Exception, match="missing required input 'asked'"):
        await rt.resume(handle.id, {})
    assert (await rt.get(handle.id)).state is State.PAUSED
    await rt.resume(handle.id, {"asked": "restarted"})
    ex = await handle.wait()
    assert ex.state is State.SUCCESS
    assert run_of(ex, "last").outputs == {"value": {"asked": "restarted", "opt": "MISSING"}}


async def test_s24_parallel_delayed_pauses(rt: Runtime, clock: FakeClock) -> None:
    """S24: three concurrent delayed pauses each run their log: SUCCESS, 7 task runs."""
    f = flow(
        "each-parallel-pause",
        ForEach(id="each", concurrency=0, values=["toto", "tata", "titi"], tasks=[
            Pause(id="pause", delay=1.0, tasks=[Log(id="log", message="Hello World")])]),
    )  # fmt: skip
    handle = await rt.submit(f)
    await rt.wait_for(handle.id, State.PAUSED)
    clock.advance(1.0)
    ex = await handle.wait()
    assert ex.state is State.SUCCESS
    assert len(ex.task_runs) == 7


# -- restart and replay ------------------------------------------------------------------


async def test_s25_restart_last_failed(rt: Runtime) -> None:
    """S25: restart keeps ids, re-runs only the failed task run (2 attempts), then goes on."""
    f = flow(
        "restart_last_failed",
        Log(id="a", message="a"), Log(id="b", message="b"),
        Log(id="c", message="{{ 'ok' if taskrun.attemptsCount == 1 else ko }}"),
        Log(id="d", message="d"),
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.FAILED and len(ex.task_runs) == 3
    ids = [tr.id for tr in ex.task_runs]
    handle = await rt.restart(ex.id)
    assert handle.id == ex.id
    done = await handle.wait()
    assert done.state is State.SUCCESS
    assert [tr.id for tr in done.task_runs][:3] == ids
    assert [len(tr.attempts) for tr in done.task_runs] == [1, 1, 2, 1]
    assert hist(done)[:4] == [State.CREATED, State.RUNNING, State.FAILED, State.RESTARTED]
    assert done.parent_execution_id is None


async def test_s26_restart_drops_global_errors_task_runs(rt: Runtime) -> None:
    """S26: after restart the errors task run is replaced: FAILED, 2 runs, 2 attempts."""
    f = flow("restart_always_failed", Fail(id="failStep"),
             errors=[Log(id="errorHandler", message="failing")])  # fmt: skip
    ex = await rt.run(f)
    first_error = run_of(ex, "errorHandler").id
    done = await (await rt.restart(ex.id)).wait()
    assert done.state is State.FAILED
    assert len(done.task_runs) == 2
    assert len(run_of(done, "failStep").attempts) == 2
    assert run_of(done, "errorHandler").id != first_error


async def test_s27_restart_with_local_errors(rt: Runtime) -> None:
    """S27: local errors are removed and re-run; `after` never runs: FAILED with 5 runs."""
    f = flow(
        "restart_local_errors",
        Log(id="before", message="before"),
        Sequential(id="sequential", tasks=[Log(id="close", message="close"), Fail(id="failStep")],
                   errors=[Log(id="errorHandler", message="failing")]),
        Log(id="after", message="after"),
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.FAILED and len(ex.task_runs) == 5
    done = await (await rt.restart(ex.id)).wait()
    assert done.state is State.FAILED
    assert len(done.task_runs) == 5
    assert len(run_of(done, "failStep").attempts) == 2
    assert "after" not in states(done)


async def test_s28_restart_does_not_repause_a_completed_pause(
    rt: Runtime, clock: FakeClock
) -> None:
    """S28: restarting inside a resumed Pause runs the failed child again without pausing."""
    f = flow(
        "restart_pause_last_failed",
        Log(id="a", message="a"), Log(id="b", message="b"),
        Pause(id="pause", delay=1.0, tasks=[
            Log(id="c", message="{{ 'ok' if taskrun.attemptsCount == 1 else ko }}"),
            Log(id="d", message="d")]),
    )  # fmt: skip
    handle = await rt.submit(f)
    await rt.wait_for(handle.id, State.PAUSED)
    clock.advance(1.0)
    ex = await handle.wait()
    assert ex.state is State.FAILED
    assert run_of(ex, "pause").state is State.FAILED
    done = await (await rt.restart(ex.id)).wait()
    assert done.state is State.SUCCESS
    assert len(done.task_runs) == 5
    assert hist(run_of(done, "pause")).count(State.PAUSED) == 1
    assert len(run_of(done, "c").attempts) == 2


def _restart_each(failed: str = "NONE") -> Flow:
    return flow(
        "restart-each",
        ForEach(id="1_each", concurrency=0, values='["value 1", "value 2", "value 3"]', tasks=[
            Sequential(id="2-1_seq", tasks=[
                Log(id="2-1-1_t1", message="{{ ko if inputs.failed == 'FIRST' else '0' }}"),
                ForEach(id="2-1-2_t2", concurrency=0, values='["value a", "value b", "value c"]',
                        tasks=[Log(id="2-1-2-1_t1",
                                   message="{{ ko if inputs.failed == 'SECOND' else '0' }}")]),
            ]),
        ]),
        Return(id="2_end", value="{{ task.id }}"),
        inputs=[Input(name="failed", default=failed)],
    )  # fmt: skip


async def test_s29_foreach_tree_and_replay(rt: Runtime) -> None:
    """S29: 20 task runs; replay from 2_end makes a new linked execution, SUCCESS, 20 runs."""
    ex = await rt.run(_restart_each())
    assert ex.state is State.SUCCESS
    assert len(ex.task_runs) == 20
    replay = await rt.replay(ex.id, task_id="2_end")
    assert replay.id != ex.id
    done = await replay.wait()
    assert done.state is State.SUCCESS
    assert done.original_execution_id == ex.id
    assert len(done.task_runs) == 20
    assert run_of(done, "2_end").state is State.SUCCESS
    assert State.RESTARTED in hist(run_of(done, "2_end"))
    assert not {tr.id for tr in done.task_runs} & {tr.id for tr in ex.task_runs}


async def test_s29_restart_foreach_failures(rt: Runtime) -> None:
    """S29: a failing nested ForEach restarts several task runs at once."""
    ex = await rt.run(_restart_each("SECOND"))
    assert ex.state is State.FAILED
    failed = [tr for tr in ex.task_runs if tr.state is State.FAILED and tr.task_id == "2-1-2-1_t1"]
    assert len(failed) == 9
    handle = await rt.restart(ex.id)
    done = await handle.wait()
    assert done.state is State.FAILED
    assert all(len(tr.attempts) == 2 for tr in done.task_runs if tr.task_id == "2-1-2-1_t1")


async def test_s30_replay_from_beginning_and_from_task(rt: Runtime) -> None:
    """S30: replay from task run [1] keeps 1 run and re-runs from there; from start keeps none."""
    f = flow("logs", *[Log(id=f"t{i}", message=f"{i}") for i in range(1, 6)])
    ex = await rt.run(f)
    handle = await rt.replay(ex.id, task_run_id=ex.task_runs[1].id)
    assert handle.record.state is State.RESTARTED
    done = await handle.wait()
    assert done.state is State.SUCCESS and len(done.task_runs) == 5
    assert done.task_runs[0].attempts == ex.task_runs[0].attempts
    assert len(done.task_runs[1].attempts) == 2
    fresh = await rt.replay(ex.id)
    assert fresh.record.state is State.CREATED and fresh.record.task_runs == ()
    assert (await fresh.wait()).state is State.SUCCESS


# -- kill --------------------------------------------------------------------------------


async def test_s31_kill_running_execution(rt: Runtime) -> None:
    """S31: kill cancels the running task: KILLING then KILLED, the task run KILLED."""
    f = flow("sleep", Sleep(id="sleep", duration=60), Log(id="never", message="x"))
    handle = await rt.submit(f)
    await rt.wait_for(handle.id, State.RUNNING)
    await anyio.wait_all_tasks_blocked()
    await rt.kill(handle.id)
    ex = await handle.wait()
    assert ex.state is State.KILLED
    assert hist(ex)[-2:] == [State.KILLING, State.KILLED]
    assert [tr.state for tr in ex.task_runs] == [State.KILLED]
    assert ex.task_runs[0].attempts[-1].state is State.KILLED
    with pytest.raises(Exception, match="already KILLED"):
        await rt.kill(handle.id)


async def test_kill_paused_execution(rt: Runtime) -> None:
    """Killing a paused execution ends it KILLED with the pause task run KILLED."""
    handle = await rt.submit(_pause_flow())
    await rt.wait_for(handle.id, State.PAUSED)
    await rt.kill(handle.id)
    ex = await handle.wait()
    assert ex.state is State.KILLED
    assert run_of(ex, "pause").state is State.KILLED


async def test_kill_cascades_to_subflow(rt: Runtime) -> None:
    """Killing a parent kills the running child execution too."""
    child = flow("child", Sleep(id="sleep", duration=60))
    rt.register(child)
    parent = flow("parent", Subflow(id="sub", flow_id="child"))
    handle = await rt.submit(parent)
    ex = await rt.wait_for(handle.id, State.RUNNING)
    for _ in range(50):
        await anyio.wait_all_tasks_blocked()
        kids = await rt.executions(flow="child")
        if kids and kids[0].state is State.RUNNING:
            break
    await rt.kill(handle.id)
    ex = await handle.wait()
    assert ex.state is State.KILLED
    kid = (await rt.executions(flow="child"))[0]
    assert (await rt.wait(kid.id)).state is State.KILLED


# -- flow concurrency ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behavior", "second"),
    [(ConcurrencyBehavior.CANCEL, State.CANCELLED), (ConcurrencyBehavior.FAIL, State.FAILED),
     (ConcurrencyBehavior.QUEUE, State.SUCCESS)],
)  # fmt: skip
async def test_s32_flow_concurrency(
    rt: Runtime, behavior: ConcurrencyBehavior, second: State
) -> None:
    """S32: over the limit, CANCEL cancels, FAIL fails, QUEUE waits then runs (FIFO)."""
    f = flow(f"flow-concurrency-{behavior.value.lower()}", Pause(id="pause"),
             concurrency=Concurrency(limit=1, behavior=behavior))  # fmt: skip
    first = await rt.submit(f)
    await rt.wait_for(first.id, State.PAUSED)
    other = await rt.submit(f)
    if behavior is ConcurrencyBehavior.QUEUE:
        assert (await rt.wait_for(other.id, State.QUEUED)).state is State.QUEUED
        await rt.resume(first.id)
        ex2 = await rt.wait_for(other.id, State.PAUSED)
        assert hist(ex2)[:3] == [State.CREATED, State.QUEUED, State.RUNNING]
        await rt.resume(other.id)
    else:
        ex2 = await other.wait()
        assert hist(ex2) == [State.CREATED, second]
        await rt.resume(first.id)
    assert (await first.wait()).state is State.SUCCESS
    assert (await other.wait()).state is second


# -- errors and flowables -------------------------------------------------------------------


async def test_s33_errors_branch_with_nested_parallels(rt: Runtime) -> None:
    """S33: a failure runs the nested errors branch: 7 task runs, FAILED."""
    f = flow(
        "errors", Fail(id="failed"),
        errors=[
            Log(id="t2", message="error"),
            Parallel(id="t3", tasks=[Parallel(id="t3-t1", tasks=[Parallel(id="t3-t1-t1", tasks=[
                Parallel(id="t3-t1-t1-t1", tasks=[
                    Log(id="t3-t1-t1-t1-last", message="last")])])])]),
        ],
    )  # fmt: skip
    ex = await rt.run(f)
    assert ex.state is State.FAILED
    assert len(ex.task_runs) == 7


@pytest.mark.parametrize("where", ["local", "global"])
async def test_s34_sequential_with_errors(rt: Runtime, where: str) -> None:
    """S34: local or global errors do not rescue the state: FAILED with 6 task runs."""
    errors = [Return(id="error-t1", value="e1"), Return(id="error-t2", value="e2")]
    inner = Sequential(
        id="t2_seq",
        tasks=[Fail(id="t2-t1"), Return(id="t2-t2", value="x"), Return(id="t2-t3", value="y")],
        errors=errors if where == "local" else (),
    )
    f = flow(
        f"sequential-with-{where}-errors",
        Sequential(id="parent-seq", tasks=[Return(id="t1", value="t1"), inner]),
        errors=errors if where == "global" else (),
    )
    ex = await rt.run(f)
    assert ex.state is State.FAILED
    assert sorted(states(ex)) == sorted(
        ["parent-seq", "t1", "t2_seq", "t2-t1", "error-t1", "error-t2"]
    )


async def test_s35_shapes(rt: Runtime) -> None:
    """S35: task-run counts of parallel, foreach, dag, switch, if and disabled flows."""
    par = flow("parallel", Parallel(id="parent", tasks=[Log(id=f"t{i}", message="x")
                                                        for i in range(1, 7)]),
               Log(id="last", message="x"))  # fmt: skip
    assert len((await rt.run(par)).task_runs) == 8
    each_empty = flow("each-empty",
                      ForEach(id="each", values="[]", tasks=[Log(id="l", message="x")]),
                      Log(id="end", message="x"))  # fmt: skip
    assert len((await rt.run(each_empty)).task_runs) == 2
    each_null = flow("each-null", ForEach(id="each", values='[1, null, {"key": "v"}]',
                                          tasks=[Log(id="l", message="x")]))  # fmt: skip
    ex = await rt.run(each_null)
    assert ex.state is State.FAILED and len(ex.task_runs) == 1
    assert "1 null value" in (ex.task_runs[0].error or "")
    for limit in (1, 2, 0):
        fe = flow(f"foreach-{limit}", ForEach(id="each", concurrency=limit, values=["a", "b", "c"],
                  tasks=[Log(id="l1", message="{{ taskrun.value }}"),
                         Return(id="r", value="v")]))  # fmt: skip
        assert len((await rt.run(fe)).task_runs) == 7
    dag = flow("dag", Dag(id="dag", nodes=[
        DagTask(task=Log(id="task1", message="x")),
        DagTask(task=Log(id="task2", message="x"), depends_on=["task1"]),
        DagTask(task=Log(id="task3", message="x"), depends_on=["task1"]),
        DagTask(task=Log(id="task4", message="x"), depends_on=["task2"]),
        DagTask(task=Log(id="task5", message="x"), depends_on=["task4", "task3"]),
        DagTask(task=Log(id="task6", message="x"), depends_on=["task2", "task3"]),
    ]))  # fmt: skip
    ex = await rt.run(dag)
    assert ex.state is State.SUCCESS and len(ex.task_runs) == 7
    order = [tr.task_id for tr in ex.task_runs]
    assert order.index("task5") > order.index("task4") > order.index("task2") > order.index("task1")
    impossible = flow(
        "switch-impossible", Switch(id="s", value="nope", cases={"a": [Log(id="a", message="x")]})
    )
    assert (await rt.run(impossible)).state is State.FAILED
    if_flow = flow("if-without-else", If(id="if", condition="{{ inputs.param }}",
                                         then=[Log(id="t", message="x")]),
                   inputs=[Input(name="param", type="bool")])  # fmt: skip
    ex = await rt.run(if_flow, {"param": False})
    assert ex.state is State.SUCCESS and len(ex.task_runs) == 1
    assert ex.task_runs[0].outputs == {"evaluation_result": False}
    disabled = flow("disable-simple", Log(id="a", message="x"),
                    Log(id="b", message="x", disabled=True),
                    Log(id="c", message="x"))  # fmt: skip
    assert len((await rt.run(disabled)).task_runs) == 2


async def test_errors_inside_the_runtime_block_are_not_wrapped(tmp_path: Any) -> None:
    """An exception raised in `async with Runtime.open()` reaches the caller as itself."""
    from actorflow import InputError

    with pytest.raises(InputError, match="missing required input 'x'"):
        async with Runtime.open(":memory:", files=tmp_path) as rt:
            await rt.submit(flow("needs-input", Log(id="a", message="a"), inputs=[Input(name="x")]))


async def test_a_crashed_task_run_actor_restarts_from_its_snapshot(tmp_path: Any) -> None:
    """A task-run actor that crashes (a runtime fault, not a task failure) is restarted by its
    execution from its last snapshot: the interrupted attempt is recorded, a new one runs."""
    from actorflow.runtime import Observer

    class FaultyOnce(Observer):
        def __init__(self) -> None:
            self.faults = 0

        def attempt_started(self, scope: Any, tr: Any, number: int) -> Any:
            if self.faults == 0:
                self.faults += 1
                raise RuntimeError("observer fault")
            return None

    observer = FaultyOnce()
    async with Runtime.open(":memory:", files=tmp_path, observer=observer) as rt:
        rt.engine.tracing = True  # route attempts through the faulty observer
        ex = await rt.run(flow("crashy", Log(id="a", message="a")))
    assert ex.state is State.SUCCESS
    attempts = run_of(ex, "a").attempts
    assert [a.state for a in attempts] == [State.FAILED, State.SUCCESS]
    assert attempts[0].error == "interrupted"


async def test_a_crashed_execution_actor_restarts_from_the_store(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An execution actor that crashes is restarted by the guardian from its stored snapshot
    and the execution still completes; completed task runs are not run again."""
    from actorflow.runtime._core import _execution

    original = _execution.ExecutionActor._child_changed
    crashes = {"left": 1}

    def faulty(self: Any, tr: TaskRun) -> None:
        if tr.task_id == "b" and tr.state is State.SUCCESS and crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("injected execution actor fault")
        original(self, tr)

    monkeypatch.setattr(_execution.ExecutionActor, "_child_changed", faulty)
    async with Runtime.open(tmp_path / "g.db") as rt:
        f = flow(
            "guarded", Log(id="a", message="a"), Log(id="b", message="b"), Log(id="c", message="c")
        )
        ex = await rt.run(f, timeout=10)
    assert crashes["left"] == 0
    assert ex.state is State.SUCCESS
    assert [len(tr.attempts) for tr in ex.task_runs] == [1, 1, 1]


async def test_recovery_continues_when_a_pause_ended_while_down(tmp_path: Any) -> None:
    """A PAUSED execution whose Pause task run was stored as ended (the process died before the
    execution saw it) resumes on recovery instead of staying paused forever."""
    import msgspec

    from actorflow.runtime._core._persist import decode_task_run, history_ops, task_run_rows
    from actorflow.runtime._records import StateEntry
    from actorflow.storage import SQLiteStore

    f = flow("pause-then-crash", Pause(id="wait", delay=5.0), Log(id="after", message="go"))
    db = tmp_path / "p.db"
    async with Runtime.open(db, flows=[f]) as rt:
        handle = await rt.submit(f)
        await rt.wait_for(handle.id, State.PAUSED)
    async with SQLiteStore(db) as store:
        row = next(r for r in await store.task_runs(handle.id) if r.task_id == "wait")
        tr = decode_task_run(row.data)
        ended = (StateEntry(State.RUNNING, 1.0), StateEntry(State.SUCCESS, 1.0))
        tr = msgspec.structs.replace(tr, state=State.SUCCESS, history=(*tr.history, *ended))
        await store.write([*task_run_rows(tr), *history_ops(tr.execution_id, tr.id, ended)])
    async with Runtime.open(db, flows=[f]) as rt:
        ex = await rt.wait(handle.id, timeout=10)
    assert ex.state is State.SUCCESS
    assert hist(ex)[-3:] == [State.RESTARTED, State.RUNNING, State.SUCCESS]
    assert run_of(ex, "after").state is State.SUCCESS


async def test_a_manual_pause_survives_recovery(tmp_path: Any) -> None:
    """A manually paused execution stays PAUSED after a restart of the process until resumed."""
    import anyio

    gate = anyio.Event()

    @af_task
    async def slow(ctx: Any) -> None:
        await gate.wait()

    f = flow("manual", slow("a"), Log(id="b", message="b"))
    db = tmp_path / "m.db"
    async with Runtime.open(db, flows=[f]) as rt:
        handle = await rt.submit(f)
        await rt.wait_for(handle.id, State.RUNNING)
        await rt.pause(handle.id)
        gate.set()
        await rt.wait_for(handle.id, State.PAUSED)
        await anyio.wait_all_tasks_blocked()
    async with Runtime.open(db, flows=[f]) as rt:
        ex = await rt.get(handle.id)
        assert ex.state is State.PAUSED and ex.manual_pause
        await rt.resume(handle.id)
        ex = await rt.wait(handle.id, timeout=10)
    assert ex.state is State.SUCCESS
