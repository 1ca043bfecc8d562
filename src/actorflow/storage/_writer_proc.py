"""The SQLite writer process: runs batch plans, one transaction each, for its parent.

Why a process: a writer *thread* shares the GIL with a busy event loop, and every row of an
``executemany`` takes the GIL back once; under load that convoy made SQLite 3x slower and the
loop 2x slower. A process writes on the other core.

Run as a script (``python _writer_proc.py``), it imports only the standard library and
msgspec, never the actorflow package; the in-process writer imports the transaction code
below from here, so both writers behave alike. Frames on stdin and stdout are a 4-byte
big-endian length and a msgpack body:

* first frame in: ``[database path, [statement, ...], parent pid, lock timeout]``; reply
  ``[0, None, []]`` once the database is open, or ``[0, error, []]``;
* then, per batch: ``[batch id, [[statement index, rows], ...], fail]`` in, and out:

  - ``[batch id, None, rejected]`` once committed. ``rejected`` lists the rows left out
    because of their *values* (an int beyond 64 bits, a lone surrogate, a NULL or NaN in a
    NOT NULL column, a broken constraint) as ``[plan index, row index, error type,
    message]``: the batch was re-run row by row in savepoints, every other row committed.
  - ``[batch id, [error type, message], []]``: rolled back for a storage failure (I/O
    error, disk full, a write lock held past the lock timeout...); every later batch is
    refused with the same error, as it was written after the failed one.
  - ``[batch id, "wait", seconds]``, not final: the batch is waiting for a write lock that
    another connection holds (sent about every 100 ms while it waits).

It exits when stdin closes. It dies with its parent (Linux: PR_SET_PDEATHSIG; elsewhere it
checks before each commit), so no batch of a dead process commits after another process has
taken its executions over.

After each commit it records the WAL's generation beside the database (see
:class:`WalRecorder`), so that an open after a crash can tell this database's WAL from a
WAL that belongs to another database.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sqlite3
import struct
import sys
import time
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, BinaryIO, TypeVar, cast

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import msgspec

T = TypeVar("T")
_HEADER = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1

# -- lock waits ---------------------------------------------------------------------------
_BUSY = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)
# SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE: the row, not the storage.
_VALUE_CODES = frozenset({18, 19, 20, 25})
ATTEMPT_WAIT = 0.1  # SQLite's own busy handler waits this long per attempt, at most


def busy_timeout_ms(lock_timeout: float) -> int:
    """The ``PRAGMA busy_timeout`` of one attempt: short, so waits can be reported."""
    return max(1, int(min(lock_timeout, ATTEMPT_WAIT) * 1000))


def is_busy(exc: BaseException) -> bool:
    """Another connection holds the lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF in _BUSY


def is_value_error(exc: BaseException) -> bool:
    """The error comes from a value of the row (retrying another row may work), not from
    the storage (where every later write would fail too)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | OverflowError | UnicodeError):
        return True
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return "binding" in str(exc)  # not "closed database", which is the storage's
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _VALUE_CODES


def with_lock_retry(
    attempt: Callable[[], T],
    *,
    where: str,
    lock_timeout: float,
    on_wait: Callable[[float], None] | None = None,
) -> T:
    """``attempt()`` again while another connection holds the lock, up to ``lock_timeout``
    seconds in all; then an OperationalError that names the lock and the bound."""
    start = time.monotonic()
    delay = 0.001
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            waited = time.monotonic() - start
            if waited >= lock_timeout:
                raise sqlite3.OperationalError(
                    f"database is locked: another connection held the write lock of {where}"
                    f" for more than lock_timeout={lock_timeout:g}s ({exc})"
                ) from exc
            if on_wait is not None:
                on_wait(waited)
            time.sleep(min(delay, lock_timeout - waited))
            delay = min(delay * 2, 0.05)


# -- one transaction ------------------------------------------------------------------------
# A plan may start with a fence step: (FENCE, [(owner, {execution id: epoch} as JSON, the
# column of each statement that holds the execution id as JSON)]). Inside the transaction,
# the rows of every execution whose stored (owner, epoch) is no longer the writer's (another
# worker claimed it since) are left out, and reported as [FENCE, n, "Fenced", "id owner
# epoch"] beside the rejections, so a worker that lost its lease writes nothing more.
FENCE = -1
_FENCED = (
    "SELECT e.id, e.owner, e.epoch FROM json_each(?) j"
    " JOIN executions e INDEXED BY ix_executions_fence ON e.id = j.key"
    " WHERE e.epoch != j.value OR e.owner IS NOT ?"
)


def fenced_ids(conn: sqlite3.Connection, step: Sequence[Any]) -> dict[str, tuple[Any, Any]]:
    """Executions of a fence step whose lease the writer lost: id -> (owner, epoch) now."""
    owner, held, _cols = step[0]
    return {r[0]: (r[1], r[2]) for r in conn.execute(_FENCED, (held, owner))}


def drop_fenced(plan: Sequence[Any], fenced: Collection[str]) -> list[Any]:
    """``plan`` without the rows of ``fenced`` executions (same steps, in place)."""
    cols = json.loads(plan[0][1][0][2])
    out: list[Any] = [(FENCE, [])]
    for stmt, rows in plan[1:]:
        col = cols[stmt]
        out.append((stmt, [r for r in rows if r[col] not in fenced]))
    return out


def _fence(conn: sqlite3.Connection, plan: Sequence[Any]) -> tuple[Sequence[Any], list[Any]]:
    if not plan or plan[0][0] != FENCE:
        return plan, []
    fenced = fenced_ids(conn, plan[0][1])
    if not fenced:
        return plan, []
    lost = [
        [FENCE, n, "Fenced", f"{ex_id} {owner} {epoch}"]
        for n, (ex_id, (owner, epoch)) in enumerate(sorted(fenced.items()))
    ]
    return drop_fenced(plan, fenced), lost


def _isolate(conn: sqlite3.Connection, statements: Sequence[str], plan: Sequence[Any]) -> list[Any]:
    """Run ``plan`` row by row, each row in its own savepoint, inside the open transaction:
    the good rows are written, the rows rejected for their values are returned."""
    rejected: list[Any] = []
    for index, (stmt, rows) in enumerate(plan):
        if stmt == FENCE:
            continue
        sql = statements[stmt]
        for row_index, row in enumerate(rows):
            conn.execute("SAVEPOINT row")
            try:
                conn.execute(sql, row)
            except Exception as exc:
                if not is_value_error(exc):
                    raise
                conn.execute("ROLLBACK TO row")
                rejected.append([index, row_index, type(exc).__name__, str(exc)])
            conn.execute("RELEASE row")
    return rejected


def run_plan(
    conn: sqlite3.Connection,
    statements: Sequence[str],
    plan: Sequence[Any],
    *,
    where: str,
    lock_timeout: float,
    fail: BaseException | None = None,
    on_wait: Callable[[float], None] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> list[Any]:
    """Run ``plan`` as ONE transaction; returns the rows left out for their values (see the
    module docstring). ``fail`` is a test hook raised just before COMMIT."""

    def attempt() -> list[Any]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            rejected: list[Any] = []
            steps, lost = _fence(conn, plan)
            try:
                for stmt, rows in steps:
                    if stmt != FENCE:
                        conn.executemany(statements[stmt], rows)
            except Exception as exc:
                if not is_value_error(exc):
                    raise
                # Some row cannot be stored: again row by row, so the good rows commit and
                # the bad ones are named (the first failure says nothing of the rows after
                # it). Not a savepoint around every batch: SQLite would copy each page the
                # batch touches into a statement journal, halving the writer's speed.
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                steps, lost = _fence(conn, plan)  # a new transaction: look again
                rejected = _isolate(conn, statements, steps)
            rejected.extend(lost)
            if fail is not None:
                raise fail
            if before_commit is not None:
                before_commit()
            conn.execute("COMMIT")
            return rejected
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    return with_lock_retry(attempt, where=where, lock_timeout=lock_timeout, on_wait=on_wait)


# -- WAL identity -----------------------------------------------------------------------------
# SQLite applies whatever valid WAL lies beside a database: its header names no database.
# What tells two WALs apart is the pair of salts in that header, new at every WAL reset (the
# first salt counts up by one, the second is random) together with the checkpoint sequence
# number (one up per reset). Every actorflow writer records the current header's triple in
# "<db>-walsalts" after its commits, and "clean" once the last connection closed and SQLite
# deleted the WAL; an open after a crash compares (see _integrity.check_wal).
SIDECAR_SUFFIX = "-walsalts"
WAL_MAGIC = (0x377F0682, 0x377F0683)
CLEAN, IN_USE = 0, 1
_SIDECAR = struct.Struct(">4sI3I3I")
_SIDECAR_MAGIC = b"AFW1"
Generation = tuple[int, int, int]  # checkpoint sequence, salt-1, salt-2


def _wal_checksum(data: bytes, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def parse_wal_header(head: bytes) -> Generation | None:
    """(checkpoint sequence, salt-1, salt-2) of a WAL header SQLite would use, else None
    (SQLite ignores a WAL whose header is short, of another format or fails its checksum)."""
    if len(head) < 32:
        return None
    magic, _version, _page, ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", head[:32])
    if magic not in WAL_MAGIC:
        return None
    if _wal_checksum(head[:24], magic & 1 == 1) != (c1, c2):
        return None
    return ckpt, salt1, salt2


def read_wal_header(db_path: str) -> Generation | None:
    """The generation of the WAL beside ``db_path``, or None if there is no usable one."""
    try:
        with open(f"{db_path}-wal", "rb") as f:  # SQLite locks the -shm, never the -wal
            return parse_wal_header(f.read(32))
    except FileNotFoundError:
        return None


class Sidecar(msgspec.Struct, frozen=True):
    """What ``<db>-walsalts`` says: ``state`` CLEAN (no WAL expected) or IN_USE, with the
    WAL generation recorded last and the one before it."""

    state: int
    current: Generation
    previous: Generation


def parse_sidecar(data: bytes) -> Sidecar | None:
    """The record, or None when it is torn or not one."""
    if len(data) != _SIDECAR.size + 4:
        return None
    body, crc = data[:-4], struct.unpack(">I", data[-4:])[0]
    if zlib.crc32(body) != crc:
        return None
    magic, state, *gens = _SIDECAR.unpack(body)
    if magic != _SIDECAR_MAGIC or state not in (CLEAN, IN_USE):
        return None
    return Sidecar(state, (gens[0], gens[1], gens[2]), (gens[3], gens[4], gens[5]))


def _encode_sidecar(record: Sidecar) -> bytes:
    body = _SIDECAR.pack(_SIDECAR_MAGIC, record.state, *record.current, *record.previous)
    return body + struct.pack(">I", zlib.crc32(body))


@contextlib.contextmanager
def _sidecar(db_path: str) -> Iterator[int]:
    """The sidecar's descriptor under an exclusive flock (whole-file BSD lock: it also
    keeps out other threads of this process, and closing it cannot drop SQLite's locks)."""
    fd = os.open(f"{db_path}{SIDECAR_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # releases the flock


def _store_sidecar(fd: int, record: Sidecar) -> None:
    data = _encode_sidecar(record)
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


class WalRecorder:
    """Records the WAL generation beside the database after this connection's writes.

    Cheap when nothing changed (one 32-byte read); the sidecar is written only when the WAL
    was reset since the last record, i.e. once per checkpointed generation.
    """

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._seen: Generation | None = None

    def after_write(self) -> None:
        """Call after each committed write transaction."""
        try:
            head = read_wal_header(self.db_path)
            if head is None or head == self._seen:
                return
            with _sidecar(self.db_path) as fd:
                old = parse_sidecar(os.pread(fd, 64, 0))
                if old is None or old.state != IN_USE or old.current != head:
                    before = old.current if old is not None and old.state == IN_USE else (0, 0, 0)
                    _store_sidecar(fd, Sidecar(IN_USE, head, before))
            self._seen = head
        except OSError:
            pass  # a read-only or full directory: the open-time check has less to go on


def mark_clean(db_path: str) -> bool:
    """Record that no WAL is expected, if SQLite deleted it (the last connection closed);
    True when recorded. Under the sidecar lock, so a writer starting now records after."""
    try:
        with _sidecar(db_path) as fd:
            if os.path.exists(f"{db_path}-wal"):
                return False
            _store_sidecar(fd, Sidecar(CLEAN, (0, 0, 0), (0, 0, 0)))
            return True
    except OSError:
        return False


# -- the process ------------------------------------------------------------------------------
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


def _connect(path: str, lock_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms(lock_timeout)}")
    conn.execute("PRAGMA foreign_keys = ON")
    # The parent made the file WAL (it persists); asking again can meet another opener's
    # lock, which the busy timeout does not cover: check, do not set.
    mode = with_lock_retry(
        lambda: conn.execute("PRAGMA journal_mode").fetchone()[0],
        where=path,
        lock_timeout=lock_timeout,
    )
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"database is in journal mode {mode}, not WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _bind_plainly() -> None:
    """Bind None and bytes parameters without sqlite3's adaptation protocol.

    sqlite3 binds int, float and str directly but sends None and bytes through its
    adapter lookup, whose failed ``__adapt__`` lookup on a type builds and drops an
    AttributeError each time: about 3,300 instructions per parameter, six a task run. An
    adapter registered for the exact type is found first; these return their argument, so
    what is stored is unchanged. Only in this process: the registry is process-wide.
    """
    as_none = cast(Callable[[None], None], {}.get)  # a C callable: {}.get(None) is None
    sqlite3.register_adapter(type(None), as_none)
    sqlite3.register_adapter(bytes, bytes)  # bytes(b) is b itself for exact bytes


def main() -> int:
    # Ctrl-C reaches the whole process group: the parent decides when we stop (stdin EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _bind_plainly()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    encode = msgspec.msgpack.Encoder().encode
    decode = msgspec.msgpack.Decoder().decode
    first = read_frame(stdin)
    if first is None:
        return 0
    path, statements, parent, lock_timeout = decode(first)
    _die_with_parent(parent)
    try:
        conn = _connect(path, lock_timeout)
    except sqlite3.Error as exc:
        write_frame(stdout, encode([0, [type(exc).__name__, str(exc)], []]))
        return 1
    write_frame(stdout, encode([0, None, []]))
    recorder = WalRecorder(path)

    def parent_alive() -> None:
        if os.getppid() != parent:
            os._exit(3)  # the parent died: its last batch must not land after a takeover

    broken: list[str] | None = None
    while True:
        body = read_frame(stdin)
        if body is None:
            break
        batch_id, plan, fail = decode(body)
        if broken is not None:
            # Batches sent behind a failed one were written after it: none may commit.
            write_frame(stdout, encode([batch_id, broken, []]))
            continue
        last = [-1.0]

        def waiting(waited: float, batch_id: int = batch_id, last: list[float] = last) -> None:
            if waited - last[0] >= ATTEMPT_WAIT:
                last[0] = waited
                write_frame(stdout, encode([batch_id, "wait", waited]))

        try:
            rejected = run_plan(
                conn, statements, plan, where=path, lock_timeout=lock_timeout,
                fail=sqlite3.OperationalError(str(fail)) if fail else None,
                on_wait=waiting, before_commit=parent_alive,
            )  # fmt: skip
        except Exception as exc:
            broken = [type(exc).__name__, str(exc)]
            write_frame(stdout, encode([batch_id, broken, []]))
            continue
        recorder.after_write()
        write_frame(stdout, encode([batch_id, None, rejected]))
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
