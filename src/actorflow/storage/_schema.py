"""SQLite schema and forward migrations. Each migration moves one version up."""

from __future__ import annotations

import sqlite3

CURRENT_VERSION = 2

_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    flow_id TEXT NOT NULL,
    flow_revision INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    ended REAL,
    parent_execution_id TEXT,
    data BLOB NOT NULL
);
CREATE INDEX ix_executions_state ON executions(state);
CREATE INDEX ix_executions_flow ON executions(namespace, flow_id, created);
CREATE INDEX ix_executions_created ON executions(created);
CREATE INDEX ix_executions_ended ON executions(ended);
CREATE TABLE task_runs (
    id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    ended REAL,
    parent_task_run_id TEXT,
    value TEXT,
    data BLOB NOT NULL
);
CREATE INDEX ix_task_runs_execution ON task_runs(execution_id, created);
CREATE INDEX ix_task_runs_state ON task_runs(state);
CREATE TABLE attempts (
    execution_id TEXT NOT NULL,
    task_run_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    state TEXT NOT NULL,
    start REAL NOT NULL,
    "end" REAL,
    error TEXT,
    PRIMARY KEY (task_run_id, number)
);
CREATE INDEX ix_attempts_execution ON attempts(execution_id);
CREATE TABLE state_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    task_run_id TEXT,
    state TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX ix_history_execution ON state_history(execution_id, seq);
CREATE TABLE metrics (
    execution_id TEXT NOT NULL,
    task_run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    tags TEXT NOT NULL,
    value REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (task_run_id, name, kind, tags)
);
CREATE INDEX ix_metrics_execution ON metrics(execution_id);
CREATE INDEX ix_metrics_name ON metrics(name);
CREATE TABLE logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    task_run_id TEXT,
    ts REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    trace_id TEXT,
    span_id TEXT
);
CREATE INDEX ix_logs_execution ON logs(execution_id, seq);
CREATE TABLE outputs (
    task_run_id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX ix_outputs_execution ON outputs(execution_id);
INSERT INTO schema_version (version) VALUES (1);
"""

# v2: several processes share a database: executions get an owner, runtimes heartbeat, and
# commands (kill, pause, resume) travel through the database to the owning process.
_V1_TO_V2 = """
ALTER TABLE executions ADD COLUMN owner TEXT;
CREATE INDEX ix_executions_owner ON executions(owner, state);
CREATE TABLE owners (owner TEXT PRIMARY KEY, heartbeat REAL NOT NULL, ttl REAL NOT NULL);
CREATE TABLE commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
UPDATE schema_version SET version = 2;
"""

MIGRATIONS: dict[int, str] = {1: _V1_TO_V2}


def create_v1(conn: sqlite3.Connection) -> None:
    """The first schema (also used by tests to build an old database)."""
    conn.executescript("BEGIN;" + _V1 + "COMMIT;")


def migrate(conn: sqlite3.Connection, version: int) -> int:
    """Bring a database from ``version`` (0 = empty) to :data:`CURRENT_VERSION`."""
    if version == 0:
        create_v1(conn)
        version = 1
    while version < CURRENT_VERSION:
        conn.executescript("BEGIN;" + MIGRATIONS[version] + "COMMIT;")
        version += 1
    return version
