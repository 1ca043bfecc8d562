"""How the PostgreSQL store keeps its connections alive: the settings every connection it
opens gets, TCP keepalives, what counts as a lost connection, and the reconnect backoff.

A connection can be lost three ways: the server ends it (restart, ``pg_terminate_backend``,
its idle-in-transaction timeout), the server is gone (connection refused while it restarts),
or the path to it is cut (a veth link down, a host gone). The first two are seen at once; the
third only through TCP, so both ends probe: a silent peer is dropped after about
``KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT`` seconds (8 s) when idle, and data
left unacknowledged for ``USER_TIMEOUT`` seconds (8 s) drops it too, instead of the kernel's
two hours of keepalive silence or fifteen minutes of retransmissions. A worker's lease is 15 s
by default: a cut is noticed well before another worker may take its executions.
"""

from __future__ import annotations

import random
import socket
from typing import Any

# Seconds of silence before the first keepalive probe, between probes, and how many
# unanswered probes drop the connection: a dead peer is noticed within 8 s.
KEEPALIVE_IDLE = 5
KEEPALIVE_INTERVAL = 1
KEEPALIVE_COUNT = 3
USER_TIMEOUT = 8.0  # s data sent may wait for its acknowledgement (TCP_USER_TIMEOUT)
CONNECT_TIMEOUT = 10.0  # s one connection attempt may take (a cut link never answers a SYN)
BACKOFF_FIRST = 0.05  # s before the first reconnect attempt (at most: jittered)
BACKOFF_MAX = 2.0  # the longest pause between attempts, so a restart is seen within ~2 s
# SQLSTATEs of a session that the server ended or cannot start now; class 08 is added below.
_LOST_STATES = frozenset({"57P01", "57P02", "57P03", "25P03", "53300", "57P05"})


def server_settings(
    *,
    lock_timeout: float,
    statement_timeout: float,
    idle_timeout: float,
    read_only: bool,
) -> dict[str, str]:
    """The session settings of every connection the store opens (values in ms)."""
    settings = {
        "application_name": "actorflow",
        "lock_timeout": _ms(lock_timeout),
        "statement_timeout": _ms(statement_timeout),
        # A process stopped (SIGSTOP, a debugger, a swapped-out VM) inside a transaction
        # would hold its row locks, and with them every lease it fenced, for good: the
        # server ends such a session instead, rolling it back.
        "idle_in_transaction_session_timeout": _ms(idle_timeout),
        # The server's side of the same probing, so it ends the session (and frees its
        # locks) of a client whose host vanished. Ignored on Unix sockets.
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
        "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
        "tcp_user_timeout": str(int(USER_TIMEOUT * 1000)),
    }
    if read_only:
        settings["default_transaction_read_only"] = "on"
    return settings


def _ms(seconds: float) -> str:
    """A PostgreSQL duration in ms; 0 (no limit) for an infinite one."""
    if seconds == float("inf"):
        return "0"
    return str(max(1, int(min(seconds, 86400.0) * 1000)))


def set_keepalive(conn: Any) -> None:
    """TCP keepalive probes and a user timeout on ``conn``'s socket (Linux names; a Unix
    socket or another system keeps its defaults). asyncpg has no option for it: its
    transport is private, so a missing one is skipped rather than failing the connection."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", int(USER_TIMEOUT * 1000)),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def is_lost(exc: BaseException) -> bool:
    """The connection is gone or cannot be made now (the server ended the session, is
    restarting, or does not answer): another connection may work, the data is not at fault."""
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        # The loss may hide behind what it caused: asyncpg's ROLLBACK on the broken
        # connection fails ("another operation is in progress") while handling it.
        if _is_lost(at):
            return True
        seen.add(id(at))
        at = at.__cause__ or at.__context__
    return False


def _is_lost(exc: BaseException) -> bool:
    import asyncpg

    if isinstance(exc, OSError | TimeoutError | asyncpg.ConnectionDoesNotExistError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state[:2] == "08" or state in _LOST_STATES
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc)
    if isinstance(exc, asyncpg.exceptions._base.InternalClientError):
        # The server's goodbye (FATAL: terminating connection) arrived while the connection
        # was idle: its protocol is stuck consuming it. No call of ours shares a connection
        # with another, so this means a dead one.
        return "another operation" in str(exc)
    return False


class Backoff:
    """Pauses between reconnect attempts: doubling from :data:`BACKOFF_FIRST` up to
    :data:`BACKOFF_MAX`, each drawn from its upper half so that the workers a restart cut
    off together do not all knock again at the same instant."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> None:
        self.first = first
        self.cap = cap
        self._base = first

    def next(self) -> float:
        """The next pause, in seconds."""
        base = self._base
        self._base = min(base * 2, self.cap)
        return random.uniform(base / 2, base)

    def reset(self) -> None:
        """Back to the first, short pause (a connection worked again)."""
        self._base = self.first
