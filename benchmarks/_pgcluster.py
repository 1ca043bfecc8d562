"""A real PostgreSQL for tests and benchmarks: ``ACTORFLOW_TEST_POSTGRES_DSN`` if set, else a
throwaway cluster (Debian's PostgreSQL 15 binaries) in a temporary directory, on a free port
with its unix socket in that directory, as the unprivileged ``postgres`` user when we are root
(``initdb`` refuses root). Each test gets a fresh database of its own.

Standard library only (asyncpg for the database helpers): the tests reach it through
``tests/_support/postgres.py``, the benchmarks directly, so neither imports the other.
Without PostgreSQL binaries the tests that need them skip, with the reason; with
``CI=true`` they fail instead (CI installs the package, see ``.ci/run``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BIN = Path(os.environ.get("ACTORFLOW_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
ENV_DSN = "ACTORFLOW_TEST_POSTGRES_DSN"


class Unavailable(Exception):
    """No PostgreSQL can be had here (the reason is the message)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A running PostgreSQL server and how to reach a database on it."""

    def __init__(self, base_dsn: str, stop: list[str] | None = None, root: Path | None = None):
        self.base_dsn = base_dsn  # its database name (if any) is replaced by each test's
        self._stop = stop
        self._root = root
        self.port: int | None = None
        self.data: Path | None = None

    def dsn(self, database: str) -> str:
        """The URL of ``database`` on this server."""
        return urlunsplit(urlsplit(self.base_dsn)._replace(path=f"/{database}"))

    def restart(self) -> None:
        """Restart the throwaway server (``pg_ctl restart -m fast``: every session is ended,
        as an administrator's restart does); raises Unavailable for a given DSN's server."""
        if self.data is None or self._root is None:
            raise Unavailable(f"cannot restart a server this test did not start ({ENV_DSN})")
        # -l again: without it the new server would keep our captured stdout open.
        subprocess.run(
            _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self._root / "log"), "-m", "fast", "-w", "-t", "60", "restart"]),
            capture_output=True, check=True, timeout=90,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the throwaway cluster and remove its directory (nothing for a given DSN)."""
        stop, self._stop = self._stop, None
        if stop is not None:
            subprocess.run(stop, capture_output=True, timeout=60, check=False)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start(
    *,
    fsync: bool = False,
    listen: Sequence[str] = (),
    trust: Sequence[str] = (),
    throwaway: bool = False,
) -> Cluster:
    """The DSN's server, or a new throwaway cluster. ``fsync=False``: tests need no
    durability across power loss; benchmarks ask for it. Commits never wait for their WAL
    flush (``synchronous_commit=off``: SQLite's WAL with ``synchronous=NORMAL`` promises as
    much).

    ``listen``: addresses the server listens on besides 127.0.0.1; ``trust``: networks
    (CIDR) whose clients connect without a password, for workers on other hosts (network
    namespaces). ``throwaway``: a new cluster even when a DSN is given (a test that
    configures the server itself).
    """
    given = os.environ.get(ENV_DSN)
    if given and not throwaway:
        return Cluster(given)
    initdb, pg_ctl = BIN / "initdb", BIN / "pg_ctl"
    if not initdb.exists() or not pg_ctl.exists():
        raise Unavailable(
            f"no PostgreSQL binaries in {BIN} (apt-get install postgresql-15, or set {ENV_DSN})"
        )
    root = Path(tempfile.mkdtemp(prefix="actorflow-pg-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise Unavailable("running as root without runuser: cannot start PostgreSQL")
        try:
            shutil.chown(root, "postgres", "postgres")
        except (LookupError, OSError) as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise Unavailable(f"no 'postgres' user to run PostgreSQL as ({exc})") from exc
    data = root / "data"
    port = _free_port()
    options = (
        f"-p {port} -k {root} -c listen_addresses={','.join(['127.0.0.1', *listen])}"
        " -c max_connections=200"
        f" -c fsync={'on' if fsync else 'off'} -c full_page_writes={'on' if fsync else 'off'}"
        " -c synchronous_commit=off -c shared_buffers=128MB"
    )
    try:
        subprocess.run(
            _as_postgres([str(initdb), "-D", str(data), "-U", "postgres", "--auth=trust",
                          "--no-locale", "-E", "UTF8", "--no-sync"]),
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        if trust:
            with (data / "pg_hba.conf").open("a") as hba:
                hba.writelines(f"host all all {net} trust\n" for net in trust)
        subprocess.run(
            _as_postgres([str(pg_ctl), "-D", str(data), "-l", str(root / "log"), "-o",
                          options, "-w", "-t", "60", "start"]),
            capture_output=True, check=True, timeout=90,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        out = getattr(exc, "stderr", b"") or b""
        log = root / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(
            f"cannot start PostgreSQL: {exc} {out.decode(errors='replace')} {tail}"
        ) from exc
    cluster = Cluster(
        f"postgresql://postgres@/?host={root}&port={port}",
        _as_postgres([str(pg_ctl), "-D", str(data), "stop", "-m", "immediate"]),
        root,
    )
    cluster.port = port
    cluster.data = data
    atexit.register(cluster.stop)  # also when the session dies before its finalizer
    return cluster


async def create_database(cluster: Cluster) -> str:
    """A new empty database on ``cluster``; returns its name."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    return name


async def drop_database(cluster: Cluster, name: str) -> None:
    """Drop a database made by :func:`create_database`, whoever is still connected."""
    import asyncpg

    conn = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
