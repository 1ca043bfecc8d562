"""The SQLite writer process: runs batch plans, one transaction each, for its parent.

Why a process: a writer *thread* shares the GIL with a busy event loop, and every row of an
``executemany`` takes the GIL back once; under load that convoy made SQLite 3x slower and the
loop 2x slower. A process writes on the other core.

Run as a script (``python _writer_proc.py``), it imports only the standard library and
msgspec, never the actorflow package. Frames on stdin and stdout are a 4-byte big-endian
length and a msgpack body:

* first frame in: ``[database path, [statement, ...], parent pid]``; reply ``[0, None]`` once
  the database is open, or ``[0, error]``;
* then, per batch: ``[batch id, [[statement index, rows], ...], fail]`` in, ``[batch id,
  None]`` out once committed, or ``[batch id, [error type, message]]`` (rolled back; every
  later batch is refused with the same error, as it was written after the failed one).

It exits when stdin closes. It dies with its parent (Linux: PR_SET_PDEATHSIG; elsewhere it
checks before each commit), so no batch of a dead process commits after another process has
taken its executions over.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sqlite3
import struct
import sys
from typing import Any, BinaryIO

import msgspec

_HEADER = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(3)


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's body, or None at end of input (a truncated frame is end of input too)."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: BinaryIO, body: bytes) -> None:
    """Write and flush one frame."""
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    # The parent made the file WAL (it persists); asking again can meet another opener's
    # lock, which the busy timeout does not cover: check, do not set.
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"database is in journal mode {mode}, not WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _run(conn: sqlite3.Connection, statements: list[str], plan: list[Any], fail: Any,
         parent: int) -> None:  # fmt: skip
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt, rows in plan:
            conn.executemany(statements[stmt], rows)
        if fail:
            raise sqlite3.OperationalError(str(fail))
        if os.getppid() != parent:
            os._exit(3)  # the parent died: its last batch must not land after a takeover
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def main() -> int:
    # Ctrl-C reaches the whole process group: the parent decides when we stop (stdin EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    encode = msgspec.msgpack.Encoder().encode
    decode = msgspec.msgpack.Decoder().decode
    first = read_frame(stdin)
    if first is None:
        return 0
    path, statements, parent = decode(first)
    _die_with_parent(parent)
    try:
        conn = _connect(path)
    except sqlite3.Error as exc:
        write_frame(stdout, encode([0, [type(exc).__name__, str(exc)]]))
        return 1
    write_frame(stdout, encode([0, None]))
    broken: list[str] | None = None
    while True:
        body = read_frame(stdin)
        if body is None:
            break
        batch_id, plan, fail = decode(body)
        if broken is not None:
            # Batches sent behind a failed one were written after it: none may commit.
            write_frame(stdout, encode([batch_id, broken]))
            continue
        try:
            _run(conn, statements, plan, fail, parent)
        except Exception as exc:
            broken = [type(exc).__name__, str(exc)]
            write_frame(stdout, encode([batch_id, broken]))
            continue
        write_frame(stdout, encode([batch_id, None]))
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
