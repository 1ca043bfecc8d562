"""``actorflow server``: a runtime, its flows and the HTTP API in one long-running process."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from actorflow._errors import FlowValidationError
from actorflow.flows import load_flows
from actorflow.runtime import Flow, Runtime, Scheduler


def load_flow_dir(path: str | Path) -> tuple[list[Flow], list[FlowValidationError]]:
    """Every flow file of directory ``path``, and the files that failed (the server starts
    with the valid ones and reports the others, as Kestra does)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"--flows {root}: not a directory")
    return load_flows(root)


async def serve(
    db: str,
    *,
    flows: Sequence[Flow] = (),
    host: str = "127.0.0.1",
    port: int = 8080,
    sock: socket.socket | None = None,
    ready: anyio.Event | None = None,
    handle_signals: bool = False,
    scheduler: bool = True,
    web: bool = True,
    **runtime_options: Any,
) -> None:
    """Open the runtime on ``db`` (recovering what dead processes left), deploy ``flows``
    (file flows are stored as revisions; Python flows are registered here only),
    run their triggers (``scheduler``) and serve the API (and the web UI at ``/`` unless
    ``web`` is false) until cancelled or, with
    ``handle_signals``, until SIGINT/SIGTERM (a second one stops at once); the runtime then
    closes."""
    import uvicorn

    from actorflow.server._api import app as api_app
    from actorflow.web import app as web_app

    class _Server(uvicorn.Server):
        # uvicorn re-raises a captured SIGTERM once it stopped, which would end the process
        # before the runtime closes (its last commits, its leases): signals are ours instead.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    files = [f for f in flows if f.source is not None]
    python = [f for f in flows if f.source is None]
    stopping = _Stopping()
    # The signal watcher outlives the runtime's block: a second signal still reaches the
    # runtime while it closes (it interrupts the running attempts at once).
    async with anyio.create_task_group() as watch:
        if handle_signals:
            await watch.start(_stop_on_signal, stopping)
        try:
            async with Runtime.open(db, flows=python, **runtime_options) as rt:
                stopping.rt = rt
                for f in files:  # stored, so every worker on this database can run them
                    assert f.source is not None
                    await rt.deploy(f.source)
                config = uvicorn.Config(
                    (web_app if web else api_app)(rt), host=host, port=port,
                    log_level="warning", lifespan="off",
                    timeout_graceful_shutdown=5,
                )  # fmt: skip
                server = stopping.server = _Server(config)
                server.should_exit = stopping.count > 0  # a signal came while opening
                async with anyio.create_task_group() as tg:
                    if scheduler:
                        tg.start_soon(Scheduler(rt).run)
                    if ready is not None:
                        ready.set()
                    await server.serve(sockets=[sock] if sock is not None else None)
                    tg.cancel_scope.cancel()
        finally:
            watch.cancel_scope.cancel()


class _Stopping:
    """What the signal watcher stops: the HTTP server, then the runtime."""

    def __init__(self) -> None:
        self.count = 0
        self.server: Any = None
        self.rt: Runtime | None = None


async def _stop_on_signal(
    stopping: _Stopping, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            stopping.count += 1
            server, rt = stopping.server, stopping.rt
            if stopping.count == 1:
                grace = rt.shutdown_timeout if rt is not None else 0.0
                _note(f"stopping: running tasks get up to {grace:g}s to finish (a second "
                      "signal interrupts them now)")  # fmt: skip
                if server is not None:
                    server.should_exit = True
                continue
            # A second signal: stop without waiting for requests or running attempts.
            _note("interrupting running tasks; the next start resumes them")
            if server is not None:
                server.force_exit = True
                server.should_exit = True
            if rt is not None:
                rt.interrupt()


def _note(text: str) -> None:
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


__all__ = ["load_flow_dir", "serve"]
