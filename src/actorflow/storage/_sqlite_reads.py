"""The SQLite store's queries: its own connection and thread, never waiting for the writer.

Reads hand back rows as stored, never decoding ``data``: a damaged snapshot is the
runtime's to detect (and quarantine). Text columns that are not valid UTF-8 come back with
the bad bytes as lone surrogates (``surrogateescape``) rather than failing the query.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import EllipsisType
from typing import Any, TypeVar

import aiosqlite

from actorflow._errors import DatabaseInvalid, StorageError, StorageUnavailable
from actorflow.storage import _sql
from actorflow.storage._rows import (
    AttemptRow,
    CommandRow,
    ExecutionRow,
    FlowRow,
    HistoryRow,
    KVRow,
    LogRow,
    MetricRow,
    OutputRow,
    QuarantineRow,
    TaskRunRow,
)

T = TypeVar("T")


class SQLiteReads:
    """Reads of :class:`SQLiteStore`, on its reader connection."""

    path: Path
    _reader: aiosqlite.Connection | None
    clock: Callable[[], float]
    # A read-only store on a file without a WAL reads it immutable=1 (nothing created
    # beside it) until a writer makes a WAL; then it needs a live connection to see it.
    _static: bool = False

    async def _connect_reader(self, wal: bool) -> aiosqlite.Connection:
        raise NotImplementedError

    @staticmethod
    async def _call(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(sqlite3_connection, *args)`` in the connection's thread as one call."""
        # aiosqlite has no public way to run a callable in its thread; _execute is its own
        # queueing, and one hop for a whole transaction beats one per statement.
        return await conn._execute(fn, conn._conn, *args)  # type: ignore[no-untyped-call,no-any-return]

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            raise StorageError(f"{self.path}: store is not open")
        if self._static and os.path.exists(f"{self.path}-wal"):
            old, self._reader = self._reader, None
            with contextlib.suppress(Exception):
                await old.close()
            try:
                self._reader = await self._connect_reader(True)
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"{self.path}: cannot read ({exc})") from exc
        try:
            return await self._call(self._reader, _sql.fetch, sql, params)
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"{self.path}: cannot read ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            raise DatabaseInvalid(f"{self.path}: corrupt database ({exc})") from exc

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        """One execution row."""
        sql = f"SELECT {_sql.EXEC_COLS} FROM executions WHERE id = ?"
        rows = await self._rows(sql, (execution_id,))
        return ExecutionRow(*rows[0]) if rows else None

    async def list_executions(
        self,
        *,
        flow_id: str | None = None,
        namespace: str | None = None,
        states: Collection[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[ExecutionRow]:
        """Executions filtered by flow, namespace, states and creation time [since, until)."""
        where: list[str] = []
        params: list[Any] = []
        for clause, val in (
            ("flow_id = ?", flow_id),
            ("namespace = ?", namespace),
            ("created >= ?", since),
            ("created < ?", until),
        ):
            if val is not None:
                where.append(clause)
                params.append(val)
        if states is not None:
            st = list(states)
            where.append(f"state IN ({','.join('?' * len(st))})")
            params.extend(st)
        order = "DESC" if newest_first else "ASC"
        sql = (
            f"SELECT {_sql.EXEC_COLS} FROM executions"
            f"{' WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY created {order}, id {order} LIMIT ? OFFSET ?"
        )
        return [ExecutionRow(*r) for r in await self._rows(sql, [*params, limit, offset])]

    async def unfinished_executions(self, terminal_states: Collection[str]) -> list[ExecutionRow]:
        """Executions not in a terminal state, oldest first, quarantined ones left out."""
        st = list(terminal_states)
        sql = (
            # ended IS NULL: the unfinished rows alone, off ix_executions_ended, not the table.
            f"SELECT {_sql.EXEC_COLS} FROM executions WHERE ended IS NULL AND state NOT IN"
            f" ({','.join('?' * len(st))}) AND id NOT IN (SELECT execution_id FROM quarantine)"
            " ORDER BY created, id"
        )
        return [ExecutionRow(*r) for r in await self._rows(sql, st)]

    async def quarantined(self) -> list[QuarantineRow]:
        """Quarantined executions with the reason, oldest first."""
        sql = "SELECT execution_id, reason, ts FROM quarantine ORDER BY ts, execution_id"
        return [QuarantineRow(*r) for r in await self._rows(sql)]

    async def task_runs(self, execution_id: str) -> list[TaskRunRow]:
        """Task runs of an execution in creation order."""
        sql = f"SELECT {_sql.TR_COLS} FROM task_runs WHERE execution_id = ? ORDER BY created, rowid"
        return [TaskRunRow(*r) for r in await self._rows(sql, (execution_id,))]

    async def task_runs_of(self, execution_ids: Sequence[str]) -> dict[str, list[TaskRunRow]]:
        """Task runs of many executions, by execution, each in creation order: one query per
        500 executions instead of one each."""
        out: dict[str, list[TaskRunRow]] = {i: [] for i in execution_ids}
        ids = list(out)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            sql = (
                f"SELECT {_sql.TR_COLS} FROM task_runs WHERE execution_id IN"
                f" ({','.join('?' * len(chunk))}) ORDER BY execution_id, created, rowid"
            )
            for r in await self._rows(sql, chunk):
                out[r[1]].append(TaskRunRow(*r))
        return out

    async def attempts(self, execution_id: str, task_run_id: str | None = None) -> list[AttemptRow]:
        """Attempts of an execution in insertion order, or of one task run by number."""
        sql = f"SELECT {_sql.ATTEMPT_COLS} FROM attempts WHERE execution_id = ?"
        if task_run_id is None:
            rows = await self._rows(sql + " ORDER BY rowid", (execution_id,))
        else:
            sql += " AND task_run_id = ? ORDER BY number"
            rows = await self._rows(sql, (execution_id, task_run_id))
        return [AttemptRow(*r) for r in rows]

    async def history(
        self, execution_id: str, task_run_id: str | EllipsisType | None = ...
    ) -> list[HistoryRow]:
        """State history in insertion order: ``...`` every entry, ``None`` the execution's."""
        sql = (
            "SELECT execution_id, task_run_id, state, ts FROM state_history WHERE execution_id = ?"
        )
        params: list[Any] = [execution_id]
        if task_run_id is None:
            sql += " AND task_run_id IS NULL"
        elif not isinstance(task_run_id, EllipsisType):
            sql += " AND task_run_id = ?"
            params.append(task_run_id)
        return [HistoryRow(*r) for r in await self._rows(sql + " ORDER BY seq", params)]

    async def metrics(
        self,
        *,
        execution_id: str | None = None,
        task_run_id: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[MetricRow]:
        """Metrics; ``tags`` matches metrics carrying at least those tags."""
        where: list[str] = []
        params: list[Any] = []
        for col, val in (("execution_id", execution_id), ("task_run_id", task_run_id),
                         ("name", name)):  # fmt: skip
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        rest: dict[str, str] = {}
        for key, value in (tags or {}).items():
            if '"' in key or "\\" in key:
                rest[key] = value  # not expressible as a JSON path: filtered below
                continue
            where.append("json_extract(tags, ?) IS ?")
            params.extend((f'$."{key}"', value))
        sql = (
            f"SELECT {_sql.METRIC_COLS} FROM metrics"
            f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY rowid"
        )
        rows = await self._rows(sql, params)
        out = [MetricRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]
        if rest:
            out = [m for m in out if all(m.tags.get(k) == v for k, v in rest.items())]
        return out

    async def logs(
        self, execution_id: str, task_run_id: str | None = None, *, limit: int | None = None
    ) -> list[LogRow]:
        """Log lines in order (the first ``limit`` of them)."""
        sql = f"SELECT {_sql.LOG_COLS} FROM logs WHERE execution_id = ?"
        params: list[Any] = [execution_id]
        if task_run_id is not None:
            sql += " AND task_run_id = ?"
            params.append(task_run_id)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [LogRow(*r) for r in await self._rows(sql, params)]

    async def outputs(self, execution_id: str) -> list[OutputRow]:
        """Outputs of every task run of an execution."""
        sql = "SELECT execution_id, task_run_id, data FROM outputs WHERE execution_id = ?"
        return [OutputRow(*r) for r in await self._rows(sql + " ORDER BY rowid", (execution_id,))]

    async def commands_after(self, last_id: int) -> list[CommandRow]:
        """Commands with an id above ``last_id``, in order."""
        sql = f"SELECT {_sql.COMMAND_COLS} FROM commands WHERE id > ? ORDER BY id"
        return [CommandRow(*r) for r in await self._rows(sql, (last_id,))]

    async def flows(self, namespace: str | None = None) -> list[FlowRow]:
        """The latest revision of every deployed flow (of ``namespace``)."""
        where, params = ("WHERE namespace = ?", (namespace,)) if namespace else ("", ())
        rows = await self._rows(
            "SELECT namespace, id, revision, source, created FROM flows f " + where
            + (" AND" if where else " WHERE")
            + " revision = (SELECT max(revision) FROM flows g"
            " WHERE g.namespace = f.namespace AND g.id = f.id) ORDER BY namespace, id",
            params,
        )  # fmt: skip
        return [FlowRow(*r) for r in rows]

    async def flow_revision(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRow | None:
        """One deployed revision (the latest when ``revision`` is None)."""
        sql = "SELECT namespace, id, revision, source, created FROM flows WHERE namespace = ?"
        sql += " AND id = ?"
        params: tuple[Any, ...] = (namespace, flow_id)
        if revision is not None:
            sql += " AND revision = ?"
            params += (revision,)
        rows = await self._rows(sql + " ORDER BY revision DESC LIMIT 1", params)
        return FlowRow(*rows[0]) if rows else None

    async def kv_get(self, namespace: str, key: str) -> KVRow | None:
        """The entry ``key`` of ``namespace``, None if absent or expired."""
        rows = await self._rows(
            "SELECT namespace, key, value, updated, expires FROM kv WHERE namespace = ?"
            " AND key = ? AND (expires IS NULL OR expires > ?)",
            (namespace, key, self.clock()),
        )
        return KVRow(*rows[0]) if rows else None

    async def kv_keys(self, namespace: str) -> list[KVRow]:
        """Every live entry of ``namespace``, by key."""
        rows = await self._rows(
            "SELECT namespace, key, value, updated, expires FROM kv WHERE namespace = ?"
            " AND (expires IS NULL OR expires > ?) ORDER BY key",
            (namespace, self.clock()),
        )
        return [KVRow(*r) for r in rows]

    async def last_tick(self, trigger: str) -> float | None:
        """The latest recorded fire's tick of a trigger, or None."""
        rows = await self._rows("SELECT max(tick) FROM trigger_fires WHERE trigger = ?", (trigger,))
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def unstarted_fires(self, stale_after: float) -> list[tuple[str, str, float, str]]:
        """Fires whose execution was never stored and whose owner is gone."""
        rows = await self._rows(
            "SELECT trigger, fire, tick, execution_id FROM trigger_fires f"
            " WHERE execution_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.id = f.execution_id)"
            " AND (owner IS NULL OR owner NOT IN"
            "  (SELECT owner FROM owners WHERE heartbeat >= ?)) ORDER BY tick",
            (self.clock() - stale_after,),
        )
        return [(r[0], r[1], float(r[2]), r[3]) for r in rows]

    async def get_command(self, command_id: int) -> CommandRow | None:
        """One command with its status and answer."""
        sql = f"SELECT {_sql.COMMAND_COLS} FROM commands WHERE id = ?"
        rows = await self._rows(sql, (command_id,))
        return CommandRow(*rows[0]) if rows else None

    async def pending_commands(self, owner: str) -> list[CommandRow]:
        """Pending commands of the executions ``owner`` owns, oldest first."""
        cols = ", ".join(f"c.{c.strip()}" for c in _sql.COMMAND_COLS.split(","))
        sql = (
            f"SELECT {cols} FROM commands c JOIN executions e ON e.id = c.execution_id"
            " WHERE c.status = 'pending' AND e.owner = ? ORDER BY c.id"
        )
        return [CommandRow(*r) for r in await self._rows(sql, (owner,))]

    async def owners(self) -> list[tuple[str, float]]:
        """Registered owners with their last heartbeat."""
        return [(r[0], r[1]) for r in await self._rows("SELECT owner, heartbeat FROM owners")]
