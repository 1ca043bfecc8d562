"""Workers: several processes share one SQLite file through the work queue, with leases and
fencing tokens (real subprocesses; SIGKILL and SIGSTOP)."""

from __future__ import annotations

import signal
import sqlite3
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

import actorflow as af
from _support.workers import LEASE_WORKER, Worker, pg_rows, side_lines, until, workers

pytestmark = pytest.mark.anyio
sys.path.insert(0, str(LEASE_WORKER.parent))
from lease_worker import EXTRA, TOUCH  # noqa: E402


def rows(db: Path, sql: str, *params: Any) -> list[Any]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(sql, params).fetchall()


async def _submit_many(db: Path, flow: af.Flow, n: int, **kw: Any) -> list[str]:
    ids: list[str] = []
    async with af.Runtime.open(db, worker=False, flows=[flow], **kw) as client:

        async def one() -> None:
            ids.append((await client.submit(flow)).id)

        for start in range(0, n, 100):
            async with anyio.create_task_group() as tg:
                for _ in range(min(100, n - start)):
                    tg.start_soon(one)
    return ids


def _all_ended(db: Path, ids: list[str]) -> bool:
    got = rows(db, "SELECT count(*) FROM executions WHERE ended IS NOT NULL")[0][0]
    return bool(got >= len(ids))


@pytest.mark.parametrize("n_workers", [2, 3])
async def test_workers_share_the_queue_and_each_task_runs_once(
    tmp_path: Path, n_workers: int
) -> None:
    """1,000 executions submitted by a client that runs nothing are run by 2 or 3 worker
    processes: every one succeeds, each task run's side effect happens exactly once, and
    every worker took part."""
    db, side = tmp_path / "w.db", tmp_path / "side"
    async with af.Runtime.open(db, worker=False):
        pass  # the schema exists before the workers race to create it
    with workers(*(Worker(db, side, 5.0) for _ in range(n_workers))) as procs:
        ids = await _submit_many(db, TOUCH, 1000)
        until("every execution to end", lambda: _all_ended(db, ids), timeout=90)
    states = Counter(r[0] for r in rows(db, "SELECT state FROM executions"))
    assert states == {"SUCCESS": 1000}
    lines = side_lines(side)
    per_run = Counter(line[1] for line in lines)
    assert len(per_run) == 2000 and set(per_run.values()) == {1}
    assert {line[0] for line in lines} == set(ids)
    by_pid = Counter(line[3] for line in lines)
    assert set(by_pid) == {str(w.pid) for w in procs}


async def test_two_workers_on_postgres_run_each_side_effect_once(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 executions a client submits to one PostgreSQL database are run by 2 worker
    processes (files in one shared folder): every one succeeds, each task run's side
    effect happens exactly once, and both workers took part."""
    monkeypatch.setenv("ACTORFLOW_FILES", str(tmp_path / "files"))  # the workers' too
    side = tmp_path / "side"
    async with af.Runtime.open(pg_dsn, worker=False, flows=[TOUCH]) as client:
        with workers(Worker(pg_dsn, side, 5.0), Worker(pg_dsn, side, 5.0)) as procs:
            handles = [await client.submit(TOUCH) for _ in range(200)]
            ended: list[af.State] = []

            async def wait(handle: Any) -> None:
                ended.append((await handle.wait()).state)

            with anyio.fail_after(90):
                async with anyio.create_task_group() as tg:
                    for handle in handles:
                        tg.start_soon(wait, handle)
        stored = await client.store.list_executions(limit=1000)
    assert Counter(ended) == {af.State.SUCCESS: 200}
    assert Counter(r.state for r in stored) == {"SUCCESS": 200}
    lines = side_lines(side)
    per_run = Counter(line[1] for line in lines)
    assert len(per_run) == 400 and set(per_run.values()) == {1}
    assert {line[0] for line in lines} == {h.id for h in handles}
    assert {line[3] for line in lines} == {str(w.pid) for w in procs}


async def test_a_killed_workers_executions_finish_on_another_after_its_lease(
    tmp_path: Path,
) -> None:
    """SIGKILL a worker mid-run: another worker claims its executions once their lease
    expires and finishes them within lease expiry + 1 s; the interrupted attempt is
    recorded, the task runs again (a new attempt), and nothing else runs twice."""
    db, side, ttl = tmp_path / "k.db", tmp_path / "side", 2.0
    victim = Worker(db, side, ttl, "--submit-hold", "5", "3600")
    with workers(victim) as _:
        ids = [line.strip() for line in victim.lines if line.strip() != "ready"]
        assert len(ids) == 5
        until("every first attempt to start", lambda: len(side_lines(side)) >= 5)
        with workers(Worker(db, side, ttl)):
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait()
            expiry = max(r[0] for r in rows(db, "SELECT lease_expiry FROM executions"))
            until("the executions to end", lambda: _all_ended(db, ids), timeout=30)
    ended = rows(db, "SELECT state, ended, epoch, owner FROM executions")
    assert {r[0] for r in ended} == {"SUCCESS"}
    assert max(r[1] for r in ended) <= expiry + 1.0
    assert {r[2] for r in ended} == {2}  # the victim's lease, then the new claim
    attempts = rows(db, "SELECT number, state, error FROM attempts ORDER BY number")
    assert Counter((a[0], a[1]) for a in attempts) == {(1, "FAILED"): 5, (2, "SUCCESS"): 5}
    assert all("interrupted" in (a[2] or "") for a in attempts if a[0] == 1)
    assert Counter(line[2] for line in side_lines(side)) == {"1": 5, "2": 5}


async def test_a_stalled_worker_is_fenced_when_it_wakes(tmp_path: Path) -> None:
    """SIGSTOP a worker until another took its expired leases and finished them; after
    SIGCONT its late writes are refused (the store is exactly as the new owner left it),
    it stops those executions and logs why, and it keeps running."""
    db, side, ttl = tmp_path / "s.db", tmp_path / "side", 2.0
    stalled = Worker(db, side, ttl, "--submit-hold", "3", str(ttl * 2))
    with workers(stalled) as _:
        ids = [line.strip() for line in stalled.lines if line.strip() != "ready"]
        until("every first attempt to start", lambda: len(side_lines(side)) >= 3)
        stalled.proc.send_signal(signal.SIGSTOP)
        with workers(Worker(db, side, ttl)):
            until("the executions to end", lambda: _all_ended(db, ids), timeout=30)

            def snapshot() -> list[Any]:
                return [
                    rows(db, f"SELECT * FROM {table} ORDER BY rowid")
                    for table in ("executions", "task_runs", "attempts", "state_history", "logs")
                ]

            before = snapshot()
            stalled.proc.send_signal(signal.SIGCONT)
            until(
                "the woken worker to stop every lost execution",
                lambda: all(f"execution {i}: lease lost" in stalled.stderr() for i in ids),
            )
            # Its refused batches are answered before it logs; one more beat for stragglers.
            woke = time.time()
            until("a heartbeat of the woken worker", lambda: _beat_after(db, stalled.pid, woke))
            assert snapshot() == before
            assert stalled.proc.poll() is None  # stopped those executions, not itself
    assert "claimed by" in stalled.stderr()


async def test_a_stalled_worker_on_postgres_is_fenced_when_it_wakes(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on SQLite: a worker SIGSTOPped until another took its expired leases and finished
    them writes nothing after SIGCONT (the database is as the new owner left it), stops
    those executions saying why, and keeps running."""
    monkeypatch.setenv("ACTORFLOW_FILES", str(tmp_path / "files"))
    side, ttl = tmp_path / "side", 2.0
    stalled = Worker(pg_dsn, side, ttl, "--submit-hold", "3", str(ttl * 2))
    with workers(stalled) as _:
        ids = [line.strip() for line in stalled.lines if line.strip() != "ready"]
        until("every first attempt to start", lambda: len(side_lines(side)) >= 3)
        until(
            "every first attempt to be stored",
            lambda: pg_rows(pg_dsn, "SELECT count(*) FROM attempts")[0][0] >= 3,
        )
        stalled.proc.send_signal(signal.SIGSTOP)
        with workers(Worker(pg_dsn, side, ttl)):
            ended = "SELECT count(*) FROM executions WHERE ended IS NOT NULL"
            until("the executions to end", lambda: pg_rows(pg_dsn, ended)[0][0] >= 3, 30)

            def snapshot() -> list[Any]:
                return [
                    pg_rows(pg_dsn, f"SELECT * FROM {table} ORDER BY {order}")
                    for table, order in (
                        ("executions", "id"), ("task_runs", "seq"), ("attempts", "seq"),
                        ("state_history", "seq"), ("logs", "seq"),
                    )
                ]  # fmt: skip

            before = snapshot()
            stalled.proc.send_signal(signal.SIGCONT)
            until(
                "the woken worker to stop every lost execution",
                lambda: all(f"execution {i}: lease lost" in stalled.stderr() for i in ids),
            )
            woke, mine = time.time(), f"%:{stalled.pid}:%"
            beat = "SELECT count(*) FROM owners WHERE heartbeat > $1 AND owner LIKE $2"
            until(
                "a heartbeat of the woken worker", lambda: pg_rows(pg_dsn, beat, woke, mine)[0][0]
            )
            assert snapshot() == before
            assert stalled.proc.poll() is None  # stopped those executions, not itself
    assert "claimed by" in stalled.stderr()


def _beat_after(db: Path, pid: int, when: float) -> bool:
    """Whether the worker of process ``pid`` (its owner name holds the pid) beat after ``when``."""
    sql = "SELECT count(*) FROM owners WHERE heartbeat > ? AND owner LIKE ?"
    return bool(rows(db, sql, when, f"%:{pid}:%")[0][0])


async def test_a_client_submits_and_a_worker_elsewhere_runs_it(tmp_path: Path) -> None:
    """A worker=False runtime stores the execution CREATED without running it; a worker
    process claims and runs it, and the client's wait() follows it to its end."""
    db, side = tmp_path / "c.db", tmp_path / "side"
    async with af.Runtime.open(db, worker=False, flows=[TOUCH]) as client:
        handle = await client.submit(TOUCH)
        row = rows(db, "SELECT state, owner, epoch FROM executions")
        assert row == [("CREATED", None, 0)]
        with workers(Worker(db, side, 5.0)) as (w,):
            with anyio.fail_after(30):
                done = await handle.wait()
        assert done.state is af.State.SUCCESS
    assert {line[3] for line in side_lines(side)} == {str(w.pid)}


async def test_an_unloadable_flow_waits_visibly_until_a_worker_has_it(tmp_path: Path) -> None:
    """An execution whose flow no live worker can load stays CREATED with the reason in
    ``waiting``; once a worker that has the flow starts, it runs."""
    db, side = tmp_path / "u.db", tmp_path / "side"
    (eid,) = await _submit_many(db, EXTRA, 1)
    with workers(Worker(db, side, 5.0)):
        got = until(
            "the execution to wait visibly",
            lambda: rows(db, "SELECT state, waiting FROM executions WHERE id = ?", eid)[0][1],
        )
        assert "lease.extra" in got and "no worker has loaded its flow" in got
        assert rows(db, "SELECT state FROM executions")[0][0] == "CREATED"
        with workers(Worker(db, side, 5.0, "--extra")) as (good,):
            until("the execution to end", lambda: _all_ended(db, [eid]))
    assert rows(db, "SELECT state, waiting FROM executions") == [("SUCCESS", None)]
    assert {line[3] for line in side_lines(side)} == {str(good.pid)}


async def test_closing_a_worker_hands_its_executions_over_at_once(tmp_path: Path) -> None:
    """A worker that shuts down releases its leases: another worker resumes its unfinished
    executions without waiting for the lease to expire."""
    db, side, ttl = tmp_path / "h.db", tmp_path / "side", 600.0
    first = Worker(db, side, ttl, "--submit-hold", "2", "3600")
    with workers(first) as _:
        ids = [line.strip() for line in first.lines if line.strip() != "ready"]
        until("every first attempt to start", lambda: len(side_lines(side)) >= 2)
        with workers(Worker(db, side, ttl)):
            first.stop()
            until("the executions to end", lambda: _all_ended(db, ids), timeout=30)
    assert {r[0] for r in rows(db, "SELECT state FROM executions")} == {"SUCCESS"}


async def test_lease_ttl_must_be_positive(tmp_path: Path) -> None:
    """A lease_ttl that is not a positive number of seconds is refused at open."""
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lease_ttl"):
            async with af.Runtime.open(tmp_path / "x.db", lease_ttl=bad):
                pass


def _history(db: Path, ex_id: str) -> list[str]:
    sql = "SELECT state FROM state_history WHERE execution_id = ? AND task_run_id IS NULL"
    return [r[0] for r in rows(db, f"{sql} ORDER BY seq", ex_id)]


def _state(db: Path, ex_id: str) -> str | None:
    found = rows(db, "SELECT state FROM executions WHERE id = ?", ex_id)
    return found[0][0] if found else None


@pytest.mark.parametrize("flow_id", ["conc-cancel", "conc-fail", "conc-queue", "conc-queue-pause"])
async def test_flow_concurrency_holds_across_two_workers(tmp_path: Path, flow_id: str) -> None:
    """Kestra's flow-concurrency cases with the two executions on two worker processes:
    over the limit of 1, the second is CANCELLED (cancel), FAILED (fail), or QUEUED then
    run once the first ended (queue; with a Pause, the paused first still holds the slot);
    the first ends SUCCESS."""
    from lease_worker import LIMITED

    flow = next(f for f in LIMITED if f.id == flow_id)
    db, side = tmp_path / "c.db", tmp_path / "side"
    gate1, gate2 = tmp_path / "gate1", tmp_path / "gate2"
    gate2.touch()  # the second execution's task needs no gate
    async with af.Runtime.open(db, worker=False, flows=[flow]) as client:
        with workers(Worker(db, side, 5.0, "--max-active", "1")) as (first_worker,):
            one = (await client.submit(flow, {"gate": str(gate1)})).id
            until("the first to run", lambda: side_lines(side))
            with workers(Worker(db, side, 5.0)) as (second_worker,):
                two = (await client.submit(flow, {"gate": str(gate2)})).id
                if flow_id in ("conc-cancel", "conc-fail"):
                    want = "CANCELLED" if flow_id == "conc-cancel" else "FAILED"
                    until("the second to end", lambda: _state(db, two) == want)
                    assert _state(db, one) == "RUNNING"
                else:
                    until("the second to queue", lambda: _state(db, two) == "QUEUED")
                assert rows(db, "SELECT owner FROM executions WHERE id = ?", two) != rows(
                    db, "SELECT owner FROM executions WHERE id = ?", one
                )
                gate1.touch()
                until("both to end", lambda: _all_ended(db, [one, two]))
    assert _state(db, one) == "SUCCESS"
    if flow_id.startswith("conc-queue"):
        assert _state(db, two) == "SUCCESS"
        history = _history(db, two)
        assert history[:3] == ["CREATED", "QUEUED", "RUNNING"] and history[-1] == "SUCCESS"
        # The second ran only once the first had ended (and, with the Pause, after it).
        first_end = rows(db, "SELECT ended FROM executions WHERE id = ?", one)[0][0]
        started = rows(db, "SELECT min(start) FROM attempts WHERE execution_id = ?", two)[0][0]
        assert started >= first_end
    pids = {line[0]: line[3] for line in side_lines(side)}
    assert pids[one] == str(first_worker.pid)
    if two in pids:
        assert pids[two] == str(second_worker.pid)
