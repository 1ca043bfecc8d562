"""Workers on PostgreSQL whose connections drop: a short loss (backends killed, the server
restarted) is waited out with every lease kept; a cut longer than the lease fences what
another worker adopted; a worker stopped inside a transaction loses its row locks to the
server's idle-in-transaction timeout, so another worker takes its expired leases."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_workers import Worker, pg_rows, side_lines, until, workers

import actorflow as af
from _support import postgres
from _support.tcp_proxy import proxied
from actorflow.runtime import Runtime, TaskContext
from actorflow.storage import AppendLog, LogRow

pytestmark = pytest.mark.anyio


class TwoSteps:
    """A flow of two tasks: ``a`` counts its runs and waits for ``gate``; ``b`` counts its
    runs. ``all_in`` is set once ``want`` executions are inside ``a``."""

    def __init__(self, flow_id: str, want: int) -> None:
        self.gate, self.all_in = anyio.Event(), anyio.Event()
        self.ran: Counter[tuple[str, str]] = Counter()

        async def first(ctx: TaskContext) -> dict[str, int]:
            self.ran[(ctx.execution_id, "a")] += 1
            if len(self.ran) == want:
                self.all_in.set()
            await self.gate.wait()
            return {"n": 1}

        async def second(ctx: TaskContext) -> dict[str, int]:
            self.ran[(ctx.execution_id, "b")] += 1
            return {"n": 2}

        self.flow = af.Flow(id=flow_id, tasks=[af.task(first)("a"), af.task(second)("b")])


@pytest.mark.parametrize("loss", ["pg_terminate_backend", "server restart"])
async def test_executions_run_to_success_through_a_lost_connection(
    pg_cluster: postgres.Cluster, pg_dsn: str, tmp_path: Path, loss: str
) -> None:
    """20 executions are mid-run when every store connection drops (killed, or the server
    restarts), and again as their next writes queue: all end SUCCESS, each task ran once,
    every lease was kept (epoch 1: nobody re-claimed them), nothing stored is missing."""
    if loss == "server restart" and pg_cluster.data is None:
        pytest.skip("the server of ACTORFLOW_TEST_POSTGRES_DSN is not ours to restart")
    steps = TwoSteps("through", 20)
    flow, gate, ran = steps.flow, steps.gate, steps.ran

    async def lose() -> None:
        if loss == "server restart":
            await anyio.to_thread.run_sync(pg_cluster.restart)
        else:
            # At least the writer's session: the pool's may be between reconnects then.
            assert await postgres.kill_backends(pg_dsn) >= 1

    with anyio.fail_after(120):
        async with Runtime.open(pg_dsn, flows=[flow], files=tmp_path / "files") as rt:
            handles = [await rt.submit(flow) for _ in range(20)]
            await steps.all_in.wait()  # every first task runs: their writes are stored or queued
            await lose()
            gate.set()  # 20 executions write their next steps while the store reconnects
            await lose()
            ended = [await h.wait() for h in handles]
            assert rt.store.failed is None  # type: ignore[attr-defined]
            assert rt.store.reconnects >= 1  # type: ignore[attr-defined]
    assert Counter(e.state for e in ended) == {af.State.SUCCESS: 20}
    assert set(ran.values()) == {1} and len(ran) == 40
    rows = pg_rows(pg_dsn, "SELECT state, epoch FROM executions")
    assert Counter(rows) == {("SUCCESS", 1): 20}
    runs = pg_rows(pg_dsn, "SELECT task_id, state, count(*) FROM task_runs GROUP BY 1, 2")
    assert sorted(runs) == [("a", "SUCCESS", 20), ("b", "SUCCESS", 20)]
    attempts = pg_rows(pg_dsn, "SELECT count(*), count(DISTINCT task_run_id) FROM attempts")
    assert attempts == [(40, 40)]


async def test_no_attempt_runs_while_the_store_is_cut_off(
    pg_cluster: postgres.Cluster, pg_dsn: str, tmp_path: Path
) -> None:
    """With the link to PostgreSQL cut, the next task attempt of each of 10 executions waits
    before it runs (its side effect could not be stored); once the link is back they all run
    on to SUCCESS, each task once, their leases kept."""
    steps = TwoSteps("paused", 10)
    flow, gate, ran = steps.flow, steps.gate, steps.ran
    with proxied(pg_dsn, pg_cluster.port) as (proxy, url), anyio.fail_after(120):
        async with Runtime.open(url, flows=[flow], files=tmp_path / "files") as rt:
            store: Any = rt.store
            handles = [await rt.submit(flow) for _ in range(10)]
            await steps.all_in.wait()
            await store.flush()
            proxy.cut()
            probe = AppendLog(LogRow(handles[0].id, None, 0.0, "INFO", "probe"))
            store.write([probe])  # the writer meets the cut
            await postgres.store_until(store, lambda: store.lost)
            gate.set()
            # Every second attempt waits for the connection.
            await postgres.store_until(store, lambda: store.paused >= 10)
            assert not [k for k in ran if k[1] == "b"]
            proxy.restore()
            ended = [await h.wait() for h in handles]
            assert store.paused == 0 and store.failed is None
    assert Counter(e.state for e in ended) == {af.State.SUCCESS: 10}
    assert set(ran.values()) == {1} and len(ran) == 20
    assert Counter(pg_rows(pg_dsn, "SELECT state, epoch FROM executions")) == {("SUCCESS", 1): 10}


def _snapshot(dsn: str) -> list[Any]:
    return [
        pg_rows(dsn, f"SELECT * FROM {table} ORDER BY {order}")
        for table, order in (
            ("executions", "id"), ("task_runs", "seq"), ("attempts", "seq"),
            ("state_history", "seq"), ("logs", "seq"),
        )
    ]  # fmt: skip


async def test_a_worker_cut_off_longer_than_its_lease_drops_what_another_adopted(
    pg_cluster: postgres.Cluster, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's link to PostgreSQL cut (every connection reset, new ones refused) until
    its leases expired and another worker adopted and finished its executions: once the
    link is back it reconnects, stops those executions saying they were claimed, writes
    nothing more (the database is as the adopter left it) and keeps running."""
    monkeypatch.setenv("ACTORFLOW_FILES", str(tmp_path / "files"))
    side, ttl = tmp_path / "side", 2.0
    with proxied(pg_dsn, pg_cluster.port) as (proxy, url):
        cut_off = Worker(url, side, ttl, "--submit-hold", "3", "3600")
        with workers(cut_off):
            ids = [line.strip() for line in cut_off.lines if line.strip() != "ready"]
            assert len(ids) == 3
            until("every first attempt to start", lambda: len(side_lines(side)) >= 3)
            attempts = "SELECT count(*) FROM attempts"
            until("every first attempt to be stored", lambda: pg_rows(pg_dsn, attempts)[0][0] >= 3)
            proxy.cut()
            with workers(Worker(pg_dsn, side, ttl)):
                ended = "SELECT count(*) FROM executions WHERE ended IS NOT NULL"
                until("the adopted executions to end", lambda: pg_rows(pg_dsn, ended)[0][0] >= 3)
                before = _snapshot(pg_dsn)
                knocked = proxy.refused
                proxy.restore()
                until(
                    "the reconnected worker to stop every lost execution",
                    lambda: all(f"execution {i}: lease lost" in cut_off.stderr() for i in ids),
                )
                back, mine = time.time(), f"%:{cut_off.pid}:%"
                beat = "SELECT count(*) FROM owners WHERE heartbeat > $1 AND owner LIKE $2"
                until(
                    "a heartbeat after the link came back",
                    lambda: pg_rows(pg_dsn, beat, back, mine)[0][0],
                )
                assert _snapshot(pg_dsn) == before
                assert cut_off.proc.poll() is None  # stopped those executions, not itself
    assert knocked >= 2  # it tried to reconnect while cut off
    assert "claimed by" in cut_off.stderr()
    rows = pg_rows(pg_dsn, "SELECT state, epoch FROM executions")
    assert Counter(rows) == {("SUCCESS", 2): 3}


async def test_a_worker_stopped_inside_a_transaction_releases_its_locks_in_time(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP a worker while its writer holds a transaction with its leased rows locked:
    the server ends that session after idle_timeout, so another worker takes the expired
    leases and finishes the executions while the first is still stopped; resumed, the first
    applies nothing late and stops those executions."""
    monkeypatch.setenv("ACTORFLOW_FILES", str(tmp_path / "files"))
    side, ttl, idle = tmp_path / "side", 2.0, 2.0
    stopped = Worker(
        pg_dsn, side, ttl, "--submit-hold", "3", "0.2", "--hold-tx", "--idle-timeout", str(idle)
    )
    idle_sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'actorflow' AND state = 'idle in transaction'"
    )
    try:
        until(
            "the worker to stop inside a transaction",
            lambda: "in-transaction\n" in stopped.lines or stopped.proc.poll() is not None,
        )
        assert stopped.proc.poll() is None, stopped.stderr()
        stopped.proc.send_signal(signal.SIGSTOP)
        ids = [x.strip() for x in stopped.lines if x.strip() not in ("ready", "in-transaction")]
        assert len(ids) == 3
        assert pg_rows(pg_dsn, idle_sql)[0][0] >= 1  # it holds a transaction, and its locks
        with workers(Worker(pg_dsn, side, ttl)):
            ended = "SELECT count(*) FROM executions WHERE ended IS NOT NULL"
            # Bound: the lease, then at most two idle timeouts (the writer's transaction, and
            # a lease renewal of the stopped worker that queued behind its locks), and slack.
            until("the executions to end", lambda: pg_rows(pg_dsn, ended)[0][0] >= 3, 30)
            assert pg_rows(pg_dsn, idle_sql)[0][0] == 0  # the server ended that session
            assert stopped.proc.poll() is None  # still stopped, not dead
            before = _snapshot(pg_dsn)
            stopped.proc.send_signal(signal.SIGCONT)
            until(
                "the resumed worker to stop every lost execution",
                lambda: all(f"execution {i}: lease lost" in stopped.stderr() for i in ids),
            )
            assert _snapshot(pg_dsn) == before  # its held batch was not applied late
        rows = pg_rows(pg_dsn, "SELECT state, epoch FROM executions")
        assert Counter(rows) == {("SUCCESS", 2): 3}
    finally:
        stopped.stop()
