"""The web UI and its API served by uvicorn on a free loopback port, in a thread of its own
(its own event loop), so synchronous clients (httpx, Playwright) can drive it."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from actorflow.runtime import Flow, Runtime

STARTUP_TIMEOUT = 60.0
#: Screenshots of the UI's main pages (gitignored), to look at after a run.
SCREENSHOTS = Path(__file__).resolve().parents[1] / "web" / "screenshots"


@dataclass
class Served:
    """A running server: its base URL and the runtime behind it (use from its thread only
    through :meth:`call`)."""

    url: str
    rt: Runtime
    portal: Any
    gates: list[threading.Event] = field(default_factory=list)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run async ``fn(*args)`` on the server's event loop and return its result."""
        return self.portal.call(fn, *args)


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextmanager
def serve_web(
    db: Path, flows: Sequence[Flow], *, app_factory: Callable[[Runtime], Any] | None = None
) -> Iterator[Served]:
    """Serve ``actorflow.web.app`` (or ``app_factory``) over a runtime on ``db``."""
    from anyio.from_thread import start_blocking_portal

    from actorflow.web import app as web_app

    sock = free_socket()
    port = sock.getsockname()[1]
    factory = app_factory or web_app
    with start_blocking_portal() as portal:
        state: dict[str, Any] = {}
        ready = threading.Event()

        async def main() -> None:
            # One task opens the runtime, serves and closes it: its scopes stay in one task.
            async with Runtime.open(db, flows=flows) as rt:
                server = uvicorn.Server(
                    uvicorn.Config(factory(rt), log_level="warning", lifespan="off")
                )
                state.update(rt=rt, server=server)
                ready.set()
                await server.serve([sock])

        future = portal.start_task_soon(main)
        if not ready.wait(STARTUP_TIMEOUT):
            future.result(0)  # raises what stopped it
        served = Served(f"http://127.0.0.1:{port}", state["rt"], portal)
        try:
            yield served
        finally:
            for gate in served.gates:
                gate.set()
            state["server"].should_exit = True
            state["server"].force_exit = True  # open SSE streams must not hold the exit
            future.result(STARTUP_TIMEOUT)
            sock.close()


def shot(page: Any, name: str) -> None:
    """Save a screenshot of the whole page as tests/web/screenshots/NAME.png."""
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sse_events(
    response: httpx.Response, *, refuse_keepalive: bool = False
) -> Iterator[tuple[str, Any]]:
    """(event, data) of a Server-Sent Events response, as they arrive. ``refuse_keepalive``:
    a keep-alive comment fails the test (with the server's polls off, only a push can come
    before one)."""
    event, data = "message", ""
    for line in response.iter_lines():
        if refuse_keepalive:
            assert not line.startswith(": keep-alive"), "nothing was pushed before the keep-alive"
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            yield event, json.loads(data)
            event, data = "message", ""
