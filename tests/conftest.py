"""Fixtures for every test folder: asyncio by default (the kernel tests run on trio too), a
runtime in memory with a fake clock, a runtime on a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actorflow.runtime import FakeClock, Runtime


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def rt(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Runtime]:
    """A runtime on the in-memory store with a fake clock."""
    async with Runtime.open(":memory:", clock=clock, files=tmp_path / "files") as runtime:
        yield runtime


@pytest.fixture
async def rt_db(tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime on a real SQLite file."""
    async with Runtime.open(tmp_path / "rt.db") as runtime:
        yield runtime
