"""The parent's side of the SQLite writer process (see ``_writer_proc``)."""

from __future__ import annotations

import asyncio
import contextlib

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
import itertools
import os
import struct
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from actorflow._errors import StorageUnavailable
from actorflow.storage._sql import STATEMENTS, Plan

_SCRIPT = str(Path(__file__).with_name("_writer_proc.py"))
_HEADER = struct.Struct(">I")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def _widen_pipe(stream: asyncio.StreamWriter | None) -> None:
    """Give the pipe to the writer room for whole batches (Linux; elsewhere a no-op).

    With the default 64 KiB, a batch of a few hundred KiB went through one chunk per turn of
    the event loop, and a busy loop turns slowly: the writer process sat idle, starved.
    """
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if stream is None or setsize is None:
        return
    pipe = stream.transport.get_extra_info("pipe")
    if pipe is None:
        return
    for size in (4 << 20, 1 << 20, 256 << 10):
        try:
            fcntl.fcntl(pipe.fileno(), setsize, size)
            return
        except OSError:  # above /proc/sys/fs/pipe-max-size for this user: try less
            continue


class WriterError(StorageUnavailable):
    """A batch the writer process could not commit (it rolled it back)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


Rejection = tuple[int, int, str, str]
"""A row the process left out: (index in the plan, index of the row, error type, message)."""
Unsent = tuple[int, tuple[Any, ...], str, str]
"""A row not sent at all: (statement index, the row, error type, message)."""


def drop_unencodable(plan: Plan) -> tuple[Plan, list[Unsent]]:
    """``plan`` without the rows msgpack cannot carry, and those rows.

    Only called once the whole plan failed to encode: a row at a time is slower."""
    kept: Plan = []
    dropped: list[Unsent] = []
    for stmt, rows in plan:
        good: list[tuple[Any, ...]] = []
        for row in rows:
            try:
                _encode(row)
            except (TypeError, ValueError, OverflowError) as exc:  # UnicodeError is a ValueError
                dropped.append((stmt, row, type(exc).__name__, str(exc)))
                continue
            good.append(row)
        if good:
            kept.append((stmt, good))
    return kept, dropped


class ProcessWriter:
    """Sends batch plans to a writer process; several may be in flight, committed in order.

    ``on_wait(seconds)`` hears, about every 100 ms, that the oldest batch waits for a write
    lock another connection holds.
    """

    def __init__(
        self,
        path: Path,
        lock_timeout: float,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.on_wait = on_wait
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: deque[tuple[int, asyncio.Future[list[Rejection]]]] = deque()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the process and open the database in it."""
        # -P: the script's folder (actorflow/storage) must not shadow any module.
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", _SCRIPT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _widen_pipe(self._proc.stdin)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        try:
            body = _encode([str(self.path), list(STATEMENTS), os.getpid(), self.lock_timeout])
            await self._send(body, 0)
        except BaseException:
            await self.close()
            raise

    async def send(
        self, plan: Plan, fail: BaseException | None = None
    ) -> tuple[asyncio.Future[list[Rejection]], list[Unsent]]:
        """Queue ``plan`` for one transaction; waits only while the pipe is full.

        Returns a future of the rows the process left out, by their place in ``plan`` (it
        raises :class:`StorageUnavailable` if the batch failed), and the rows not sent
        because msgpack cannot carry them: those are removed from ``plan`` in place, so
        the places the process names are places in ``plan`` as it is now.
        """
        batch_id = next(self._ids)
        dropped: list[Unsent] = []
        try:
            body = _encode([batch_id, plan, str(fail) if fail else None])
        except (TypeError, ValueError, OverflowError):
            kept, dropped = drop_unencodable(plan)
            body = _encode([batch_id, kept, str(fail) if fail else None])
            plan[:] = kept
        return await self._send(body, batch_id), dropped

    async def _send(self, body: bytes, batch_id: int) -> asyncio.Future[list[Rejection]]:
        proc = self._proc
        if proc is None or proc.stdin is None or self._reader is None or self._reader.done():
            raise self._stopped()
        done: asyncio.Future[list[Rejection]] = asyncio.get_running_loop().create_future()
        self._pending.append((batch_id, done))
        try:
            proc.stdin.write(_HEADER.pack(len(body)) + body)
            await proc.stdin.drain()
        except ConnectionError as exc:
            raise self._stopped() from exc
        if batch_id == 0:  # the handshake: nothing is sent before the database is open
            await done
        return done

    def _stopped(self) -> StorageUnavailable:
        code = self._proc.returncode if self._proc is not None else None
        return StorageUnavailable(
            f"{self.path}: the writer process stopped"
            f"{'' if code is None else f' (exit code {code})'}"
        )

    async def _read(self) -> None:
        """Resolve the pending batches in order, from the replies."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        error: BaseException | None = None
        try:
            while True:
                (size,) = _HEADER.unpack(await proc.stdout.readexactly(_HEADER.size))
                batch_id, failure, rejected = _decode(await proc.stdout.readexactly(size))
                if failure == "wait":
                    if self.on_wait is not None:
                        self.on_wait(rejected)
                    continue
                expected, done = self._pending.popleft()
                if batch_id != expected:
                    raise StorageUnavailable(
                        f"{self.path}: the writer process answered out of turn"
                    )
                if done.done():
                    continue
                if failure is None:
                    done.set_result([tuple(r) for r in rejected])
                else:
                    done.set_exception(WriterError(failure[0], failure[1]))
        except (asyncio.IncompleteReadError, ConnectionError):
            await proc.wait()
            error = self._stopped()
        except BaseException as exc:
            error = exc
        finally:
            pending, self._pending = self._pending, deque()
            for _, done in pending:
                if not done.done():
                    done.set_exception(error or self._stopped())

    async def close(self) -> None:
        """Let the process finish (stdin closed) and reap it; kill it if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if not isinstance(exc, TimeoutError):
                raise
        finally:
            if self._reader is not None:
                with contextlib.suppress(BaseException):
                    await self._reader
