"""Built-in task types that only flow files have (http, shell), and entry-point task types."""

from __future__ import annotations

import http.server
import importlib.metadata
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actorflow.flows import load_flow_text
from actorflow.flows._registry import Registry
from actorflow.runtime import Execution, FakeClock, Flow, Runtime, State


async def _run(flow: Flow, tmp_path: Path, clock: bool = True) -> Execution:
    async with Runtime.open(
        ":memory:",
        files=tmp_path / "files",
        clock=FakeClock() if clock else None,
        allow_types={"shell"},
    ) as rt:
        return await rt.run(flow, timeout=20)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/missing":
            self.send_error(404, "nothing here")
            return
        body = json.dumps({"path": self.path, "agent": self.headers.get("X-Agent")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(self.headers["Content-Type"].encode() + b" " + data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.anyio
async def test_http_request(server: str, tmp_path: Path) -> None:
    """http renders its fields, decodes JSON bodies, sends JSON, and fails on 4xx unless
    allowed."""
    flow = load_flow_text(f"""
id: http
tasks:
  - id: fetch
    type: io.kestra.plugin.core.http.Request
    uri: "{server}/items/{{{{ flow.id }}}}"
    headers: {{X-Agent: actorflow}}
  - id: post
    type: http
    uri: "{server}/items"
    method: POST
    body: {{n: "{{{{ outputs.fetch.code }}}}"}}
  - id: soft404
    type: http
    uri: "{server}/missing"
    allow_failed: true
  - id: hard404
    type: http
    uri: "{server}/missing"
""")
    ex = await _run(flow, tmp_path, clock=False)
    get = ex.task_run("fetch").outputs
    assert get["code"] == 200 and get["body"] == {"path": "/items/http", "agent": "actorflow"}
    assert ex.task_run("post").outputs["body"] == 'application/json {"n": 200}'
    assert ex.task_run("soft404").outputs["code"] == 404
    assert ex.state is State.FAILED
    assert "failed with status 404" in (ex.task_run("hard404").error or "")


@pytest.mark.anyio
async def test_http_refuses_other_schemes(tmp_path: Path) -> None:
    """A file:// (or any non-http) URI is refused: a flow cannot read local files this way."""
    flow = load_flow_text("id: f\ntasks:\n  - {id: read, type: http, uri: 'file:///etc/passwd'}\n")
    ex = await _run(flow, tmp_path)
    assert ex.state is State.FAILED
    assert "must be an http:// or https:// URL" in (ex.task_run("read").error or "")


@pytest.mark.anyio
async def test_shell_outputs_and_failure(tmp_path: Path) -> None:
    """shell captures stdout/stderr, logs lines, renders templates, and fails on a non-zero
    exit (set -e stops at the first failing command)."""
    flow = load_flow_text("""
id: sh
tasks:
  - id: ok
    type: shell
    env: {GREETING: "hi {{ flow.id }}"}
    commands: ['echo "$GREETING"', 'echo oops >&2']
  - id: bad
    type: shell
    commands: ['false', 'echo never']
""")
    ex = await _run(flow, tmp_path)
    ok = ex.task_run("ok").outputs
    assert ok == {"exit_code": 0, "stdout": "hi sh\n", "stderr": "oops\n"}
    assert ex.state is State.FAILED
    assert "exited with code 1" in (ex.task_run("bad").error or "")


@pytest.mark.anyio
async def test_shell_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """A timed-out shell task fails and leaves no process behind (children included)."""
    pids = tmp_path / "pids"
    flow = load_flow_text(f"""
id: slow
tasks:
  - id: slow
    type: shell
    timeout: 0.5s
    commands:
      - sleep 60 &
      - echo $! >> {pids}
      - echo $$ >> {pids}
      - wait
""")
    ex = await _run(flow, tmp_path, clock=False)
    assert ex.state is State.FAILED
    assert "Timeout" in (ex.task_run("slow").error or "")
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), f"process {pid} survived the timeout"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not ours counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_entry_point_task_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Types from the ``actorflow.task_types`` entry point group load when a flow names them."""
    (tmp_path / "acme_plugin.py").write_text("def double(ctx, x: int) -> int:\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(
        name="acme.double", value="acme_plugin:double", group="actorflow.task_types"
    )

    def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
        return [ep] if group == "actorflow.task_types" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    reg = Registry()
    flow = load_flow_text("id: f\ntasks:\n  - {id: d, type: acme.double, x: 21}\n", registry=reg)
    assert flow.task("d").id == "d"
    assert "acme.double" in reg.names()
