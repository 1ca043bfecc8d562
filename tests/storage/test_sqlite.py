"""SQLite specifics: group commit, durability, bad files, schema versions, write failures."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
from storage_helpers import TERMINAL, ex, tr

from actorflow import DatabaseInvalid, SchemaTooNew, StorageError, StorageUnavailable
from actorflow.storage import (
    CURRENT_VERSION,
    MemoryStore,
    QuarantineExecution,
    QuarantineRow,
    SQLiteStore,
    UpsertExecution,
    UpsertTaskRun,
    open_store,
)
from actorflow.storage._integrity import inspect_file
from actorflow.storage._schema import MIGRATIONS, _statements, create_v1
from actorflow.storage._writer_proc import Sidecar, _encode_sidecar, parse_sidecar, read_wal_header

pytestmark = pytest.mark.anyio
FIXTURES = Path(__file__).with_name("fixtures")


def _snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    """Content, mtime and the directory listing: what must not change for a refused file."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


# -- group commit ---------------------------------------------------------------------------
async def test_writes_of_one_tick_share_one_transaction(tmp_path: Path) -> None:
    """1,000 writes queued before the writer runs commit as one batch with one Commit."""
    async with SQLiteStore(tmp_path / "g.db") as s:
        commits = [s.write([UpsertExecution(ex(f"e{i}"))]) for i in range(1000)]
        assert len({id(c) for c in commits}) == 1
        assert not commits[0].done
        await commits[0]
        assert commits[0].done
        assert (s.stats.batches, s.stats.ops) == (1, 1000)


async def test_batch_max_bounds_a_transaction(tmp_path: Path) -> None:
    """With batch_max=10, 1,000 one-op writes take at least 100 transactions of at most 10 ops,
    and a single write larger than batch_max still commits whole."""
    async with SQLiteStore(tmp_path / "b.db", batch_max=10) as s:
        commits = [s.write([UpsertExecution(ex(f"e{i}"))]) for i in range(1000)]
        await s.flush()
        assert all(c.done for c in commits)
        assert s.stats.batches >= 100 and s.stats.largest_batch == 10
        await s.write([UpsertExecution(ex(f"big{i}")) for i in range(25)])
        assert s.stats.largest_batch == 25
        assert len(await s.list_executions(limit=-1)) == 1025


async def test_an_earlier_batchs_acknowledgement_does_not_end_the_linger(tmp_path: Path) -> None:
    """A write queued while another batch commits keeps lingering when that batch is
    acknowledged, so a write after the acknowledgement joins its transaction."""
    async with SQLiteStore(tmp_path / "l.db", linger=60.0) as s:
        first = s.write([UpsertExecution(ex("e0"))])
        first.want()
        await anyio.wait_all_tasks_blocked()  # the writer took it and sent it
        second = s.write([UpsertExecution(ex("e1"))])
        assert second is not first
        await first  # its acknowledgement woke the lingering writer
        await anyio.wait_all_tasks_blocked()
        third = s.write([UpsertExecution(ex("e2"))])
        assert third is second  # still queued: the linger went on
        await third
        assert sorted(e.id for e in await s.list_executions(limit=-1)) == ["e0", "e1", "e2"]
        assert s.stats.batches == 2


async def test_a_cancelled_waiter_does_not_cancel_the_write(tmp_path: Path) -> None:
    """A caller cancelled while awaiting its commit leaves the write to commit anyway."""
    async with SQLiteStore(tmp_path / "c.db") as s:
        with anyio.CancelScope() as scope:
            commit = s.write([UpsertExecution(ex("e"))])
            scope.cancel()
            await commit
        await s.flush()
        assert await s.get_execution("e") == ex("e")


async def test_close_commits_everything_queued(tmp_path: Path) -> None:
    """Writes nobody awaited are committed by close and read back by the next store."""
    path = tmp_path / "q.db"
    async with SQLiteStore(path, batch_max=7) as s:
        for i in range(100):
            s.write([UpsertExecution(ex(f"e{i}"))])
    async with SQLiteStore(path) as again:
        assert len(await again.list_executions(limit=-1)) == 100


async def test_a_commit_is_durable_for_a_new_connection(tmp_path: Path) -> None:
    """After awaiting a write's commit, a fresh store on the same file reads it; a command
    posted by one store is seen by another at once."""
    path = tmp_path / "d.db"
    async with SQLiteStore(path) as s:
        await s.write([UpsertExecution(ex("e1")), UpsertTaskRun(tr("t1", "e1"))])
        async with SQLiteStore(path) as other:
            assert await other.get_execution("e1") == ex("e1")
            assert await other.task_runs("e1") == [tr("t1", "e1")]
            cid = await other.post_command("e1", "kill", b"{}")
        assert [c.id for c in await s.commands_after(0)] == [cid]


async def test_the_writer_process_stores_none_as_null_and_bytes_as_blobs(tmp_path: Path) -> None:
    """Its plain binding of None and bytes stores SQL NULL and the exact bytes, as BLOB."""
    path = tmp_path / "n.db"
    snapshot = bytes(range(256))
    async with SQLiteStore(path) as s:
        assert s.writer == "process"
        await s.write([UpsertExecution(ex("e1", ended=None, data=snapshot))])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute(
            "SELECT typeof(ended), typeof(parent_execution_id), typeof(data), data"
            " FROM executions WHERE id = 'e1'"
        ).fetchone()
    assert row == ("null", "null", "blob", snapshot)


# -- bad files -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, I am a text file\n" * 100, "not an SQLite database"),
        (b"tiny", "not an SQLite database"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, "corrupt or unreadable"),
    ],
)
async def test_bad_files_are_refused_untouched(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """A text file or a corrupt database is refused with DatabaseInvalid naming it, unchanged."""
    path = tmp_path / "bad.db"
    path.write_bytes(content)
    before = _snapshot(path)
    with pytest.raises(DatabaseInvalid, match=message) as info:
        await SQLiteStore(path).open()
    assert str(path) in str(info.value)
    assert _snapshot(path) == before


async def test_a_truncated_database_is_refused_untouched(tmp_path: Path) -> None:
    """A real actorflow database cut in half is corrupt: refused, not repaired or overwritten."""
    path = tmp_path / "cut.db"
    async with SQLiteStore(path) as s:
        await s.write([UpsertExecution(ex(f"e{i}", data=b"x" * 2000)) for i in range(200)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = _snapshot(path)
    with pytest.raises(DatabaseInvalid, match="corrupt"):
        async with SQLiteStore(path) as s:
            await s.list_executions(limit=-1)
    assert _snapshot(path) == before


async def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    """An SQLite file of another program is not taken over."""
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
        conn.commit()
    before = _snapshot(path)
    with pytest.raises(DatabaseInvalid, match="not an actorflow one"):
        await SQLiteStore(path).open()
    assert _snapshot(path) == before


@pytest.mark.parametrize("version", [CURRENT_VERSION + 1, 99])
async def test_newer_schema_is_refused_untouched(tmp_path: Path, version: int) -> None:
    """A database from a newer actorflow raises SchemaTooNew and is not modified."""
    path = tmp_path / "new.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        create_v1(conn)
        conn.execute("UPDATE schema_version SET version = ?", (version,))
        conn.commit()
    before = _snapshot(path)
    with pytest.raises(SchemaTooNew, match=f"schema version {version} is newer"):
        await SQLiteStore(path).open()
    with pytest.raises(SchemaTooNew):
        await SQLiteStore(path, read_only=True).open()
    assert _snapshot(path) == before


async def test_an_empty_schema_version_is_refused(tmp_path: Path) -> None:
    """A schema_version table without a row is not guessed at."""
    path = tmp_path / "empty-version.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER)")
        conn.commit()
    with pytest.raises(DatabaseInvalid, match="schema_version table is empty"):
        await SQLiteStore(path).open()


async def test_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    """A missing directory, a directory as database and a missing read-only file name the path."""
    with pytest.raises(StorageError, match="does not exist"):
        await SQLiteStore(tmp_path / "nope" / "x.db").open()
    with pytest.raises(DatabaseInvalid, match="is a directory"):
        await SQLiteStore(tmp_path).open()
    with pytest.raises(StorageError, match="no such database"):
        await SQLiteStore(tmp_path / "absent.db", read_only=True).open()
    assert not (tmp_path / "absent.db").exists()


@contextlib.contextmanager
def _unprivileged() -> Iterator[None]:
    """Run as nobody when root, since root writes through any file mode."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


async def test_a_read_only_file_is_refused_for_writing_and_untouched(tmp_path: Path) -> None:
    """A database file without write permission is StorageUnavailable on open, left as it was."""
    base = Path(tempfile.mkdtemp(prefix="af-ro-"))
    try:
        base.chmod(0o755)
        path = base / "ro.db"
        async with SQLiteStore(path) as s:
            await s.write([UpsertExecution(ex("e"))])
        path.chmod(0o444)
        base.chmod(0o555)
        before = _snapshot(path)
        with _unprivileged(), pytest.raises(StorageUnavailable, match=str(path)):
            await SQLiteStore(path).open()
        assert _snapshot(path) == before
    finally:
        base.chmod(0o755)
        shutil.rmtree(base)


async def test_sqlite_refusing_writes_mid_run_fails_the_commits(tmp_path: Path) -> None:
    """When SQLite starts refusing writes (read-only), pending commits raise StorageUnavailable."""
    # query_only is per connection: the in-thread writer's is the one we can reach here.
    async with SQLiteStore(tmp_path / "ro.db", writer="thread") as s:
        await s.write([UpsertExecution(ex("a"))])
        assert s._writer is not None
        await SQLiteStore._call(s._writer, lambda c: c.execute("PRAGMA query_only = ON"))
        first = s.write([UpsertExecution(ex("b"))])
        with pytest.raises(StorageUnavailable, match="readonly"):
            await first
        with pytest.raises(StorageUnavailable):
            s.write([UpsertExecution(ex("c"))])
        assert await s.get_execution("a") == ex("a") and await s.get_execution("b") is None


async def test_a_writer_process_that_dies_fails_the_commits(tmp_path: Path) -> None:
    """If the writer process is killed, the waiting commit and every later write fail loudly."""
    async with SQLiteStore(tmp_path / "dead.db") as s:
        await s.write([UpsertExecution(ex("a"))])
        assert s._proc is not None and s._proc._proc is not None
        s._proc._proc.kill()
        with pytest.raises(StorageUnavailable, match="writer process stopped"):
            await s.write([UpsertExecution(ex("b"))])
        with pytest.raises(StorageUnavailable):
            s.write([UpsertExecution(ex("c"))])
        assert await s.get_execution("a") == ex("a") and await s.get_execution("b") is None


async def test_a_foreign_key_violation_rejects_only_its_row(tmp_path: Path) -> None:
    """A task run of an execution that does not exist is left out and named; the rest of
    its batch commits and the store keeps writing."""
    async with SQLiteStore(tmp_path / "fk.db") as s:
        commit = s.write([UpsertExecution(ex("e")), UpsertTaskRun(tr("t", "no-such-execution"))])
        await commit
        assert [(r.execution_id, r.table, r.key) for r in commit.rejected] == [
            ("no-such-execution", "task_runs", "t")
        ]
        assert "FOREIGN KEY" in commit.rejected[0].error
        assert s.failed is None and await s.get_execution("e") == ex("e")
        await s.write([UpsertExecution(ex("later"))])
        assert await s.get_execution("later") == ex("later")


# -- schema versions ------------------------------------------------------------------------
def _load_v1(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript((FIXTURES / "schema_v1.sql").read_text())


def _schema(path: Path) -> set[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
        return {(n, " ".join(s.split())) for n, s in rows}


async def test_the_v1_fixture_is_the_v1_schema(tmp_path: Path) -> None:
    """The fixture was made by the version-1 DDL (so the migration test tests the real thing)."""
    _load_v1(tmp_path / "fixture.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "fresh.db")) as conn:
        create_v1(conn)
    assert _schema(tmp_path / "fixture.db") == _schema(tmp_path / "fresh.db")


async def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    """A v1 database is migrated forward, keeps its rows and gains owners and commands."""
    path = tmp_path / "v1.db"
    _load_v1(path)
    async with SQLiteStore(path) as s:
        e1 = await s.get_execution("e1")
        assert e1 is not None and (e1.state, e1.owner) == ("SUCCESS", None)
        assert [r.id for r in await s.task_runs("e1")] == ["t1"]
        assert [h.state for h in await s.history("e1")] == ["CREATED", "SUCCESS"]
        assert [lg.message for lg in await s.logs("e1")] == ["hello from v1"]
        await s.register_owner("me", 10)
        assert [r.id for r in await s.claim_orphans("me", TERMINAL, 10)] == ["e2"]
        assert await s.post_command("e2", "kill") == 1
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(CURRENT_VERSION,)]
    fresh = tmp_path / "fresh.db"
    async with SQLiteStore(fresh):
        pass
    assert _schema(path) == _schema(fresh)
    async with SQLiteStore(path) as again:
        assert (await again.get_execution("e2")).owner == "me"  # type: ignore[union-attr]


async def test_commands_of_a_version_2_database_are_never_replayed(tmp_path: Path) -> None:
    """Migrating to v3 marks the commands stored before it rejected (they were applied, or
    not, long ago): no runtime finds them pending and replays them."""
    path = tmp_path / "v2.db"
    _load_v1(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for stmt in _statements(MIGRATIONS[1]):
            conn.execute(stmt)
        conn.execute("UPDATE executions SET owner = 'me'")
        conn.execute(
            "INSERT INTO commands (execution_id, kind, payload, created) VALUES"
            " ('e2', 'resume', x'7b7d', 5.0)"
        )
        conn.commit()
    async with SQLiteStore(path) as s:
        assert await s.pending_commands("me") == []
        [old] = await s.commands_after(0)
        assert (old.kind, old.status, old.answered) == ("resume", "rejected", 5.0)
        assert old.answer is not None and "never replayed" in old.answer
        new = await s.post_command("e2", "kill")
        assert [c.id for c in await s.pending_commands("me")] == [new]


async def test_two_stores_creating_one_file_at_once(tmp_path: Path) -> None:
    """Two stores opening the same new file concurrently both end up on one valid schema."""
    path = tmp_path / "race.db"
    a, b = SQLiteStore(path), SQLiteStore(path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.open)
        tg.start_soon(b.open)
    try:
        await a.write([UpsertExecution(ex("from-a"))])
        await b.write([UpsertExecution(ex("from-b"))])
        assert {r.id for r in await a.list_executions()} == {"from-a", "from-b"}
    finally:
        await a.close()
        await b.close()


# -- read-only stores and open_store ------------------------------------------------------------
async def test_a_read_only_store_reads_and_refuses_writes(tmp_path: Path) -> None:
    """read_only=True reads a database and refuses every write with StorageUnavailable."""
    path = tmp_path / "r.db"
    async with SQLiteStore(path) as s:
        await s.write([UpsertExecution(ex("e"))])
    before = _snapshot(path)
    async with SQLiteStore(path, read_only=True) as r:
        assert await r.get_execution("e") == ex("e")
        with pytest.raises(StorageUnavailable, match="read-only"):
            r.write([UpsertExecution(ex("f"))])
        with pytest.raises(StorageUnavailable, match="read-only"):
            await r.post_command("e", "kill")
        await r.flush()
    assert _snapshot(path)[0] == before[0]
    v1 = tmp_path / "v1.db"
    _load_v1(v1)
    with pytest.raises(StorageError, match="must be migrated"):
        await SQLiteStore(v1, read_only=True).open()


async def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    """open_store: ':memory:' and 'memory://' are in memory; paths and sqlite:// URLs are files."""
    assert isinstance(open_store(":memory:"), MemoryStore)
    assert isinstance(open_store("memory://"), MemoryStore)
    s = open_store(tmp_path / "x.db")
    assert isinstance(s, SQLiteStore) and s.path == tmp_path / "x.db"
    u = open_store(f"sqlite://{tmp_path}/y.db")
    assert isinstance(u, SQLiteStore) and u.path == tmp_path / "y.db"
    with pytest.raises(ValueError, match="batch_max"):
        SQLiteStore(tmp_path / "z.db", batch_max=0)


async def test_the_writer_can_be_chosen_by_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ACTORFLOW_SQLITE_WRITER=thread keeps the writer in-process; a bad value is refused."""
    monkeypatch.setenv("ACTORFLOW_SQLITE_WRITER", "thread")
    async with SQLiteStore(tmp_path / "env.db") as s:
        assert s.writer == "thread" and s._proc is None
        await s.write([UpsertExecution(ex("e"))])
        assert await s.get_execution("e") == ex("e")
    monkeypatch.setenv("ACTORFLOW_SQLITE_WRITER", "fork")
    with pytest.raises(ValueError, match="ACTORFLOW_SQLITE_WRITER"):
        SQLiteStore(tmp_path / "bad.db")


async def test_a_writer_process_that_cannot_start_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the writer process cannot be started, open says so and how to write in-process."""
    import sys

    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.raises(StorageUnavailable, match="ACTORFLOW_SQLITE_WRITER=thread"):
        await SQLiteStore(tmp_path / "noproc.db").open()


# -- purge at scale ---------------------------------------------------------------------------
async def test_purging_40000_executions_is_not_bound_by_the_sql_variable_limit(
    tmp_path: Path,
) -> None:
    """40,000 executions purged by id and by age under SQLite's stock limit of 32,766 bound
    variables: every one deleted, in bounded batches."""
    async with SQLiteStore(tmp_path / "many.db") as s:
        for start in range(0, 80_000, 1000):
            s.write([UpsertExecution(ex(f"e{i:05}", "SUCCESS", created=float(i), ended=2.0))
                     for i in range(start, start + 1000)])  # fmt: skip
        await s.flush()
        assert s._writer is not None  # the admin connection that purges
        await SQLiteStore._call(
            s._writer, lambda c: c.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32766)
        )
        batches: list[int] = []
        by_id = await s.purge(
            execution_ids=[f"e{i:05}" for i in range(40_000)],
            progress=lambda p: batches.append(len(p.ids)),
        )
        assert by_id == [f"e{i:05}" for i in range(40_000)]
        assert len(batches) == 80 and set(batches) == {500}
        assert len(await s.purge(older_than=50.0, states=TERMINAL)) == 40_000
        assert await s.list_executions(limit=-1) == []


# -- a write lock held by another process -------------------------------------------------------
_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


@contextlib.contextmanager
def _lock_held(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the write lock of ``path`` until a line is written to it."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        with contextlib.suppress(OSError):
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.close()
        holder.wait()


def _release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()


@pytest.mark.parametrize("writer", ["process", "thread"])
async def test_a_write_waits_for_another_process_lock_and_recovers(
    tmp_path: Path, writer: str
) -> None:
    """Writes (a batch and a command) wait while another process holds the write lock, are
    told it is waiting, and commit once it is released; the store goes on."""
    path = tmp_path / "busy.db"
    async with SQLiteStore(path, writer=writer) as s:
        await s.write([UpsertExecution(ex("before"))])
        waiting = anyio.Event()
        s.on_lock_wait = lambda waited: waiting.set()
        with _lock_held(path) as holder:
            commit = s.write([UpsertExecution(ex("during"))])
            with anyio.fail_after(20):
                await waiting.wait()
            assert not commit.done
            _release(holder)
            with anyio.fail_after(20):
                await commit
        assert s.failed is None and s.stats.lock_waits >= 1
        with _lock_held(path) as holder:
            waiting = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(s.post_command, "during", "kill")
                with anyio.fail_after(20):
                    await waiting.wait()
                _release(holder)
        assert [c.kind for c in await s.commands_after(0)] == ["kill"]
        await s.write([UpsertExecution(ex("after"))])
        assert {r.id for r in await s.list_executions()} == {"before", "during", "after"}


@pytest.mark.parametrize("writer", ["process", "thread"])
async def test_a_lock_held_past_lock_timeout_fails_naming_the_lock(
    tmp_path: Path, writer: str
) -> None:
    """Past lock_timeout the waiting batch fails with StorageUnavailable naming the lock,
    the file and the bound; nothing of it is written."""
    path = tmp_path / "stuck.db"
    async with SQLiteStore(path, writer=writer, lock_timeout=0.3) as s:
        with _lock_held(path):
            with pytest.raises(StorageUnavailable, match="write lock") as info:
                await s.write([UpsertExecution(ex("late"))])
            assert str(path) in str(info.value) and "lock_timeout=0.3s" in str(info.value)
        assert await s.get_execution("late") is None
    with pytest.raises(ValueError, match="lock_timeout"):
        SQLiteStore(path, lock_timeout=0)


# -- schema versions that are not versions -------------------------------------------------------
@pytest.mark.parametrize("bad", ["two", -1, 0, 2.5, None])
async def test_a_bad_schema_version_is_refused_untouched(tmp_path: Path, bad: object) -> None:
    """A schema_version that is not a whole number from 1 up is DatabaseInvalid naming the
    file and the value, for writing and reading; nothing is written."""
    path = tmp_path / "odd.db"
    async with SQLiteStore(path) as s:
        await s.write([UpsertExecution(ex("e"))])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        if bad is None:
            conn.execute("INSERT INTO schema_version VALUES (1)")  # two rows: 1 and 3
        else:
            conn.execute("UPDATE schema_version SET version = ?", (bad,))
        conn.commit()
    before = _snapshot(path)
    for read_only in (False, True):
        with pytest.raises(DatabaseInvalid, match=r"not a schema version|several versions") as info:
            await SQLiteStore(path, read_only=read_only).open()
        assert str(path) in str(info.value)
        assert (repr(bad) if bad is not None else "several versions") in str(info.value)
    assert _snapshot(path) == before


# -- damage found at open ------------------------------------------------------------------------
async def _filled(path: Path, n: int = 200) -> None:
    async with SQLiteStore(path) as s:
        await s.write([UpsertExecution(ex(f"e{i:03}", data=b"x" * 2000)) for i in range(n)])


@pytest.mark.parametrize("cut", [100, 4096 * 3])
async def test_a_truncated_file_is_refused_at_open_untouched(tmp_path: Path, cut: int) -> None:
    """A file cut off the page grid, or cut by whole pages below the size its header gives,
    is refused at open (read-only too) before any read could rewrite it."""
    path = tmp_path / "cut.db"
    await _filled(path)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    before = _snapshot(path)
    for read_only in (True, False):
        with pytest.raises(DatabaseInvalid, match="is truncated") as info:
            await SQLiteStore(path, read_only=read_only).open()
        assert str(path) in str(info.value)
    assert _snapshot(path) == before


_CRASHER = """
import asyncio, sys
from actorflow.storage import ExecutionRow, SQLiteStore, UpsertExecution

async def main() -> None:
    store = SQLiteStore(sys.argv[1], writer="thread")
    await store.open()
    for i in range(int(sys.argv[2])):
        row = ExecutionRow(f"c{i}", "ns", "f", 1, "RUNNING", 1.0, 1.0, data=b"c" * 100)
        await store.write([UpsertExecution(row)])
    print("written", flush=True)
    sys.stdin.readline()  # killed while waiting here

asyncio.run(main())
"""


def _crash_after_writes(path: Path, n: int = 20) -> None:
    """A process writes ``n`` executions through a store and is SIGKILLed with it open."""
    child = subprocess.Popen([sys.executable, "-c", _CRASHER, str(path), str(n)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "written\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert Path(f"{path}-wal").stat().st_size > 32  # the commits are only in the WAL


async def test_the_wal_of_a_killed_writer_is_checked_and_recovered(tmp_path: Path) -> None:
    """After a SIGKILL the WAL left behind is recognised as the database's own, the file
    passes quick_check, and every committed write is there."""
    path = tmp_path / "crashed.db"
    await _filled(path, 10)
    _crash_after_writes(path)
    found = inspect_file(path)
    assert found.recovered and found.version == CURRENT_VERSION
    async with SQLiteStore(path) as s:
        ids = {r.id for r in await s.list_executions(limit=-1)}
    assert ids == {f"e{i:03}" for i in range(10)} | {f"c{i}" for i in range(20)}


async def test_a_crash_over_a_damaged_file_fails_quick_check_untouched(tmp_path: Path) -> None:
    """A file left by a crash whose pages are damaged is refused by quick_check at open."""
    path = tmp_path / "damaged.db"
    await _filled(path)
    _crash_after_writes(path, 1)
    data = bytearray(path.read_bytes())
    middle = (len(data) // 4096 // 2) * 4096
    data[middle : middle + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    wal = Path(f"{path}-wal")
    before, wal_before = _snapshot(path), wal.read_bytes()
    with pytest.raises(DatabaseInvalid, match="integrity check") as info:
        await SQLiteStore(path).open()
    assert str(path) in str(info.value)
    assert _snapshot(path)[:2] == before[:2] and wal.read_bytes() == wal_before


# -- a WAL from another database ---------------------------------------------------------------
async def _live_wal_of_another(path: Path) -> bytes:
    """The WAL of another actorflow database, copied while it is open (its commits in it)."""
    async with SQLiteStore(path, writer="thread") as other:
        await other.write([UpsertExecution(ex(f"other{i}")) for i in range(5)])
        return Path(f"{path}-wal").read_bytes()


async def test_a_wal_of_another_database_is_refused_untouched(tmp_path: Path) -> None:
    """Another database's WAL copied beside a cleanly closed database, or over the WAL of a
    crashed one, is refused at open; neither file is changed."""
    foreign = await _live_wal_of_another(tmp_path / "other.db")
    clean = tmp_path / "clean.db"
    await _filled(clean, 5)
    crashed = tmp_path / "crashed.db"
    await _filled(crashed, 5)
    _crash_after_writes(crashed)
    for path, message in ((clean, "closed cleanly"), (crashed, "not this database's")):
        wal = Path(f"{path}-wal")
        wal.write_bytes(foreign)
        before = _snapshot(path)
        for read_only in (True, False):
            with pytest.raises(DatabaseInvalid, match=message) as info:
                await SQLiteStore(path, read_only=read_only).open()
            assert str(path) in str(info.value)
        assert _snapshot(path)[:2] == before[:2] and wal.read_bytes() == foreign
        wal.unlink()  # as the message says: without it, the database opens as last checkpointed
        async with SQLiteStore(path) as s:
            assert {r.id for r in await s.list_executions()} >= {f"e{i:03}" for i in range(5)}
            assert await s.get_execution("other0") is None


async def test_a_wal_reset_after_the_last_record_is_accepted(tmp_path: Path) -> None:
    """A crash right after the WAL was reset (its record one generation behind) is not
    taken for a foreign WAL."""
    path = tmp_path / "reset.db"
    await _filled(path, 5)
    _crash_after_writes(path)
    sidecar = Path(f"{path}-walsalts")
    record = parse_sidecar(sidecar.read_bytes())
    wal = read_wal_header(str(path))
    assert record is not None and wal is not None and record.current == wal
    mask = 0xFFFFFFFF
    behind = ((wal[0] - 1) & mask, (wal[1] - 1) & mask, 12345)  # the reset not recorded yet
    sidecar.write_bytes(_encode_sidecar(Sidecar(1, behind, (0, 0, 0))))
    assert inspect_file(path).recovered
    two_behind = ((wal[0] - 2) & mask, (wal[1] - 2) & mask, 1)
    sidecar.write_bytes(_encode_sidecar(Sidecar(1, two_behind, (0, 0, 0))))
    with pytest.raises(DatabaseInvalid, match="not this database's"):
        inspect_file(path)


# -- read-only opens -----------------------------------------------------------------------------
async def test_a_read_only_store_writes_nothing_and_sees_later_writers(tmp_path: Path) -> None:
    """A read-only store starts no writer, creates no file beside the database, changes no
    byte or mtime, registers no owner; once a writer appears it reads its commits."""
    path = tmp_path / "ro.db"
    await _filled(path, 3)
    before = _snapshot(path)
    async with SQLiteStore(path, read_only=True) as r:
        assert r._proc is None and r._task is None and r._writer is None
        assert len(await r.list_executions()) == 3
        with pytest.raises(StorageUnavailable, match="read-only"):
            await r.register_owner("me", 10)
        with pytest.raises(StorageUnavailable, match="read-only"):
            await r.purge(older_than=1e12)
        assert _snapshot(path) == before
        async with SQLiteStore(path) as w:
            await w.write([UpsertExecution(ex("new"))])
            assert await r.get_execution("new") == ex("new")


_READER = """
import asyncio, os, sys
import anyio
from actorflow.storage import SQLiteStore

async def main() -> None:
    await anyio.to_thread.run_sync(lambda: None)  # imports done while they can be read
    if os.getuid() == 0:  # drop to nobody for good: root writes through any file mode
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    async with SQLiteStore(sys.argv[1], read_only=True) as store:
        print(len(await store.list_executions(limit=-1)))

asyncio.run(main())
"""


async def test_a_read_only_store_works_where_nothing_may_be_written(tmp_path: Path) -> None:
    """A read-only store opens and reads a database in a directory its process cannot write
    (as nobody when run as root), and leaves the directory as it was."""
    base = Path(tempfile.mkdtemp(prefix="af-rodir-"))
    try:
        base.chmod(0o755)
        path = base / "ro.db"
        await _filled(path, 7)
        path.chmod(0o644)
        if os.geteuid() != 0:
            base.chmod(0o555)
        before = _snapshot(path)
        # Not runuser: this interpreter may live where nobody cannot exec it (/root/...).
        done = subprocess.run([sys.executable, "-c", _READER, str(path)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert (done.returncode, done.stdout.strip()) == (0, "7"), done.stderr
        assert _snapshot(path) == before
    finally:
        base.chmod(0o755)
        shutil.rmtree(base)


# -- rows the runtime cannot decode ----------------------------------------------------------------
async def test_rows_with_undecodable_text_are_handed_over_not_raised(tmp_path: Path) -> None:
    """An execution whose text is not UTF-8 comes back from listing, recovery and claims
    (its bad bytes as surrogates), beside the healthy ones, instead of failing the read."""
    path = tmp_path / "mangled.db"
    async with SQLiteStore(path) as s:
        await s.write(
            [UpsertExecution(ex("bad", owner=None)), UpsertExecution(ex("ok", owner=None))]
        )
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE executions SET flow_id = CAST(x'66ff00' AS TEXT) WHERE id = 'bad'")
        conn.commit()
    async with SQLiteStore(path) as s:
        listed = {r.id: r.flow_id for r in await s.list_executions()}
        assert listed == {"bad": "f\udcff\x00", "ok": "f"}
        assert {r.id for r in await s.unfinished_executions(TERMINAL)} == {"bad", "ok"}
        assert {r.id for r in await s.claim_orphans("me", TERMINAL, 10)} == {"bad", "ok"}
        got = await s.get_execution("ok")
        assert got is not None and (got.owner, got.epoch) == ("me", 1)
        assert msgspec.structs.replace(got, epoch=0, lease_expiry=None) == ex("ok", owner="me")


# -- schema v2 to v3 -------------------------------------------------------------------------------
async def test_migrates_a_version_2_database_to_quarantine(tmp_path: Path) -> None:
    """A v2 database gains the quarantine table and keeps its rows."""
    path = tmp_path / "v2.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        create_v1(conn)
        conn.executescript(MIGRATIONS[1])
        conn.execute(
            "INSERT INTO executions (id, namespace, flow_id, flow_revision, state, created,"
            " updated, data) VALUES ('e', 'ns', 'f', 1, 'RUNNING', 1.0, 1.0, x'00')"
        )
    async with SQLiteStore(path) as s:
        assert [r.id for r in await s.list_executions()] == ["e"]
        assert await s.quarantined() == []
        await s.write([QuarantineExecution(QuarantineRow("e", "undecodable", 2.0))])
        assert [q.reason for q in await s.quarantined()] == ["undecodable"]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(CURRENT_VERSION,)]


# -- schema v7 to v8 -------------------------------------------------------------------------------
async def test_answers_of_a_version_6_database_keep_reading_after_v8(tmp_path: Path) -> None:
    """A database from before v8 keeps its answered commands, which name no error class;
    answers stored from v8 on keep the class they were given."""
    path = tmp_path / "v6.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        create_v1(conn)
        for v in range(1, 6):
            conn.executescript(MIGRATIONS[v])
        conn.execute(
            "INSERT INTO commands (execution_id, kind, payload, created, status, answer)"
            " VALUES ('e', 'kill', x'7b7d', 5.0, 'rejected', 'execution e is already SUCCESS')"
        )
    async with SQLiteStore(path) as s:
        old = await s.get_command(1)
        assert old is not None and (old.status, old.error) == ("rejected", None)
        assert old.answer == "execution e is already SUCCESS"
        cid = await s.post_command("e", "resume", b"{}")
        assert await s.answer_command(cid, "rejected", "resume of e: missing 'x'", "InputError")
        new = await s.get_command(cid)
        assert new is not None and (new.error, new.answer) == (
            "InputError",
            "resume of e: missing 'x'",
        )
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(CURRENT_VERSION,)]


# -- schema v7: queries that do not grow with the table -----------------------------------
def _v6_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        create_v1(conn)
        for v in range(1, 6):
            for stmt in _statements(MIGRATIONS[v]):
                conn.execute(stmt)
        rows = [
            (f"e{i}", f"ns{i % 3}", f"f{i % 5}", 1, "SUCCESS" if i % 4 else "PAUSED", float(i),
             float(i), float(i) if i % 4 else None, b"\x00")
            for i in range(200)
        ]  # fmt: skip
        conn.executemany(
            "INSERT INTO executions (id, namespace, flow_id, flow_revision, state, created,"
            " updated, ended, data) VALUES (?,?,?,?,?,?,?,?,?)",
            rows,
        )


async def test_listing_and_recovery_read_an_index_not_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After migrating a v6 database, every list_executions filter and the unfinished scan are
    planned on an index that yields their order: no full scan, no sort of every match."""
    from actorflow.storage import _sql

    path = tmp_path / "v6.db"
    _v6_database(path)
    seen: list[tuple[str, tuple[object, ...]]] = []
    real_fetch = _sql.fetch

    def spy(conn: sqlite3.Connection, sql: str, params: object = ()) -> object:
        if "FROM executions" in sql:
            seen.append((sql, tuple(params)))  # type: ignore[arg-type]
        return real_fetch(conn, sql, params)  # type: ignore[arg-type]

    monkeypatch.setattr(_sql, "fetch", spy)
    async with SQLiteStore(path) as s:
        assert len(await s.list_executions(states=["SUCCESS"], limit=1000)) == 150
        assert len(await s.list_executions(namespace="ns1", limit=1000)) == 67
        assert len(await s.list_executions(flow_id="f2", newest_first=False)) == 40
        assert len(await s.list_executions(namespace="ns1", flow_id="f2")) == 13
        assert len(await s.list_executions()) == 100
        unfinished = await s.unfinished_executions(TERMINAL)
        assert [r.id for r in unfinished] == [f"e{i}" for i in range(0, 200, 4)]
    assert len(seen) == 6
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(CURRENT_VERSION,)]
        for sql, params in seen:
            plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
            assert "USING" in plan and "SCAN executions |" not in f"{plan} |", (sql, plan)
            if "state NOT IN" not in sql:  # a page of a listing is read in index order
                assert "TEMP B-TREE" not in plan, (sql, plan)
