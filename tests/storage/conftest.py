from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actorflow.storage import MemoryStore, SQLiteStore, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "sqlite-thread", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every behavioural storage test runs against each backend (SQLite with its writer
    process, the default, and with its in-process writer thread)."""
    s: SQLiteStore | MemoryStore
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "s.db")
    elif request.param == "sqlite-thread":
        s = SQLiteStore(tmp_path / "s.db", writer="thread")
    else:
        s = MemoryStore()
    async with s:
        yield s
