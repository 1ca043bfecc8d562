"""The statements of the PostgreSQL store, and how its errors read.

The writer runs the same plans as SQLite's (``_sql.plan_batch``: upserts coalesced per key,
``executemany`` per statement, deletes keeping their place): :data:`STATEMENTS` holds
SQLite's statements in PostgreSQL's placeholder style, by the same index.
"""

from __future__ import annotations

import re
from typing import Any

from actorflow.storage import _sql


def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, ...`` (the statements have no ``?`` in literals)."""
    count = 0

    def next_mark(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", next_mark, sql)


STATEMENTS: tuple[str, ...] = tuple(numbered(s) for s in _sql.STATEMENTS)

_FLOAT = frozenset({"created", "updated", "ended", "start", '"end"', "ts", "value", "heartbeat",
                    "ttl", "tick", "answered", "lease_expiry"})  # fmt: skip
_BIGINT = frozenset({"flow_revision", "number", "count", "epoch"})
_BYTEA = frozenset({"data", "payload", "target"})


def _type(table: str, col: str) -> str:
    if col == "value" and table == "task_runs":
        return "text"
    if col in _FLOAT:
        return "float8"
    if col in _BIGINT:
        return "int8"
    return "bytea" if col in _BYTEA else "text"


def _bulk(sql: str) -> str | None:
    """One INSERT of many rows, from one array per column (``unnest``), for an INSERT of
    STATEMENTS: one statement for the server to run instead of one per row. Rows keep
    their order (``WITH ORDINALITY``), so ``seq`` follows it."""
    if not sql.startswith("INSERT INTO "):
        return None
    table, rest = sql[len("INSERT INTO ") :].split(" (", 1)
    cols = [c.strip() for c in rest.split(")", 1)[0].split(",")]
    conflict = sql.partition(" ON CONFLICT")[2]
    arrays = ", ".join(f"${i}::{_type(table, c)}[]" for i, c in enumerate(cols, 1))
    names = ", ".join(cols)
    return (
        f"INSERT INTO {table} ({names}) SELECT {names} FROM unnest({arrays})"
        f" WITH ORDINALITY AS u({names}, ord) ORDER BY ord"
        + (f" ON CONFLICT{conflict}" if conflict else "")
    )


# BULK[i]: the many-row form of STATEMENTS[i] (None for the deletes, which stay per row).
BULK: tuple[str | None, ...] = tuple(_bulk(s) for s in _sql.STATEMENTS)
CHILD_TABLES = ("attempts", "state_history", "metrics", "logs", "outputs", "commands",
                "quarantine", "task_runs")  # fmt: skip
EXEC_COLS = _sql.EXEC_COLS
TR_COLS = _sql.TR_COLS
COMMAND_COLS = _sql.COMMAND_COLS
COMMANDS_CHANNEL = "actorflow_commands"

_NAN = re.compile(r'constraint "(\w+?)_(\w+)_nan"')
_NOT_NULL = re.compile(r'null value in column "(\w+)" of relation "(\w+)"')


def is_value_error(exc: BaseException) -> bool:
    """The error comes from a value of a row (another row may still be written), not from
    the storage: a data exception or broken constraint (SQLSTATE classes 22 and 23), or a
    value asyncpg cannot encode."""
    import asyncpg

    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        # 21000: one bulk upsert met its key twice (plans coalesce keys, so never expected);
        # row by row, each row is written.
        return state[:2] in ("22", "23") or state == "21000"
    # asyncpg's own DataError: a parameter it cannot encode (an int beyond 64 bits, a lone
    # surrogate, a wrong type); the connection is fine.
    return isinstance(
        exc, asyncpg.exceptions._base.DataError | OverflowError | UnicodeError | TypeError
    )


def is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure (SQLSTATE 40P01, 40001): the transaction was
    rolled back whole and may simply run again."""
    return getattr(exc, "sqlstate", None) in ("40P01", "40001")


def is_nul_error(exc: BaseException) -> bool:
    """PostgreSQL refused a NUL character in text (SQLSTATE 22021 or 22P05)."""
    return getattr(exc, "sqlstate", None) in ("22021", "22P05") and "0x00" in str(exc)


def without_nul(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with every NUL of its text shown as U+2400 (SYMBOL FOR NULL)."""
    return tuple(v.replace("\x00", "\u2400") if type(v) is str else v for v in row)


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(kind, message) of a value error, worded like SQLite's where the cause is the same
    (a NaN or NULL in a NOT NULL column, an int beyond 64 bits)."""
    message = str(exc)
    if found := _NAN.search(message):
        return "IntegrityError", f"NOT NULL constraint failed: {found[1]}.{found[2]} (a NaN)"
    if found := _NOT_NULL.search(message):
        return "IntegrityError", f"NOT NULL constraint failed: {found[2]}.{found[1]}"
    if "out of int64 range" in message or "out of int32 range" in message:
        return "OverflowError", message
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, UnicodeError):
        return type(cause).__name__, message
    return type(exc).__name__, message


def rejection(
    stmt: int, row: tuple[Any, ...], exc: BaseException
) -> tuple[str | None, str, str, str]:
    """(execution id, table, key, error) of a plan row left out for its values."""
    execution_id, table, key, column = _sql.describe(stmt, row)
    kind, message = describe_error(exc)
    named = f"{table}.{column}"
    where = f" (column {named})" if column and named not in message else ""
    return execution_id, table, key, f"{kind}: {message}{where}"
