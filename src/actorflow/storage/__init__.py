"""Persistence: the store interface, SQLite and in-memory stores, internal file storage."""

from __future__ import annotations

import os

from actorflow.storage._files import FileStorage
from actorflow.storage._memory import MemoryStore
from actorflow.storage._rows import (
    AppendHistory,
    AppendLog,
    AttemptRow,
    CommandRow,
    DeleteExecution,
    DeleteTaskRuns,
    ExecutionRow,
    HistoryRow,
    LogRow,
    MetricRow,
    Op,
    OutputRow,
    TaskRunRow,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertOutput,
    UpsertTaskRun,
)
from actorflow.storage._schema import CURRENT_VERSION
from actorflow.storage._sqlite import SQLiteStore
from actorflow.storage._store import Commit, Store


def open_store(url_or_path: str | os.PathLike[str]) -> Store:
    """A store for a path (SQLite) or ``":memory:"`` / ``"memory://"`` (in memory)."""
    text = str(url_or_path)
    if text in (":memory:", "memory://"):
        return MemoryStore()
    return SQLiteStore(text.removeprefix("sqlite://"))


__all__ = [
    "CURRENT_VERSION",
    "AppendHistory",
    "AppendLog",
    "AttemptRow",
    "CommandRow",
    "Commit",
    "DeleteExecution",
    "DeleteTaskRuns",
    "ExecutionRow",
    "FileStorage",
    "HistoryRow",
    "LogRow",
    "MemoryStore",
    "MetricRow",
    "Op",
    "OutputRow",
    "SQLiteStore",
    "Store",
    "TaskRunRow",
    "UpsertAttempt",
    "UpsertExecution",
    "UpsertMetric",
    "UpsertOutput",
    "UpsertTaskRun",
    "open_store",
]
