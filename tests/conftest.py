"""Fixtures for every test folder: asyncio by default (the kernel tests run on trio too), a
runtime in memory with a fake clock, a runtime on a SQLite file, a fresh PostgreSQL database
(``pg_dsn``; see ``_support/postgres.py``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from _support import postgres
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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[postgres.Cluster]:
    """One PostgreSQL server for the session: skipped without one, failed with CI=true."""
    try:
        cluster = postgres.start()
    except postgres.Unavailable as exc:
        reason = f"no PostgreSQL: {exc}"
        print(reason)
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {reason}")
        pytest.skip(reason)
    yield cluster
    cluster.stop()


@pytest.fixture
async def pg_dsn(pg_cluster: postgres.Cluster) -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    name = await postgres.create_database(pg_cluster)
    yield pg_cluster.dsn(name)
    await postgres.drop_database(pg_cluster, name)
