"""SQLite schema and forward migrations. Each migration moves one version up."""

from __future__ import annotations

import sqlite3

from actorflow._errors import DatabaseInvalid, SchemaTooNew
from actorflow.storage._writer_proc import with_lock_retry

CURRENT_VERSION = 12

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
INSERT INTO schema_version (version) VALUES (1)
"""

# v2: several processes share a database: executions get an owner, runtimes heartbeat, and
# commands (kill, pause, resume) travel through the database to the owning process.
_V1_TO_V2 = """
ALTER TABLE executions ADD COLUMN owner TEXT;
CREATE INDEX ix_executions_owner ON executions(owner, state);
CREATE INDEX IF NOT EXISTS ix_executions_flow_id ON executions(flow_id, created);
CREATE TABLE owners (owner TEXT PRIMARY KEY, heartbeat REAL NOT NULL, ttl REAL NOT NULL);
CREATE TABLE commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_commands_execution ON commands(execution_id);
UPDATE schema_version SET version = 2
"""

# v3: triggers. One row per fire (a schedule's tick, a flow trigger's source execution),
# claimed by INSERT: the primary key makes each fire happen once, across restarts and servers.
_V2_TO_V3 = """
CREATE TABLE trigger_fires (
    trigger TEXT NOT NULL,
    fire TEXT NOT NULL,
    tick REAL NOT NULL,
    execution_id TEXT,
    owner TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (trigger, fire)
);
CREATE INDEX ix_trigger_fires_tick ON trigger_fires(trigger, tick);
UPDATE schema_version SET version = 3
"""

# v4: deployed flows, by revision, so that any worker can load what it is asked to run.
_V3_TO_V4 = """
CREATE TABLE flows (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (namespace, id, revision)
);
UPDATE schema_version SET version = 4
"""

# v5: an execution whose rows the runtime cannot decode is set aside (kept, listed, skipped
# by recovery and claims) instead of failing every start.
_V4_TO_V5 = """
CREATE TABLE quarantine (
    execution_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    ts REAL NOT NULL
);
UPDATE schema_version SET version = 5
"""

# -- v6: commands are consumed once (a status and an answer) and carry their target -------
# Commands stored before v6 have no status: they were applied, or not, long ago; they are
# marked rejected so that no runtime replays them.
_V5_TO_V6 = """
ALTER TABLE commands ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE commands ADD COLUMN answer TEXT;
ALTER TABLE commands ADD COLUMN target BLOB NOT NULL DEFAULT x'';
ALTER TABLE commands ADD COLUMN answered REAL;
UPDATE commands SET status = 'rejected', answered = created,
    answer = 'posted before this database recorded command answers: never replayed';
CREATE INDEX ix_commands_pending ON commands(execution_id) WHERE status = 'pending';
UPDATE schema_version SET version = 6
"""
# -- end of v6 ------------------------------------------------------------------------------

# -- v7: a work queue with leases and fencing ------------------------------------------------
# A worker claims an unfinished execution by setting owner, lease_expiry (renewed by its
# heartbeat) and epoch + 1 (the fencing token every later write of its state is checked
# against). ``waiting`` says why no worker runs it (its flow loads nowhere yet); ``slot`` that
# it holds one of its flow's concurrency slots (taken atomically, given back by its end,
# whichever process runs it). The indexes cover the claim, fence and slot queries: columns
# added by ALTER come after the snapshot blob, which a table read would walk. Rows written
# before have no lease: they are claimable, as an execution of a dead owner was.
_V6_TO_V7 = """
ALTER TABLE executions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN lease_expiry REAL;
ALTER TABLE executions ADD COLUMN waiting TEXT;
ALTER TABLE executions ADD COLUMN slot INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS ix_executions_queue ON executions(created, id, lease_expiry, waiting)
    WHERE ended IS NULL;
CREATE INDEX IF NOT EXISTS ix_executions_fence ON executions(id, owner, epoch);
CREATE INDEX IF NOT EXISTS ix_executions_slot ON executions(namespace, flow_id, slot, state,
    created, id) WHERE ended IS NULL;
UPDATE schema_version SET version = 7
"""
# -- end of v7 ------------------------------------------------------------------------------

# -- v8: a command's answer says which error refused it -------------------------------------
# ``error`` is the class name (InputError, IllegalOperation, ExecutionNotFound) the sender
# raises again, so an answer from another process is the same exception an in-process call
# raises. Commands answered before v8 have none: their senders read IllegalOperation.
_V7_TO_V8 = """
ALTER TABLE commands ADD COLUMN error TEXT;
UPDATE schema_version SET version = 8
"""
# -- end of v8 ------------------------------------------------------------------------------

# -- v9: a key-value store per namespace (Kestra's KV store; state.* and kv.* tasks) ----------
# Self-contained: one new table, nothing else changes.
_V8_TO_V9 = """
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated REAL NOT NULL,
    expires REAL,
    PRIMARY KEY (namespace, key)
);
UPDATE schema_version SET version = 9
"""
# -- end of v9 ------------------------------------------------------------------------------

# -- v10: listing and recovery cost what they return, not the size of the table ------------
# Each list_executions filter gets an index that also yields its order (created, id), so a
# page is read off the index instead of sorting every match. Recover and claims ask for
# ``ended IS NULL`` (only terminal states set ``ended``), which ix_executions_ended answers
# with the unfinished rows alone. The indexes these supersede are dropped: every index is
# written on each execution upsert.
_V9_TO_V10 = """
DROP INDEX IF EXISTS ix_executions_state;
DROP INDEX IF EXISTS ix_executions_flow;
DROP INDEX IF EXISTS ix_executions_flow_id;
DROP INDEX IF EXISTS ix_executions_created;
CREATE INDEX IF NOT EXISTS ix_executions_state_created ON executions(state, created, id);
CREATE INDEX IF NOT EXISTS ix_executions_ns_created ON executions(namespace, created, id);
CREATE INDEX IF NOT EXISTS ix_executions_ns_flow_created
    ON executions(namespace, flow_id, created, id);
CREATE INDEX IF NOT EXISTS ix_executions_flow_created ON executions(flow_id, created, id);
CREATE INDEX IF NOT EXISTS ix_executions_created_id ON executions(created, id);
UPDATE schema_version SET version = 10
"""
# -- end of v10 ------------------------------------------------------------------------------


# -- v11: a namespace and a state together, read off one index --------------------------------
# The web UI's filters combine them; with one index per column, a namespace+state page with
# few matches walked every row of the namespace (100,000 stored: 485 ms p99 for an empty one).
_V10_TO_V11 = """
CREATE INDEX IF NOT EXISTS ix_executions_ns_state_created
    ON executions(namespace, state, created, id);
UPDATE schema_version SET version = 11
"""
# -- end of v11 ------------------------------------------------------------------------------


# -- v12: fewer B-tree writes per task run --------------------------------------------------
# No query reads task runs by state alone: ix_task_runs_state was only written (each task
# run's insert and every state change). AUTOINCREMENT made each appended history or log row
# read and rewrite its sqlite_sequence row as well; a plain INTEGER PRIMARY KEY still counts
# up from the largest seq present, which is all ``ORDER BY seq`` needs (seq is never shown,
# and a reused number can only follow every row still stored). The rows are copied with
# their seq, so the order of what is stored is kept.
_V11_TO_V12 = """
DROP INDEX IF EXISTS ix_task_runs_state;
CREATE TABLE state_history_v12 (
    seq INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    task_run_id TEXT,
    state TEXT NOT NULL,
    ts REAL NOT NULL
);
INSERT INTO state_history_v12 (seq, execution_id, task_run_id, state, ts)
    SELECT seq, execution_id, task_run_id, state, ts FROM state_history;
DROP TABLE state_history;
ALTER TABLE state_history_v12 RENAME TO state_history;
CREATE INDEX ix_history_execution ON state_history(execution_id, seq);
CREATE TABLE logs_v12 (
    seq INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL,
    task_run_id TEXT,
    ts REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    trace_id TEXT,
    span_id TEXT
);
INSERT INTO logs_v12 (seq, execution_id, task_run_id, ts, level, message, trace_id, span_id)
    SELECT seq, execution_id, task_run_id, ts, level, message, trace_id, span_id FROM logs;
DROP TABLE logs;
ALTER TABLE logs_v12 RENAME TO logs;
CREATE INDEX ix_logs_execution ON logs(execution_id, seq);
UPDATE schema_version SET version = 12
"""
# -- end of v12 ------------------------------------------------------------------------------


# MIGRATIONS[v] takes a database from version v to v + 1.
MIGRATIONS: dict[int, str] = {
    1: _V1_TO_V2, 2: _V2_TO_V3, 3: _V3_TO_V4, 4: _V4_TO_V5, 5: _V5_TO_V6, 6: _V6_TO_V7,
    7: _V7_TO_V8, 8: _V8_TO_V9, 9: _V9_TO_V10, 10: _V10_TO_V11, 11: _V11_TO_V12,
}  # fmt: skip


def _statements(script: str) -> list[str]:
    # The DDL has no ';' inside literals, so a plain split is exact.
    return [s.strip() for s in script.split(";") if s.strip()]


def create_v1(conn: sqlite3.Connection) -> None:
    """The first schema in its own transaction (tests use it to build an old database)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in _statements(_V1):
            conn.execute(stmt)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def read_version(conn: sqlite3.Connection, where: str) -> int:
    """Schema version of an open database (0 if it has no tables); refuses foreign ones."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    if not names:
        return 0
    if "schema_version" not in names:
        raise DatabaseInvalid(
            f"{where}: an SQLite database but not an actorflow one (no schema_version table);"
            " left untouched"
        )
    values = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
    if not values:
        raise DatabaseInvalid(f"{where}: its schema_version table is empty; left untouched")
    if len(values) > 1:
        raise DatabaseInvalid(
            f"{where}: its schema_version table holds several versions"
            f" ({', '.join(sorted(map(repr, values)))}); left untouched"
        )
    (version,) = values
    # Anything but a whole number from 1 up would send the migrations down the wrong path
    # (0 or -1 re-create tables that exist): refuse it before anything is written.
    if type(version) is not int or version < 1:
        raise DatabaseInvalid(
            f"{where}: schema_version holds {version!r}, not a schema version (a whole number"
            f" from 1 to {CURRENT_VERSION}); left untouched"
        )
    if version > CURRENT_VERSION:
        raise SchemaTooNew(
            f"{where}: schema version {version} is newer than this actorflow understands"
            f" ({CURRENT_VERSION}); upgrade actorflow. The file was not modified."
        )
    return version


def migrate(conn: sqlite3.Connection, where: str, lock_timeout: float = 30.0) -> int:
    """Bring a database to :data:`CURRENT_VERSION` in ONE transaction; returns the old version.

    The version is read again under the write lock, so two processes opening the same new
    file do not both create the schema. Waits up to ``lock_timeout`` for that lock.
    """
    return with_lock_retry(lambda: _migrate(conn, where), where=where, lock_timeout=lock_timeout)


def _migrate(conn: sqlite3.Connection, where: str) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = version = read_version(conn, where)
        if version == CURRENT_VERSION:
            conn.execute("COMMIT")
            return old
        steps = [_V1] if version == 0 else []
        version = max(version, 1)
        steps.extend(MIGRATIONS[v] for v in range(version, CURRENT_VERSION))
        for script in steps:
            for stmt in _statements(script):
                conn.execute(stmt)
        conn.execute("COMMIT")
        return old
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
