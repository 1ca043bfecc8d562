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

__all__ = ["BIN", "ENV_DSN", "Cluster", "Unavailable", "create_database", "drop_database", "start"]
