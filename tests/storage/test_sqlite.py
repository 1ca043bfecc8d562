"""SQLite specifics: durability, bad files, schema versions, write failures."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actorflow import DatabaseInvalid, SchemaTooNew, StorageError, StorageUnavailable
from actorflow.storage import (
    CURRENT_VERSION,
    ExecutionRow,
    MemoryStore,
    SQLiteStore,
    UpsertExecution,
)

pytestmark = pytest.mark.anyio
FIXTURES = Path(__file__).with_name("fixtures")


def row(i: str) -> ExecutionRow:
    return ExecutionRow(i, "ns", "f", 1, "RUNNING", 1.0, 1.0, data=b"x")


async def test_a_commit_is_durable_for_a_new_connection(tmp_path: Path) -> None:
    """After awaiting a write's commit, a fresh store on the same file reads it."""
    path = tmp_path / "d.db"
    async with SQLiteStore(path) as s:
        await s.write([UpsertExecution(row("e1"))])
        async with SQLiteStore(path) as other:
            assert (await other.get_execution("e1")) == row("e1")


def _snapshot(path: Path) -> tuple[bytes, float]:
    return path.read_bytes(), path.stat().st_mtime


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (b"hello, I am a text file\n", DatabaseInvalid, "not an SQLite database"),
        (b"SQLite format 3\x00" + b"\xff" * 200, DatabaseInvalid, "corrupt or unreadable"),
    ],
)
async def test_bad_files_are_refused_untouched(tmp_path: Path, content: bytes,
                                               error: type[Exception], message: str) -> None:  # fmt: skip
    """A text file or a corrupt database is refused with a clear error and left as it was."""
    path = tmp_path / "bad.db"
    path.write_bytes(content)
    before = _snapshot(path)
    with pytest.raises(error, match=message):
        await SQLiteStore(path).open()
    assert _snapshot(path) == before


async def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    """An SQLite file of another program is not taken over."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    before = _snapshot(path)
    with pytest.raises(DatabaseInvalid, match="not an actorflow one"):
        await SQLiteStore(path).open()
    assert _snapshot(path) == before


async def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    """A database from a newer actorflow raises SchemaTooNew and is not modified."""
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (CURRENT_VERSION + 1,))
    before = _snapshot(path)
    with pytest.raises(SchemaTooNew, match=f"schema version {CURRENT_VERSION + 1}"):
        await SQLiteStore(path).open()
    assert _snapshot(path) == before


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    """A database path in a directory that does not exist names the directory."""
    with pytest.raises(StorageError, match="does not exist"):
        await SQLiteStore(tmp_path / "nope" / "x.db").open()


async def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    """A v1 database (fixture) is migrated forward and keeps its rows."""
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((FIXTURES / "schema_v1.sql").read_text())
    async with SQLiteStore(path) as s:
        assert (await s.get_execution("e1")).state == "SUCCESS"  # type: ignore[union-attr]
        assert [lg.message for lg in await s.logs("e1")] == ["hello from v1"]
        await s.register_owner("me", 10)
        claimed = await s.claim_orphans("me", ["SUCCESS"], 10)
        assert [r.id for r in claimed] == ["e2"]
        assert await s.post_command("e2", "kill") == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == CURRENT_VERSION


async def test_injected_write_failure_surfaces(tmp_path: Path) -> None:
    """A failing batch fails its commit with StorageUnavailable; later writes are refused."""
    async with SQLiteStore(tmp_path / "f.db") as s:
        await s.write([UpsertExecution(row("kept"))])
        s.fail_next = OSError("disk full")
        with pytest.raises(StorageUnavailable, match="disk full"):
            await s.write([UpsertExecution(row("lost"))])
        assert s.failed is not None
        with pytest.raises(StorageUnavailable):
            s.write([UpsertExecution(row("later"))])
        assert await s.get_execution("kept") is not None


async def test_memory_store_failure_injection() -> None:
    """The memory store reports an injected failure the same way."""
    s = MemoryStore()
    s.fail_next = OSError("boom")
    with pytest.raises(StorageUnavailable):
        await s.write([UpsertExecution(row("x"))])
    with pytest.raises(StorageUnavailable):
        s.write([UpsertExecution(row("y"))])


async def test_a_database_that_refuses_writes_is_a_clear_error(tmp_path: Path) -> None:
    """When SQLite refuses writes (read-only), commits fail with StorageUnavailable."""
    path = tmp_path / "ro.db"
    async with SQLiteStore(path) as s:
        await s.write([UpsertExecution(row("a"))])
        # Root ignores file modes, so make SQLite itself refuse writes on the writer connection.
        await s._call(lambda conn: conn.execute("PRAGMA query_only=ON"))
        with pytest.raises(StorageUnavailable, match=r"readonly|read-only|query_only"):
            await s.write([UpsertExecution(row("b"))])
        assert await s.get_execution("a") is not None
        assert await s.get_execution("b") is None
