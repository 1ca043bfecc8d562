"""PostgreSQL lost connections: the store's writer, reads and LISTEN connection come back
after their backends are killed, the server restarts or the link is cut; a batch whose COMMIT
was cut off is applied once; callers get StorageUnavailable only past ``lock_timeout``."""

from __future__ import annotations

import time
from typing import Any

import anyio
import asyncpg
import pytest
from storage_helpers import ex

from _support import postgres
from _support.tcp_proxy import Proxy, proxied
from actorflow import StorageUnavailable
from actorflow.storage import (
    AppendHistory,
    AppendLog,
    HistoryRow,
    LogRow,
    PostgresStore,
    UpsertExecution,
    _postgres,
)
from actorflow.storage._pg_link import Backoff, server_settings

pytestmark = pytest.mark.anyio


def _history(state: str, ts: float = 1.0) -> AppendHistory:
    return AppendHistory(HistoryRow("e", None, state, ts))


def test_every_connection_bounds_idle_transactions_and_probes_its_peer() -> None:
    """The session settings of every store connection end a session idle in a transaction
    after idle_timeout, bound statements, and probe a silent peer within seconds."""
    got = server_settings(lock_timeout=30, statement_timeout=300, idle_timeout=10, read_only=False)
    assert got["idle_in_transaction_session_timeout"] == "10000"
    assert got["statement_timeout"] == "300000" and got["lock_timeout"] == "30000"
    idle, every, count = (int(got[f"tcp_keepalives_{k}"]) for k in ("idle", "interval", "count"))
    assert idle + every * count <= 10 and int(got["tcp_user_timeout"]) <= 10_000
    with pytest.raises(ValueError, match="idle_timeout must be a positive"):
        PostgresStore("postgresql://x/y", idle_timeout=0)


def test_reconnect_backoff_grows_bounded_and_jittered() -> None:
    """Pauses double up to the cap, each drawn from the upper half of its step, and start
    short again after a reset."""
    b = Backoff(0.1, 1.0)
    pauses = [b.next() for _ in range(8)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(base / 2 <= p <= base for p, base in zip(pauses, bases, strict=True))
    b.reset()
    assert b.next() <= 0.1


async def test_the_server_settings_are_in_force_on_every_connection(pg_dsn: str) -> None:
    """Writer, pool and listener sessions all run with the idle-in-transaction timeout."""
    async with PostgresStore(pg_dsn, idle_timeout=7, statement_timeout=60) as store:
        wakeup = store.command_wakeup()
        assert wakeup is not None
        await wakeup.wait(3600)
        conn = await asyncpg.connect(pg_dsn)
        try:
            pids = [
                store._writer.get_server_pid(),  # type: ignore[union-attr]
                wakeup._conn.get_server_pid(),  # type: ignore[union-attr]
            ]
            assert await store._rows("SHOW idle_in_transaction_session_timeout") == [("7s",)]
            assert await store._rows("SHOW statement_timeout") == [("1min",)]
            sessions = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'actorflow'"
                " AND datname = current_database()"
            )
            assert sessions >= 3
            for pid in pids:
                assert await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
                )
        finally:
            await conn.close()
        assert (
            await store._writer.fetchval(  # type: ignore[union-attr]
                "SHOW idle_in_transaction_session_timeout"
            )
            == "7s"
        )


async def test_tcp_connections_probe_a_silent_peer_within_seconds(
    pg_cluster: postgres.Cluster, pg_dsn: str
) -> None:
    """Over TCP the writer's and the pool's sockets send keepalives after 5 s of silence,
    3 probes 1 s apart, and drop data unacknowledged for 8 s (not the kernel's 2 hours)."""
    import socket

    with proxied(pg_dsn, pg_cluster.port) as (_proxy, url):
        async with PostgresStore(url) as store:
            pool = store._pool
            assert pool is not None
            async with pool.acquire() as pooled:
                for conn in (store._writer, pooled):
                    sock = conn._transport.get_extra_info("socket")  # type: ignore[union-attr]
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                    tcp = socket.IPPROTO_TCP
                    assert sock.getsockopt(tcp, socket.TCP_KEEPIDLE) == 5
                    assert sock.getsockopt(tcp, socket.TCP_KEEPINTVL) == 1
                    assert sock.getsockopt(tcp, socket.TCP_KEEPCNT) == 3
                    assert sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == 8000
            # The server probes us as well (it ends the session of a vanished client).
            assert await store._rows("SHOW tcp_keepalives_idle") == [("5",)]
            assert await store._rows("SHOW tcp_user_timeout") == [("8000",)]


async def test_writes_queued_while_its_backends_are_killed_commit_once_after_reconnect(
    pg_dsn: str,
) -> None:
    """pg_terminate_backend on every session of the store, three times: the writes queued
    meanwhile wait, then commit in order, each once; reads come back too; the store never
    fails."""
    async with PostgresStore(pg_dsn) as store:
        await store.write([UpsertExecution(ex("e"))])
        for round_ in range(3):
            assert await postgres.kill_backends(pg_dsn) >= 2  # the writer and a pool connection
            commits = [store.write([_history(f"S{round_}-{i}", i)]) for i in range(50)]
            assert await store.get_execution("e") == ex("e")  # a read on a new connection
            for commit in commits:
                await commit
        got = [h.state for h in await store.history("e")]
        assert got == [f"S{r}-{i}" for r in range(3) for i in range(50)]
        assert store.failed is None and store.reconnects >= 3


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "rolled-back"])
async def test_a_batch_whose_commit_was_cut_off_is_applied_exactly_once(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """The writer's connection dies once COMMIT is on its way (the server committed and the
    answer was lost, or it never got it): the store asks the server for the transaction's
    outcome, so the batch's appended rows are stored once, neither lost nor doubled."""
    store = PostgresStore(pg_dsn)
    original = _postgres._Tx.before_commit
    cut: list[int] = []

    async def before_commit(self: Any, conn: Any, result: Any) -> None:
        await original(self, conn, result)
        if not cut and conn is store._writer and self.xid is not None:
            cut.append(self.xid)
            if committed:
                await conn.execute("COMMIT")  # it reaches the server; its answer is "lost"
            conn.terminate()

    async with store:
        await store.write([UpsertExecution(ex("e"))])
        monkeypatch.setattr(_postgres._Tx, "before_commit", before_commit)
        log = AppendLog(LogRow("e", None, 2.0, "INFO", "once"))
        await store.write([_history("ONCE"), log])
        monkeypatch.undo()
        assert cut, "the cut never happened"
        assert [h.state for h in await store.history("e")] == ["ONCE"]
        assert [r.message for r in await store.logs("e")] == ["once"]
        status = await store._rows("SELECT txid_status($1)", cut[0])
        assert status == [("committed" if committed else "aborted",)]
        assert store.failed is None and store.reconnects == 1


async def test_a_batch_still_in_progress_on_its_old_session_is_waited_for(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server reports the cut-off batch's transaction "in progress" (its old session
    lives on behind a cut link) twice: the writer neither runs it again nor gives up, but
    asks again until the outcome is known; the rows are stored once."""
    store = PostgresStore(pg_dsn)
    original = _postgres._Tx.before_commit
    committed = _postgres._committed
    cut: list[int] = []
    seen: list[str] = []

    async def before_commit(self: Any, conn: Any, result: Any) -> None:
        await original(self, conn, result)
        if not cut and conn is store._writer and self.xid is not None:
            cut.append(self.xid)
            conn.terminate()

    async def watched(conn: Any, xid: int) -> bool:
        if len(seen) < 2:
            seen.append("in progress")
            raise _postgres._StillRunning(f"transaction {xid} is still in progress (test)")
        done = await committed(conn, xid)
        seen.append("committed" if done else "aborted")
        return done

    async with store:
        await store.write([UpsertExecution(ex("e"))])
        monkeypatch.setattr(_postgres._Tx, "before_commit", before_commit)
        monkeypatch.setattr(_postgres, "_committed", watched)
        with anyio.fail_after(30):
            await store.write([_history("ONCE")])
        monkeypatch.undo()
        assert seen == ["in progress", "in progress", "aborted"]
        assert [h.state for h in await store.history("e")] == ["ONCE"]
        assert store.failed is None and store.reconnects == 1


async def test_a_cut_shorter_than_the_bound_is_waited_out(
    pg_cluster: postgres.Cluster, pg_dsn: str
) -> None:
    """The link cut (every connection reset, new ones refused): a write and a read wait
    while the store knocks again with backoff; once the link is back both complete, the
    listener listens again and hears the next command."""
    with proxied(pg_dsn, pg_cluster.port) as (proxy, url):
        async with PostgresStore(url) as store, PostgresStore(pg_dsn) as sender:
            await store.write([UpsertExecution(ex("e", owner="me"))])
            wakeup = store.command_wakeup()
            assert wakeup is not None
            await wakeup.wait(3600)
            assert wakeup.listening
            proxy.cut()
            commit = store.write([_history("AFTER")])
            got: list[Any] = []
            async with anyio.create_task_group() as tg:

                async def read() -> None:
                    got.append(await store.history("e"))

                tg.start_soon(read)
                # The store knocks twice more.
                await anyio.to_thread.run_sync(proxy.wait_refused, 4)
                assert not commit.done and not got
                proxy.restore()
                with anyio.fail_after(30):
                    await commit
            assert [h.state for h in await store.history("e")] == ["AFTER"]
            assert store.failed is None and store.reconnects >= 1
            with anyio.fail_after(30):
                while not wakeup.listening:
                    await wakeup.wait(3600)  # woke by the loss; each wait listens again
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wakeup.wait, 3600)
                    await anyio.wait_all_tasks_blocked()
                    await sender.post_command("e", "kill")


async def test_a_caller_gets_storage_unavailable_past_its_bound_not_before(
    pg_cluster: postgres.Cluster, pg_dsn: str
) -> None:
    """A link cut for good: a waiting write fails with StorageUnavailable naming
    lock_timeout once that long has passed since the loss, not before; so does a read;
    the store then refuses writes (stopped, as SQLite's past its lock wait)."""
    bound = 1.5
    with proxied(pg_dsn, pg_cluster.port) as (proxy, url):
        store = PostgresStore(url, lock_timeout=bound)
        async with store:
            await store.write([UpsertExecution(ex("e"))])
            proxy.cut()
            start = time.monotonic()
            commit = store.write([_history("LOST")])
            with (
                anyio.fail_after(30),
                pytest.raises(StorageUnavailable, match=r"lock_timeout=1\.5s"),
            ):
                await commit
            assert time.monotonic() - start >= bound
            start = time.monotonic()
            with anyio.fail_after(30), pytest.raises(StorageUnavailable, match="lock_timeout"):
                await store.get_execution("e")
            assert time.monotonic() - start >= bound
            assert store.failed is not None
            with pytest.raises(StorageUnavailable):
                store.write([_history("LATER")])
            assert proxy.refused >= 2  # it did knock again meanwhile
    async with PostgresStore(pg_dsn) as check:
        assert await check.history("e") == []


async def test_a_server_restart_is_survived(pg_cluster: postgres.Cluster, pg_dsn: str) -> None:
    """pg_ctl restart while writes are queued: they commit after it, in order; reads and
    the listener come back (it hears a command posted after the restart)."""
    if pg_cluster.data is None:
        pytest.skip("the server of ACTORFLOW_TEST_POSTGRES_DSN is not ours to restart")
    async with PostgresStore(pg_dsn) as store:
        await store.write([UpsertExecution(ex("e", owner="me"))])
        wakeup = store.command_wakeup()
        assert wakeup is not None
        await wakeup.wait(3600)
        before = [store.write([_history(f"B{i}", i)]) for i in range(20)]
        await anyio.to_thread.run_sync(pg_cluster.restart)
        after = [store.write([_history(f"A{i}", i)]) for i in range(20)]
        with anyio.fail_after(60):
            for commit in before + after:
                await commit
        got = [h.state for h in await store.history("e")]
        assert got == [f"B{i}" for i in range(20)] + [f"A{i}" for i in range(20)]
        assert store.failed is None
        async with PostgresStore(pg_dsn) as sender:
            with anyio.fail_after(30):
                while not wakeup.listening:
                    await wakeup.wait(3600)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(wakeup.wait, 3600)
                    await anyio.wait_all_tasks_blocked()
                    await sender.post_command("e", "kill")
        assert [c.kind for c in await store.pending_commands("me")] == ["kill"]


def test_the_proxy_refuses_while_cut() -> None:
    """The test proxy itself: resets connections while cut, forwards after restore."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        proxy = Proxy("127.0.0.1", server.getsockname()[1]).start()
        try:
            proxy.cut()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as c:
                c.settimeout(5)
                try:
                    data = c.recv(1)
                except ConnectionResetError:
                    data = b""
                assert data == b""  # reset or closed at once
            assert proxy.refused == 1
            proxy.restore()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as c:
                peer, _ = server.accept()
                with peer:
                    c.sendall(b"x")
                    assert peer.recv(1) == b"x"
        finally:
            proxy.close()
