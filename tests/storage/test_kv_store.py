"""The namespace key-value store (schema v7): set, read back, overwrite, expire, delete,
list; the same contract on every backend, and kept across a reopen on SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actorflow.storage import MemoryStore, SQLiteStore, Store
from actorflow.storage._schema import CURRENT_VERSION, MIGRATIONS, _statements, create_v1

pytestmark = pytest.mark.anyio


async def test_set_get_overwrite_delete(store: Store) -> None:
    """A set value reads back at once; a second set replaces it; namespaces are apart;
    delete says whether there was an entry."""
    assert await store.kv_get("ns", "k") is None
    await store.kv_set("ns", "k", '{"a": 1}')
    row = await store.kv_get("ns", "k")
    assert row is not None and (row.namespace, row.key, row.value) == ("ns", "k", '{"a": 1}')
    await store.kv_set("ns", "k", '"two"')
    again = await store.kv_get("ns", "k")
    assert again is not None and again.value == '"two"'
    assert await store.kv_get("other", "k") is None
    await store.kv_set("ns", "b", "1")
    assert [r.key for r in await store.kv_keys("ns")] == ["b", "k"]
    assert await store.kv_delete("ns", "k") is True
    assert await store.kv_delete("ns", "k") is False
    assert await store.kv_get("ns", "k") is None
    assert [r.key for r in await store.kv_keys("ns")] == ["b"]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_entries_expire(tmp_path: Path, kind: str) -> None:
    """An entry past its expiry reads as absent, is not listed and deletes as missing."""
    now = [1000.0]
    s: SQLiteStore | MemoryStore = (
        SQLiteStore(tmp_path / "s.db", clock=lambda: now[0])
        if kind == "sqlite"
        else MemoryStore(clock=lambda: now[0])
    )
    async with s:
        await s.kv_set("ns", "k", "1", ttl=10.0)
        assert await s.kv_get("ns", "k") is not None
        now[0] = 1010.0
        assert await s.kv_get("ns", "k") is None
        assert await s.kv_keys("ns") == []
        assert await s.kv_delete("ns", "k") is False


async def test_entries_survive_a_reopen(tmp_path: Path) -> None:
    """Values are kept across a reopen of the SQLite store."""
    db = tmp_path / "s.db"
    async with SQLiteStore(db) as s:
        await s.kv_set("ns", "k", '"kept"')
    async with SQLiteStore(db) as s:
        row = await s.kv_get("ns", "k")
        assert row is not None and row.value == '"kept"'


async def test_a_version_6_database_gains_the_table(tmp_path: Path) -> None:
    """Opening a version-6 database migrates it to the current version with an empty kv table."""
    db = tmp_path / "v6.db"
    with sqlite3.connect(db) as conn:
        create_v1(conn)
        for version in range(1, 6):
            for stmt in _statements(MIGRATIONS[version]):
                conn.execute(stmt)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(6,)]
    conn.close()
    async with SQLiteStore(db) as s:
        assert await s.kv_keys("ns") == []
        await s.kv_set("ns", "k", "1")
        assert (await s.kv_get("ns", "k")) is not None
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(CURRENT_VERSION,)]
    conn.close()
