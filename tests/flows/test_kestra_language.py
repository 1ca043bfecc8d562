"""Kestra's flow language on small flows of our own (tests/flows/kestra/): Pebble operators,
filters and functions, flow variables/outputs/labels/pluginDefaults, every input type, YAML
scalars in string fields, sla, and the invalid flows Kestra refuses."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from actorflow import FlowValidationError, InputError
from actorflow.flows import load_flow
from actorflow.runtime import Execution, FakeClock, Runtime, State

pytestmark = pytest.mark.anyio
FLOWS = Path(__file__).parent / "kestra"


def _value(ex: Execution, task_id: str, value: str | None = None) -> Any:
    return ex.task_run(task_id, value).outputs.get("value")


async def test_pebble_operators(rt: Runtime) -> None:
    """``??``, the ternary, ``equals``, ``contains``, Pebble printing and a Switch on a test."""
    flow = load_flow(FLOWS / "pebble_operators.yaml")
    ex = await rt.run(flow, timeout=20)
    assert ex.state is State.SUCCESS, ex.error
    assert _value(ex, "coalesce") == "fallback|none"
    assert _value(ex, "ternary") == "first"
    assert _value(ex, "words") == "true true ."
    assert [tr.task_id for tr in ex.task_runs if tr.task_id in ("calm", "crashed")] == ["calm"]
    ex = await rt.run(flow, {"crash": "1"}, timeout=20)
    assert _value(ex, "coalesce") == "fallback|1"
    assert ex.task_run("switch").outputs["value"] == "true"
    assert [tr.task_id for tr in ex.task_runs if tr.task_id in ("calm", "crashed")] == ["crashed"]


async def test_pebble_filters_and_functions(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """date, dateAdd, toJson, json(), is json, jq, keys, slugify, secret(), now(),
    errorLogs() as Kestra's documentation describes them."""
    monkeypatch.setenv("SECRET_CORPUS_TEST", base64.b64encode(b"s3cret").decode())
    ex = await rt.run(load_flow(FLOWS / "pebble_functions.yaml"), timeout=20)
    assert ex.state is State.FAILED
    assert _value(ex, "dates") == "2024-03-05 06:07:08.009 Wed 6 Mar"
    assert _value(ex, "json") == '{"a":[1,true,null]} 3 true false'
    assert _value(ex, "jq") == "[1,2] b,a"
    assert _value(ex, "text") == "hello-world s3cret true"
    assert _value(ex, "report") == "fail: Task failure"


async def test_flow_keys(rt: Runtime, clock: FakeClock) -> None:
    """variables (lazy, one using another), labels as a key/value list, pluginDefaults by
    type, parents, start dates and the flow's outputs stored on the execution."""
    flow = load_flow(FLOWS / "flow_keys.yaml")
    assert flow.labels == {"team": "data", "tier": "1"}
    log = flow.task("log")
    assert getattr(log, "level", None) == "WARNING"
    ex = await rt.run(flow, {"name": "ada"}, timeout=20)
    assert ex.state is State.SUCCESS, ex.error
    assert sorted(_value(ex, "inner", v) for v in ("a", "b")) == ["a/2", "b/2"]
    assert _value(ex, "vars") == "HELLO ADA! data 1"
    year = str(1970 + int(clock.now() // 31_557_600))
    assert _value(ex, "dates") == f"{year} true"
    assert ex.outputs == {"greeting": "hello ada", "count": 42}
    assert (await rt.get(ex.id)).outputs == {"greeting": "hello ada", "count": 42}


async def test_flow_output_that_cannot_render_fails_the_execution(rt: Runtime) -> None:
    """A flow output naming an undefined variable fails the execution (Kestra's rule)."""
    from actorflow.flows import load_flow_text

    flow = load_flow_text(
        "id: bad-out\ntasks:\n  - {id: a, type: io.kestra.plugin.core.debug.Return, format: x}\n"
        "outputs:\n  - {id: o, type: STRING, value: '{{ nowhere }}'}\n"
    )
    ex = await rt.run(flow, timeout=20)
    assert ex.state is State.FAILED
    assert "flow outputs" in (ex.error or "") and "nowhere" in (ex.error or "")


async def test_every_input_type(rt: Runtime, tmp_path: Path) -> None:
    """Every Kestra input type is read, coerced and checked; a FILE input is stored in the
    internal storage and seen as its URI."""
    upload = tmp_path / "data.txt"
    upload.write_text("file body")
    flow = load_flow(FLOWS / "all_inputs.yaml")
    given = {
        "secret": "pw", "when": "2024-05-06T07:08:09+02:00", "day": "2024-01-31",
        "at": "10:11:12", "wait": "PT5M", "link": "https://example.org/x",
        "config": "some: thing", "color": "red", "kind": "B", "tags": '["x", "z"]',
        "numbers": "[1, 2, 3]", "code": "A12", "count": "3", "nested.value": "deep",
        "upload": str(upload),
    }  # fmt: skip
    ex = await rt.run(flow, given, timeout=20)
    assert ex.state is State.SUCCESS, ex.error
    assert _value(ex, "show") == "2024-05-06T05:08:09Z 2024-01-31 10:11:12 PT5M thing x+z 3 deep"
    assert _value(ex, "file") == "file body"
    assert ex.inputs["upload"].startswith("actorflow://tests.kestra/all-inputs/")
    assert await rt.read_file(ex.inputs["upload"]) == b"file body"


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("color", "blue", "'blue' is not one of ['red', 'green']"),
        ("tags", '["w"]', "'w' is not one of"),
        ("code", "a12", "does not match the validator"),
        ("count", "10", "more than the maximum"),
        ("wait", "PT2H", "more than the maximum"),
        ("when", "2019-01-01T00:00:00Z", "is not after"),
        ("day", "2031-01-01", "is not before"),
        ("numbers", '["x"]', "invalid literal for int()"),
        ("at", "25:00", "not a time"),
        ("link", "nothing", "not a URI"),
        ("upload", "/nowhere/at/all", "cannot read file"),
    ],
)
async def test_bad_inputs_are_refused(
    rt: Runtime, tmp_path: Path, name: str, bad: str, message: str
) -> None:
    """A value outside its type or constraints is refused at submit, naming the input."""
    upload = tmp_path / "data.txt"
    upload.write_text("x")
    given = {
        "secret": "pw", "when": "2024-05-06T07:08:09Z", "day": "2024-01-31", "at": "10:11",
        "wait": "PT5M", "link": "https://example.org", "config": "a: 1", "color": "red",
        "kind": "A", "tags": "x", "numbers": "[1]", "code": "A1", "count": 3,
        "nested.value": "v", "upload": str(upload),
    }  # fmt: skip
    given[name] = bad
    with pytest.raises(InputError) as info:
        await rt.submit(load_flow(FLOWS / "all_inputs.yaml"), given)
    assert name in str(info.value) and message in str(info.value)


async def test_undeclared_inputs_are_ignored(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    """An input the flow does not declare is dropped with a warning, as Kestra ignores it."""
    flow = load_flow(FLOWS / "pebble_operators.yaml")
    ex = await rt.run(flow, {"extra": "x"}, timeout=20)
    assert ex.state is State.SUCCESS and "extra" not in ex.inputs
    assert "['extra'] not declared by the flow; ignored" in caplog.text


def test_yaml_scalars_in_string_fields() -> None:
    """``id: off``, ``message: yes``, ``id: 1`` and a date are the text they are written as."""
    flow = load_flow(FLOWS / "yaml_scalars.yaml")
    assert [t.id for t in flow.tasks] == ["off", "1"]
    assert [getattr(t, "message", None) for t in flow.tasks] == ["yes", "2024-01-02"]


def test_invalid_flows_are_refused() -> None:
    """Two inputs with one id are refused with the line of both (Kestra refuses them)."""
    with pytest.raises(FlowValidationError) as info:
        load_flow(FLOWS / "duplicate_inputs.yaml")
    [problem] = info.value.problems
    assert problem.line == 6 and problem.field == "inputs[1].id"
    assert "duplicate input id 'first' (first at line 4)" in problem.message


async def test_sla_max_duration_fails_the_execution(rt: Runtime, clock: FakeClock) -> None:
    """Past its MAX_DURATION the execution is killed into FAILED and labelled."""
    handle = await rt.submit(load_flow(FLOWS / "sla_max_duration.yaml"))
    await rt.wait_for(handle.id, State.PAUSED, timeout=10)
    clock.advance(31)
    ex = await rt.wait(handle.id, timeout=10)
    assert ex.state is State.FAILED
    assert ex.labels.get("sla") == "too-slow"
    assert "sla" in (ex.error or "")


@pytest.mark.parametrize(
    ("mode", "state", "label"),
    [("PASS", State.SUCCESS, None), ("CANCEL", State.CANCELLED, None),
     ("LABEL", State.SUCCESS, "violated")],
)  # fmt: skip
async def test_sla_execution_assertion(
    rt: Runtime, mode: str, state: State, label: str | None
) -> None:
    """An EXECUTION_ASSERTION that does not hold applies its behavior (CANCEL, NONE+labels)."""
    ex = await rt.run(load_flow(FLOWS / "sla_assertion.yaml"), {"mode": mode}, timeout=20)
    assert ex.state is state
    assert ex.labels.get("sla") == label


async def test_nested_loop_outputs(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs in nested loops are keyed outer value first (``outputs.r.s1.a``);
    ``currentEachOutput`` reads this iteration's; ``envs.x`` is ``KESTRA_X``."""
    monkeypatch.setenv("KESTRA_GREETING", "hi")
    ex = await rt.run(load_flow(FLOWS / "nested_loops.yaml"), timeout=20)
    assert ex.state is State.SUCCESS, ex.error
    assert _value(ex, "end") == "s1-a|s2-b|Return|hi"
    assert sorted(tr.outputs["value"] for tr in ex.task_runs if tr.task_id == "cur") == [
        "s1-a", "s1-b", "s2-a", "s2-b",
    ]  # fmt: skip
