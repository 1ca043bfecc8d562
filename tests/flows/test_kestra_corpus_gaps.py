"""Kestra semantics that its own test flows need, from small flows of our own: the
``system.correlationId`` label, ``kv()``, ``globals``, ``workerTaskrun``, retries as new
executions, multi-flow preconditions."""

from __future__ import annotations

import pytest

from actorflow.flows import load_flow_text
from actorflow.runtime import Runtime, State

pytestmark = pytest.mark.anyio


async def test_correlation_id_is_the_root_execution_id(rt: Runtime) -> None:
    """Every execution is labelled system.correlationId; a subflow's child and grandchild
    carry their root's id, readable as {{ labels.system.correlationId }}."""
    rt.register(load_flow_text("""
id: grand
namespace: t
tasks:
  - {id: say, type: io.kestra.plugin.core.debug.Return, format: "{{ labels.system.correlationId }}"}
"""))
    rt.register(load_flow_text("""
id: child
namespace: t
tasks:
  - {id: call, type: io.kestra.plugin.core.flow.Subflow, namespace: t, flowId: grand}
"""))
    root = await rt.run(load_flow_text("""
id: root
namespace: t
tasks:
  - {id: call, type: io.kestra.plugin.core.flow.Subflow, namespace: t, flowId: child}
"""), timeout=10)
    assert root.state is State.SUCCESS, root.error
    assert root.labels["system.correlationId"] == root.id
    child = await rt.get(root.task_run("call").outputs["executionId"])
    assert child.labels["system.correlationId"] == root.id
    grand = await rt.get(child.task_run("call").outputs["executionId"])
    assert grand.labels["system.correlationId"] == root.id
    assert grand.task_run("say").outputs["value"] == root.id
