"""Kill, pause and resume through the HTTP API for executions another, real process owns:
the owner's answer maps to the status an in-process refusal gets (422 invalid resume input,
409 illegal, 404 unknown, 504 nobody answers), with the owner's message."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn

from _support.command_owner import FLOWS
from actorflow.runtime import Runtime
from actorflow.server import app

pytestmark = pytest.mark.anyio
OWNER = Path(__file__).parents[1] / "_support" / "command_owner.py"


@pytest.fixture
async def owner_and_api(
    tmp_path: Path,
) -> AsyncIterator[tuple[subprocess.Popen[str], dict[str, str], httpx.AsyncClient]]:
    db = tmp_path / "x.db"
    proc = subprocess.Popen(
        [sys.executable, str(OWNER), str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ids: dict[str, str] = json.loads(proc.stdout.readline())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        async with Runtime.open(db, flows=FLOWS, recover=False) as rt:
            server = uvicorn.Server(uvicorn.Config(app(rt), log_level="warning", lifespan="off"))
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [sock])
                base = f"http://127.0.0.1:{port}/api/v1/executions"
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                    yield proc, ids, client
                server.should_exit = True
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


async def test_the_owners_answers_map_to_http_statuses(
    owner_and_api: tuple[subprocess.Popen[str], dict[str, str], httpx.AsyncClient],
) -> None:
    """A bad resume input is 422 naming the field, a kill of an ended execution 409 saying
    it is already SUCCESS, an unknown id 404; a pause and a resume are applied (202)."""
    _, ids, client = owner_and_api
    r = await client.post(f"/{ids['approval']}/resume", json={"nope": "x"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input" and "reason" in r.json()["message"]
    r = await client.post(f"/{ids['done']}/kill")
    assert r.status_code == 409, r.text
    assert r.json()["message"] == f"execution {ids['done']} is already SUCCESS"
    r = await client.post("/nope/kill")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await client.post(f"/{ids['holding']}/pause")
    assert r.status_code == 202 and r.json()["state"] == "PAUSED", r.text
    r = await client.post(f"/{ids['holding']}/resume", json={})
    assert r.status_code == 202 and r.json()["state"] == "RUNNING", r.text
    r = await client.post(f"/{ids['approval']}/resume", json={"reason": "ok"})
    assert r.status_code == 202, r.text


async def test_a_command_nobody_can_answer_is_504(
    owner_and_api: tuple[subprocess.Popen[str], dict[str, str], httpx.AsyncClient],
) -> None:
    """A kill for an execution whose owner process died is 504, naming the command that
    stays pending."""
    proc, ids, client = owner_and_api
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = await client.post(f"/{ids['gated']}/kill")
    assert r.status_code == 504, r.text
    body = r.json()
    assert body["error"] == "not_answered" and isinstance(body["commandId"], int)
    assert "the process died" in body["message"]
