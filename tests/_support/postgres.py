"""A real PostgreSQL for tests: the throwaway cluster of ``benchmarks/_pgcluster.py`` (which
the benchmarks use too), under the names the tests have always imported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from benchmarks._pgcluster import (
    BIN,
    ENV_DSN,
    Cluster,
    Unavailable,
    create_database,
    drop_database,
    start,
)

__all__ = [
    "BIN",
    "ENV_DSN",
    "Cluster",
    "Unavailable",
    "create_database",
    "drop_database",
    "kill_backends",
    "start",
    "store_until",
]


async def kill_backends(dsn: str) -> int:
    """Terminate every session the stores opened on this database (application_name
    actorflow); returns how many."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name = 'actorflow'"
            )
        )
    finally:
        await conn.close()


async def store_until(store: Any, check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds, woken by the PostgreSQL store's ``on_change`` hook (each
    change of its ``lost`` or ``paused``) instead of polling."""
    while not check():
        changed = anyio.Event()
        store.on_change = changed.set
        try:
            if not check():
                await changed.wait()
        finally:
            store.on_change = None
