"""A real PostgreSQL for tests: the throwaway cluster of ``benchmarks/_pgcluster.py`` (which
the benchmarks use too), under the names the tests have always imported."""

from __future__ import annotations

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
