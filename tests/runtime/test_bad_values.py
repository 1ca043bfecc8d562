"""One value the store cannot keep fails one task run (or one submit), never the runtime."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import actorflow as af
from _support.cli import af as af_cli
from actorflow import FlowValidationError, InputError, State, UnstorableValue
from actorflow.runtime import Execution, Runtime, TaskContext

pytestmark = pytest.mark.anyio

HANG = 60  # a guard against a hang, never a wait for something to happen
ONE_RETRY = af.Retry.constant(0, max_attempts=2)


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def _quick() -> af.Flow:
    return af.Flow(id="quick", tasks=[af.Log(id="q", message="still here")])


async def _with_a_healthy_neighbour(path: Path, act: Callable[[Runtime], Awaitable[Any]]) -> Any:
    """Run ``act`` while a healthy execution is in flight; then check the healthy one
    succeeds, the runtime still takes work and storage never failed, also after a restart."""
    gate = anyio.Event()

    async def waits(ctx: TaskContext) -> dict[str, Any]:
        await gate.wait()
        return {"ok": True}

    neighbour = af.Flow(id="neighbour", tasks=[af.task(waits)("w")])
    with anyio.fail_after(HANG):
        async with Runtime.open(path) as rt:
            healthy = await rt.submit(neighbour)
            result = await act(rt)
            gate.set()
            done = await healthy.wait()
            assert done.state is State.SUCCESS
            assert done.task_run("w").outputs == {"ok": True}
            assert (await rt.run(_quick())).state is State.SUCCESS
            assert rt.store.failed is None
        async with Runtime.open(path) as rt:  # a restart recovers nothing that fails again
            assert (await rt.run(_quick())).state is State.SUCCESS
            await rt.store.flush()
            assert rt.store.failed is None
            unfinished = [e for e in await rt.executions() if not e.state.terminal]
            assert unfinished == []
    return result


# -- task runs: outputs, metrics, log lines --------------------------------------------------


async def _big_int(ctx: TaskContext) -> Any:
    return {"n": 2**70}


async def _big_int_value(ctx: TaskContext) -> Any:
    return 99999999999999999999999


async def _nested_big_int(ctx: TaskContext) -> Any:
    return {"cfg": {"a": [1, 2, 3, 2**64]}}


async def _surrogate(ctx: TaskContext) -> Any:
    return {"s": "caf\udce9"}


async def _surrogate_key(ctx: TaskContext) -> Any:
    return {"\udc80": 1}


async def _object(ctx: TaskContext) -> Any:
    return {"o": object()}


async def _function(ctx: TaskContext) -> Any:
    return {"f": _function}


async def _too_deep(ctx: TaskContext) -> Any:
    return {"deep": _deep(3000)}


async def _nan_metric(ctx: TaskContext) -> None:
    ctx.metric.counter("rows", float("nan"))


async def _inf_metric(ctx: TaskContext) -> None:
    ctx.metric.timer("load", math.inf)


async def _overflowing_metric(ctx: TaskContext) -> None:
    ctx.metric.counter("rows", 1e308)
    ctx.metric.counter("rows", 1e308)


async def _object_tag(ctx: TaskContext) -> None:
    ctx.metric.counter("rows", 1, host=object())


async def _object_log(ctx: TaskContext) -> None:
    ctx.log.info(object())  # type: ignore[arg-type]


async def _surrogate_log(ctx: TaskContext) -> None:
    ctx.log.info("read \udcff from the file")


async def _swallowed_log(ctx: TaskContext) -> None:
    # The line is not stored: the attempt fails all the same.
    with contextlib.suppress(UnstorableValue):
        ctx.log.warning({"not": "a string"})  # type: ignore[arg-type]


ATTEMPT_CASES = {
    "int beyond 64 bits": (_big_int, "outputs.n: 1180591620717411303424 is beyond 64 bits"),
    "int return value": (_big_int_value, "outputs.value: 99999999999999999999999 is beyond"),
    "nested int": (_nested_big_int, r"outputs.cfg.a\[3\]: 18446744073709551616 is beyond"),
    "lone surrogate": (_surrogate, r"outputs.s: the string has a lone surrogate '\\udce9'"),
    "surrogate key": (_surrogate_key, r"outputs\['\\udc80'\]: the key: .*lone surrogate"),
    "object": (_object, "outputs.o: a value of type object is not plain data"),
    "function": (_function, "outputs.f: a value of type function is not plain data"),
    "3,000-deep nesting": (_too_deep, r"outputs.deep\[0\].*: nested deeper than 100 levels"),
    "NaN metric": (_nan_metric, "metric 'rows': the value nan cannot be stored"),
    "inf metric": (_inf_metric, "metric 'load': the value inf cannot be stored"),
    "metric sum beyond float": (_overflowing_metric, "metric 'rows': the value inf"),
    "object metric tag": (_object_tag, "metric 'rows' tag 'host': a object value is not a tag"),
    "object log line": (_object_log, r"log line \(ctx.log.info\): a str is required"),
    "surrogate log line": (_surrogate_log, r"log line \(ctx.log.info\): .*lone surrogate"),
    "caught log refusal": (_swallowed_log, r"log line \(ctx.log.warning\): a str is required"),
}


@pytest.mark.parametrize("case", list(ATTEMPT_CASES))
async def test_an_unstorable_output_metric_or_log_line_fails_only_its_attempt(
    tmp_path: Path, case: str
) -> None:
    """A value the store cannot keep fails its attempt (retries apply) with an error naming
    the field and why; a concurrent execution succeeds and storage never fails."""
    fn, message = ATTEMPT_CASES[case]
    flow = af.Flow(id="bad", retry=ONE_RETRY, tasks=[af.task(fn)("t")])

    async def act(rt: Runtime) -> Execution:
        return await rt.run(flow)

    done = await _with_a_healthy_neighbour(tmp_path / "rt.db", act)
    assert done.state is State.FAILED
    tr = done.task_run("t")
    assert [a.state for a in tr.attempts] == [State.FAILED, State.FAILED]
    for attempt in tr.attempts:
        assert attempt.error_type == "UnstorableValue"
        assert attempt.error is not None
        assert re.search(message, attempt.error), attempt.error
    async with Runtime.open(tmp_path / "rt.db") as rt:
        stored = await rt.get(done.id)
        assert stored.state is State.FAILED
        assert stored.task_run("t").attempts == tr.attempts
        lines = [row.message for row in await rt.logs(done.id)]
        assert sum("UnstorableValue" in line for line in lines) == 2, lines


async def test_an_exception_message_with_a_lone_surrogate_is_stored_escaped(
    tmp_path: Path,
) -> None:
    """A task that raises with a lone surrogate in its message fails as usual; the message is
    stored with the surrogate escaped, and storage does not fail."""

    async def raises(ctx: TaskContext) -> None:
        raise ValueError("bad byte \udcff")

    flow = af.Flow(id="bad", tasks=[af.task(raises)("t")])

    async def act(rt: Runtime) -> Execution:
        return await rt.run(flow)

    done = await _with_a_healthy_neighbour(tmp_path / "rt.db", act)
    async with Runtime.open(tmp_path / "rt.db") as rt:
        stored = await rt.get(done.id)
        assert stored.state is State.FAILED
        assert stored.task_run("t").error == "ValueError: bad byte \\udcff"
        assert any("bad byte \\udcff" in row.message for row in await rt.logs(done.id))


# -- inputs: refused at submit ---------------------------------------------------------------


INPUT_CASES: dict[str, tuple[str, Any, str]] = {
    "int beyond 64 bits": ("int", "99999999999999999999999", "inputs.n: 99999999999999999999999 is beyond 64 bits"),
    "lone surrogate": ("string", "caf\udce9", r"inputs.n: the string has a lone surrogate '\\udce9' at position 3"),
    "object as any": ("any", object(), "inputs.n: a value of type object is not plain data"),
    "function as any": ("any", len, "inputs.n: a value of type builtin_function_or_method"),
    "3,000-deep any": ("any", _deep(3000), r"inputs.n\[0\]\[0\].*: nested deeper than 100 levels"),
    "101-deep any": ("any", _deep(100), r"inputs.n\[0\].*: nested deeper than 100 levels"),
    "nested int in any": ("any", {"cfg": {"a": [0, 0, 0, -(2**63) - 1]}}, r"inputs.n.cfg.a\[3\]: -9223372036854775809 is beyond"),
    "3,000-deep json": ("json", "[" * 3000 + "]" * 3000, "inputs.n.*nested"),
    "tuple key in any": ("any", {(1, 2): 3}, r"inputs.n\[\(1, 2\)\]: a dict key of type tuple"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INPUT_CASES))
async def test_an_unstorable_input_is_refused_at_submit(tmp_path: Path, case: str) -> None:
    """An input the store cannot keep is refused at submit with an InputError naming the
    input and the path inside it; nothing is stored, and the runtime runs on."""
    kind, value, message = INPUT_CASES[case]
    flow = af.Flow(
        id="takes", inputs=[af.Input(name="n", type=kind)], tasks=[af.Log(id="l", message="x")]
    )

    async def act(rt: Runtime) -> None:
        with pytest.raises(InputError, match=message) as raised:
            await rt.submit(flow, {"n": value})
        assert str(raised.value).startswith("flow default.takes: ")
        assert str(raised.value).isascii()  # the message itself can be stored and printed
        assert [e.flow_id for e in await rt.executions()] == ["neighbour"]

    await _with_a_healthy_neighbour(tmp_path / "rt.db", act)


async def test_plain_values_at_the_limits_are_kept_exactly(rt_db: Runtime) -> None:
    """The largest ints msgpack keeps, NaN, 100 levels of nesting and non-ASCII text pass,
    and the stored task run reads back the same."""
    rt = rt_db
    value = {
        "max": 2**64 - 1,
        "min": -(2**63),
        "text": "café ☕",
        "deep": _deep(97),
    }  # 100 with outputs.v

    async def echo(ctx: TaskContext, v: Any) -> Any:
        return {"v": ctx.inputs["v"], "nan": math.nan}

    flow = af.Flow(
        id="echo", inputs=[af.Input(name="v", type="any")], tasks=[af.task(echo)("e", v=1)]
    )
    done = await rt.run(flow, {"v": value})
    assert done.state is State.SUCCESS
    out = done.task_run("e").outputs
    assert out["v"] == value
    assert math.isnan(out["nan"])
    stored = (await rt._load(done.id)).task_run("e").outputs
    assert stored["v"] == value and math.isnan(stored["nan"])


async def test_an_unstorable_label_or_default_is_refused(rt: Runtime) -> None:
    """Labels at submit and input defaults go through the same check as inputs."""
    flow = af.Flow(id="f", tasks=[af.Log(id="l", message="x")])
    with pytest.raises(InputError, match=r"labels.team: .*lone surrogate"):
        await rt.submit(flow, labels={"team": "\udc80"})
    with pytest.raises(InputError, match=r"labels.team: a str is required, not a int"):
        await rt.submit(flow, labels={"team": 3})  # type: ignore[dict-item]
    # A flow with no inputs and no labels given takes a shorter path: the traceparent too is
    # still checked on it.
    with pytest.raises(InputError, match=r"flow default.f: traceparent: .*lone surrogate"):
        await rt.submit(flow, traceparent="\udc80")
    bad_default = af.Flow(
        id="d",
        inputs=[af.Input(name="n", type="int", default=2**64)],
        tasks=[af.Log(id="l", message="x")],
    )
    with pytest.raises(InputError, match=r"inputs.n \(its default\): 18446744073709551616"):
        await rt.submit(bad_default)
    assert await rt.executions() == []


async def test_unstorable_resume_inputs_are_refused_and_the_pause_waits_on(rt: Runtime) -> None:
    """Resume inputs the store cannot keep are refused; the execution stays PAUSED and a
    good resume then completes it."""
    flow = af.Flow(
        id="approve",
        tasks=[af.Pause(id="p", on_resume=[af.Input(name="why", type="any")])],
    )
    handle = await rt.submit(flow)
    await rt.wait_for(handle.id, State.PAUSED)
    with pytest.raises(InputError, match=r"inputs.why.n: 18446744073709551616 is beyond"):
        await rt.resume(handle.id, {"why": {"n": 2**64}})
    assert (await rt.get(handle.id)).state is State.PAUSED
    await rt.resume(handle.id, {"why": "ok"})
    done = await handle.wait()
    assert done.state is State.SUCCESS
    assert done.task_run("p").outputs == {"why": "ok", "onResume": {"why": "ok"}}


async def test_unstorable_subflow_inputs_fail_the_subflow_task_run(tmp_path: Path) -> None:
    """A subflow started with an input the store cannot keep fails its Subflow task run with
    the child's InputError; no child execution is created."""
    child = af.Flow(
        id="child", inputs=[af.Input(name="n", type="int")], tasks=[af.Log(id="l", message="x")]
    )
    parent = af.Flow(
        id="parent",
        tasks=[af.Subflow(id="s", flow_id="child", inputs={"n": "99999999999999999999999"})],
    )

    async def act(rt: Runtime) -> Execution:
        rt.register(child)
        return await rt.run(parent)

    done = await _with_a_healthy_neighbour(tmp_path / "rt.db", act)
    assert done.state is State.FAILED
    error = done.task_run("s").error or ""
    assert "InputError: subflow default.child: inputs.n: 99999999999999999999999" in error
    async with Runtime.open(tmp_path / "rt.db") as rt:
        assert [e.flow_id for e in await rt.executions(flow="child")] == []


# -- flows: revision -------------------------------------------------------------------------


def test_a_revision_beyond_64_bits_is_refused_at_load() -> None:
    """``revision`` beyond an SQL integer is a flow problem naming the field (and the line
    in a file), before anything is stored."""
    with pytest.raises(FlowValidationError, match=r"revision: revision 2361183241434822606848"):
        af.Flow(id="f", revision=2**71, tasks=[af.Log(id="l", message="x")])
    text = "id: f\nnamespace: t\nrevision: 99999999999999999999999\ntasks:\n"
    text += "  - id: a\n    type: io.kestra.plugin.core.log.Log\n    message: hi\n"
    with pytest.raises(FlowValidationError) as raised:
        af.load_flow_text(text, path="f.yaml")
    (problem,) = raised.value.problems
    assert (problem.file, problem.line, problem.field) == ("f.yaml", 3, "revision")
    assert "beyond 64 bits" in problem.message


def test_the_cli_refuses_an_input_beyond_64_bits_and_stores_nothing(tmp_path: Path) -> None:
    """``actorflow run --input n=99999999999999999999999`` exits 2 naming ``inputs.n``; no
    database is created."""
    flow = tmp_path / "f.yaml"
    flow.write_text(
        "id: f\nnamespace: t\ninputs:\n  - id: n\n    type: INT\ntasks:\n"
        "  - id: a\n    type: io.kestra.plugin.core.log.Log\n    message: '{{ inputs.n }}'\n"
    )
    db = tmp_path / "cli.db"
    proc = af_cli("run", flow, "--db", db, "--input", "n=99999999999999999999999", code=2)
    assert "flow t.f: inputs.n: 99999999999999999999999 is beyond 64 bits" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not db.exists()
