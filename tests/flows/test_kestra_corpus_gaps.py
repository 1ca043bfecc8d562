"""Kestra semantics that its own test flows need, from small flows of our own: the
``system.correlationId`` label, ``kv()``, ``globals``, ``workerTaskrun``, retries as new
executions, multi-flow preconditions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actorflow.flows import load_flow_text
from actorflow.runtime import Runtime, State

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
