"""Task log lines and runtime events reach the host's stdlib logging, with ids as extras."""

from __future__ import annotations

import logging

import pytest

import actorflow as af
from actorflow.runtime import Runtime

pytestmark = pytest.mark.anyio


@af.task
async def chatty(ctx: af.TaskContext) -> None:
    ctx.log.info("starting")
    ctx.log.debug("details")
    ctx.log.warning("careful")


@af.task(retry=af.Retry.constant(0, max_attempts=2))
async def broken(ctx: af.TaskContext) -> None:
    raise ValueError("bad row 7")


async def test_info_lines_reach_the_host_with_ids_as_extra(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO a host sees INFO and WARNING task lines (not DEBUG) under
    actorflow.task.<namespace>.<flow>.<task>, carrying execution, task run and attempt ids."""
    caplog.set_level(logging.INFO)
    flow = af.Flow(id="etl", namespace="team.data", tasks=[chatty("talk")])
    done = await rt.run(flow)
    lines = [r for r in caplog.records if r.name.startswith("actorflow.task.")]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (logging.INFO, f"[{done.id}] starting"),
        (logging.WARNING, f"[{done.id}] careful"),
    ]
    record = lines[0]
    assert record.name == "actorflow.task.team.data.etl.talk"
    assert record.__dict__["actorflow_execution_id"] == done.id
    assert record.__dict__["actorflow_task_run_id"] == done.task_run("talk").id
    assert record.__dict__["actorflow_attempt"] == 1
    assert record.__dict__["actorflow_namespace"] == "team.data"
    assert record.__dict__["actorflow_flow_id"] == "etl"
    assert record.__dict__["actorflow_task_id"] == "talk"
    assert "actorflow_trace_id" in record.__dict__  # None without tracing
    stored = [(r.level, r.message) for r in await rt.logs(done.id)]
    assert ("DEBUG", "details") in stored  # the stored logs keep every level


async def test_error_lines_and_failure_events_reach_the_host_at_info(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing attempt's ERROR line (one per attempt, numbered) and the execution's FAILED
    event reach a host logging at INFO; the task run's RETRYING is a WARNING event."""
    caplog.set_level(logging.INFO)
    flow = af.Flow(id="load", namespace="team", tasks=[broken("b")])
    done = await rt.run(flow)
    assert done.state is af.State.FAILED
    errors = [r for r in caplog.records if r.name == "actorflow.task.team.load.b"]
    assert [r.levelno for r in errors] == [logging.ERROR, logging.ERROR]
    assert [r.__dict__["actorflow_attempt"] for r in errors] == [1, 2]
    assert "ValueError: bad row 7" in errors[0].getMessage()
    events = [r for r in caplog.records if r.name == "actorflow.runtime.execution.team.load"]
    assert [r.__dict__["actorflow_state"] for r in events][-1] == "FAILED"
    assert events[-1].levelno == logging.ERROR
    assert events[-1].getMessage() == f"execution {done.id} FAILED"
    runs = [r for r in caplog.records if r.name == "actorflow.runtime.task_run.team.load.b"]
    assert [(r.__dict__["actorflow_state"], r.levelno) for r in runs] == [
        ("RETRYING", logging.WARNING),
        ("FAILED", logging.ERROR),
    ]


async def test_a_host_filters_by_namespace(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    """Raising one namespace's logger to ERROR silences its INFO lines and events only."""
    caplog.set_level(logging.INFO)
    logging.getLogger("actorflow.task.quiet").setLevel(logging.ERROR)
    logging.getLogger("actorflow.runtime.execution.quiet").setLevel(logging.ERROR)
    try:
        await rt.run(af.Flow(id="f", namespace="quiet", tasks=[chatty("t")]))
        await rt.run(af.Flow(id="f", namespace="loud", tasks=[chatty("t")]))
    finally:
        logging.getLogger("actorflow.task.quiet").setLevel(logging.NOTSET)
        logging.getLogger("actorflow.runtime.execution.quiet").setLevel(logging.NOTSET)
    names = {r.name for r in caplog.records}
    assert "actorflow.task.loud.f.t" in names
    assert "actorflow.runtime.execution.loud.f" in names
    assert not any(".quiet." in n for n in names)


async def test_execution_events_carry_their_state_at_its_level(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A successful execution logs each new state at INFO with its id and state as extras."""
    caplog.set_level(logging.INFO)
    done = await rt.run(af.Flow(id="ok", namespace="n", tasks=[af.Log(id="l", message="hi")]))
    events = [r for r in caplog.records if r.name == "actorflow.runtime.execution.n.ok"]
    assert [r.__dict__["actorflow_state"] for r in events] == ["CREATED", "RUNNING", "SUCCESS"]
    assert {r.levelno for r in events} == {logging.INFO}
    assert {r.__dict__["actorflow_execution_id"] for r in events} == {done.id}
    # the Log task's own line is a task line of its level
    (line,) = [r for r in caplog.records if r.name == "actorflow.task.n.ok.l"]
    assert line.levelno == logging.INFO and line.getMessage().endswith("hi")


@af.task
async def silent(ctx: af.TaskContext) -> None:
    return None


TASK_RUN_PREFIX = "actorflow.runtime.task_run.unheard."


async def test_nobody_listening_makes_no_logger_per_task(rt: Runtime) -> None:
    """With no logging configured, task-run state changes create no logger per task (a flow
    of many tasks run once would leave one in logging's registry for each)."""
    flow = af.Flow(id="wide", namespace="unheard", tasks=[silent(f"t{i}") for i in range(3)])
    done = await rt.run(flow)
    assert done.state is af.State.SUCCESS
    made = [n for n in logging.Logger.manager.loggerDict if n.startswith(TASK_RUN_PREFIX)]
    assert made == []


async def test_a_task_run_logger_configured_later_gets_its_events(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A host that sets one task's event logger to DEBUG after the flow already ran unheard
    sees that task's state changes from the next run on (nothing stale is kept)."""
    flow = af.Flow(id="late", namespace="heard", tasks=[silent("a"), silent("b")])
    await rt.run(flow)
    name = "actorflow.runtime.task_run.heard.late.b"
    logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger=name):
            done = await rt.run(flow)
    finally:
        logging.getLogger(name).setLevel(logging.NOTSET)
    events = [r for r in caplog.records if r.name.startswith("actorflow.runtime.task_run.")]
    assert {r.name for r in events} == {name}
    assert [r.__dict__["actorflow_state"] for r in events] == ["RUNNING", "SUCCESS"]
    assert {r.__dict__["actorflow_execution_id"] for r in events} == {done.id}
