"""Worker processes for the lease tests (``tests/runtime/lease_worker.py``) and the polling
helpers around them: shared by the one-host worker tests and the multi-host test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

LEASE_WORKER = Path(__file__).parent.parent / "runtime" / "lease_worker.py"


class Worker:
    """A worker process, its stdout lines and stderr text gathered by threads.

    ``prefix`` goes before the interpreter (``ip netns exec NS`` runs it on another "host").
    """

    def __init__(
        self,
        db: Path | str,
        side: Path,
        ttl: float,
        *extra: str,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        cmd = [*prefix, sys.executable, str(LEASE_WORKER), str(db), str(side), str(ttl), *extra]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.lines), (self.proc.stderr, self.err)):
            threading.Thread(target=_drain, args=(stream, sink), daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return "".join(self.err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _drain(stream: IO[str] | None, sink: list[str]) -> None:
    assert stream is not None
    for line in stream:
        sink.append(line)


def until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy, failing after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def workers(*procs: Worker) -> Iterator[tuple[Worker, ...]]:
    """Wait until every worker printed "ready"; stop them all on the way out."""
    try:
        for w in procs:
            until("a worker to start", lambda w=w: "ready\n" in w.lines or w.proc.poll())
            assert w.proc.poll() is None, w.stderr()
        yield procs
    finally:
        for w in procs:
            w.stop()


def side_lines(side: Path) -> list[list[str]]:
    """The side-effect file's lines: execution id, task run id, attempt, pid."""
    if not side.exists():
        return []
    return [line.split() for line in side.read_text().splitlines()]


def pg_rows(dsn: str, sql: str, *params: Any) -> list[Any]:
    """Rows of a query on PostgreSQL, from a blocking caller."""
    import asyncpg

    async def query() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *params)]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own
        return pool.submit(asyncio.run, query()).result()
