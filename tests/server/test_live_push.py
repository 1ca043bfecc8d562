"""The API's SSE streams push the runtime's own change notices: with the store looked at
never again after a stream opens, changes still arrive (and before the first keep-alive)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.webflows import FLOWS, GATE
from _support.webserver import Served, serve_web, sse_events
from actorflow.server import _live

NEVER = 1e9  # seconds: no poll of the store happens during a test


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setattr(_live.LiveFeeds, "interval", NEVER)
    monkeypatch.setattr(_live.LiveFeeds, "remote_interval", NEVER)
    with serve_web(tmp_path / "push.db", FLOWS) as s:
        s.gates.append(GATE)
        yield s


def test_the_list_stream_pushes_a_new_execution_and_its_end(served: Served) -> None:
    """An execution started after the list stream opened arrives with each of its states up
    to SUCCESS, with no look at the store after the stream's first."""
    client = httpx.Client(base_url=served.url, timeout=60)
    params = {"flowId": "hello"}
    with client, client.stream("GET", "/api/v1/executions/events", params=params) as r:
        r.raise_for_status()
        ex = client.post("/api/v1/executions/team/hello", json={"name": "push"}).json()
        states = []
        for event, data in sse_events(r, refuse_keepalive=True):
            assert event == "execution" and data["flow_id"] == "hello"
            if data["id"] == ex["id"]:
                states.append(data["state"])
                if data["state"] == "SUCCESS":
                    break
    assert states[0] in ("CREATED", "RUNNING") and states[-1] == "SUCCESS"
    assert len(states) == len(set(states))  # each state once


def test_the_follow_stream_pushes_the_changes_of_a_running_execution(served: Served) -> None:
    """Following an execution blocked in its task, with polls off: once the task is let
    through, its task run's end and the execution's end still arrive."""
    GATE.clear()
    with httpx.Client(base_url=served.url, timeout=60) as client:
        ex = client.post("/api/v1/executions/team/waiting", json={}).json()
        trees: list[dict[str, Any]] = []
        with client.stream("GET", f"/api/v1/executions/{ex['id']}/follow") as r:
            r.raise_for_status()
            for event, data in sse_events(r, refuse_keepalive=True):
                if event == "end":
                    assert data["state"] == "SUCCESS"
                    break
                trees.append(data)
                if data["state"] == "RUNNING" and data["task_runs"]:
                    GATE.set()  # the first tree came before the task could end
    assert trees[0]["state"] != "SUCCESS"
    assert trees[-1]["state"] == "SUCCESS"
    assert trees[-1]["task_runs"][0]["outputs"] == {"value": "through"}
