"""Flows the web UI's tests run: every shape the topology draws, retries for the Gantt,
a Pause with resume inputs, files (an uploaded FILE input too), and one input of every
type."""

from __future__ import annotations

import threading
from typing import Any

import anyio

import actorflow as af

#: Opened by the tests to let ``gated`` tasks finish (set by the server helper at teardown).
GATE = threading.Event()
#: Every input type the runtime's flows accept.
INPUT_TYPES = ("string", "int", "float", "bool", "json", "list", "dict", "any")

_flaky_calls: dict[str, int] = {}


@af.task
async def report(ctx: af.TaskContext, name: str) -> dict[str, Any]:
    ctx.metric.counter("reports", 1, kind="daily")
    ctx.log.info(f"report for {name}")
    uri = await ctx.storage.put("report.txt", f"hello {name}")
    return {"greeting": f"hello {name}", "file": uri}


@af.task
async def block(ctx: af.TaskContext) -> None:
    await anyio.sleep_forever()


@af.task
async def gated(ctx: af.TaskContext) -> str:
    await anyio.to_thread.run_sync(GATE.wait, abandon_on_cancel=True)
    return "through"


@af.task
async def flaky(ctx: af.TaskContext, fails: int) -> str:
    """Fails its first ``fails`` attempts (counted per execution and task run)."""
    key = f"{ctx.execution_id}/{ctx.task_run_id}"
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] <= fails:
        raise RuntimeError(f"attempt {_flaky_calls[key]} fails")
    return "ok"


@af.task
async def boom(ctx: af.TaskContext) -> None:
    raise RuntimeError("boom")


@af.task
async def echo(ctx: af.TaskContext, value: Any) -> dict[str, Any]:
    return {"value": value}


@af.task
async def read_upload(ctx: af.TaskContext, uri: str) -> dict[str, Any]:
    """The uploaded file's text, and a copy of it as an output file of its own."""
    text = (await ctx.storage.get(uri)).decode()
    return {"text": text, "copy": await ctx.storage.put("copy.txt", text.upper())}


RETRY = af.Retry(max_attempts=3, interval=0.01)

FLOWS = [
    af.Flow(id="hello", namespace="team", inputs=[af.Input(name="name", default="world")],
            labels={"team": "data"},
            tasks=[report("greet", name="{{ inputs.name }}")]),
    af.Flow(id="blocking", namespace="team", tasks=[block("forever")]),
    af.Flow(id="approval", namespace="team", tasks=[
        af.Pause(id="approve", on_resume=[
            af.Input(name="ok", type="bool"),
            af.Input(name="limits", type="dict"),
        ]),
        af.Log(id="after", message="ok={{ outputs.approve.ok }}"),
    ]),
    af.Flow(id="retried", namespace="team", tasks=[
        flaky("twice", fails=2, retry=RETRY),
        af.Parallel(id="both", tasks=[flaky("once", fails=1, retry=RETRY), echo("fine", value=1)]),
        af.ForEach(id="each", values=["a", "b"], tasks=[echo("item", value="{{ taskrun.value }}")]),
    ]),
    af.Flow(id="shapes", namespace="ops", description="every shape of the topology", tasks=[
        af.Log(id="start", message="go"),
        af.Parallel(id="fan", tasks=[af.Log(id="left", message="l"), af.Log(id="right", message="r")]),
        af.Dag(id="dag", nodes=[
            af.DagTask(task=af.Log(id="d1", message="1")),
            af.DagTask(task=af.Log(id="d2", message="2"), depends_on=["d1"]),
            af.DagTask(task=af.Log(id="d3", message="3"), depends_on=["d1"]),
            af.DagTask(task=af.Log(id="d4", message="4"), depends_on=["d2", "d3"]),
        ]),
        af.ForEach(id="loop", values=["x", "y"], tasks=[echo("per", value="{{ taskrun.value }}")]),
    ], errors=[af.Log(id="on_error", message="failed")],
       finally_=[af.Log(id="cleanup", message="done")],
       triggers=[af.Webhook(id="hook", key="secret-key"),
                 af.Schedule(id="nightly", cron="0 3 * * *", disabled=True)]),
    af.Flow(id="typed", namespace="team",
            inputs=[af.Input(name=f"a_{t}", type=t, required=t != "any") for t in INPUT_TYPES],
            tasks=[echo("show", value="{{ inputs }}")]),
    af.Flow(id="waiting", namespace="team", tasks=[gated("wait")]),
    af.Flow(id="parent", namespace="team",
            tasks=[af.Subflow(id="child", flow_id="hello", namespace="team")]),
    af.Flow(id="stepped", namespace="team", tasks=[
        af.Log(id="first", message="1"), gated("wait"), af.Log(id="after", message="2")]),
    af.Flow(id="upload", namespace="team",
            inputs=[af.Input(name="doc", type="file"), af.Input(name="note", default="")],
            tasks=[read_upload("read", uri="{{ inputs.doc }}")]),
    af.Flow(id="failing", namespace="team", tasks=[af.Log(id="first", message="1"), boom("b")],
            retry=None),
]  # fmt: skip
