"""Kestra's core task types and task properties, run from small flow files of our own
(tests/flows/kestra_tasks/): WaitFor, EachSequential/EachParallel, Echo, execution.Labels,
WorkingDirectory with LocalFiles, Subflow labels/outputs/templated ids, logLevel, logToFile,
a templated Pause delay, old type aliases."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from actorflow.flows import load_flow, load_flow_text
from actorflow.runtime import Execution, FakeClock, Flow, Runtime, State, truthy

pytestmark = pytest.mark.anyio

FLOWS = Path(__file__).parent / "kestra_tasks"


def _flow(name: str) -> Flow:
    return load_flow(FLOWS / name)


async def _drive(rt: Runtime, clock: FakeClock, ex_id: str, step: float) -> Execution:
    """Advance the fake clock by ``step`` whenever the execution waits, until it ends."""
    for _ in range(200):
        await anyio.wait_all_tasks_blocked()
        ex = await rt.get(ex_id)
        if ex.state.terminal:
            return ex
        clock.advance(step)
    raise AssertionError("the execution did not end")


def _runs(ex: Execution, task_id: str) -> list[object]:
    return [tr for tr in ex.task_runs if tr.task_id == task_id]


# -- WaitFor / LoopUntil -------------------------------------------------------------
async def test_wait_for_loops_until_its_condition(rt: Runtime, clock: FakeClock) -> None:
    """WaitFor runs its tasks once per iteration until the condition holds (3 iterations),
    each iteration reading its iterationCount, and waits the interval between them."""
    handle = await rt.submit(_flow("wait_for.yaml"))
    await anyio.wait_all_tasks_blocked()
    first = await rt.get(handle.id)
    assert first.state is State.RUNNING  # waiting for the interval, not looping at once
    assert len(_runs(first, "count")) == 1
    ex = await _drive(rt, clock, handle.id, 0.5)
    assert ex.state is State.SUCCESS
    assert len(_runs(ex, "count")) == 3 and len(_runs(ex, "say")) == 3
    assert ex.task_run("after").outputs == {"value": "3"}  # OutputValues gives text
    assert ex.task_run("loop").outputs == {"iterationCount": 3}
    lines = [r.message for r in await rt.logs(handle.id)]
    assert [m for m in lines if m.startswith("iteration")] == [
        "iteration 1",
        "iteration 2",
        "iteration 3",
    ]


@pytest.mark.parametrize("fail", [True, False])
async def test_wait_for_stops_at_max_iterations(rt: Runtime, clock: FakeClock, fail: bool) -> None:
    """A loop whose condition never holds stops after maxIterations: FAILED with
    failOnMaxReached, else SUCCESS (Kestra's waitfor-max-iterations / -no-success)."""
    text = (FLOWS / "wait_for_max.yaml").read_text()
    flow = load_flow_text(text.replace("failOnMaxReached: true", f"failOnMaxReached: {fail}"))
    handle = await rt.submit(flow)
    ex = await _drive(rt, clock, handle.id, 1.0)
    assert ex.state is (State.FAILED if fail else State.SUCCESS)
    assert len(_runs(ex, "count")) == 3


async def test_wait_for_max_duration(rt: Runtime, clock: FakeClock) -> None:
    """maxDuration ends the loop once it has run that long (checked after an iteration)."""
    flow = load_flow_text("""
id: wait-long
tasks:
  - id: loop
    type: wait_for
    condition: "false"
    failOnMaxReached: true
    checkFrequency: {interval: 1s, maxIterations: 1000, maxDuration: 5s}
    tasks:
      - {id: tick, type: return, value: x}
""")
    handle = await rt.submit(flow)
    ex = await _drive(rt, clock, handle.id, 1.0)
    assert ex.state is State.FAILED
    assert 5 <= len(_runs(ex, "tick")) <= 7


async def test_wait_for_child_failure_fails_without_looping(rt: Runtime) -> None:
    """A failed child stops the loop: FAILED after one iteration, its errors run."""
    flow = load_flow_text("""
id: wait-fail
tasks:
  - id: loop
    type: io.kestra.plugin.core.flow.WaitFor
    condition: "{{ false }}"
    tasks:
      - {id: boom, type: fail}
    errors:
      - {id: handler, type: return, value: handled}
""")
    ex = await rt.run(flow, timeout=10)
    assert ex.state is State.FAILED
    assert len(_runs(ex, "boom")) == 1 and ex.task_run("handler").state is State.SUCCESS


async def test_wait_for_can_be_killed_while_waiting(rt: Runtime) -> None:
    """A kill between two iterations ends the loop KILLED (no timer left acting)."""
    handle = await rt.submit(_flow("wait_for.yaml"))
    await anyio.wait_all_tasks_blocked()
    await rt.kill(handle.id)
    ex = await handle.wait(timeout=10)
    assert ex.state is State.KILLED
    assert ex.task_run("loop").state is State.KILLED


def test_wait_for_errors_name_the_field() -> None:
    """A WaitFor without tasks or with a bad checkFrequency is refused with file, line, field."""
    with pytest.raises(Exception) as info:
        load_flow_text("""
id: bad
tasks:
  - id: loop
    type: wait_for
    condition: "x"
    checkFrequency: {interval: soon}
    tasks: [{id: t, type: return, value: 1}]
""")
    assert "7 tasks[0].checkFrequency.interval: invalid duration 'soon'" in str(info.value)
    with pytest.raises(Exception, match=r"5 tasks\[0\].tasks: a WaitFor needs at least one"):
        load_flow_text(
            "id: bad\ntasks:\n  - id: loop\n    type: wait_for\n    tasks: []\n    condition: x\n"
        )


# -- EachSequential / EachParallel / Echo ----------------------------------------------
async def test_each_sequential_and_parallel(rt: Runtime) -> None:
    """EachSequential runs value groups one after another; EachParallel every (value, task)
    pair, at most `concurrent` at once; Echo logs its format."""
    ex = await rt.run(_flow("each_old.yaml"), timeout=10)
    assert ex.state is State.SUCCESS
    seq = [(tr.task_id, tr.value) for tr in ex.task_runs if tr.task_id in ("s1", "s2")]
    assert seq == [("s1", "a"), ("s2", "a"), ("s1", "b"), ("s2", "b")]
    par = sorted((tr.task_id, tr.value) for tr in ex.task_runs if tr.task_id in ("p1", "p2"))
    assert par == [(t, v) for t in ("p1", "p2") for v in ("1", "2", "3")]
    assert ex.task_run("par").outputs == {"values": ["1", "2", "3"]}
    lines = [r.message for r in await rt.logs(ex.id)]
    assert lines.count("s2 a") == 1 and lines.count("s2 b") == 1


async def test_each_parallel_runs_tasks_of_one_value_together(rt: Runtime) -> None:
    """EachParallel does not wait for a value's first task before its second."""
    flow = load_flow_text("""
id: each-par
tasks:
  - id: par
    type: each_parallel
    value: '["x"]'
    tasks:
      - {id: slow, type: sleep, duration: 5}
      - {id: fast, type: return, value: ok}
""")
    handle = await rt.submit(flow)
    await anyio.wait_all_tasks_blocked()
    ex = await rt.get(handle.id)
    assert ex.task_run("fast").state is State.SUCCESS
    assert ex.task_run("slow").state is State.RUNNING
    await rt.kill(handle.id)


# -- execution.Labels ------------------------------------------------------------------
async def test_labels_task_sets_execution_labels(rt: Runtime) -> None:
    """Labels from JSON text, a mapping and a key/value list land on the execution;
    later values win over the flow's own labels."""
    ex = await rt.run(_flow("labels.yaml"), {"extra": {"owner": "ann", "team": "ops"}}, timeout=10)
    assert ex.state is State.SUCCESS
    assert ex.labels == {
        "team": "ops",
        "stage": "labels-task",
        "owner": "ann",
        "count": "3",
        "system.correlationId": ex.id,
    }
    assert (await rt.get(ex.id)).labels == ex.labels


async def test_labels_task_with_bad_labels_fails(rt: Runtime) -> None:
    """Labels that render to something else than labels fail the task run with a reason."""
    flow = load_flow_text("""
id: bad-labels
tasks:
  - {id: l, type: labels, labels: "{{ 'not json' }}"}
""")
    ex = await rt.run(flow, timeout=10)
    assert ex.state is State.FAILED
    assert "labels" in (ex.task_run("l").error or "")


# -- WorkingDirectory + LocalFiles -------------------------------------------------------
async def test_working_directory_shares_files(rt: Runtime) -> None:
    """A file written by one task of a WorkingDirectory is seen by the next, stored as
    outputs.<task>.uris, and the directory is removed afterwards; inputFiles are written
    first and outputFiles stored as outputs.<wd>.outputFiles."""
    ex = await rt.run(_flow("working_directory.yaml"), timeout=10)
    assert ex.state is State.SUCCESS, ex.error
    uri = ex.task_run("uri").outputs["value"]
    assert uri.startswith("actorflow://")
    assert await rt.read_file(uri) == b"hello working-directory"
    from actorflow.runtime._tasks import working_dir_path

    assert not os.path.exists(working_dir_path(ex.id, ex.task_run("wd").id))
    files = ex.task_run("wd2").outputs["outputFiles"]
    assert sorted(files) == ["data/in.txt", "data/more.txt"]
    assert await rt.read_file(files["data/in.txt"]) == b"from working-directory"


async def test_local_files_refuses_names_outside(rt: Runtime) -> None:
    """LocalFiles refuses an input file name that leaves its directory."""
    flow = load_flow_text("""
id: escape
tasks:
  - id: w
    type: local_files
    inputs: {"../../evil.txt": "x"}
""")
    ex = await rt.run(flow, timeout=10)
    assert ex.state is State.FAILED
    assert "outside the working directory" in (ex.task_run("w").error or "")


# -- Subflow properties ----------------------------------------------------------------
async def test_subflow_templated_id_labels_and_outputs(rt: Runtime) -> None:
    """A Subflow (old alias Flow) with templated namespace/flowId starts that flow with the
    parent's labels plus its own, and extracts `outputs` from the child's outputs."""
    rt.register(_flow("child.yaml"))
    ex = await rt.run(_flow("parent.yaml"), timeout=10)
    assert ex.state is State.SUCCESS, ex.error
    call = ex.task_run("call")
    assert call.outputs["outputs"] == {"got": "42!"}
    child = await rt.get(call.outputs["executionId"])
    assert child.flow_id == "child"
    assert child.labels == {"origin": "parent", "via": "call", "system.correlationId": ex.id}


async def test_subflow_templated_id_unknown_flow_fails(rt: Runtime) -> None:
    """A templated flowId naming no registered flow fails the task run, naming the flow."""
    ex = await rt.run(_flow("parent.yaml"), {"target": "nobody"}, timeout=10)
    assert ex.state is State.FAILED
    assert "actorflow.tests.nobody" in (ex.task_run("call").error or "")


def test_subflow_literal_flow_id_is_still_checked() -> None:
    """A literal flowId that is no flow id is refused at load, naming the field."""
    with pytest.raises(Exception, match=r"tasks\[0\].flow_id: expected a string matching"):
        load_flow_text("id: p\ntasks:\n  - {id: s, type: subflow, flowId: 'a b'}\n")


# -- logLevel / logToFile / Pause delay --------------------------------------------------
async def test_log_level_and_log_to_file(rt: Runtime) -> None:
    """logLevel drops lines below it; logToFile stores the attempt's lines as a file (its
    URI on the attempt) instead of the log table."""
    ex = await rt.run(_flow("log_level.yaml"), timeout=10)
    assert ex.state is State.SUCCESS
    lines = [(r.task_run_id, r.message) for r in await rt.logs(ex.id)]
    assert [m for _, m in lines] == ["stored"]
    attempt = ex.task_run("to-file").attempts[-1]
    assert attempt.log_file is not None
    assert b"INFO in the file" in await rt.read_file(attempt.log_file)


async def test_pause_delay_from_an_input(rt: Runtime, clock: FakeClock) -> None:
    """A Pause delay given as a template is rendered when the pause starts (ISO-8601 too)."""
    handle = await rt.submit(_flow("pause_delay.yaml"), {"delay": "PT3S"})
    await rt.wait_for(handle.id, State.PAUSED)
    clock.advance(2.5)
    await anyio.wait_all_tasks_blocked()
    assert (await rt.get(handle.id)).state is State.PAUSED
    clock.advance(0.5)
    ex = await handle.wait(timeout=10)
    assert ex.state is State.SUCCESS


async def test_pause_delay_bad_template_fails(rt: Runtime) -> None:
    """A delay that renders to no duration fails the Pause, naming the value."""
    ex = await rt.run(_flow("pause_delay.yaml"), {"delay": "soon"}, timeout=10)
    assert ex.state is State.FAILED
    assert "soon" in (ex.task_run("pause").error or "")


async def test_resume_inputs_under_on_resume(rt: Runtime) -> None:
    """Resume inputs are at outputs.<pause>.onResume.<name> (Kestra) and at the old place."""
    flow = load_flow_text("""
id: ask
tasks:
  - id: p
    type: pause
    onResume: [{id: answer, type: STRING}]
  - id: r
    type: return
    value: "{{ outputs.p.onResume.answer }}/{{ outputs.p.answer }}"
""")
    handle = await rt.submit(flow)
    await rt.wait_for(handle.id, State.PAUSED)
    await rt.resume(handle.id, {"answer": "yes"})
    ex = await handle.wait(timeout=10)
    assert ex.task_run("r").outputs == {"value": "yes/yes"}


# -- truthiness and aliases ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [("false", False), ("0", False), ("-0", False), ("", False), (None, False),
     (False, False), (0, False), ("False", True), (" ", True), ("none", True),
     ("null", True), ("true", True), ([], True), (1, True)],
)  # fmt: skip
def test_truthiness_is_kestras(value: object, expected: bool) -> None:
    """If/runIf truthiness: exactly false, 0, -0 and "" (and null) are false."""
    assert truthy(value) is expected


async def test_run_if_minus_zero_skips(rt: Runtime) -> None:
    """runIf rendering to -0 skips the task; "False" runs it (Kestra's TruthUtils)."""
    flow = load_flow_text("""
id: runif
tasks:
  - {id: a, type: return, value: 1, runIf: "-0"}
  - {id: b, type: return, value: 1, runIf: "False"}
""")
    ex = await rt.run(flow, timeout=10)
    assert ex.task_run("a").state is State.SKIPPED
    assert ex.task_run("b").state is State.SUCCESS


def test_old_aliases_load() -> None:
    """io.kestra.core.tasks.flows.AllowFailure and ...flows.Flow are accepted."""
    flow = load_flow_text("""
id: old
tasks:
  - id: af
    type: io.kestra.core.tasks.flows.AllowFailure
    tasks:
      - {id: f, type: io.kestra.core.tasks.executions.Fail}
  - id: sub
    type: io.kestra.core.tasks.flows.Flow
    namespace: x
    flowId: y
""")
    assert [t.id for t in flow.tasks] == ["af", "sub"]


# -- kv.* and state.* -------------------------------------------------------------------
async def test_kv_tasks(rt: Runtime) -> None:
    """kv.Set stores a rendered value that kv.Get reads back; overwrite: false refuses an
    existing key; kv.Delete removes it, after which kv.Get outputs null."""
    ex = await rt.run(_flow("kv.yaml"), timeout=10)
    assert ex.state is State.WARNING  # the refused overwrite, allowed to fail
    assert ex.task_run("get").outputs == {"value": {"field": "kv", "n": 3}}
    assert "already exists" in (ex.task_run("again").error or "")
    assert ex.task_run("delete").outputs == {"deleted": True}
    assert ex.task_run("missing").outputs == {"value": None}


async def test_kv_survives_executions_on_sqlite(tmp_path: Path) -> None:
    """A key set by one execution is read by the next, in a runtime opened again."""
    setter = load_flow_text(
        "id: s\nnamespace: n\ntasks:\n  - {id: s, type: kv_set, key: k, value: 7, ttl: PT1H}\n"
    )
    getter = load_flow_text(
        "id: g\nnamespace: n\ntasks:\n  - {id: g, type: kv_get, key: k, errorOnMissing: true}\n"
    )
    async with Runtime.open(tmp_path / "rt.db") as rt:
        assert (await rt.run(setter, timeout=10)).state is State.SUCCESS
    async with Runtime.open(tmp_path / "rt.db") as rt:
        ex = await rt.run(getter, timeout=10)
        assert ex.task_run("g").outputs == {"value": 7}
        other = await rt.run(
            load_flow_text(
                "id: g\nnamespace: elsewhere\ntasks:\n"
                "  - {id: g, type: kv_get, key: k, errorOnMissing: true}\n"
            ),
            timeout=10,
        )
        assert other.state is State.FAILED
        assert "not set in namespace elsewhere" in (other.task_run("g").error or "")


def test_kv_key_is_checked_at_load() -> None:
    """A kv task without its key is refused at load, naming the task."""
    with pytest.raises(Exception, match=r"3 tasks\[0\]: missing required key 'key'"):
        load_flow_text("id: k\ntasks:\n  - {id: s, type: kv_set, value: 1}\n")


async def test_state_tasks(rt: Runtime) -> None:
    """state.Set merges into a named state kept per loop value; taskrunValue: false is one
    state for the flow; Delete removes it and Get then reads an empty one."""
    ex = await rt.run(_flow("state.yaml"), timeout=10)
    assert ex.state is State.SUCCESS
    gets = {tr.value: tr.outputs for tr in ex.task_runs if tr.task_id == "get"}
    assert gets == {
        "a": {"count": 1, "data": {"seen": "a"}},
        "b": {"count": 1, "data": {"seen": "b"}},
    }
    assert ex.task_run("read").outputs == {"count": 1, "data": {"total": 2}}
    assert ex.task_run("delete").outputs == {"deleted": True}
    assert ex.task_run("gone").outputs == {"count": 0, "data": {}}


# -- execution.Resume / trigger.Toggle / log.Fetch -----------------------------------------
async def test_resume_task_resumes_another_execution(rt: Runtime) -> None:
    """execution.Resume resumes a paused execution with its inputs; resuming one that is not
    paused fails the task run with the reason."""
    waiting = load_flow_text("""
id: waiting
namespace: actorflow.tests
tasks:
  - id: p
    type: pause
    onResume: [{id: answer}]
  - {id: r, type: return, value: "{{ outputs.p.onResume.answer }}"}
""")
    handle = await rt.submit(waiting)
    await rt.wait_for(handle.id, State.PAUSED)
    ex = await rt.run(_flow("resume_other.yaml"), {"executionId": handle.id}, timeout=10)
    assert ex.state is State.SUCCESS, ex.task_run("resume").error
    done = await handle.wait(timeout=10)
    assert done.state is State.SUCCESS
    assert done.task_run("r").outputs == {"value": "from resume-other"}
    again = await rt.run(_flow("resume_other.yaml"), {"executionId": handle.id}, timeout=10)
    assert again.state is State.FAILED
    assert "already SUCCESS" in (again.task_run("resume").error or "")


async def test_toggle_switches_a_schedule(tmp_path: Path) -> None:
    """trigger.Toggle disables a Schedule (no tick fires) and enables it again (ticks fire),
    through the store every scheduler reads; an unknown trigger fails the task run."""
    from actorflow.runtime import Scheduler

    fake = FakeClock(1_699_999_980.0)  # a whole minute
    toggle_text = (FLOWS / "toggle.yaml").read_text()
    async with Runtime.open(tmp_path / "rt.db", clock=fake) as rt:
        rt.register(_flow("ticking.yaml"))

        async def fired() -> int:
            return len(await rt.executions(flow="ticking", limit=100))

        async with Scheduler(rt) as sched:
            await sched.advanced()
            fake.advance(60)
            await sched.advanced()
            assert await fired() == 1
            off = await rt.run(load_flow_text(toggle_text), {"enabled": False}, timeout=10)
            assert off.state is State.SUCCESS
            fake.advance(60)
            await sched.advanced()
            assert await fired() == 1
            on = load_flow_text(toggle_text.replace("enabled: false", "enabled: true"))
            assert (await rt.run(on, {"enabled": True}, timeout=10)).state is State.SUCCESS
            fake.advance(60)
            await sched.advanced()
            assert await fired() == 2
        bad = load_flow_text(toggle_text.replace("trigger: minute", "trigger: hourly"))
        ex = await rt.run(bad, {"enabled": True}, timeout=10)
        assert ex.state is State.FAILED
        assert "has no trigger 'hourly' (it has: minute)" in (ex.task_run("switch").error or "")


async def test_fetch_logs(rt: Runtime) -> None:
    """log.Fetch stores the execution's lines at the level and of the tasks asked, as JSON
    lines: outputs size and uri."""
    import json

    ex = await rt.run(_flow("fetch_logs.yaml"), timeout=10)
    assert ex.state is State.SUCCESS
    fetched = ex.task_run("fetch").outputs
    assert fetched["size"] == 1
    lines = (await rt.read_file(fetched["uri"])).decode().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["a warning"]
    everything = ex.task_run("all").outputs
    assert everything["size"] == 3


# -- ForEachItem ------------------------------------------------------------------------------
async def test_foreach_item_runs_one_execution_per_batch(rt: Runtime) -> None:
    """ForEachItem splits the file into batches of `rows` lines, starts one child execution
    per batch (inputs from {{ taskrun.items }}, linked to its task run, a correlation label),
    waits for them and outputs Kestra's counts: 4 task runs of its own."""
    rt.register(_flow("item_child.yaml"))
    ex = await rt.run(_flow("foreach_item.yaml"), timeout=20)
    assert ex.state is State.SUCCESS, [tr.error for tr in ex.task_runs]
    own = [tr.task_id for tr in ex.task_runs if tr.task_id.startswith("each")]
    assert own == ["each", "each_split", "each_items", "each_merge"]
    items = ex.task_run("each_items")
    assert items.outputs["numberOfBatches"] == 3
    assert items.outputs["iterations"]["SUCCESS"] == 3
    batches = [await rt.read_file(u) for u in ex.task_run("each_split").outputs["batches"]]
    assert batches == [b"a\nb\n", b"c\nd\n", b"e\n"]
    children = [await rt.get(i) for i in items.outputs["executionIds"]]
    assert {c.parent_execution_id for c in children} == {ex.id}
    assert all(c.labels["system.correlationId"] == ex.id for c in children)
    assert [c.inputs["items"] for c in children] == ex.task_run("each_split").outputs["batches"]
    merged = await rt.read_file(ex.task_run("each_merge").outputs["subflowOutputs"])
    assert len(merged.decode().splitlines()) == 3


async def test_foreach_item_transmits_a_failed_batch(rt: Runtime) -> None:
    """A failed batch execution fails the items task run (transmitFailed), so the flow."""
    text = (FLOWS / "item_child.yaml").read_text().replace("default: false", "default: true")
    rt.register(load_flow_text(text))
    ex = await rt.run(_flow("foreach_item.yaml"), timeout=20)
    assert ex.state is State.FAILED
    assert "3 of 3 batch execution(s) failed" in (ex.task_run("each_items").error or "")


async def test_wait_for_continues_after_a_restart_of_the_process(tmp_path: Path) -> None:
    """A loop waiting between iterations when its runtime closes continues in the next one
    from its stored iterationCount: 3 iterations in all, none run twice."""
    flow = _flow("wait_for.yaml")
    db = tmp_path / "rt.db"
    async with Runtime.open(db, flows=[flow], clock=FakeClock()) as rt:
        handle = await rt.submit(flow)
        await anyio.wait_all_tasks_blocked()
        first = await rt.get(handle.id)
        assert len(_runs(first, "count")) == 1 and first.state is State.RUNNING
    async with Runtime.open(db, flows=[flow], clock=(clock := FakeClock())) as rt:
        ex = await _drive(rt, clock, handle.id, 0.5)
        assert ex.state is State.SUCCESS
        assert sorted(tr.iteration for tr in _runs(ex, "count")) == [0, 1, 2]
        assert ex.task_run("after").outputs == {"value": "3"}


async def test_foreach_item_without_wait(rt: Runtime) -> None:
    """wait: false starts the batches and ends at once: still split, items and merge (which
    merges nothing), the batches counted as CREATED."""
    rt.register(_flow("item_child.yaml"))
    text = (FLOWS / "foreach_item.yaml").read_text() + "    wait: false\n"
    ex = await rt.run(load_flow_text(text), timeout=20)
    assert ex.state is State.SUCCESS
    assert [tr.task_id for tr in ex.task_runs if tr.task_id.startswith("each")] == [
        "each", "each_split", "each_items", "each_merge"]  # fmt: skip
    items = ex.task_run("each_items").outputs
    assert items["iterations"]["CREATED"] == 3 and ex.task_run("each_merge").outputs == {}
    for child in items["executionIds"]:
        assert (await rt.wait(child, timeout=10)).state is State.SUCCESS


async def test_switch_with_empty_defaults_fails_without_a_match(rt: Runtime) -> None:
    """A Switch whose `defaults:` is empty (null) loads; no case matching fails it."""
    flow = load_flow_text("""
id: sw
tasks:
  - id: s
    type: io.kestra.plugin.core.flow.Switch
    value: "nothing"
    cases:
      a: [{id: a1, type: return, value: 1}]
    defaults:
""")
    ex = await rt.run(flow, timeout=10)
    assert ex.state is State.FAILED
    assert "no case matches" in (ex.task_run("s").error or "")
