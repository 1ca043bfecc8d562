from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actorflow.storage import MemoryStore, SQLiteStore, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every behavioural storage test runs against each backend."""
    s: SQLiteStore | MemoryStore = (
        SQLiteStore(tmp_path / "s.db") if request.param == "sqlite" else MemoryStore()
    )
    async with s:
        yield s
