"""The HTTP API through a real HTTP client against a real server (uvicorn on loopback)."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

import actorflow as af
from actorflow.runtime import Runtime
from actorflow.server import app

pytestmark = pytest.mark.anyio


@af.task
async def report(ctx: af.TaskContext, name: str) -> dict[str, Any]:
    ctx.metric.counter("reports", 1, kind="daily")
    ctx.log.info(f"report for {name}")
    uri = await ctx.storage.put("report.txt", f"hello {name}")
    return {"greeting": f"hello {name}", "file": uri}


@af.task
async def boom(ctx: af.TaskContext) -> None:
    raise RuntimeError("boom")


@af.task
async def block(ctx: af.TaskContext) -> None:
    await anyio.sleep_forever()


FLOWS = [
    af.Flow(id="hello", namespace="team", inputs=[af.Input(name="name", default="world")],
            tasks=[report("greet", name="{{ inputs.name }}")]),
    af.Flow(id="failing", namespace="team", tasks=[boom("b")], retry=None),
    af.Flow(id="blocking", namespace="team", tasks=[block("forever")]),
    af.Flow(id="approval", namespace="team", tasks=[
        af.Pause(id="approve", on_resume=[af.Input(name="ok", type="bool")]),
        af.Log(id="after", message="ok={{ outputs.approve.ok }}"),
    ]),
    af.Flow(id="upload", namespace="team", inputs=[af.Input(name="doc")],
            tasks=[af.Log(id="got", message="{{ inputs.doc }}")]),
    af.Flow(id="hooked", namespace="team", inputs=[af.Input(name="who", default="")],
            tasks=[af.Log(id="got", message="{{ trigger.body.hello }}")],
            triggers=[af.Webhook(id="hook", key="{{ flow.id }}-key",
                                 inputs={"who": "{{ trigger.body.hello }}"},
                                 conditions=["{{ trigger.body.hello != 'nobody' }}"])]),
]  # fmt: skip


@dataclass
class Served:
    client: httpx.AsyncClient
    rt: Runtime


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    async with Runtime.open(tmp_path / "api.db", flows=FLOWS) as rt:
        config = uvicorn.Config(app(rt), log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                yield Served(client, rt)
            server.should_exit = True


async def _submit(s: Served, flow: str, wait: bool = False, **body: Any) -> dict[str, Any]:
    r = await s.client.post(f"/api/v1/executions/team/{flow}", params={"wait": wait}, json=body)
    assert r.status_code in (200, 201), r.text
    data: dict[str, Any] = r.json()
    return data


async def test_health_and_openapi_document_every_route(served: Served) -> None:
    """/health answers ok; the OpenAPI document lists every route with its methods."""
    r = await served.client.get("/api/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    doc = (await served.client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert set(paths["/api/v1/executions/{namespace}/{flow_id}"]) == {"post"}
    assert {"post"} == set(paths["/api/v1/executions/{id}/kill"])
    assert "get" in paths["/api/v1/openapi.json"]
    ops = [op["operationId"] for p in paths.values() for op in p.values()]
    assert len(ops) == len(set(ops)) == 25
    assert set(paths["/api/v1/executions/{id}/links"]) == {"get"}
    list_params = {p["name"] for p in paths["/api/v1/executions"]["get"]["parameters"]}
    assert {"namespace", "flowId", "state", "limit", "offset"} <= list_params


async def test_submit_and_wait_returns_the_tree_with_outputs_metrics_and_files(
    served: Served,
) -> None:
    """Submitting with inputs and wait=true answers with the finished tree; logs, metrics and
    the output file are served for that execution."""
    ex = await _submit(served, "hello", wait=True, name="Ada")
    assert ex["state"] == "SUCCESS"
    assert ex["start_date"].endswith("Z") and ex["duration"] >= 0
    (tr,) = ex["task_runs"]
    assert tr["outputs"]["greeting"] == "hello Ada"
    r = await served.client.get(f"/api/v1/executions/{ex['id']}/logs")
    assert any("report for Ada" in line["message"] for line in r.json()["results"])
    r = await served.client.get(
        f"/api/v1/executions/{ex['id']}/metrics", params={"name": "reports"}
    )
    (metric,) = r.json()["results"]
    assert metric["value"] == 1 and metric["tags"] == {"kind": "daily"}
    r = await served.client.get(f"/api/v1/executions/{ex['id']}/file",
                                params={"uri": tr["outputs"]["file"]})  # fmt: skip
    assert r.status_code == 200 and r.content == b"hello Ada"
    assert "report.txt" in r.headers["content-disposition"]


async def test_list_filters_and_paging(served: Served) -> None:
    """Executions list newest first, filtered by flow and state, paged by limit/offset."""
    ids = [(await _submit(served, "hello", wait=True))["id"] for _ in range(3)]
    await _submit(served, "failing", wait=True)
    r = await served.client.get("/api/v1/executions", params={"flowId": "hello", "limit": 2})
    page = [e["id"] for e in r.json()["results"]]
    assert page == ids[::-1][:2]
    assert "task_runs" not in r.json()["results"][0]
    r = await served.client.get("/api/v1/executions",
                                params={"flowId": "hello", "limit": 2, "offset": 2})  # fmt: skip
    assert [e["id"] for e in r.json()["results"]] == ids[:1]
    r = await served.client.get("/api/v1/executions", params=[("state", "FAILED")])
    assert [e["flow_id"] for e in r.json()["results"]] == ["failing"]
    r = await served.client.get("/api/v1/executions", params={"state": "NOPE"})
    assert r.status_code == 400 and "NOPE" in r.json()["message"]
    r = await served.client.get("/api/v1/executions", params={"limit": "many"})
    assert r.status_code == 400 and "limit" in r.json()["message"]


async def test_errors_have_statuses_a_client_can_act_on(served: Served) -> None:
    """Unknown flow or execution: 404; bad inputs: 422 naming the input; not JSON: 400; an
    operation the state forbids: 409."""
    r = await served.client.post("/api/v1/executions/team/nope", json={})
    assert r.status_code == 404 and "team.nope" in r.json()["message"]
    r = await served.client.get("/api/v1/executions/doesnotexist")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    # An undeclared input is ignored (as Kestra does): the missing required one is the error.
    r = await served.client.post("/api/v1/executions/team/upload", json={"dco": "x"})
    assert r.status_code == 422 and "missing required input 'doc'" in r.json()["message"]
    r = await served.client.post("/api/v1/executions/team/hello", content=b"{not json")
    assert r.status_code == 400
    done = await _submit(served, "hello", wait=True)
    r = await served.client.post(f"/api/v1/executions/{done['id']}/kill")
    assert r.status_code == 409 and "SUCCESS" in r.json()["message"]


async def test_kill_a_running_execution(served: Served) -> None:
    """POST .../kill ends a running execution KILLED."""
    ex = await _submit(served, "blocking")
    await served.rt.wait_for(ex["id"], af.State.RUNNING)
    r = await served.client.post(f"/api/v1/executions/{ex['id']}/kill")
    assert r.status_code == 202, r.text
    assert (await served.rt.wait(ex["id"])).state is af.State.KILLED


async def test_resume_with_inputs_and_a_bad_input_is_refused(served: Served) -> None:
    """Resume inputs are validated against the Pause's onResume: a bad one is 422 and leaves
    it paused; a good one continues to SUCCESS with the value in outputs."""
    ex = await _submit(served, "approval")
    await served.rt.wait_for(ex["id"], af.State.PAUSED)
    r = await served.client.post(f"/api/v1/executions/{ex['id']}/resume", json={"ok": "perhaps"})
    assert r.status_code == 422 and "ok" in r.json()["message"], r.text
    assert (await served.rt.get(ex["id"])).state is af.State.PAUSED
    r = await served.client.post(f"/api/v1/executions/{ex['id']}/resume", json={"ok": "true"})
    assert r.status_code == 202, r.text
    done = await served.rt.wait(ex["id"])
    assert done.state is af.State.SUCCESS
    assert done.task_run("approve").outputs["ok"] is True


async def test_pause_restart_and_replay(served: Served) -> None:
    """A failed execution restarts under the same id; replay makes a new linked execution."""
    failed = await _submit(served, "failing", wait=True)
    assert failed["state"] == "FAILED"
    r = await served.client.post(f"/api/v1/executions/{failed['id']}/restart")
    assert r.status_code == 202 and r.json()["id"] == failed["id"]
    assert (await served.rt.wait(failed["id"])).state is af.State.FAILED
    r = await served.client.post(f"/api/v1/executions/{failed['id']}/replay", json={"taskId": "b"})
    assert r.status_code == 201, r.text
    replayed = r.json()
    assert replayed["original_execution_id"] == failed["id"] and replayed["id"] != failed["id"]
    blocking = await _submit(served, "approval")
    await served.rt.wait_for(blocking["id"], af.State.PAUSED)
    r = await served.client.post(f"/api/v1/executions/{blocking['id']}/pause")
    assert r.status_code in (202, 409), r.text


async def test_follow_logs_streams_until_the_execution_ends(served: Served) -> None:
    """logs?follow=true is a Server-Sent Events stream that ends with an `end` event."""
    ex = await _submit(served, "approval")
    await served.rt.wait_for(ex["id"], af.State.PAUSED)
    events: list[str] = []
    async with served.client.stream(
        "GET", f"/api/v1/executions/{ex['id']}/logs", params={"follow": "true"}
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        await served.rt.resume(ex["id"], {"ok": True})
        async for line in r.aiter_lines():
            if line.startswith(("data:", "event:")):
                events.append(line)
    assert events[-2:] == ["event: end", "data: {}"]
    assert any("ok=True" in e or "ok=true" in e for e in events if e.startswith("data:"))


async def test_flows_deploy_list_show_and_validate(served: Served) -> None:
    """A YAML flow deployed through the API is listed, shown with its source, and runs; an
    invalid one is 422 with problems naming line and field; validate answers without deploying."""
    source = "id: deployed\nnamespace: team\ntasks:\n  - id: hi\n    type: log\n    message: hi\n"
    r = await served.client.post("/api/v1/flows", content=source)
    assert r.status_code == 201, r.text
    r = await served.client.get("/api/v1/flows", params={"namespace": "team"})
    assert "deployed" in [f["id"] for f in r.json()["results"]]
    r = await served.client.get("/api/v1/flows/team/deployed")
    assert r.json()["source"] == source
    assert (await _submit(served, "deployed", wait=True))["state"] == "SUCCESS"
    bad = "id: broken\ntasks:\n  - id: x\n    type: Nope\n"
    r = await served.client.post("/api/v1/flows", content=bad)
    assert r.status_code == 422
    (problem,) = r.json()["problems"]
    assert problem["line"] == 4 and "Nope" in problem["message"]
    r = await served.client.post("/api/v1/flows/validate", content=bad)
    assert r.status_code == 200 and r.json()["valid"] is False
    assert (await served.client.get("/api/v1/flows/default/broken")).status_code == 404


async def test_multipart_file_input_is_stored_and_downloadable(served: Served) -> None:
    """A file part of a multipart submit is stored in internal storage, passed as its URI, and
    downloadable through the execution."""
    r = await served.client.post(
        "/api/v1/executions/team/upload", params={"wait": "true"},
        files={"doc": ("notes.txt", b"file body", "text/plain")},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    ex = r.json()
    uri = ex["inputs"]["doc"]
    assert uri.startswith("actorflow://team/upload/") and uri.endswith("notes.txt")
    r = await served.client.get(f"/api/v1/executions/{ex['id']}/file", params={"uri": uri})
    assert r.content == b"file body"
    other = await _submit(served, "hello", wait=True)
    r = await served.client.get(f"/api/v1/executions/{other['id']}/file", params={"uri": uri})
    assert r.status_code == 404


async def test_the_api_mounts_in_a_host_app(tmp_path: Path) -> None:
    """app(runtime) mounts under a prefix of a host's Starlette app beside its own routes."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def own(request: Any) -> PlainTextResponse:
        return PlainTextResponse("host")

    async with Runtime.open(":memory:", flows=FLOWS, files=tmp_path / "f") as rt:
        host = Starlette(routes=[Route("/own", own), Mount("/wf", app(rt))])
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            assert (await client.get("/own")).text == "host"
            r = await client.post("/wf/api/v1/executions/team/hello?wait=true", json={})
            assert r.json()["state"] == "SUCCESS"
            assert json.loads((await client.get("/wf/api/v1/health")).text)["status"] == "ok"


async def test_a_webhook_starts_its_flow_with_the_request_and_a_wrong_key_starts_nothing(
    served: Served,
) -> None:
    """POST to the webhook with the (templated) key starts the flow with trigger.body,
    headers and parameters; a wrong key is 404; a false condition starts nothing."""
    url = "/api/v1/executions/webhook/team/hooked"
    r = await served.client.post(f"{url}/hooked-key", params={"a": "1"},
                                 json={"hello": "world"}, headers={"X-Thing": "yes"})  # fmt: skip
    assert r.status_code == 200, r.text
    ex = await served.rt.wait(r.json()["id"])
    assert ex.state is af.State.SUCCESS and ex.inputs == {"who": "world"}
    assert ex.trigger is not None
    assert ex.trigger["body"] == {"hello": "world"} and ex.trigger["parameters"] == {"a": ["1"]}
    assert ex.trigger["headers"]["x-thing"] == "yes"
    before = len(await served.rt.executions(flow="hooked"))
    r = await served.client.post(f"{url}/wrong-key", json={"hello": "world"})
    assert r.status_code == 404
    r = await served.client.post(f"{url}/hooked-key", json={"hello": "nobody"})
    assert r.status_code == 200 and r.json()["started"] is False
    assert len(await served.rt.executions(flow="hooked")) == before
    r = await served.client.get(f"/api/v1/executions/{ex.id}")
    assert r.json()["trigger"]["type"] == "Webhook"


async def test_triggers_are_listed_and_switched_through_the_api(served: Served) -> None:
    """GET /triggers lists each trigger with whether it fires; PUT {"enabled": false} stops
    the webhook (404, nothing started) until it is enabled again; bad bodies are 400, an
    unknown trigger 404."""
    r = await served.client.get("/api/v1/triggers", params={"namespace": "team"})
    assert r.status_code == 200
    [hook] = r.json()["results"]
    assert (hook["flowId"], hook["id"], hook["enabled"]) == ("hooked", "hook", True)
    assert hook["key"] == "(secret)"
    switch = "/api/v1/triggers/team/hooked/hook"
    r = await served.client.put(switch, json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False, r.text
    url = "/api/v1/executions/webhook/team/hooked/hooked-key"
    assert (await served.client.post(url, json={"hello": "x"})).status_code == 404
    assert await served.rt.executions(flow="hooked") == []
    listed = (await served.client.get("/api/v1/triggers")).json()["results"]
    assert [t["enabled"] for t in listed if t["id"] == "hook"] == [False]
    assert (await served.client.put(switch, json={"enabled": "no"})).status_code == 400
    assert (await served.client.put(switch + "x", json={"enabled": True})).status_code == 404
    r = await served.client.put(switch, json={"enabled": True})
    assert r.status_code == 200 and r.json()["enabled"] is True
    r = await served.client.post(url, json={"hello": "again"})
    assert r.status_code == 200, r.text
    assert (await served.rt.wait(r.json()["id"])).state is af.State.SUCCESS
