"""Persistence: the store interface, SQLite, PostgreSQL and in-memory stores, internal file
storage."""

from __future__ import annotations

import os

from actorflow.storage._files import (
    CHUNK_SIZE,
    SCHEME,
    FileReader,
    FileScope,
    FileStorage,
    LocalDirectory,
    MemoryObjects,
    ObjectStore,
    Readable,
)
from actorflow.storage._future import AnyioFuture, call_soon, new_future, running_loop
from actorflow.storage._memory import MemoryStore
from actorflow.storage._postgres import PostgresStore, is_postgres_url
from actorflow.storage._postgres import redact as redact_url
from actorflow.storage._rows import (
    AppendHistory,
    AppendLog,
    AttemptRow,
    ClaimExecution,
    CommandRow,
    DeleteExecution,
    DeleteTaskRuns,
    ExecutionRow,
    FlowRow,
    HistoryRow,
    KVRow,
    LogRow,
    MetricRow,
    Op,
    OutputRow,
    PurgeProgress,
    QuarantineExecution,
    QuarantineRow,
    RejectedOp,
    ReleaseQuarantine,
    TaskRunRow,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertOutput,
    UpsertTaskRun,
)
from actorflow.storage._schema import CURRENT_VERSION
from actorflow.storage._sqlite import SQLiteStore, WriterStats
from actorflow.storage._store import CommandWakeup, Commit, Store


def open_store(
    url_or_path: str | os.PathLike[str],
    *,
    read_only: bool = False,
    lock_timeout: float = 30.0,
) -> Store:
    """A store for a path or ``sqlite://`` URL (SQLite), a ``postgresql://`` or
    ``postgres://`` URL (PostgreSQL, needs the ``postgres`` extra), or ``":memory:"`` /
    ``"memory://"``.

    The store is not opened yet: use it as ``async with`` (or call ``open``).
    ``lock_timeout``: seconds a write waits for a lock another process holds (and, on
    PostgreSQL, how long a call waits for a lost connection to come back).
    """
    text = os.fspath(url_or_path)
    if text in (":memory:", "memory://"):
        return MemoryStore()
    if is_postgres_url(text):
        return PostgresStore(text, read_only=read_only, lock_timeout=lock_timeout)
    return SQLiteStore(
        text.removeprefix("sqlite://"), read_only=read_only, lock_timeout=lock_timeout
    )


__all__ = [
    "CHUNK_SIZE",
    "CURRENT_VERSION",
    "SCHEME",
    "AnyioFuture",
    "AppendHistory",
    "AppendLog",
    "AttemptRow",
    "ClaimExecution",
    "CommandRow",
    "CommandWakeup",
    "Commit",
    "DeleteExecution",
    "DeleteTaskRuns",
    "ExecutionRow",
    "FileReader",
    "FileScope",
    "FileStorage",
    "FlowRow",
    "HistoryRow",
    "KVRow",
    "LocalDirectory",
    "LogRow",
    "MemoryObjects",
    "MemoryStore",
    "MetricRow",
    "ObjectStore",
    "Op",
    "OutputRow",
    "PostgresStore",
    "PurgeProgress",
    "QuarantineExecution",
    "QuarantineRow",
    "Readable",
    "RejectedOp",
    "ReleaseQuarantine",
    "SQLiteStore",
    "Store",
    "TaskRunRow",
    "UpsertAttempt",
    "UpsertExecution",
    "UpsertMetric",
    "UpsertOutput",
    "UpsertTaskRun",
    "WriterStats",
    "call_soon",
    "is_postgres_url",
    "new_future",
    "open_store",
    "redact_url",
    "running_loop",
]
