"""Kestra semantics that its own test flows need, from small flows of our own: the
``system.correlationId`` label, ``kv()``, ``globals``, ``workerTaskrun``, retries as new
executions, multi-flow preconditions."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from actorflow.flows import load_flow_text
from actorflow.runtime import Execution, FakeClock, Runtime, State

pytestmark = pytest.mark.anyio


async def test_correlation_id_is_the_root_execution_id(rt: Runtime) -> None:
    """Every execution is labelled system.correlationId; a subflow's child and grandchild
    carry their root's id, readable as {{ labels.system.correlationId }}."""
    rt.register(
        load_flow_text("""
id: grand
namespace: t
tasks:
  - {id: say, type: io.kestra.plugin.core.debug.Return, format: "{{ labels.system.correlationId }}"}
""")
    )
    rt.register(
        load_flow_text("""
id: child
namespace: t
tasks:
  - {id: call, type: io.kestra.plugin.core.flow.Subflow, namespace: t, flowId: grand}
""")
    )
    root = await rt.run(
        load_flow_text("""
id: root
namespace: t
tasks:
  - {id: call, type: io.kestra.plugin.core.flow.Subflow, namespace: t, flowId: child}
"""),
        timeout=10,
    )
    assert root.state is State.SUCCESS, root.error
    assert root.labels["system.correlationId"] == root.id
    child = await rt.get(root.task_run("call").outputs["executionId"])
    assert child.labels["system.correlationId"] == root.id
    grand = await rt.get(child.task_run("call").outputs["executionId"])
    assert grand.labels["system.correlationId"] == root.id
    assert grand.task_run("say").outputs["value"] == root.id


_KV_FLOW = """
id: kvread
namespace: t
inputs:
  - {id: ns, type: STRING, defaults: other}
  - {id: strict, type: BOOLEAN, defaults: false}
tasks:
  - {id: own, type: io.kestra.plugin.core.debug.Return, format: "{{ kv('k').field ?? 'none' }}"}
  - id: other
    type: io.kestra.plugin.core.debug.Return
    format: "{{ kv('k', inputs.ns, inputs.strict).field }}"
  - id: chained
    type: io.kestra.plugin.core.debug.Return
    format: "{{ kv(kv('pointer')) }}"
"""


async def test_kv_function_reads_the_store_when_the_attempt_starts(rt: Runtime) -> None:
    """kv() reads the flow's namespace (or the one given) at the attempt's start, after an
    earlier task set it; a key named by another key's value is read too."""
    flow = load_flow_text(
        _KV_FLOW.replace(
            "tasks:\n",
            "tasks:\n  - {id: set, type: io.kestra.plugin.core.kv.Set,"
            " key: pointer, value: target}\n",
            1,
        )
    )
    await rt.engine.store.kv_set("t", "k", '{"field": "mine"}')
    await rt.engine.store.kv_set("other", "k", '{"field": "theirs"}')
    await rt.engine.store.kv_set("t", "target", '"found"')
    ex = await rt.run(flow, timeout=10)
    assert ex.state is State.SUCCESS, ex.error
    assert ex.task_run("own").outputs["value"] == "mine"
    assert ex.task_run("other").outputs["value"] == "theirs"
    assert ex.task_run("chained").outputs["value"] == "found"


async def test_kv_function_missing_key(rt: Runtime) -> None:
    """A missing key is null (the ?? default applies); with errorOnMissing the task fails
    naming the key and the namespace."""
    ex = await rt.run(load_flow_text(_KV_FLOW), {"strict": True}, timeout=10)
    assert ex.state is State.FAILED
    assert ex.task_run("own").outputs["value"] == "none"
    error = ex.task_run("other").error or ""
    assert "The key 'k' does not exist in the namespace 'other'" in error


async def test_worker_taskrun_is_the_working_directory(rt: Runtime) -> None:
    """Inside a WorkingDirectory (in a loop), workerTaskrun is the WorkingDirectory's task
    run, with the loop value."""
    ex = await rt.run(
        load_flow_text("""
id: wd
namespace: t
tasks:
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: ["a"]
    tasks:
      - id: dir
        type: io.kestra.plugin.core.flow.WorkingDirectory
        tasks:
          - id: who
            type: io.kestra.plugin.core.debug.Return
            format: "{{ workerTaskrun.id }} {{ workerTaskrun.value }}"
"""),
        timeout=10,
    )
    assert ex.state is State.SUCCESS, ex.error
    (wd,) = [tr for tr in ex.task_runs if tr.task_id == "dir"]
    (who,) = [tr for tr in ex.task_runs if tr.task_id == "who"]
    assert who.outputs["value"] == f"{wd.id} a"


async def test_globals_come_from_the_configured_file(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """{{ globals.x }} reads the YAML file named by ACTORFLOW_GLOBALS; a broken file fails the
    task naming the file and line."""
    path = tmp_path / "globals.yml"
    path.write_text("string: text\nnested: {int: 2}\n")
    monkeypatch.setenv("ACTORFLOW_GLOBALS", str(path))
    flow = load_flow_text("""
id: g
namespace: t
tasks:
  - {id: g, type: io.kestra.plugin.core.debug.Return, format: "{{ globals.string }} {{ globals.nested.int }}"}
""")
    ex = await rt.run(flow, timeout=10)
    assert ex.state is State.SUCCESS, ex.error
    assert ex.task_run("g").outputs["value"] == "text 2"
    path.write_text("ok: 1\nbad: [unclosed\n")
    os.utime(path, (1, 1))  # another mtime than the first read, whatever the clock's grain
    ex = await rt.run(flow, timeout=10)
    assert ex.state is State.FAILED
    assert f"ACTORFLOW_GLOBALS file {path}:3:" in (ex.task_run("g").error or "")


async def test_return_of_null_is_empty_text(rt: Runtime) -> None:
    """A file flow's Return whose value renders to null outputs "" (Kestra's format is text);
    other values keep their type."""
    ex = await rt.run(
        load_flow_text("""
id: r
tasks:
  - {id: none, type: io.kestra.plugin.core.debug.Return, format: "{{ null }}"}
  - {id: num, type: io.kestra.plugin.core.debug.Return, format: "{{ 21 * 2 }}"}
"""),
        timeout=10,
    )
    assert ex.task_run("none").outputs == {"value": ""}
    assert ex.task_run("num").outputs == {"value": 42}


async def test_output_values_render_templates_as_text(rt: Runtime) -> None:
    """OutputValues gives the text each template prints (so a WaitFor compares with '4'),
    while values that are not templates keep their type."""
    ex = await rt.run(
        load_flow_text("""
id: ov
tasks:
  - id: v
    type: io.kestra.plugin.core.output.OutputValues
    values:
      sum: "{{ 1 + 3 }}"
      flag: "{{ 1 == 1 }}"
      nested: {list: ["{{ null }}", 7]}
      plain: 5
  - {id: check, type: io.kestra.plugin.core.debug.Return, format: "{{ outputs.v['values'].sum == '4' }}"}
"""),
        timeout=10,
    )
    assert ex.state is State.SUCCESS, ex.error
    assert ex.task_run("v").outputs["values"] == {
        "sum": "4",
        "flag": "true",
        "nested": {"list": ["", 7]},
        "plain": 5,
    }
    assert ex.task_run("check").outputs["value"] is True


async def _chain(rt: Runtime, clock: FakeClock, first_id: str) -> list[Execution]:
    """The executions of a retry chain once its last one ended, advancing the fake clock."""
    for _ in range(50):
        await anyio.wait_all_tasks_blocked()
        chain = sorted(
            (e for e in await rt.executions() if (e.original_execution_id or e.id) == first_id),
            key=lambda e: e.attempt_number,
        )
        if chain and all(e.state.terminal for e in chain) and chain[-1].state is not State.RETRIED:
            return chain
        clock.advance(1)
    raise AssertionError("the retry chain did not end")


@pytest.mark.parametrize(
    ("retry", "where"),
    [
        ("{behavior: CREATE_NEW_EXECUTION, type: constant, maxAttempt: 3, interval: PT1S}", "task"),
        (
            "{behavior: CREATE_NEW_EXECUTION, type: constant, maxDuration: PT5S, interval: PT2S}",
            "flow",
        ),
    ],
)
async def test_retry_as_new_execution(
    rt: Runtime, clock: FakeClock, retry: str, where: str
) -> None:
    """A failed task whose retry is CREATE_NEW_EXECUTION ends its execution RETRIED and a new
    execution starts after the interval (linked: originalId, attempt number, labels), until
    maxAttempt executions or maxDuration from the first start: RETRIED, RETRIED, FAILED."""
    task_retry = f", retry: {retry}" if where == "task" else ""
    flow_retry = f"retry: {retry}\n" if where == "flow" else ""
    flow = load_flow_text(f"""
id: again
namespace: t
labels: {{team: a}}
{flow_retry}tasks:
  - {{id: fail, type: io.kestra.plugin.core.execution.Fail{task_retry}}}
  - {{id: who, type: io.kestra.plugin.core.log.Log, message: "{{{{ execution.originalId }}}}"}}
""")
    handle = await rt.submit(flow)
    chain = await _chain(rt, clock, handle.id)
    assert [e.state for e in chain] == [State.RETRIED, State.RETRIED, State.FAILED]
    assert [e.attempt_number for e in chain] == [1, 2, 3]
    assert all(e.labels["team"] == "a" for e in chain)
    assert {e.labels["system.correlationId"] for e in chain} == {handle.id}
    first_end = chain[0].end_date
    assert first_end is not None
    # Each next execution started only once the interval had passed.
    assert chain[1].history[1].date >= first_end + 1
    (fail,) = (await rt.get(chain[0].id)).task_runs
    assert fail.state is State.FAILED and len(fail.attempts) == 1


async def test_retry_as_new_execution_waits_across_a_restart(tmp_path: Path) -> None:
    """The next execution of a CREATE_NEW_EXECUTION retry is stored with its start date: a
    runtime opened later on the database starts it when due."""
    flow = load_flow_text("""
id: again
namespace: t
retry: {behavior: CREATE_NEW_EXECUTION, type: constant, maxAttempt: 2, interval: PT30S}
tasks:
  - {id: fail, type: io.kestra.plugin.core.execution.Fail}
""")
    db = tmp_path / "db.sqlite"
    clock = FakeClock()
    async with Runtime.open(db, flows=[flow], clock=clock) as rt:
        first = await rt.run(flow, timeout=10)
        assert first.state is State.RETRIED
        (pending,) = [e for e in await rt.executions() if e.id != first.id]
        assert pending.state is State.CREATED and pending.original_execution_id == first.id
    async with Runtime.open(db, flows=[flow], clock=clock) as rt:
        await anyio.wait_all_tasks_blocked()
        assert (await rt.get(pending.id)).state is State.CREATED  # not due yet
        clock.advance(31)
        done = await rt.wait(pending.id, timeout=10)
        assert done.state is State.FAILED and done.attempt_number == 2


_UPSTREAM = """
id: {id}
namespace: multi
labels: {{some: {label}}}
tasks:
  - {{id: t, type: io.kestra.plugin.core.debug.Return, format: "{id}"}}
"""
_LISTENER = """
id: listen
namespace: multi
tasks:
  - {id: t, type: io.kestra.plugin.core.debug.Return, format: "{{ trigger.flowId }}"}
triggers:
  - id: both
    type: io.kestra.plugin.core.trigger.Flow
    preconditions:
      id: both
      flows:
        - {namespace: multi, flowId: a, states: [SUCCESS]}
      where:
        - id: b-labelled
          filters:
            - {field: FLOW_ID, type: EQUAL_TO, value: b}
            - {field: EXPRESSION, type: IS_TRUE, value: "{{ labels.some == 'label' }}"}
  - id: multiple
    type: io.kestra.plugin.core.trigger.Flow
    conditions:
      - id: m
        type: io.kestra.plugin.core.condition.MultipleCondition
        window: P1D
        conditions:
          a: {type: io.kestra.plugin.core.condition.ExecutionFlow, namespace: multi, flowId: a}
          c: {type: io.kestra.plugin.core.condition.ExecutionFlow, namespace: multi, flowId: c}
"""


async def test_multi_flow_trigger_fires_once_all_matched_across_restarts(tmp_path: Path) -> None:
    """A Flow trigger with several preconditions (flows and where filters) fires once each
    was met by an ended execution in the window, what was met surviving a restart of the
    process; a MultipleCondition whose flows did not all end does not fire."""
    from actorflow.runtime import Scheduler

    flows = [
        load_flow_text(_UPSTREAM.format(id="a", label="x")),
        load_flow_text(_UPSTREAM.format(id="b", label="label")),
        load_flow_text(_UPSTREAM.format(id="b2", label="label").replace("id: b2", "id: c")),
        load_flow_text(_LISTENER),
    ]
    a, b, _c, listener = flows
    db = tmp_path / "db.sqlite"
    async with Runtime.open(db, flows=flows) as rt, Scheduler(rt) as sched:
        await rt.run(a, timeout=10)
        await sched.advanced()
        assert await rt.executions(flow="listen") == []  # b not seen yet
    # b with the wrong label meets nothing; in a new process, b with it completes "both".
    async with Runtime.open(db, flows=flows) as rt, Scheduler(rt) as sched:
        wrong = load_flow_text(_UPSTREAM.format(id="b", label="other"))
        await rt.run(wrong, timeout=10)
        await sched.advanced()
        assert await rt.executions(flow="listen") == []
        ended_b = await rt.run(b, timeout=10)
        await sched.advanced()
        await sched.advanced()
        (heard,) = await rt.executions(flow="listen")
        heard = await rt.wait(heard.id, timeout=10)
        assert heard.state is State.SUCCESS
        assert heard.trigger is not None and heard.trigger["id"] == "both"
        assert heard.trigger["executionId"] == ended_b.id
        # Reset on success: one more b alone fires nothing.
        await rt.run(b, timeout=10)
        await sched.advanced()
        assert len(await rt.executions(flow="listen")) == 1
    assert listener.triggers[1].require  # the MultipleCondition one, never complete (no c)


def test_multi_flow_trigger_refuses_what_it_does_not_support() -> None:
    """Unsupported window types and filter types are refused at load naming the field."""
    from actorflow._errors import FlowValidationError

    bad_window = _LISTENER.replace(
        "      id: both\n", "      id: both\n      timeWindow: {type: SLIDING_WINDOW}\n"
    )
    with pytest.raises(FlowValidationError, match=r"timeWindow.type.*SLIDING_WINDOW"):
        load_flow_text(bad_window)
    bad_filter = _LISTENER.replace("type: EQUAL_TO, value: b", "type: SOUNDS_LIKE, value: b")
    with pytest.raises(FlowValidationError, match=r"filters\[0\]\.type.*SOUNDS_LIKE"):
        load_flow_text(bad_filter)
