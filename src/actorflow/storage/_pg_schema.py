"""PostgreSQL schema: the SQLite schema at version 6 in PostgreSQL types, and its migrations.

The versions are SQLite's (a ``schema_version`` table, one row): a new PostgreSQL database
is created at :data:`PG_VERSION` in one step; each later version adds one entry to
:data:`MIGRATIONS`. Differences from SQLite, each for a reason:

* Rows read "in insertion order" (task runs, attempts, metrics, outputs) carry a ``seq``
  identity column: PostgreSQL has no rowid, and an upsert keeps the ``seq`` as SQLite's
  upsert keeps the rowid.
* Text is ``COLLATE "C"``: orderings by id compare bytes as SQLite does, whatever the
  cluster's locale (and C comparisons are the cheapest).
* A NaN in a NOT NULL number column is refused by a ``CHECK`` (named ``<table>_<col>_nan``):
  SQLite stores a NaN as NULL, so there it breaks the NOT NULL; PostgreSQL would keep it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actorflow._errors import DatabaseInvalid, SchemaTooNew
from actorflow.storage._schema import _V9_TO_V10, _V10_TO_V11, CURRENT_VERSION

if TYPE_CHECKING:
    import asyncpg

PG_VERSION = 6
# Any constant: the key of the advisory lock under which a database is created or migrated,
# so that two processes opening one new database do not both create the schema.
_MIGRATION_LOCK = 0x6163746F72666C6F  # "actorflo"

_T = 'text COLLATE "C"'


def _num(table: str, col: str) -> str:
    return f"double precision NOT NULL CONSTRAINT {table}_{col}_nan CHECK ({col} <> 'NaN')"


_V6 = f"""
CREATE TABLE schema_version (version integer NOT NULL);
CREATE TABLE executions (
    id {_T} PRIMARY KEY,
    namespace {_T} NOT NULL,
    flow_id {_T} NOT NULL,
    flow_revision bigint NOT NULL,
    state {_T} NOT NULL,
    created {_num("executions", "created")},
    updated {_num("executions", "updated")},
    ended double precision,
    parent_execution_id {_T},
    data bytea NOT NULL,
    owner {_T}
);
CREATE INDEX ix_executions_state ON executions(state);
CREATE INDEX ix_executions_flow ON executions(namespace, flow_id, created);
CREATE INDEX ix_executions_created ON executions(created);
CREATE INDEX ix_executions_ended ON executions(ended);
CREATE INDEX ix_executions_owner ON executions(owner, state);
CREATE INDEX ix_executions_flow_id ON executions(flow_id, created);
CREATE TABLE task_runs (
    id {_T} PRIMARY KEY,
    execution_id {_T} NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    task_id {_T} NOT NULL,
    state {_T} NOT NULL,
    created {_num("task_runs", "created")},
    updated {_num("task_runs", "updated")},
    ended double precision,
    parent_task_run_id {_T},
    value {_T},
    data bytea NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX ix_task_runs_execution ON task_runs(execution_id, created, seq);
CREATE INDEX ix_task_runs_state ON task_runs(state);
CREATE TABLE attempts (
    execution_id {_T} NOT NULL,
    task_run_id {_T} NOT NULL,
    number bigint NOT NULL,
    state {_T} NOT NULL,
    start {_num("attempts", "start")},
    "end" double precision,
    error {_T},
    seq bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (task_run_id, number)
);
CREATE INDEX ix_attempts_execution ON attempts(execution_id, seq);
CREATE TABLE state_history (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id {_T} NOT NULL,
    task_run_id {_T},
    state {_T} NOT NULL,
    ts {_num("state_history", "ts")}
);
CREATE INDEX ix_history_execution ON state_history(execution_id, seq);
CREATE TABLE metrics (
    execution_id {_T} NOT NULL,
    task_run_id {_T} NOT NULL,
    name {_T} NOT NULL,
    kind {_T} NOT NULL,
    tags {_T} NOT NULL,
    value {_num("metrics", "value")},
    count bigint NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (task_run_id, name, kind, tags)
);
CREATE INDEX ix_metrics_execution ON metrics(execution_id, seq);
CREATE INDEX ix_metrics_name ON metrics(name);
CREATE TABLE logs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id {_T} NOT NULL,
    task_run_id {_T},
    ts {_num("logs", "ts")},
    level {_T} NOT NULL,
    message {_T} NOT NULL,
    trace_id {_T},
    span_id {_T}
);
CREATE INDEX ix_logs_execution ON logs(execution_id, seq);
CREATE TABLE outputs (
    task_run_id {_T} PRIMARY KEY,
    execution_id {_T} NOT NULL,
    data bytea NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX ix_outputs_execution ON outputs(execution_id, seq);
CREATE TABLE owners (
    owner {_T} PRIMARY KEY,
    heartbeat {_num("owners", "heartbeat")},
    ttl {_num("owners", "ttl")}
);
CREATE TABLE commands (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id {_T} NOT NULL,
    kind {_T} NOT NULL,
    payload bytea NOT NULL,
    created {_num("commands", "created")},
    status {_T} NOT NULL DEFAULT 'pending',
    answer {_T},
    target bytea NOT NULL DEFAULT '\\x'::bytea,
    answered double precision
);
CREATE INDEX ix_commands_execution ON commands(execution_id);
CREATE INDEX ix_commands_pending ON commands(execution_id) WHERE status = 'pending';
CREATE TABLE trigger_fires (
    trigger {_T} NOT NULL,
    fire {_T} NOT NULL,
    tick {_num("trigger_fires", "tick")},
    execution_id {_T},
    owner {_T},
    created {_num("trigger_fires", "created")},
    PRIMARY KEY (trigger, fire)
);
CREATE INDEX ix_trigger_fires_tick ON trigger_fires(trigger, tick);
CREATE TABLE flows (
    namespace {_T} NOT NULL,
    id {_T} NOT NULL,
    revision bigint NOT NULL,
    source {_T} NOT NULL,
    created {_num("flows", "created")},
    PRIMARY KEY (namespace, id, revision)
);
CREATE TABLE quarantine (
    execution_id {_T} PRIMARY KEY,
    reason {_T} NOT NULL,
    ts {_num("quarantine", "ts")}
);
INSERT INTO schema_version (version) VALUES (6)
"""

# MIGRATIONS[v] takes a PostgreSQL database from version v to v + 1 (SQLite's numbering).
MIGRATIONS: dict[int, str] = {
    # v7: SQLite's v7, the work queue (see _schema.py): a lease (owner, epoch, expiry) per
    # execution, why it waits, whether it holds a flow-concurrency slot. Partial indexes as
    # SQLite's; the fence check locks the rows it reads (see _postgres), so it needs the row
    # anyway and its index is only there for the schema to mirror SQLite's.
    6: f"""
ALTER TABLE executions ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS lease_expiry double precision;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS waiting {_T};
ALTER TABLE executions ADD COLUMN IF NOT EXISTS slot integer NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS ix_executions_queue ON executions(created, id, lease_expiry, waiting)
    WHERE ended IS NULL;
CREATE INDEX IF NOT EXISTS ix_executions_fence ON executions(id, owner, epoch);
CREATE INDEX IF NOT EXISTS ix_executions_slot
    ON executions(namespace, flow_id, slot, state, created, id) WHERE ended IS NULL;
UPDATE schema_version SET version = 7
""",
    # v8: a command's answer says which error class refused it.
    7: f"ALTER TABLE commands ADD COLUMN error {_T}; UPDATE schema_version SET version = 8",
    # v9: a key-value store per namespace (kv.* and state.* tasks).
    8: f"""
CREATE TABLE IF NOT EXISTS kv (
    namespace {_T} NOT NULL,
    key {_T} NOT NULL,
    value {_T} NOT NULL,
    updated double precision NOT NULL,
    expires double precision,
    PRIMARY KEY (namespace, key)
);
UPDATE schema_version SET version = 9
""",
    # v10: each listing filter gets an index that also yields its order (see SQLite's v10).
    9: _V9_TO_V10,
    # v11: namespace and state together off one index (see SQLite's v11).
    10: _V10_TO_V11,
    # v12: SQLite's drops an index no query reads and AUTOINCREMENT (see _schema.py); here a
    # seq is an identity column already, so only the index goes.
    11: "DROP INDEX IF EXISTS ix_task_runs_state; UPDATE schema_version SET version = 12",
}
CURRENT_PG_VERSION = PG_VERSION + len(MIGRATIONS)
# Both stores speak one schema version: a SQLite migration needs its PostgreSQL twin here
# (tests/storage/test_postgres.py checks it).
assert CURRENT_PG_VERSION <= CURRENT_VERSION


async def read_version(conn: asyncpg.Connection, where: str) -> int:
    """Schema version of a database (0 if its schema has no tables); refuses foreign ones."""
    names = {
        r[0]
        for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    if not names:
        return 0
    if "schema_version" not in names:
        raise DatabaseInvalid(
            f"{where}: a PostgreSQL database but not an actorflow one (no schema_version"
            " table); left untouched"
        )
    values = {r[0] for r in await conn.fetch("SELECT version FROM schema_version")}
    if not values:
        raise DatabaseInvalid(f"{where}: its schema_version table is empty; left untouched")
    if len(values) > 1:
        raise DatabaseInvalid(
            f"{where}: its schema_version table holds several versions"
            f" ({', '.join(sorted(map(repr, values)))}); left untouched"
        )
    (version,) = values
    if version < PG_VERSION:
        raise DatabaseInvalid(
            f"{where}: schema_version holds {version!r}; PostgreSQL databases start at"
            f" {PG_VERSION}; left untouched"
        )
    if version > CURRENT_PG_VERSION:
        raise SchemaTooNew(
            f"{where}: schema version {version} is newer than this actorflow understands"
            f" ({CURRENT_PG_VERSION}); upgrade actorflow. The database was not modified."
        )
    return int(version)


async def migrate(conn: asyncpg.Connection, where: str) -> int:
    """Bring a database to :data:`CURRENT_PG_VERSION` in ONE transaction; returns the old
    version. The version is read under an advisory lock, so concurrent opens of one new
    database create the schema once."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        old = version = await read_version(conn, where)
        if version == CURRENT_PG_VERSION:
            return old
        if version == 0:
            await conn.execute(_V6)
            version = PG_VERSION
        for v in range(version, CURRENT_PG_VERSION):
            await conn.execute(MIGRATIONS[v])
        return old
