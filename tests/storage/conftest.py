from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from _support import postgres
from actorflow.storage import MemoryStore, PostgresStore, SQLiteStore, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "sqlite-thread", "memory", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every behavioural storage test runs against each backend (SQLite with its writer
    process, the default, and with its in-process writer thread; a real PostgreSQL)."""
    s: SQLiteStore | MemoryStore | PostgresStore
    database = None
    if request.param == "postgres":
        cluster: postgres.Cluster = request.getfixturevalue("pg_cluster")  # sync: allowed here
        database = await postgres.create_database(cluster)
        s = PostgresStore(cluster.dsn(database))
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "s.db")
    elif request.param == "sqlite-thread":
        s = SQLiteStore(tmp_path / "s.db", writer="thread")
    else:
        s = MemoryStore()
    async with s:
        yield s
    if database is not None:
        await postgres.drop_database(cluster, database)
