"""Doorbells: a command posted from another process on the same host reaches its owner at
once, and the owner's answer reaches the sender at once, instead of at the next poll.

The command itself still travels through the store (durable, consumed once); a doorbell only
says "look now". Each runtime on a SQLite file listens on a Linux abstract-namespace datagram
socket named after the database and its owner id: no file to clean up after a SIGKILL (the
kernel drops the name with the process), nothing to pay while idle (the owner sleeps in the
event loop's selector). A sender rings it from a socket of its own; after the owner's next
round of commands it rings every sender that rang before the round, which then reads its
answer. A lost ring (a full buffer, another host, an owner of an older version, not Linux)
costs nothing but time: the owner polls every ``DOORBELL_POLL`` seconds and the sender every
``ANSWER_POLL`` seconds as before. A ring carries no data and anyone on the host may ring: the
worst it can do is make an owner look at the store early.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator

import anyio

_log = logging.getLogger("actorflow.runtime")
_MAX_RINGS = 256  # rings read per round; the rest wait for the next one
_wait_readable: Callable[[socket.socket], Awaitable[None]] = (
    getattr(anyio, "wait_readable", None) or anyio.wait_socket_readable
)  # anyio < 4.7 has only the older name


def _enabled() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "AF_UNIX")


def channel_of(store: object) -> str | None:
    """What identifies ``store``'s database across processes (its real path), or None when
    doorbells cannot serve it (an in-memory store; not Linux)."""
    path = getattr(store, "path", None)
    if path is None or not _enabled() or str(path) in (":memory:", ""):
        return None
    return os.path.realpath(str(path))


def owner_address(channel: str, owner: str) -> bytes:
    """The abstract socket name of ``owner``'s doorbell on the database ``channel``."""
    digest = hashlib.blake2b(f"{channel}\0{owner}".encode(), digest_size=12).hexdigest()
    return b"\0actorflow-cmd-" + digest.encode()


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> list[bytes]:
    """Addresses of the rings waiting on ``sock`` (never blocks)."""
    senders: list[bytes] = []
    for _ in range(_MAX_RINGS):
        try:
            _, address = sock.recvfrom(16)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # pragma: no cover - nothing else is expected from a datagram socket
            break
        if isinstance(address, bytes) and address:
            senders.append(address)
    return senders


def _ring(sock: socket.socket, address: bytes) -> bool:
    try:
        sock.sendto(b"!", address)
    except OSError:  # nobody listens there (gone, another version), or its buffer is full
        return False
    return True


class Doorbell:
    """The owner's side: wakes ``serve`` when a sender rings; ``serve`` is called with the
    commands' round to run, and the senders are rung back once it returned."""

    def __init__(self, address: bytes) -> None:
        self.address = address
        self._sock = _socket()
        try:
            self._sock.bind(address)
        except OSError:
            self._sock.close()
            raise

    async def serve(self, round_: Callable[[], Awaitable[object]]) -> None:
        """Run ``round_`` after every ring (pending ones together), then ring the senders
        back; runs until cancelled."""
        sock = self._sock
        while True:
            await _wait_readable(sock)
            senders = _drain(sock)
            if not senders:
                continue
            try:
                await round_()
            except Exception:
                # Storage trouble: the senders hear of it by their own reads; ring them back.
                _log.debug("command round after a ring failed", exc_info=True)
            for address in dict.fromkeys(senders):
                _ring(sock, address)

    def close(self) -> None:
        """Stop listening (the name is free again at once)."""
        self._sock.close()


@contextlib.contextmanager
def open_doorbell(channel: str | None, owner: str) -> Iterator[Doorbell | None]:
    """``owner``'s doorbell on ``channel``, or None when there is none to be had (polls
    only)."""
    bell: Doorbell | None = None
    if channel is not None:
        try:
            bell = Doorbell(owner_address(channel, owner))
        except OSError as exc:
            _log.debug("no command doorbell for %s: %s", owner, exc)
    try:
        yield bell
    finally:
        if bell is not None:
            bell.close()


class Bell:
    """The sender's side: rings an owner's doorbell and waits to be rung back."""

    def __init__(self) -> None:
        self._sock = _socket()
        self._sock.bind(b"\0actorflow-reply-" + os.urandom(8).hex().encode())

    def ring(self, address: bytes) -> bool:
        """Ring ``address``; False if nobody listens there."""
        return _ring(self._sock, address)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds to be rung back; True if it was."""
        with anyio.move_on_after(timeout):
            while True:
                await _wait_readable(self._sock)
                if _drain(self._sock):
                    return True
        return False

    def close(self) -> None:
        self._sock.close()


@contextlib.contextmanager
def open_bell(channel: str | None) -> Iterator[Bell | None]:
    """A sender's bell when ``channel`` has doorbells, else None."""
    bell: Bell | None = None
    if channel is not None:
        try:
            bell = Bell()
        except OSError as exc:
            _log.debug("no command bell: %s", exc)
    try:
        yield bell
    finally:
        if bell is not None:
            bell.close()


__all__ = ["Bell", "Doorbell", "channel_of", "open_bell", "open_doorbell", "owner_address"]
