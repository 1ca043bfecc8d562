"""``step.output()`` inside loops: a reference inside a ForEach iteration reads that iteration's
upstream output (Kestra's ``outputs.task[taskrun.value]``); one that cannot mean one output is
refused when the flow is defined, naming the step and why."""

from __future__ import annotations

import pytest

import actorflow as af
from actorflow import FlowValidationError
from actorflow.runtime import Runtime

pytestmark = pytest.mark.anyio


@af.task
async def fetch(ctx: af.TaskContext, base: int = 0) -> int:
    """A number made of the loop value(s) of its iteration."""
    return base + int(str(ctx.value))


@af.task
async def double(ctx: af.TaskContext, n: int) -> dict[str, int | str]:
    return {"n": n * 2, "value": str(ctx.value)}


@af.task
async def pair(ctx: af.TaskContext, outer: int, inner: int) -> dict[str, int]:
    return {"outer": outer, "inner": inner}


@af.task
async def start(ctx: af.TaskContext) -> int:
    return 1000


def _by_value(ex: af.Execution, task_id: str) -> dict[str | None, dict[str, object]]:
    return {tr.value: dict(tr.outputs) for tr in ex.task_runs if tr.task_id == task_id}


@pytest.mark.parametrize("concurrency", [1, 0])
async def test_a_reference_inside_a_foreach_reads_its_own_iteration(
    rt: Runtime, concurrency: int
) -> None:
    """Each iteration's reader gets the upstream output of its own value, iterations one at a
    time or all at once; a step outside the loop is read the same by every iteration."""
    base = start("base")
    f = fetch("fetch", base=base.output())
    flow = af.Flow(
        id="each-ref",
        tasks=[
            base,
            af.ForEach(
                id="each", values=["1", "2", "3"], concurrency=concurrency,
                tasks=[f, double("double", n=f.output())],
            ),
        ],
    )  # fmt: skip
    ex = await rt.run(flow)
    assert ex.state is af.State.SUCCESS, ex.error
    assert _by_value(ex, "double") == {
        "1": {"n": 2002, "value": "1"},
        "2": {"n": 2004, "value": "2"},
        "3": {"n": 2006, "value": "3"},
    }


async def test_nested_loops_read_the_output_of_their_own_values(rt: Runtime) -> None:
    """In a ForEach inside a ForEach, a reader reads the inner step of its (outer, inner)
    values and the outer step of its outer value."""
    outer = fetch("outer_n")
    inner = fetch("inner_n")
    flow = af.Flow(
        id="nested-ref",
        tasks=[
            af.ForEach(id="o", values=["10", "20"], tasks=[
                outer,
                af.ForEach(id="i", values=["1", "2"], tasks=[
                    inner, pair("pair", outer=outer.output(), inner=inner.output()),
                ]),
            ]),
        ],
    )  # fmt: skip
    ex = await rt.run(flow)
    assert ex.state is af.State.SUCCESS, ex.error
    parents = {tr.id: tr for tr in ex.task_runs}
    pairs = [tr for tr in ex.task_runs if tr.task_id == "pair"]
    seen = set()
    for p in pairs:
        outer_value = parents[p.parent_task_run_id or ""].value  # the inner ForEach's
        assert dict(p.outputs) == {"outer": int(str(outer_value)), "inner": int(str(p.value))}
        seen.add((outer_value, p.value))
    assert seen == {("10", "1"), ("10", "2"), ("20", "1"), ("20", "2")}


async def test_each_parallel_reads_within_a_sequential_of_one_value(rt: Runtime) -> None:
    """With parallel_tasks, a reader and its upstream in one Sequential of the iteration run in
    order: each reads its own value's output."""
    f = fetch("fetch")
    flow = af.Flow(
        id="par-ref",
        tasks=[
            af.ForEach(id="each", values=["4", "5"], parallel_tasks=True, concurrency=0, tasks=[
                af.Sequential(id="seq", tasks=[f, double("double", n=f.output())]),
            ]),
        ],
    )  # fmt: skip
    ex = await rt.run(flow)
    assert ex.state is af.State.SUCCESS, ex.error
    assert _by_value(ex, "double") == {"4": {"n": 8, "value": "4"}, "5": {"n": 10, "value": "5"}}


def test_a_reader_outside_the_loop_is_refused_at_definition() -> None:
    """A step after the loop reading a step inside it (one output per value) is refused when
    the flow is defined, naming the parameter, both steps and the loop."""
    f = fetch("fetch")
    with pytest.raises(FlowValidationError) as info:
        af.Flow(
            id="outside",
            tasks=[af.ForEach(id="each", values=["1"], tasks=[f]), double("after", n=f.output())],
        )
    text = str(info.value)
    assert "after.n" in text and "'fetch'" in text and "ForEach 'each'" in text
    assert "no one output" in text


def test_readers_running_at_once_with_their_upstream_are_refused() -> None:
    """Direct tasks of a parallel_tasks ForEach run at the same time: a reference between them
    is refused, saying so; in a sequential ForEach a reader listed first is refused too."""
    f = fetch("fetch")
    with pytest.raises(FlowValidationError, match=r"double\.n.*parallel_tasks.*Sequential"):
        af.Flow(id="par", tasks=[af.ForEach(
            id="each", values=["1"], parallel_tasks=True, tasks=[f, double("double", n=f.output())]
        )])  # fmt: skip
    g = fetch("fetch")
    with pytest.raises(FlowValidationError, match=r"'double' comes before 'fetch'.*'each'"):
        af.Flow(id="order", tasks=[af.ForEach(
            id="each", values=["1"], tasks=[double("double", n=g.output()), g]
        )])  # fmt: skip
