"""Checks made before a database is opened for use; a refused file is never modified.

Each check reads the files without writing (the last SQLite connection is read-only, on a
WAL-less file ``immutable=1``):

* the header is SQLite's, its page size is a legal one;
* with no WAL to replay, the file is a whole number of pages and at least as long as its
  header says: a truncated file is refused instead of being "repaired" by a later write;
* a WAL left by a process that did not close the database (a ``-wal`` with frames, and no
  connection holding the database open: the writer crashed) must be this database's: its
  generation (checkpoint sequence and salts, see ``_writer_proc``) is compared with the one
  actorflow recorded in ``<db>-walsalts``; then ``PRAGMA quick_check`` must pass.

Limits of the WAL check, precisely:

* A database never opened by this version of actorflow has no ``-walsalts``: its WAL is
  accepted unchecked (with a warning). So is a WAL when that record is unreadable.
* Between a commit and its record (microseconds, in the writer after each commit) a crash
  leaves a WAL one generation ahead of the record; it is accepted when its checkpoint
  sequence and first salt are each exactly one above the record (the second salt is random
  and cannot be known). A WAL of a *copy* of this database that is exactly one generation
  ahead of it would pass too; a WAL of an unrelated database passes with a chance of 2**-32.
* The same crash in the first commit after a clean close leaves a WAL the record cannot
  vouch for (the record says "clean"): it is refused, and the message says how to accept it.
* Writes by programs other than actorflow are not recorded: a crash after more than one WAL
  reset by them is refused the same way.
* While another process has the database open, nothing is checked (its WAL is in use, not
  left over); that is detected on Linux through SQLite's shared-memory lock, elsewhere
  every open with a WAL present is taken as "in use".
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import sys
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import msgspec

from actorflow._errors import DatabaseInvalid
from actorflow.storage._schema import read_version
from actorflow.storage._writer_proc import (
    CLEAN,
    SIDECAR_SUFFIX,
    Generation,
    parse_sidecar,
    read_wal_header,
)

_log = logging.getLogger("actorflow.storage")
_MAGIC = b"SQLite format 3\x00"
# Every connection holds a read lock on this byte of "<db>-shm" while it is open (the
# "dead man switch" of SQLite's unix VFS: os_unix.c, UNIX_SHM_DMS = 120 + 8).
_SHM_DMS = 128


class Inspection(msgspec.Struct, frozen=True):
    """What the open-time checks found."""

    version: int
    wal: bool = False  # a -wal file exists: a reader must look at it (no immutable=1)
    recovered: bool = False  # a crash's WAL was checked and will be replayed


def _page_size(head: bytes) -> int | None:
    (raw,) = struct.unpack(">H", head[16:18])
    size = 65536 if raw == 1 else raw
    if size < 512 or size > 65536 or size & (size - 1):
        return None
    return size


def peers_live(path: Path) -> bool:
    """Whether another process has the database open (True when that cannot be told)."""
    shm = f"{path}-shm"
    if not sys.platform.startswith("linux") or fcntl is None:
        return os.path.exists(shm)
    try:
        fd = os.open(shm, os.O_RDONLY)
    except FileNotFoundError:
        return False  # every connection maps the -shm: none is open
    except OSError:
        return True
    try:
        # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (F_GETLK writes it).
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, probe + b"\0" * 8)
        (kind,) = struct.unpack_from("h", answer)
        return bool(kind != fcntl.F_UNLCK)
    except OSError:
        return True
    finally:
        os.close(fd)  # this process has no connection on it (see inspect_file): no lock lost


def check_wal(path: Path, wal: Generation) -> None:
    """Refuse a left-over WAL that the record beside the database does not vouch for."""
    sidecar = Path(f"{path}{SIDECAR_SUFFIX}")
    try:
        record = parse_sidecar(sidecar.read_bytes())
    except FileNotFoundError:
        _log.warning("%s: a WAL was left by a crash; no %s to check it against", path, sidecar)
        return
    except OSError as exc:
        _log.warning("%s: cannot read %s (%s); WAL not checked", path, sidecar, exc)
        return
    if record is None:
        _log.warning("%s: %s is damaged; WAL not checked", path, sidecar)
        return
    how = (
        f"left untouched. Move {path}-wal away to open the database as of its last checkpoint;"
        f" if that WAL really is this database's (written by a program other than actorflow),"
        f" delete {sidecar} to accept it"
    )
    if record.state == CLEAN:
        raise DatabaseInvalid(
            f"{path}: a WAL file is beside it (generation {_gen(wal)}), but the database was"
            f" closed cleanly after its last write: that WAL is not this database's; {how}"
        )
    if wal == record.current or (wal == record.previous and record.previous != (0, 0, 0)):
        return
    ckpt, salt1, _ = record.current
    if wal[0] == (ckpt + 1) & 0xFFFFFFFF and wal[1] == (salt1 + 1) & 0xFFFFFFFF:
        return  # reset once more after the last record: a crash right after that commit
    raise DatabaseInvalid(
        f"{path}: its WAL file is not this database's (WAL generation {_gen(wal)}; this"
        f" database last wrote generation {_gen(record.current)}); {how}"
    )


def _gen(g: Generation) -> str:
    return f"{g[0]} salts {g[1]:08x}/{g[2]:08x}"


def inspect_file(path: Path, *, in_use: bool = False) -> Inspection:
    """Schema version of an existing file (0 if absent or empty) after the checks of the
    module docstring; raises DatabaseInvalid (SchemaTooNew) for a file not to be opened.

    ``in_use``: a store of this process has the file open. Then the file is not read here
    with a descriptor of our own: closing it would drop the POSIX locks SQLite holds on the
    file for this process (SQLite's "How To Corrupt", 2.2). That store checked it already.
    """
    wal_path = Path(f"{path}-wal")
    wal_file = wal_path.exists()
    if not path.exists() or path.stat().st_size == 0:
        return Inspection(0, wal_file)
    recovered = False
    if not in_use:
        with path.open("rb") as f:
            head = f.read(100)
        size = path.stat().st_size
        if head[:16] != _MAGIC:
            raise DatabaseInvalid(f"{path}: not an SQLite database (bad header); left untouched")
        page = _page_size(head) if len(head) == 100 else None
        if page is None:
            raise DatabaseInvalid(
                f"{path}: corrupt or unreadable database (bad page size in its header);"
                " left untouched"
            )
        wal = read_wal_header(str(path))
        try:
            wal_frames = wal is not None and wal_path.stat().st_size > 32
        except FileNotFoundError:
            # The last connection of a process that is going away (a killed runtime's writer
            # process) removed its WAL between the two reads: nothing is left to check.
            wal, wal_frames = None, False
        if not wal_frames and not Path(f"{path}-journal").exists():
            _check_size(path, head, size, page)
        if wal is not None and wal_frames and not peers_live(path):
            check_wal(path, wal)
            recovered = True
    try:
        version = _read(path, wal_file, quick_check=recovered)
    except sqlite3.OperationalError:
        raise  # locked, unreadable: the caller reports it as unavailable, not as invalid
    except sqlite3.DatabaseError as exc:
        raise DatabaseInvalid(
            f"{path}: corrupt or unreadable database ({exc}); left untouched"
        ) from exc
    return Inspection(version, wal_file, recovered)


def _check_size(path: Path, head: bytes, size: int, page: int) -> None:
    if size % page:
        raise DatabaseInvalid(
            f"{path}: {size} bytes is not a whole number of its {page}-byte pages: the file"
            " is truncated or corrupt; left untouched"
        )
    (pages,) = struct.unpack(">I", head[28:32])
    # The header's page count is valid only while its "version-valid-for" matches the
    # change counter (older writers did not keep it).
    if head[24:28] == head[92:96] and pages * page > size:
        raise DatabaseInvalid(
            f"{path}: its header says {pages} pages ({pages * page} bytes) but the file has"
            f" {size}: it is truncated (corrupt); left untouched"
        )


def _read(path: Path, wal_file: bool, *, quick_check: bool) -> int:
    # Without a WAL beside it, immutable=1 reads the file alone and creates no -wal/-shm
    # next to a file we may refuse; with one, the WAL must be read too.
    mode = "mode=ro" if wal_file else "mode=ro&immutable=1"
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?{mode}", uri=True)
    try:
        if quick_check:
            try:
                problems = [r[0] for r in conn.execute("PRAGMA quick_check(20)")]
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError as exc:  # so damaged the check cannot run
                problems = [str(exc)]
            if problems != ["ok"]:
                raise DatabaseInvalid(
                    f"{path}: was not closed cleanly and fails its integrity check"
                    f" ({'; '.join(problems)}); left untouched"
                )
        return read_version(conn, str(path))
    finally:
        conn.close()
