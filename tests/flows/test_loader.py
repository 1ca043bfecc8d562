"""Flow files: schema validation with golden messages, durations, aliases, user task types,
the JSON Schema, and the template sandbox."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from actorflow import FlowValidationError, TemplateError
from actorflow.flows._builtin import HttpRequest, OutputValues, ShellCommands
from actorflow.flows._loader import load_flow, load_flow_text, parse_duration
from actorflow.flows._registry import Registry, register_task_type, task_type
from actorflow.flows._schema import flow_schema
from actorflow.runtime import (
    Dag,
    Fail,
    FakeClock,
    ForEach,
    Log,
    Parallel,
    Pause,
    Return,
    Runnable,
    Runtime,
    Sequential,
    Sleep,
    State,
    TaskContext,
)
from actorflow.runtime._template import render

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p for p in GOLDEN.iterdir() if p.suffix in (".yaml", ".json"))
UPDATE = os.environ.get("ACTORFLOW_UPDATE_GOLDEN") == "1"


def _messages(path: Path) -> str:
    with pytest.raises(FlowValidationError) as info:
        load_flow(path.relative_to(GOLDEN.parent.parent.parent))
    return str(info.value) + "\n"


@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_golden_validation_messages(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each malformed flow is refused with every problem, naming file, line and field."""
    monkeypatch.chdir(GOLDEN.parent.parent.parent)
    got = _messages(case)
    expected_file = case.with_suffix(".txt")
    if UPDATE or not expected_file.exists():
        expected_file.write_text(got)
    assert got == expected_file.read_text()
    for line in got.splitlines()[1:]:
        assert line.strip().startswith(f"tests/flows/golden/{case.name}"), line


def test_golden_set_is_large_enough() -> None:
    """At least 15 malformed flows are covered by golden outputs."""
    assert len(CASES) >= 15


def test_all_problems_are_reported_at_once() -> None:
    """Independent problems in different tasks all appear in one error."""
    text = """
id: many
tasks:
  - {id: a, type: log}
  - {id: b, type: sleep, duration: nope}
  - {id: c, type: nope}
  - {id: d, type: log, message: hi, extra: 1}
"""
    with pytest.raises(FlowValidationError) as info:
        load_flow_text(text, path="many.yaml")
    problems = info.value.problems
    assert [(p.line, p.field) for p in problems] == [
        (4, "tasks[0]"),
        (5, "tasks[1].duration"),
        (6, "tasks[2].type"),
        (7, "tasks[3].extra"),
    ]
    assert all(p.file == "many.yaml" for p in problems)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        (0.25, 0.25),
        ("PT5S", 5.0),
        ("PT1M30S", 90.0),
        ("P1DT1H", 90000.0),
        ("pt0.5s", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("12", 12.0),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    """Durations accept seconds, ISO-8601 and short units."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "P", "PT", "5 parsecs", "-3", True, [1]])
def test_bad_durations(text: Any) -> None:
    """Anything else is refused with a message."""
    with pytest.raises(ValueError):
        parse_duration(text)


KESTRA = """
id: kestra-style
namespace: company.team
inputs:
  - id: user
    type: STRING
    defaults: Rick
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message: "Hey {{ inputs.user }}"
  - id: seq
    type: io.kestra.plugin.core.flow.Sequential
    tasks:
      - id: ret
        type: io.kestra.plugin.core.debug.Return
        format: "{{ inputs.user | upper }}"
        allowFailure: true
        runIf: "{{ true }}"
        retry:
          type: constant
          interval: PT0.1S
          maxAttempt: 3
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: ["a", "b"]
    concurrencyLimit: 2
    tasks:
      - id: nap
        type: io.kestra.plugin.core.flow.Sleep
        duration: PT0.01S
  - id: par
    type: io.kestra.plugin.core.flow.Parallel
    concurrent: 1
    tasks:
      - id: dag
        type: io.kestra.plugin.core.flow.Dag
        tasks:
          - task: {id: d1, type: io.kestra.plugin.core.log.Log, message: d1}
          - task: {id: d2, type: io.kestra.plugin.core.log.Log, message: d2}
            dependsOn: [d1]
  - id: wait
    type: io.kestra.plugin.core.flow.Pause
    pauseDuration: PT0S
  - id: never
    type: io.kestra.plugin.core.execution.Fail
    errorMessage: "boom"
    condition: "{{ false }}"
"""


def test_kestra_aliases_and_camel_case_keys() -> None:
    """Kestra type names and camelCase keys build the same engine tasks."""
    flow = load_flow_text(KESTRA)
    assert flow.namespace == "company.team"
    assert isinstance(flow.task("hello"), Log)
    assert isinstance(flow.task("seq"), Sequential)
    ret = flow.task("ret")
    assert isinstance(ret, Return)
    assert ret.allow_failure and ret.run_if == "{{ true }}"
    assert ret.retry is not None and ret.retry.max_attempts == 3
    assert ret.retry.interval == pytest.approx(0.1)
    each = flow.task("each")
    assert isinstance(each, ForEach) and each.concurrency == 2
    assert isinstance(flow.task("nap"), Sleep)
    par = flow.task("par")
    assert isinstance(par, Parallel) and par.concurrency == 1
    dag = flow.task("dag")
    assert isinstance(dag, Dag) and dag.nodes[1].depends_on == ("d1",)
    pause = flow.task("wait")
    assert isinstance(pause, Pause) and pause.delay == 0.0
    never = flow.task("never")
    assert isinstance(never, Fail) and never.message == "boom"


@pytest.mark.anyio
async def test_kestra_flow_runs_unchanged(tmp_path: Path) -> None:
    """The Kestra-style flow runs to SUCCESS with the expected outputs."""
    flow = load_flow_text(KESTRA)
    async with Runtime.open(":memory:", files=tmp_path / "files", clock=FakeClock()) as rt:
        ex = await rt.run(flow, timeout=20)
    assert ex.state is State.SUCCESS, ex.error
    assert ex.task_run("ret").outputs == {"value": "RICK"}
    assert ex.task_run("never").state is State.SUCCESS
    assert {tr.value for tr in ex.task_runs if tr.task_id == "nap"} == {"a", "b"}


def test_json_flow_and_source_kept(tmp_path: Path) -> None:
    """JSON flow files load too; the flow keeps its text and path for recovery."""
    text = json.dumps({"id": "j", "tasks": [{"id": "a", "type": "output", "values": {"x": 1}}]})
    path = tmp_path / "j.json"
    path.write_text(text)
    flow = load_flow(path)
    assert flow.source == text and flow.source_path == str(path)
    assert isinstance(flow.task("a"), OutputValues)


def test_http_and_shell_built() -> None:
    """http and shell tasks build with their Kestra aliases and options."""
    flow = load_flow_text(
        """
id: io
tasks:
  - {id: get, type: io.kestra.plugin.core.http.Request, url: "https://example.com", method: POST,
     body: {a: 1}, allowFailed: true, timeout: 5s}
  - {id: sh, type: io.kestra.plugin.scripts.shell.Commands, commands: ["echo hi"], env: {A: b}}
"""
    )
    get = flow.task("get")
    assert isinstance(get, HttpRequest)
    assert (get.uri, get.method, get.allow_failed, get.timeout) == (
        "https://example.com",
        "POST",
        True,
        5.0,
    )
    sh = flow.task("sh")
    assert isinstance(sh, ShellCommands) and sh.commands == ("echo hi",) and sh.env == {"A": "b"}


def test_unreadable_file_is_a_validation_error(tmp_path: Path) -> None:
    """A missing file is reported like any other problem, with its path."""
    with pytest.raises(FlowValidationError) as info:
        load_flow(tmp_path / "missing.yaml")
    assert info.value.problems[0].file == str(tmp_path / "missing.yaml")
    assert "cannot read flow file" in str(info.value)


# -- user task types -----------------------------------------------------------------------
def test_user_function_type_is_validated_by_its_signature() -> None:
    """A decorated function's parameters become validated keys of its task type."""
    reg = Registry()

    @task_type("acme.greet", registry=reg)
    async def greet(ctx: TaskContext, name: str, times: int = 1) -> dict[str, str]:
        return {"text": " ".join([f"hi {name}"] * times)}

    flow = load_flow_text(
        "id: f\ntasks:\n  - {id: g, type: acme.greet, name: bob, times: 2}\n", registry=reg
    )
    assert flow.task("g").id == "g"
    with pytest.raises(FlowValidationError) as info:
        load_flow_text(
            "id: f\ntasks:\n  - {id: g, type: acme.greet, times: two, colour: red}\n",
            registry=reg,
        )
    text = str(info.value)
    assert "missing required key 'name'" in text
    assert "tasks[0].times: expected an integer, got 'two'" in text
    assert "unknown key 'colour'" in text


@pytest.mark.anyio
async def test_user_types_run(tmp_path: Path) -> None:
    """Function and Runnable-class user types run with rendered parameters."""
    reg = Registry()

    @task_type("acme.add", registry=reg)
    def add(ctx: TaskContext, a: int, b: int) -> int:
        return a + b

    @task_type("acme.shout", registry=reg)
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Shout(Runnable):
        text: str

        async def run(self, ctx: TaskContext) -> Any:
            return {"value": str(ctx.render(self.text, field="text")).upper()}

    flow = load_flow_text(
        """
id: user-types
tasks:
  - {id: sum, type: acme.add, a: 2, b: 3}
  - {id: loud, type: acme.shout, text: "sum is {{ outputs.sum.value }}"}
""",
        registry=reg,
    )
    async with Runtime.open(":memory:", files=tmp_path / "files", clock=FakeClock()) as rt:
        ex = await rt.run(flow, timeout=20)
    assert ex.state is State.SUCCESS, ex.error
    assert ex.task_run("sum").outputs == {"value": 5}
    assert ex.task_run("loud").outputs == {"value": "SUM IS 5"}


def test_registration_errors() -> None:
    """Names are unique, parameters cannot shadow common options, types must have a file form."""
    reg = Registry()

    def ok(ctx: TaskContext, x: int) -> None: ...

    register_task_type("acme.ok", ok, registry=reg)
    with pytest.raises(ValueError, match="already registered"):
        register_task_type("acme.ok", lambda ctx: None, registry=reg)

    def clash(ctx: TaskContext, timeout: int) -> None: ...

    with pytest.raises(TypeError, match="clashes with a common task option"):
        register_task_type("acme.clash", clash, registry=reg)

    def opaque(ctx: TaskContext, conn: TaskContext) -> None: ...

    with pytest.raises(TypeError, match="cannot come from a flow file"):
        register_task_type("acme.opaque", opaque, registry=reg)
    with pytest.raises(ValueError, match="invalid task type name"):
        register_task_type("bad name", ok, registry=reg)


def test_flow_cannot_name_a_module() -> None:
    """A module path as a type is just an unknown type: nothing is imported."""
    with pytest.raises(FlowValidationError, match=r"unknown task type 'os\.system'"):
        load_flow_text("id: f\ntasks:\n  - {id: a, type: os.system, command: ls}\n")


def test_json_schema_covers_types_and_aliases() -> None:
    """The JSON Schema lists every task type (aliases included) and the camelCase keys."""
    reg = Registry()
    from actorflow.flows._builtin import register_builtins

    register_builtins(reg)

    @task_type("acme.thing", registry=reg)
    def thing(ctx: TaskContext, size: int = 1) -> None: ...

    schema = flow_schema(reg)
    defs = schema["$defs"]
    assert schema["$ref"] == "#/$defs/FlowSpec"
    assert len(defs["Task"]["oneOf"]) == len({t.spec for t in reg})
    log = defs["LogSpec"]
    assert "io.kestra.plugin.core.log.Log" in log["properties"]["type"]["enum"]
    assert "allowFailure" in log["properties"] and log["additionalProperties"] is False
    assert defs["acme_thing"]["properties"]["type"] == {"enum": ["acme.thing"]}
    assert "maxAttempt" in defs["RetrySpec"]["properties"]
    json.dumps(schema)


# -- template sandbox --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "expr",
    [
        "{{ inputs.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ lipsum.__globals__ }}",
        "{{ inputs.items.__self__.__class__ }}",
        "{{ range.__init__.__globals__['os'] }}",
    ],
)
def test_template_sandbox_refuses_internals(expr: str) -> None:
    """Attribute access to Python internals is refused, with the task and field named."""
    with pytest.raises(TemplateError) as info:
        render(expr, {"inputs": {"a": 1}}, where="task 'x' field 'message'")
    assert "task 'x' field 'message'" in str(info.value)


def test_template_sandbox_refuses_mutation() -> None:
    """Templates cannot change the values they read."""
    inputs: dict[str, Any] = {"items": [1]}
    with pytest.raises(TemplateError):
        render("{{ inputs['items'].append(2) }}", {"inputs": inputs}, where="w")
    assert inputs == {"items": [1]}


@pytest.mark.anyio
async def test_sandbox_escape_fails_the_task_run(tmp_path: Path) -> None:
    """A flow whose template reaches for internals fails at that task, naming task and field."""
    flow = load_flow_text(
        "id: escape\ntasks:\n  - id: bad\n    type: log\n"
        "    message: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n"
    )
    async with Runtime.open(":memory:", files=tmp_path / "files", clock=FakeClock()) as rt:
        ex = await rt.run(flow, timeout=20)
    assert ex.state is State.FAILED
    error = ex.task_run("bad").error or ""
    assert "task 'bad' field 'message'" in error and "unsafe" in error


@pytest.mark.anyio
async def test_stored_flow_that_no_longer_loads(tmp_path: Path) -> None:
    """A stored flow whose user type is gone gives a clear IllegalOperation, not a crash."""
    from actorflow import IllegalOperation
    from actorflow.flows._registry import REGISTRY

    def boom(ctx: TaskContext) -> None:
        raise RuntimeError("boom")

    register_task_type("acme.vanishing", boom)
    try:
        flow = load_flow_text("id: gone\ntasks:\n  - {id: b, type: acme.vanishing}\n")
        async with Runtime.open(tmp_path / "x.db") as rt:
            ex = await rt.run(flow, timeout=20)
        assert ex.state is State.FAILED
    finally:
        REGISTRY.remove("acme.vanishing")
    async with Runtime.open(tmp_path / "x.db") as rt:
        with pytest.raises(IllegalOperation, match=r"unknown task type 'acme\.vanishing'"):
            await rt.restart(ex.id)
