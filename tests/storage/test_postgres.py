"""What only the PostgreSQL store does: its schema and migrations, LISTEN/NOTIFY for commands,
a lost connection, selection by URL (the contract itself runs through the `store` fixture)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import asyncpg
import pytest
from storage_helpers import ex, tr

from actorflow import DatabaseInvalid, SchemaTooNew, StorageError, StorageUnavailable
from actorflow.storage import (
    CURRENT_VERSION,
    AppendHistory,
    AppendLog,
    AttemptRow,
    HistoryRow,
    LogRow,
    PostgresStore,
    RejectedOp,
    SQLiteStore,
    UpsertAttempt,
    UpsertExecution,
    UpsertTaskRun,
    open_store,
)
from actorflow.storage._pg_schema import CURRENT_PG_VERSION

pytestmark = pytest.mark.anyio


def test_both_stores_speak_one_schema_version() -> None:
    """A SQLite migration has its PostgreSQL twin: both stores are at the same version."""
    assert CURRENT_PG_VERSION == CURRENT_VERSION


def test_a_postgres_url_selects_the_postgres_store() -> None:
    """postgresql:// and postgres:// URLs make a PostgresStore; its messages hide the password."""
    for url in ("postgresql://u:secret@db.example/af", "postgres://u:secret@db.example/af"):
        store = open_store(url, read_only=True, lock_timeout=5)
        assert isinstance(store, PostgresStore)
        assert store.read_only and store.lock_timeout == 5
        assert "secret" not in store.where and "u:***@db.example" in store.where
    assert isinstance(open_store("x.db"), SQLiteStore)


async def _columns(dsn: str) -> dict[str, set[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
        )
        indexes = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
    finally:
        await conn.close()
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(table, set()).add(column)
    out["<indexes>"] = {r[0] for r in indexes}
    return out


async def test_the_schema_mirrors_sqlite(pg_dsn: str, tmp_path: Path) -> None:
    """Every SQLite table, column and named index exists in PostgreSQL too (the extra
    columns are the ``seq`` that stands for SQLite's rowid)."""
    async with SQLiteStore(tmp_path / "s.db", writer="thread"):
        pass
    with sqlite3.connect(tmp_path / "s.db") as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        lite = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
        lite_indexes = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix_%'"
            )
        }
    async with PostgresStore(pg_dsn):
        pass
    pg = await _columns(pg_dsn)
    assert pg.pop("<indexes>") >= lite_indexes
    assert set(pg) == set(lite)
    for table, cols in lite.items():
        assert pg[table] - cols <= {"seq"}, table
        assert cols <= pg[table], table


async def test_a_newer_schema_is_refused_and_left_untouched(pg_dsn: str) -> None:
    """A database written by a newer actorflow raises SchemaTooNew and is not modified."""
    async with PostgresStore(pg_dsn):
        pass
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE schema_version SET version = $1", CURRENT_VERSION + 1)
        with pytest.raises(SchemaTooNew, match="newer than this actorflow understands"):
            await PostgresStore(pg_dsn).open()
        with pytest.raises(SchemaTooNew):
            await PostgresStore(pg_dsn, read_only=True).open()
        assert await conn.fetchval("SELECT version FROM schema_version") == CURRENT_VERSION + 1
    finally:
        await conn.close()


async def test_a_foreign_database_is_refused_and_left_untouched(pg_dsn: str) -> None:
    """Tables without a schema_version table: DatabaseInvalid, nothing created."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("CREATE TABLE customers (id int)")
        with pytest.raises(DatabaseInvalid, match="not an actorflow one"):
            await PostgresStore(pg_dsn).open()
        names = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        assert [r[0] for r in names] == ["customers"]
    finally:
        await conn.close()


async def test_concurrent_opens_of_a_new_database_create_the_schema_once(pg_dsn: str) -> None:
    """Five stores opening one empty database at once all open; one schema row results."""
    stores = [PostgresStore(pg_dsn) for _ in range(5)]
    async with anyio.create_task_group() as tg:
        for s in stores:
            tg.start_soon(s.open)
    try:
        await stores[0].write([UpsertExecution(ex("e"))])
        assert await stores[4].get_execution("e") == ex("e")
    finally:
        for s in stores:
            await s.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_version") == 1
    finally:
        await conn.close()


async def test_a_read_only_store_reads_and_refuses_every_write(pg_dsn: str) -> None:
    """read_only: rows are read; writes and administration raise StorageUnavailable; a
    database never migrated is refused with a clear message."""
    with pytest.raises(StorageError, match="must be migrated"):
        await PostgresStore(pg_dsn, read_only=True).open()
    async with PostgresStore(pg_dsn) as writer:
        await writer.write([UpsertExecution(ex("e"))])
    async with PostgresStore(pg_dsn, read_only=True) as reader:
        assert await reader.get_execution("e") == ex("e")
        assert reader.command_wakeup() is None
        with pytest.raises(StorageUnavailable, match="read-only"):
            reader.write([UpsertExecution(ex("f"))])
        with pytest.raises(StorageUnavailable, match="read-only"):
            await reader.post_command("e", "kill")


async def test_small_writes_commit_in_few_transactions(pg_dsn: str) -> None:
    """500 writes queued together commit in far fewer transactions (group commit), in order."""
    async with PostgresStore(pg_dsn) as store:
        await store.write([UpsertExecution(ex("e"))])
        before = store.stats.batches
        commits = [
            store.write([AppendHistory(HistoryRow("e", None, f"S{i}", float(i)))])
            for i in range(500)
        ]
        await commits[-1]
        assert all(c.done and c.error is None for c in commits)
        assert store.stats.batches - before <= 5
        assert [h.state for h in await store.history("e")] == [f"S{i}" for i in range(500)]


async def _terminate(dsn: str, where: str) -> int:
    """Terminate the server processes of other sessions of this database matching ``where``."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                f" WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}"
            )
        )
    finally:
        await conn.close()


async def test_a_posted_command_wakes_the_owners_listener(pg_dsn: str) -> None:
    """post_command on one store wakes another store's command_wakeup at once (NOTIFY),
    long before its fallback timeout."""
    async with PostgresStore(pg_dsn) as owner, PostgresStore(pg_dsn) as sender:
        await owner.write([UpsertExecution(ex("e", owner="me")), UpsertTaskRun(tr("t", "e"))])
        wakeup = owner.command_wakeup()
        assert wakeup is not None and owner.command_wakeup() is wakeup
        with anyio.fail_after(30):
            await wakeup.wait(3600)  # the first wait returns at once: look for what came before
            assert wakeup.listening
            async with anyio.create_task_group() as tg:
                tg.start_soon(wakeup.wait, 3600)
                await anyio.wait_all_tasks_blocked()
                command_id = await sender.post_command("e", "kill")
        assert [c.id for c in await owner.pending_commands("me")] == [command_id]


async def test_a_lost_listener_wakes_the_waiter_and_listens_again(pg_dsn: str) -> None:
    """The LISTEN connection killed: the waiter wakes (commands may have been missed), then
    listens again on a new connection and hears the next command."""
    async with PostgresStore(pg_dsn) as owner, PostgresStore(pg_dsn) as sender:
        await owner.write([UpsertExecution(ex("e", owner="me"))])
        wakeup = owner.command_wakeup()
        assert wakeup is not None
        with anyio.fail_after(30):
            await wakeup.wait(3600)
            pid = wakeup._conn.get_server_pid()  # type: ignore[union-attr]
            async with anyio.create_task_group() as tg:
                tg.start_soon(wakeup.wait, 3600)
                await anyio.wait_all_tasks_blocked()
                assert await _terminate(pg_dsn, f"pid = {pid}") == 1
            assert not wakeup.listening
            await wakeup.wait(3600)  # listens again, and looks once
            assert wakeup.listening
            async with anyio.create_task_group() as tg:
                tg.start_soon(wakeup.wait, 3600)
                await anyio.wait_all_tasks_blocked()
                await sender.post_command("e", "pause")


async def test_an_unreachable_server_is_storage_unavailable(tmp_path: Path) -> None:
    """Opening a store on a server that does not answer raises StorageUnavailable naming the
    URL without its password."""
    url = f"postgresql://u:hunter2@/db?host={tmp_path}&port=1"
    with pytest.raises(StorageUnavailable, match=r"cannot open the database") as info:
        await PostgresStore(url).open()
    assert "hunter2" not in str(info.value)


async def test_text_with_nul_is_kept_with_a_visible_mark(pg_dsn: str) -> None:
    """A log line and an attempt error holding NUL (PostgreSQL text cannot) are stored with
    each NUL shown as U+2400; nothing is rejected and the rest of the batch commits."""
    heard: list[RejectedOp] = []
    async with PostgresStore(pg_dsn) as store:
        store.on_rejected = heard.extend
        commit = store.write([
            UpsertExecution(ex("e")), UpsertTaskRun(tr("t", "e")),
            AppendLog(LogRow("e", "t", 1.0, "INFO", "a\x00b")),
            UpsertAttempt(AttemptRow("e", "t", 1, "FAILED", 1.0, 2.0, "bad\x00byte")),
        ])  # fmt: skip
        await commit
        assert commit.rejected == () and heard == []
        assert [lg.message for lg in await store.logs("e")] == ["a\u2400b"]
        assert [a.error for a in await store.attempts("e")] == ["bad\u2400byte"]
        assert len(await store.task_runs("e")) == 1


async def _wait_until_blocked(conn: asyncpg.Connection, pid: int) -> None:
    """Until server process ``pid`` waits for a lock (asked again at each answer)."""
    while not await conn.fetchval(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
    ):
        pass


async def test_a_deadlock_with_another_host_is_run_again_not_a_failure(pg_dsn: str) -> None:
    """The writer chosen as a deadlock's victim (another session locked rows in the other
    order) runs its batch again: the commit succeeds and the store goes on."""
    async with PostgresStore(pg_dsn) as store:
        await store.write([UpsertExecution(ex("a")), UpsertExecution(ex("b"))])
        other = await asyncpg.connect(pg_dsn)
        try:
            # The other session gives up later than the writer, so the writer is the victim.
            await other.execute("SET deadlock_timeout = '20s'")
            writer_pid = store._writer.get_server_pid()  # type: ignore[union-attr]
            with anyio.fail_after(60):
                tx = other.transaction()
                await tx.start()
                await other.execute("UPDATE executions SET state = 'X' WHERE id = 'b'")
                commit = store.write([UpsertExecution(ex("a", "SUCCESS")),
                                      UpsertExecution(ex("b", "SUCCESS"))])  # fmt: skip
                watcher = await asyncpg.connect(pg_dsn)
                try:
                    await _wait_until_blocked(watcher, writer_pid)
                finally:
                    await watcher.close()
                # Wants "a", which the writer holds: a cycle; the writer's check finds it.
                await other.execute("UPDATE executions SET state = 'Y' WHERE id = 'a'")
                await tx.commit()
                await commit
        finally:
            await other.close()
        assert store.conflicts == 1 and store.failed is None
        assert [(await store.get_execution(i)).state for i in "ab"] == ["SUCCESS"] * 2  # type: ignore[union-attr]


async def test_concurrent_claims_from_two_hosts_split_the_queue(pg_dsn: str) -> None:
    """Two stores (two hosts) claiming the same 200 queued executions at once, each in its
    own order: every execution is leased to exactly one of them, with epoch 1."""
    ids = [f"e{i:03}" for i in range(200)]
    async with PostgresStore(pg_dsn) as a, PostgresStore(pg_dsn) as b:
        await a.write([UpsertExecution(ex(i, "CREATED")) for i in ids])
        taken: dict[str, list[str]] = {"w1": [], "w2": []}

        async def claim(store: PostgresStore, owner: str, order: list[str]) -> None:
            for start in range(0, len(order), 10):
                rows = await store.claim_queued(owner, order[start : start + 10], 60.0)
                assert all((r.owner, r.epoch) == (owner, 1) for r in rows)
                taken[owner].extend(r.id for r in rows)

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim, a, "w1", ids)
            tg.start_soon(claim, b, "w2", ids[::-1])
        assert sorted(taken["w1"] + taken["w2"]) == ids
        assert taken["w1"] and taken["w2"]
        stored = {r.id: r.owner for r in await a.list_executions(limit=1000)}
        assert all(stored[i] == "w1" for i in taken["w1"])
        assert all(stored[i] == "w2" for i in taken["w2"])
        assert await b.claimable(1000) == []


async def test_flow_slots_taken_from_two_hosts_at_once_stay_within_the_limit(
    pg_dsn: str,
) -> None:
    """30 executions of one flow asking two stores for its 3 slots at once: exactly 3 get
    one, and asking again changes nothing."""
    ids = [f"e{i:02}" for i in range(30)]
    async with PostgresStore(pg_dsn) as a, PostgresStore(pg_dsn) as b:
        await a.write([UpsertExecution(ex(i, "RUNNING")) for i in ids])
        got: dict[str, bool] = {}

        async def take(store: PostgresStore, ex_id: str) -> None:
            got[ex_id] = await store.take_slot(ex_id, "ns", "f", 3)

        async with anyio.create_task_group() as tg:
            for n, ex_id in enumerate(ids):
                tg.start_soon(take, (a, b)[n % 2], ex_id)
        holders = sorted(i for i, ok in got.items() if ok)
        assert len(holders) == 3
        again = [await b.take_slot(i, "ns", "f", 3) for i in ids]
        assert sorted(i for i, ok in zip(ids, again, strict=True) if ok) == holders


async def test_a_claim_committing_during_a_fenced_batch_fences_it(pg_dsn: str) -> None:
    """A batch of the old lease holder that meets a claim still in flight on another host
    waits for it, then drops its rows of that execution: nothing lands on top of the claim
    (a fence check that only read the row would have passed and written after it)."""
    async with PostgresStore(pg_dsn) as store:
        await store.write([UpsertExecution(ex("e", "RUNNING", owner="w1", epoch=1))])
        fenced: list[tuple[tuple[str, str], ...]] = []
        store.on_fenced = fenced.append
        store.fences["e"] = 1
        store.fence_owner = "w1"
        claimer = await asyncpg.connect(pg_dsn)
        watcher = await asyncpg.connect(pg_dsn)
        try:
            claim = claimer.transaction()
            await claim.start()
            await claimer.execute(
                "UPDATE executions SET owner = 'w2', epoch = epoch + 1 WHERE id = 'e'"
            )
            late = store.write([UpsertExecution(ex("e", "SUCCESS", ended=5.0, updated=5.0))])
            with anyio.fail_after(30):
                while not await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                ):
                    await anyio.sleep(0.01)  # until the batch waits on the claim's row lock
            await claim.commit()
            await late
        finally:
            await claimer.close()
            await watcher.close()
        row = await store.get_execution("e")
        assert row is not None and (row.state, row.owner, row.epoch) == ("RUNNING", "w2", 2)
        assert [[i for i, _ in batch] for batch in fenced] == [["e"]]
