"""Subflows: a chain of nested executions is bounded (indirect recursion fails the subflow
task run that goes too deep, with a clear error), and ordinary nesting still works."""

from __future__ import annotations

import pytest

from actorflow.runtime import Execution, Flow, Log, Runtime, State, Subflow
from actorflow.runtime._tasks import MAX_SUBFLOW_DEPTH

pytestmark = pytest.mark.anyio


async def _chain(rt: Runtime, top: Execution) -> list[Execution]:
    """The execution and its descendants along the subflow task runs, top first."""
    chain = [top]
    while True:
        child = next((tr.child_execution_id for tr in chain[-1].task_runs
                      if tr.child_execution_id), None)  # fmt: skip
        if child is None:
            return chain
        chain.append(await rt.get(child))


async def test_indirect_recursion_stops_at_the_depth_limit(rt: Runtime) -> None:
    """ping -> pong -> ping ... fails once the chain would exceed MAX_SUBFLOW_DEPTH."""
    ping = Flow(id="ping", tasks=[Subflow(id="call", flow_id="pong")])
    pong = Flow(id="pong", tasks=[Subflow(id="call", flow_id="ping")])
    rt.register(ping)
    rt.register(pong)
    top = await rt.run(ping)
    assert top.state is State.FAILED
    await rt.store.flush()
    chain = await _chain(rt, await rt.get(top.id))
    assert len(chain) == MAX_SUBFLOW_DEPTH + 1  # the top execution and its 10 descendants
    deepest = chain[-1].task_run("call")
    assert deepest.state is State.FAILED
    assert deepest.child_execution_id is None
    assert f"more than {MAX_SUBFLOW_DEPTH} nested subflow executions" in (deepest.error or "")
    assert all(ex.state is State.FAILED for ex in chain)


async def test_nesting_within_the_limit_runs(rt: Runtime) -> None:
    """A chain exactly MAX_SUBFLOW_DEPTH deep succeeds."""
    flows = [Flow(id=f"f{i}", tasks=[Subflow(id="call", flow_id=f"f{i + 1}")])
             for i in range(MAX_SUBFLOW_DEPTH)]  # fmt: skip
    flows.append(Flow(id=f"f{MAX_SUBFLOW_DEPTH}", tasks=[Log(id="leaf", message="hi")]))
    for f in flows:
        rt.register(f)
    top = await rt.run(flows[0])
    assert top.state is State.SUCCESS
    await rt.store.flush()
    assert len(await _chain(rt, await rt.get(top.id))) == MAX_SUBFLOW_DEPTH + 1
