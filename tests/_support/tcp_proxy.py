"""A TCP proxy on 127.0.0.1 whose link the test can cut and restore, as a network would.

It runs its own event loop in a thread, so blocking test code (``until`` polls with
``time.sleep``) and async test code both drive it. ``cut()`` resets every connection through
it and refuses new ones (each is accepted, then reset) until ``restore()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit, urlunsplit


class Proxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0  # connections forwarded
        self.refused = 0  # connections reset because the link was cut
        self._refusals = threading.Condition()
        self._cut = False
        self._open: set[asyncio.Transport] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.transport
        if self._cut:
            with self._refusals:
                self.refused += 1
                self._refusals.notify_all()
            client.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client.abort()
            return
        self.accepted += 1
        pair = {client, up_writer.transport}
        self._open |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for t in pair:
                t.abort()
                self._open.discard(t)  # type: ignore[arg-type]

    def wait_refused(self, count: int, timeout: float = 30.0) -> None:
        """Block until ``count`` connections were refused in all (TimeoutError after
        ``timeout`` s); call it from a worker thread in async code."""
        with self._refusals:
            if not self._refusals.wait_for(lambda: self.refused >= count, timeout):
                raise TimeoutError(f"{self.refused} connections refused, not {count}")

    def cut(self) -> None:
        """Reset every connection through the proxy and refuse new ones."""

        async def cut() -> None:
            self._cut = True
            for t in list(self._open):
                t.abort()

        self._call(cut())

    def restore(self) -> None:
        """Let connections through again."""

        async def restore() -> None:
            self._cut = False

        self._call(restore())

    def close(self) -> None:
        async def close() -> None:
            self._cut = True
            for t in list(self._open):
                t.abort()
            if self._server is not None:
                self._server.close()

        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def server_address(dsn: str, port: int | None) -> tuple[str, int]:
    """The TCP address of the server of ``dsn`` (a throwaway cluster also listens on
    127.0.0.1 at ``port``)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or [""])[0]
    if host.startswith("/") or not host:
        if port is None:
            raise ValueError(f"no TCP address for {dsn}")
        return "127.0.0.1", port
    return host, parts.port or int((query.get("port") or ["5432"])[0])


@contextlib.contextmanager
def proxied(dsn: str, port: int | None) -> Iterator[tuple[Proxy, str]]:
    """A proxy to the server of ``dsn`` and the URL of the same database through it."""
    proxy = Proxy(*server_address(dsn, port)).start()
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    password = f":{parts.password}" if parts.password else ""
    url = urlunsplit(("postgresql", f"{user}{password}@127.0.0.1:{proxy.port}", parts.path, "", ""))
    try:
        yield proxy, url
    finally:
        proxy.close()
