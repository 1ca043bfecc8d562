"""The http task: async (httpx), http(s) only, a total timeout, an explicit size limit,
truncation detected, cancellable at once, not capped at a thread pool's size."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from actorflow.flows import _http, load_flow_text
from actorflow.runtime import Execution, Flow, Runtime, State

pytestmark = pytest.mark.anyio

BIG = {"items": [{"n": i, "text": "x" * 40} for i in range(100_000)]}  # about 5 MB


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code: int, body: bytes, **headers: str) -> None:
        self.send_response(code)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/to-ftp":
            self._send(302, b"", Location="ftp://127.0.0.1/secret")
        elif self.path == "/to-ok":
            self._send(302, b"", Location="/ok")
        elif self.path == "/ok":
            self._send(200, b'{"ok": true}', **{"Content-Type": "application/json"})
        elif self.path == "/big":
            self._send(200, json.dumps(BIG).encode(), **{"Content-Type": "application/json"})
        elif self.path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"y" * 65536
            for _ in range(40):  # 2.5 MB, no Content-Length
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self.close_connection = True
        elif self.path == "/drip":
            # Each byte well within any per-read timeout; the whole far beyond the total.
            self.send_response(200)
            self.send_header("Content-Length", "60")
            self.end_headers()
            for _ in range(60):
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self._send(404, b"no")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _flow(**task: Any) -> Flow:
    body = json.dumps({"id": "h", "tasks": [{"id": "get", "type": "http", **task}]})
    return load_flow_text(body, path="h.json")


async def _run(flow: Flow, tmp_path: Path) -> Execution:
    async with Runtime.open(":memory:", files=tmp_path / "files") as rt:
        return await rt.run(flow, timeout=30)


async def test_redirect_to_another_scheme_is_refused(server: str, tmp_path: Path) -> None:
    """A redirect to ftp:// fails the task naming the target; one to http:// is followed."""
    ex = await _run(_flow(uri=f"{server}/to-ftp"), tmp_path)
    assert ex.state is State.FAILED
    error = ex.task_run("get").error or ""
    assert "ftp://127.0.0.1/secret" in error and "http:// or https://" in error
    assert len(ex.task_run("get").attempts) == 1  # not retried: it cannot get better
    ok = await _run(_flow(uri=f"{server}/to-ok"), tmp_path)
    assert ok.state is State.SUCCESS
    assert ok.task_run("get").outputs["body"] == {"ok": True}
    assert ok.task_run("get").outputs["uri"] == f"{server}/ok"


async def test_total_timeout_bounds_a_dripping_server(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body that trickles in (each byte well within a per-read timeout) fails once the
    total timeout is over, long before the server is done."""
    monkeypatch.setattr(_http, "DEFAULT_TIMEOUT", 0.3)
    ex = await _run(_flow(uri=f"{server}/drip"), tmp_path)
    assert ex.state is State.FAILED
    assert "no complete response within 0.3s" in (ex.task_run("get").error or "")
    with_timeout = await _run(_flow(uri=f"{server}/drip", timeout=0.3), tmp_path)
    assert with_timeout.state is State.FAILED
    assert "Timeout" in (with_timeout.task_run("get").error or "")


async def test_size_limit_fails_clearly(server: str, tmp_path: Path) -> None:
    """A 5 MB JSON body within the limit parses as JSON; over max_size (declared or
    streamed without a length) it fails saying so, never silently cut."""
    ex = await _run(_flow(uri=f"{server}/big"), tmp_path)
    assert ex.state is State.SUCCESS
    assert ex.task_run("get").outputs["body"] == BIG
    for path in ("/big", "/big-chunked"):
        small = await _run(_flow(uri=f"{server}{path}", max_size=1_000_000), tmp_path)
        assert small.state is State.FAILED
        assert "larger than max_size (1000000 bytes)" in (small.task_run("get").error or "")


async def test_a_truncated_body_fails(server: str, tmp_path: Path) -> None:
    """A body shorter than its Content-Length is a failure, not a success with less."""
    ex = await _run(_flow(uri=f"{server}/truncated"), tmp_path)
    assert ex.state is State.FAILED
    assert "/truncated" in (ex.task_run("get").error or "")
    assert "incomplete" in (ex.task_run("get").error or "").lower() or "closed" in (
        ex.task_run("get").error or ""
    )


async def _read_request(stream: anyio.abc.SocketStream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()


async def test_requests_are_not_capped_at_a_thread_pool(tmp_path: Path) -> None:
    """100 requests in parallel are all open at the server at once (threads capped at 40)."""
    open_now = 0
    most = 0
    all_open = anyio.Event()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        nonlocal open_now, most
        async with stream:
            await _read_request(stream)
            open_now += 1
            most = max(most, open_now)
            if open_now == 100:
                all_open.set()
            with anyio.move_on_after(10):  # bounded: a capped client never gets to 100
                await all_open.wait()
            open_now -= 1
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
            )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    flow = load_flow_text(f"""
id: many
tasks:
  - id: each
    type: foreach
    values: {json.dumps(list(range(100)))}
    concurrency: 0
    tasks:
      - id: get
        type: http
        uri: "http://127.0.0.1:{port}/{{{{ taskrun.value }}}}"
""")
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        ex = await _run(flow, tmp_path)
        tg.cancel_scope.cancel()
    assert ex.state is State.SUCCESS
    assert most == 100


async def test_kill_cancels_the_request_at_once(tmp_path: Path) -> None:
    """Killing an execution closes its request's connection at once (no thread left
    waiting for a timeout)."""
    got = anyio.Event()
    closed = anyio.Event()

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await _read_request(stream)
            got.set()
            try:
                while await stream.receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                closed.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    flow = _flow(uri=f"http://127.0.0.1:{port}/hang")
    async with (
        anyio.create_task_group() as tg,
        Runtime.open(":memory:", files=tmp_path / "files") as rt,
    ):
        tg.start_soon(listener.serve, handle)
        handle_ = await rt.submit(flow)
        with anyio.fail_after(10):
            await got.wait()
        await rt.kill(handle_.id)
        with anyio.fail_after(5):
            await closed.wait()
        assert (await handle_.wait(timeout=10)).state is State.KILLED
        tg.cancel_scope.cancel()
