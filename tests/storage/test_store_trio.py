"""The Store contract on trio: the SQLite store's calls go through anyio worker threads there
(aiosqlite and the writer process are asyncio's), the memory store is backend-neutral."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_store import *  # noqa: F403 - the same contract tests, collected again here

from actorflow.storage import MemoryStore, SQLiteStore, Store
from actorflow.storage._sqlite import ThreadConnection


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """SQLite (its default writer asked for: on trio it writes in a worker thread) and memory."""
    s: SQLiteStore | MemoryStore
    s = SQLiteStore(tmp_path / "s.db") if request.param == "sqlite" else MemoryStore()
    async with s:
        if isinstance(s, SQLiteStore):
            assert isinstance(s._writer, ThreadConnection) and s._proc is None
        yield s
