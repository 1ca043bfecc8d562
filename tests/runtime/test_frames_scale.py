"""Frames at scale: counter-based decisions match the plain rescanning rules, survive a rebuild
from the task runs in any order, and big fan-outs finish."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actorflow as af
from actorflow.runtime._core._execution import CREATE_CHUNK
from actorflow.runtime._core._frames import MAIN, Frame, make_frame
from actorflow.runtime._records import StateEntry, TaskRun
from actorflow.runtime._states import State, worst


@af.task
async def nothing(ctx: af.TaskContext) -> None:
    return None


# -- the rules, written as plain rescans (what the frames decided before counters) ----------
def ref_foreach(
    runs: list[TaskRun], n_values: int, n_tasks: int, concurrency: int
) -> set[tuple[int, int]]:
    """(group, task index) pairs to start now."""
    groups: list[list[TaskRun]] = [[] for _ in range(n_values)]
    for tr in runs:
        assert tr.iteration is not None
        groups[tr.iteration].append(tr)
    failed = any(tr.state.failed for tr in runs)
    out: set[tuple[int, int]] = set()
    open_groups = 0
    for i, g in enumerate(groups):
        active = any(not tr.state.terminal for tr in g)
        done = any(tr.state.failed for tr in g) or len(g) == n_tasks
        if g and not done and not active:
            out.add((i, len(g)))
        if g and not (done and not active):
            open_groups += 1
    if failed:
        return out
    for i, g in enumerate(groups):
        if g or not n_tasks:
            continue
        if concurrency and open_groups >= concurrency:
            break
        out.add((i, 0))
        open_groups += 1
    return out


def ref_dag(runs: list[TaskRun], deps: dict[str, list[str]], concurrency: int) -> list[str]:
    """Task ids to start now, lowest declared first."""
    if any(tr.state.failed for tr in runs):
        return []
    by_task = {tr.task_id: tr for tr in runs}
    active = sum(1 for tr in runs if not tr.state.terminal)
    room = concurrency - active if concurrency else len(deps)
    out: list[str] = []
    for t in deps:
        if len(out) >= room:
            break
        if t not in by_task and all(d in by_task and by_task[d].state.terminal for d in deps[t]):
            out.append(t)
    return out


# -- a scheduler driving one frame ----------------------------------------------------------
class Driver:
    """Creates what a frame asks for and ends running children in a chosen order."""

    def __init__(self, task: Any, rnd: random.Random) -> None:
        self.task = task
        self.rnd = rnd
        self.owner = TaskRun(
            id="owner", execution_id="e", task_id=task.id, state=State.RUNNING,
            history=(StateEntry(State.RUNNING, 0.0),),
        )  # fmt: skip
        self.runs: dict[str, TaskRun] = {"owner": self.owner}
        self.children: list[str] = []
        self.frame = self.build(self.owner)

    def build(self, owner: TaskRun, order: list[str] | None = None) -> Frame:
        frame = make_frame(self.runs, owner, self.task, lambda v, f: v, bool)
        for i in order if order is not None else []:
            frame.add(self.runs[i])
        return frame

    def create_all(self) -> None:
        specs = self.frame.nexts()
        while specs:
            for spec in specs:
                tr = TaskRun(
                    id=f"c{len(self.children)}", execution_id="e", task_id=spec.task.id,
                    state=State.RUNNING, history=(StateEntry(State.RUNNING, 0.0),),
                    parent_task_run_id="owner", value=spec.value, iteration=spec.iteration,
                    branch=spec.branch,
                )  # fmt: skip
                self.runs[tr.id] = tr
                self.children.append(tr.id)
                self.frame.add(tr)
            specs = self.frame.nexts()

    def end_one(self, fail_rate: float) -> bool:
        running = [i for i in self.children if not self.runs[i].state.terminal]
        if not running:
            return False
        i = self.rnd.choice(running)
        old = self.runs[i]
        state = State.FAILED if self.rnd.random() < fail_rate else State.SUCCESS
        new = TaskRun(**{**{f: getattr(old, f) for f in old.__struct_fields__}, "state": state})
        self.runs[i] = new
        self.frame.changed(old.state, new)
        return True

    def main_runs(self) -> list[TaskRun]:
        return [self.runs[i] for i in self.children if self.runs[i].branch == MAIN]

    def rebuilt(self) -> Frame:
        """A frame rebuilt from the task runs, added in a shuffled order (as recovery may)."""
        order = list(self.children)
        self.rnd.shuffle(order)
        return self.build(self.owner, order)


def run_to_end(
    driver: Driver, fail_rate: float, check: Callable[[Driver, Frame], None]
) -> State | None:
    steps = 0
    while True:
        driver.create_all()
        check(driver, driver.frame)
        if steps % 7 == 0:
            check(driver, driver.rebuilt())
        steps += 1
        if not driver.end_one(fail_rate):
            return driver.frame.result()


@settings(max_examples=60, deadline=None)
@given(
    n_values=st.integers(0, 40), n_tasks=st.integers(0, 3), concurrency=st.integers(0, 6),
    fail_rate=st.sampled_from([0.0, 0.05, 0.3]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_foreach_decides_as_the_rescan_rules_even_when_rebuilt(
    n_values: int, n_tasks: int, concurrency: int, fail_rate: float, seed: int
) -> None:
    """A ForEach frame starts exactly what the rescanning rules start, live and rebuilt."""
    tasks = [nothing(f"t{k}") for k in range(n_tasks)]
    each = af.ForEach(id="each", values=list(range(n_values)), concurrency=concurrency,
                      tasks=tasks)  # fmt: skip
    index = {t.id: k for k, t in enumerate(tasks)}

    def check(d: Driver, frame: Frame) -> None:
        got = {(s.iteration, index[s.task.id]) for s in frame.nexts()}
        want = ref_foreach(d.main_runs(), n_values, n_tasks, concurrency)
        assert got == want
        assert frame.nexts() == frame.nexts()  # asking twice creates nothing
        some = frame.nexts(2)
        assert len(some) == min(2, len(want)) and set(some) <= set(frame.nexts())

    d = Driver(each, random.Random(seed))
    result = run_to_end(d, fail_rate, check)
    runs = d.main_runs()
    assert result is worst(tr.state for tr in runs)
    assert d.rebuilt().result() is result
    if not any(tr.state.failed for tr in runs):
        assert len(runs) == n_values * n_tasks


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30), concurrency=st.integers(0, 4),
    fail_rate=st.sampled_from([0.0, 0.05, 0.3]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_dag_decides_as_the_rescan_rules_even_when_rebuilt(
    n: int, concurrency: int, fail_rate: float, seed: int
) -> None:
    """A Dag frame starts exactly the nodes (and in the order) the rescanning rules do."""
    rnd = random.Random(seed)
    deps = {f"t{k}": sorted({f"t{rnd.randrange(k)}" for _ in range(rnd.randrange(3))} if k else ())
            for k in range(n)}  # fmt: skip
    dag = af.Dag(id="dag", concurrency=concurrency,
                 nodes=[af.DagTask(task=nothing(t), depends_on=ds) for t, ds in deps.items()])  # fmt: skip

    def check(d: Driver, frame: Frame) -> None:
        want = ref_dag(d.main_runs(), deps, concurrency)
        assert [s.task.id for s in frame.nexts()] == want
        assert [s.task.id for s in frame.nexts(1)] == want[:1]

    d = Driver(dag, rnd)
    result = run_to_end(d, fail_rate, check)
    runs = d.main_runs()
    assert result is worst(tr.state for tr in runs)
    if not any(tr.state.failed for tr in runs):
        assert sorted(tr.task_id for tr in runs) == sorted(deps)


def test_rebuilt_dag_frame_skips_a_node_started_before_its_dependencies_were_added() -> None:
    """Recovery may add a started node before the dependency that made it ready: not twice."""
    dag = af.Dag(id="dag", nodes=[af.DagTask(task=nothing("a")),
                                  af.DagTask(task=nothing("b"), depends_on=["a"])])  # fmt: skip
    d = Driver(dag, random.Random(0))
    d.create_all()
    d.end_one(0.0)
    d.create_all()
    assert [d.runs[i].task_id for i in d.children] == ["a", "b"]
    frame = d.build(d.owner, list(reversed(d.children)))
    assert frame.nexts() == []


# -- whole executions -------------------------------------------------------------------------


SLOW = pytest.mark.skipif(
    not os.environ.get("ACTORFLOW_SLOW_TESTS"),
    reason="slow (about 25 s and 600 MB): set ACTORFLOW_SLOW_TESTS=1 to run it",
)


@pytest.mark.anyio
@pytest.mark.parametrize("n", [20_000, pytest.param(100_000, marks=SLOW)])
async def test_children_ending_at_once_lose_no_report(rt: af.Runtime, n: int) -> None:
    """Children that all end in the same instant, far past the execution's 4,096-message
    mailbox, are all heard: SUCCESS, no dead letter, no crash."""
    started = 0
    gate, all_in = anyio.Event(), anyio.Event()

    @af.task
    async def wait_gate(ctx: af.TaskContext) -> None:
        nonlocal started
        started += 1
        if started == n:
            all_in.set()
        await gate.wait()

    flow = af.Flow(id="gate", tasks=[
        af.ForEach(id="each", values=list(range(n)), concurrency=0, tasks=[wait_gate("t")]),
    ])  # fmt: skip
    handle = await rt.submit(flow)
    await all_in.wait()
    gate.set()  # every child ends, and reports, before the execution handles one report
    ex = await handle.wait()
    assert ex.state is af.State.SUCCESS
    assert sum(1 for tr in ex.task_runs if tr.state is af.State.SUCCESS) == n + 1
    system = rt.engine.system
    assert system.dead_letters.count == 0 and not system.crashes


@pytest.mark.anyio
async def test_a_big_fan_out_is_created_in_chunks(rt: af.Runtime) -> None:
    """A 5,000-task Parallel does not spawn every child before the first one runs: short
    children end about as fast as they are created, so few actors are alive at once."""
    alive: list[int] = []
    system = rt.engine.system

    @af.task
    async def count(ctx: af.TaskContext) -> None:
        alive.append(len(system))

    flow = af.Flow(
        id="fan", tasks=[af.Parallel(id="all", tasks=[count(f"t{i}") for i in range(5000)])]
    )
    ex = await rt.run(flow)
    assert ex.state is af.State.SUCCESS and len(alive) == 5000
    assert max(alive) <= 3 * CREATE_CHUNK


@pytest.mark.anyio
@pytest.mark.parametrize("control", ["kill", "pause"])
async def test_control_between_chunks_of_a_fan_out(rt: af.Runtime, control: str) -> None:
    """Kill or pause while a fan-out is still being created: kill ends KILLED with nothing
    created after it; pause then resume creates the rest and succeeds, no report lost."""
    n = 3 * CREATE_CHUNK
    started = 0
    gate, first = anyio.Event(), anyio.Event()

    @af.task
    async def wait_gate(ctx: af.TaskContext) -> None:
        nonlocal started
        started += 1
        first.set()
        await gate.wait()

    flow = af.Flow(
        id="fan", tasks=[af.Parallel(id="all", tasks=[wait_gate(f"t{i}") for i in range(n)])]
    )
    handle = await rt.submit(flow)
    await first.wait()  # the first chunk runs; the rest is not created yet
    assert started < n
    if control == "kill":
        await rt.kill(handle.id)
        ex = await handle.wait()
        assert ex.state is af.State.KILLED
        created = [tr for tr in ex.task_runs if tr.task_id.startswith("t")]
        assert created and len(created) < n
        assert all(tr.state is af.State.KILLED for tr in created)
    else:
        await rt.pause(handle.id)
        gate.set()
        await rt.wait_for(handle.id, af.State.PAUSED)
        await rt.resume(handle.id)
        ex = await handle.wait()
        assert ex.state is af.State.SUCCESS
        assert sum(1 for tr in ex.task_runs if tr.task_id.startswith("t")) == n
        assert rt.engine.system.dead_letters.count == 0
