"""SQLite specifics: group commit, durability, bad files, schema versions, write failures."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from storage_helpers import TERMINAL, ex, tr

from actorflow import DatabaseInvalid, SchemaTooNew, StorageError, StorageUnavailable
from actorflow.storage import (
    CURRENT_VERSION,
    MemoryStore,
    SQLiteStore,
    UpsertExecution,
    UpsertTaskRun,
    open_store,
)
from actorflow.storage._schema import MIGRATIONS, _statements, create_v1

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


async def test_a_foreign_key_violation_fails_the_store(tmp_path: Path) -> None:
    """A task run of an execution that does not exist fails its batch loudly."""
    async with SQLiteStore(tmp_path / "fk.db") as s:
        with pytest.raises(StorageUnavailable, match="FOREIGN KEY"):
            await s.write([UpsertTaskRun(tr("t", "no-such-execution"))])
        assert s.failed is not None


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
