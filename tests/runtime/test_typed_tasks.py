"""The typed Python API: parameters checked at definition, outputs passed by reference, results
read back as their declared types."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

import actorflow as af
from actorflow.runtime import Runtime

pytestmark = pytest.mark.anyio


class Rows(msgspec.Struct):
    rows: list[int]
    source: str


@dataclasses.dataclass
class Summary:
    count: int
    total: int


calls: list[str] = []


@af.task
async def extract(ctx: af.TaskContext, source: str, limit: int = 3) -> Rows:
    calls.append("extract")
    return Rows(rows=list(range(1, limit + 1)), source=source)


@af.task
def transform(ctx: af.TaskContext, data: Rows) -> list[int]:
    assert isinstance(data, Rows)  # a Struct output comes back as the Struct
    return [r * 10 for r in data.rows]


@af.task
async def load(ctx: af.TaskContext, rows: list[int], table: str = "t") -> Summary:
    return Summary(count=len(rows), total=sum(rows))


def test_a_misspelt_parameter_is_an_error_when_the_step_is_defined() -> None:
    """A wrong name fails at definition, naming the task, the parameter and what it takes."""
    with pytest.raises(af.FlowError, match=r"task 'e'.*unknown parameter 'sourc'.*source, limit"):
        extract("e", sourc="db")  # type: ignore[call-arg]


def test_a_missing_required_parameter_is_an_error_when_the_step_is_defined() -> None:
    """A required parameter left out fails at definition, naming the task and the parameter."""
    with pytest.raises(af.FlowError, match=r"task 'l'.*missing required parameter 'rows'"):
        load("l", table="x")  # type: ignore[call-arg]
    with pytest.raises(af.FlowError, match=r"task 'c'.*missing required parameter 'rows'"):
        af.runtime.Call(id="c", fn=load.fn, params={})


def test_a_function_without_a_context_parameter_is_refused() -> None:
    """A function that cannot take the task context is refused when its step is made."""
    with pytest.raises(af.FlowError, match="task context"):
        af.task(lambda: None)("x")  # type: ignore[arg-type, misc]


async def test_outputs_pass_by_reference_and_come_back_typed(rt: Runtime) -> None:
    """extract -> transform -> load without a template: each reads the one before, the
    Struct arrives as a Struct, and done.output(step) gives each declared type."""
    e = extract(source="db", limit=4)
    t = transform(data=e.output())
    ld = load(rows=t.output(), table="sales")
    done = await rt.run(af.Flow(id="etl", tasks=[e, t, ld]))
    assert done.state is af.State.SUCCESS
    assert done.output(e) == Rows(rows=[1, 2, 3, 4], source="db")
    assert done.output(t) == [10, 20, 30, 40]
    assert done.output(ld) == Summary(count=4, total=100)
    assert done.task_run("load").outputs_as(Summary) == Summary(count=4, total=100)
    assert done.task_run("load").outputs == {"count": 4, "total": 100}  # stored as plain data


async def test_referenced_steps_run_first_whatever_the_listed_order(rt: Runtime) -> None:
    """Listing only the last step adds the ones it reads; listing them out of order runs them
    in dependency order."""
    e = extract("e", source="api")
    t = transform("t", data=e.output())
    ld = load("l", rows=t.output())
    only_last = af.Flow(id="last", tasks=[ld])
    assert [x.id for x in only_last.tasks] == ["e", "t", "l"]
    shuffled = af.Flow(id="shuffled", tasks=[ld, e, t])
    assert [x.id for x in shuffled.tasks] == ["e", "t", "l"]
    done = await rt.run(only_last)
    assert done.output(ld) == Summary(count=3, total=60)


async def test_a_key_of_an_output_mapping_is_passed_by_reference(rt: Runtime) -> None:
    """step.output("rows") passes one key of the outputs mapping; a missing key fails the
    attempt with an OutputError naming the reader, the task and the keys it has."""
    e = extract("e", source="db", limit=2)
    good = load("good", rows=e.output("rows"))
    done = await rt.run(af.Flow(id="key", tasks=[e, good]))
    assert done.output(good) == Summary(count=2, total=3)
    bad = load("bad", rows=e.output("lines"))
    failed = await rt.run(af.Flow(id="badkey", tasks=[e, bad]))
    assert failed.state is af.State.FAILED
    error = failed.task_run("bad").attempts[-1].error or ""
    assert "parameter 'rows'" in error and "no output 'lines'" in error, error


async def test_an_output_that_does_not_fit_the_reader_fails_its_attempt(rt: Runtime) -> None:
    """A referenced value of the wrong shape fails the reading attempt with OutputError."""
    e = extract("e", source="db")
    wrong = load("wrong", rows=e.output("source"))  # a str where list[int] is declared
    done = await rt.run(af.Flow(id="wrongtype", tasks=[e, wrong]))
    assert done.state is af.State.FAILED
    tr = done.task_run("wrong")
    assert tr.attempts[-1].error_type is not None and "OutputError" in tr.attempts[-1].error_type
    with pytest.raises(af.OutputError, match=r"\(e\).*count"):
        done.task_run("e").outputs_as(Summary)


def test_a_reference_to_a_step_outside_the_flow_is_refused_at_definition() -> None:
    """An errors task reading a step that is in no part of the flow is a validation problem."""
    e = extract("e", source="db")
    with pytest.raises(af.FlowValidationError, match=r"reads the output of task 'e'"):
        af.Flow(id="f", tasks=[af.Log(id="l", message="m")], errors=[load("l2", rows=e.output())])


def test_positional_parameters_and_options_are_accepted() -> None:
    """Params may be given by position after the id; with_options sets task options typed."""
    step = extract.with_options(timeout=5.0, retry=af.Retry.constant(1, max_attempts=2))(
        "e", "db", 7
    )
    assert dict(step.params) == {"source": "db", "limit": 7}
    assert step.timeout == 5.0 and step.retry is not None
    assert extract.options == {}  # the original is unchanged


async def test_a_dag_node_reading_another_depends_on_it(rt: Runtime) -> None:
    """In a Dag, a node that reads another node's output waits for it without depends_on."""
    e = extract("e", source="dag")
    t = transform("t", data=e.output())
    dag = af.Dag(id="d", nodes=[af.DagTask(task=t), af.DagTask(task=e)])
    assert [list(n.depends_on) for n in dag.nodes] == [["e"], []]
    done = await rt.run(af.Flow(id="dagref", tasks=[dag]))
    assert done.state is af.State.SUCCESS
    assert done.output(t) == [10, 20, 30]
