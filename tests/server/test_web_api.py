"""The API endpoints the web UI uses (cursor paging, SSE streams, flow graphs) and the UI's
own routes, through a real HTTP client against a real server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from _support.webflows import FLOWS
from _support.webserver import Served, serve_web, sse_events
from actorflow.runtime import Runtime
from actorflow.web import STATIC
from actorflow.web import app as web_app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_web(tmp_path_factory.mktemp("webapi") / "web.db", FLOWS) as s:
        yield s


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


def submit(client: httpx.Client, flow: str, ns: str = "team", wait: bool = False,
           **inputs: Any) -> dict[str, Any]:  # fmt: skip
    r = client.post(f"/api/v1/executions/{ns}/{flow}", params={"wait": wait}, json=inputs)
    assert r.status_code in (200, 201), r.text
    data: dict[str, Any] = r.json()
    return data


def test_cursor_pages_walk_every_execution_once_newest_first(client: httpx.Client) -> None:
    """Following ``next`` cursors lists each execution of a flow exactly once, in the order
    the offset listing gives, and the last page has no ``next``."""
    for _ in range(7):
        submit(client, "hello", wait=True)
    everything = client.get("/api/v1/executions", params={"flowId": "hello", "limit": 1000,
                                                          "offset": 0}).json()["results"]  # fmt: skip
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"flowId": "hello", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/v1/executions", params=params).json()
        seen += [e["id"] for e in body["results"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in everything] and len(seen) >= 7
    assert pages == -(-len(seen) // 3)


def test_a_cursor_the_api_did_not_make_is_a_400(client: httpx.Client) -> None:
    """A forged cursor is refused with a message naming it, not a 500."""
    r = client.get("/api/v1/executions", params={"cursor": "not-a-cursor"})
    assert r.status_code == 400
    assert r.json()["error"] == "bad_request" and "cursor" in r.json()["message"]


def test_the_events_stream_announces_a_new_execution_and_its_end(client: httpx.Client) -> None:
    """With the stream open, an execution submitted later arrives as an event, and its kill
    arrives as a KILLED event; executions of other flows are filtered out."""
    params = {"flowId": "blocking", "namespace": "team"}
    with client.stream("GET", "/api/v1/executions/events", params=params) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        submit(client, "hello", wait=True)  # filtered out
        ex = submit(client, "blocking")
        states: list[str] = []
        for event, data in sse_events(r):
            assert event == "execution" and data["flow_id"] == "blocking"
            assert "task_runs" not in data
            if data["id"] != ex["id"]:
                continue
            states.append(data["state"])
            if len(states) == 1:
                kill = client.post(f"/api/v1/executions/{ex['id']}/kill")
                assert kill.status_code == 202, kill.text
            if data["state"] == "KILLED":
                break
    assert states[-1] == "KILLED"


def test_follow_streams_the_tree_until_the_end(client: httpx.Client) -> None:
    """The follow stream sends the whole tree on each change and ``end`` once it ended."""
    ex = submit(client, "retried")
    last: dict[str, Any] = {}
    with client.stream("GET", f"/api/v1/executions/{ex['id']}/follow") as r:
        for event, data in sse_events(r):
            if event == "end":
                assert data["state"] == last["state"] == "SUCCESS"
                break
            assert event == "execution"
            last = data
    attempts = {tr["task_id"]: len(tr["attempts"]) for tr in last["task_runs"]}
    assert attempts["twice"] == 3 and attempts["once"] == 2 and attempts["fine"] == 1


def test_follow_of_an_unknown_execution_is_a_404(client: httpx.Client) -> None:
    """Following an execution that does not exist answers 404 before any stream starts."""
    r = client.get("/api/v1/executions/nope/follow")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_a_flow_shows_its_graph_triggers_and_inputs(client: httpx.Client) -> None:
    """A flow's document has its topology (sequence, parallel, dag edges, foreach, errors,
    finally), its triggers (webhook keys hidden) and typed inputs."""
    flow = client.get("/api/v1/flows/ops/shapes").json()
    groups = {g["name"]: g for g in flow["graph"]["groups"]}
    assert [n["id"] for n in groups["tasks"]["nodes"]] == ["start", "fan", "dag", "loop"]
    assert [n["id"] for n in groups["errors"]["nodes"]] == ["on_error"]
    assert [n["id"] for n in groups["finally"]["nodes"]] == ["cleanup"]
    fan, dag, loop = groups["tasks"]["nodes"][1:]
    assert fan["groups"][0]["mode"] == "parallel"
    assert {n["id"]: n["dependsOn"] for n in dag["groups"][0]["nodes"]} == {
        "d1": [], "d2": ["d1"], "d3": ["d1"], "d4": ["d2", "d3"]}  # fmt: skip
    assert loop["groups"][0]["mode"] == "foreach" and loop["type"] == "ForEach"
    triggers = {t["id"]: t for t in flow["triggers"]}
    assert triggers["hook"]["type"] == "Webhook" and "secret-key" not in json.dumps(flow)
    assert triggers["nightly"] == {**triggers["nightly"], "cron": "0 3 * * *", "disabled": True}
    typed = client.get("/api/v1/flows/team/typed").json()
    assert [i["type"] for i in typed["inputs"]][:3] == ["string", "int", "float"]
    approval = client.get("/api/v1/flows/team/approval").json()
    pause = approval["graph"]["groups"][0]["nodes"][0]
    assert [(i["name"], i["type"]) for i in pause["onResume"]] == [
        ("ok", "bool"),
        ("limits", "dict"),
    ]


def test_the_ui_page_and_its_modules_are_served(client: httpx.Client) -> None:
    """``/`` is the UI's page; its ES modules and CSS are served with their content types,
    and every module the page imports exists."""
    r = client.get("/")
    assert r.status_code == 200 and "static/app.js" in r.text
    for name in ("app.js", "execution.js", "forms.js", "util.js"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"]
        for imported in re.findall(r'from "\./([\w.]+)"', r.text):
            assert (STATIC / imported).is_file(), (name, imported)
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/../_app.py").status_code == 404


@pytest.mark.anyio
async def test_the_ui_mounts_in_a_host_app_under_a_prefix(tmp_path: Path) -> None:
    """``Mount("/ui", actorflow.web.app(rt))`` serves the page at /ui/ and the API it calls
    relative to it at /ui/api/v1/..., next to the host's own routes."""
    async with Runtime.open(tmp_path / "m.db", flows=FLOWS) as rt:
        host = Starlette(routes=[Mount("/ui", web_app(rt))])
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as c:
            assert "static/app.js" in (await c.get("/ui/")).text
            assert (await c.get("/ui/static/util.js")).status_code == 200
            flows = (await c.get("/ui/api/v1/flows")).json()["results"]
            assert {f["id"] for f in flows} >= {"hello", "shapes"}


def test_links_name_parent_children_original_replays_and_restarts(client: httpx.Client) -> None:
    """An execution's links give its subflow's execution and back, the execution a replay
    replays and its replays, and its restarts, each linked one with its state."""
    parent = submit(client, "parent", wait=True)
    child_id = parent["task_runs"][0]["child_execution_id"]
    down = client.get(f"/api/v1/executions/{parent['id']}/links").json()
    assert [(c["id"], c["state"], c["taskId"], c["flowId"]) for c in down["children"]] == [
        (child_id, "SUCCESS", "child", "hello")
    ]
    assert down["parent"] is None and down["original"] is None and down["replays"] == []
    up = client.get(f"/api/v1/executions/{child_id}/links").json()
    assert up["parent"]["id"] == parent["id"] and up["parent"]["state"] == "SUCCESS"
    assert up["parent"]["taskRunId"] == parent["task_runs"][0]["id"]

    failed = submit(client, "failing", wait=True)
    first = next(tr for tr in failed["task_runs"] if tr["task_id"] == "first")
    r = client.post(f"/api/v1/executions/{failed['id']}/replay", json={"taskRunId": first["id"]})
    assert r.status_code == 201, r.text
    replay_id = r.json()["id"]
    restart = client.post(f"/api/v1/executions/{failed['id']}/restart")
    assert restart.status_code == 202, restart.text
    links = client.get(f"/api/v1/executions/{failed['id']}/links").json()
    assert [x["id"] for x in links["replays"]] == [replay_id] and links["replaysComplete"]
    assert len(links["restarts"]) == 1 and links["attempt"] == 2
    back = client.get(f"/api/v1/executions/{replay_id}/links").json()
    assert back["original"]["id"] == failed["id"] and back["original"]["flowId"] == "failing"
    assert back["replays"] == [] and back["restarts"] == [] and back["attempt"] == 2
    assert client.get("/api/v1/executions/nope/links").status_code == 404
