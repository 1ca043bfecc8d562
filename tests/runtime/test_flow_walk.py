"""Walking a flow's task tree: same order as a recursive walk, no recursion at any depth,
a clear error past MAX_NESTING, Dag validation linear in the number of nodes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

import actorflow as af
from actorflow import FlowValidationError
from actorflow.runtime._flow import MAX_NESTING
from actorflow.runtime._tasks import Flowable, Task

pytestmark = pytest.mark.anyio


@af.task
async def nothing(ctx: af.TaskContext) -> None:
    return None


def nested(levels: int) -> Task:
    """A leaf at level ``levels`` (a top-level task is at level 1)."""
    task: Task = nothing("leaf")
    for i in range(levels - 1):
        task = af.Sequential(id=f"s{i}", tasks=[task])
    return task


def recursive(tasks: Sequence[Task], parent: Flowable | None) -> Iterator[tuple[str, str | None]]:
    for t in tasks:
        yield t.id, parent.id if parent else None
        if isinstance(t, Flowable):
            yield from recursive(t.children(), t)


def test_walk_visits_tasks_in_the_order_of_a_recursive_walk() -> None:
    """Each task comes before its children, siblings in order, branches and errors included."""
    flow = af.Flow(
        id="mixed",
        tasks=[
            nothing("a"),
            af.Parallel(
                id="p",
                tasks=[nothing("p1"), af.Sequential(id="s", tasks=[nothing("s1")])],
                errors=[nothing("pe")],
                finally_=[nothing("pf")],
            ),
            af.If(id="if", condition=True, then=[nothing("t1")], else_=[nothing("e1")]),
            af.Switch(id="sw", value="x", cases={"x": [nothing("x1")]}, defaults=[nothing("d1")]),
            af.Dag(
                id="dag",
                nodes=[
                    af.DagTask(task=nothing("n1")),
                    af.DagTask(task=nothing("n2"), depends_on=["n1"]),
                ],
            ),
        ],
        errors=[nothing("fe")],
        finally_=[nothing("ff")],
    )
    got = [(t.id, p.id if p else None) for t, p in flow._walk(flow.top_level(), None)]
    assert got == list(recursive(flow.top_level(), None))
    assert flow.parent_of("s1") is flow.task("s")


def test_nesting_up_to_the_limit_is_accepted() -> None:
    """A leaf exactly MAX_NESTING levels deep is a valid flow, found by id."""
    flow = af.Flow(id="deep", tasks=[nested(MAX_NESTING)])
    assert flow.task("leaf").id == "leaf"
    assert flow.error_task_ids() == frozenset()


@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 5_000])
def test_nesting_past_the_limit_is_a_clear_flow_error(levels: int) -> None:
    """Deeper than MAX_NESTING: FlowValidationError naming the limit (never RecursionError)."""
    with pytest.raises(FlowValidationError, match=f"more than {MAX_NESTING} levels"):
        af.Flow(id="deep", tasks=[nested(levels)])


async def test_a_flow_at_the_nesting_limit_runs(rt: af.Runtime) -> None:
    """An execution of a MAX_NESTING-deep flow succeeds: no recursion in frames or actors."""
    ex = await rt.run(af.Flow(id="deep", tasks=[nested(MAX_NESTING)]))
    assert ex.state is af.State.SUCCESS
    assert ex.task_run("leaf").state is af.State.SUCCESS
    assert len(ex.task_runs) == MAX_NESTING


def test_dag_cycles_are_still_found() -> None:
    """The counting Kahn check reports the nodes on (or behind) a cycle, and only those."""
    nodes = [
        af.DagTask(task=nothing("a")),
        af.DagTask(task=nothing("b"), depends_on=["a", "c"]),
        af.DagTask(task=nothing("c"), depends_on=["b"]),
        af.DagTask(task=nothing("d"), depends_on=["c", "c"]),
        af.DagTask(task=nothing("e"), depends_on=["a"]),
    ]
    with pytest.raises(FlowValidationError, match=r"cyclic dependency between \['b', 'c', 'd'\]"):
        af.Flow(id="cyc", tasks=[af.Dag(id="dag", nodes=nodes)])
