"""Crash recovery with real processes killed by SIGKILL at random moments."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _support import postgres
from _support.cli import poll, query
from _support.histories import check_stored_histories

WORKER = Path(__file__).with_name("crash_worker.py")
sys.path.insert(0, str(WORKER.parent))
from crash_worker import EXPECTED  # noqa: E402


def _side_effects(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line.strip())


@pytest.fixture(params=["sqlite", "postgres"])
def crash_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database the crash test's processes share: a SQLite file, or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "crash.db")
        return
    cluster: postgres.Cluster = request.getfixturevalue("pg_cluster")
    name = asyncio.run(postgres.create_database(cluster))
    yield cluster.dsn(name)
    asyncio.run(postgres.drop_database(cluster, name))


def _rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on either database ([] before its schema exists)."""
    if not db.startswith("postgresql://"):
        if not Path(db).exists():
            return []
        with sqlite3.connect(db) as conn:
            try:
                return conn.execute(sql).fetchall()
            except sqlite3.OperationalError:
                return []

    async def fetch() -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(db)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _completed(db: str) -> set[str]:
    sql = "SELECT id FROM task_runs WHERE state IN ('SUCCESS','WARNING','FAILED','SKIPPED')"
    return {r[0] for r in _rows(db, sql)}


def _check_histories(db: str) -> None:
    check_stored_histories(
        _rows(db, "SELECT execution_id, task_run_id, state FROM state_history ORDER BY seq")
    )


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, crash_db: str) -> None:
    """Killed at 20+ random moments, executions still end as they would have, completed task
    runs never run again, and every stored history follows the transition tables (on SQLite
    and on PostgreSQL)."""
    db, side = crash_db, tmp_path / "side.log"
    env = {**os.environ, "ACTORFLOW_FILES": str(tmp_path / "files")}
    rng = random.Random(20261122)
    per_flow, kills, cycles = 3, 0, 0
    while kills < 20:
        cycles += 1
        assert cycles < 80, f"only {kills} kills in {cycles} runs"
        before_done = _completed(db)
        before_runs = _side_effects(side)
        cmd = [sys.executable, str(WORKER), str(db), str(side), str(per_flow)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            proc.wait(timeout=rng.uniform(0.25, 0.8))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            _, err = proc.communicate()
            assert proc.returncode == 0, err.decode()[-3000:]
            per_flow += 2  # all done: the next run submits more, so there is more to kill
        after_runs = _side_effects(side)
        for tr_id in before_done:
            assert after_runs[tr_id] == before_runs[tr_id], f"completed task run {tr_id} ran again"
    cmd = [sys.executable, str(WORKER), str(db), str(side), str(per_flow)]
    final = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
    assert final.returncode == 0, final.stderr.decode()[-3000:]
    rows = _rows(db, "SELECT flow_id, state FROM executions")
    assert len(rows) == per_flow * len(EXPECTED)
    for flow_id, state in rows:
        assert state == EXPECTED[flow_id], (flow_id, state)
    _check_histories(db)


@pytest.mark.parametrize("n", [1])
def test_worker_alone_reaches_expected_states(tmp_path: Path, n: int) -> None:
    """Without crashes the worker's executions end in their expected states."""
    db, side = tmp_path / "ok.db", tmp_path / "side.log"
    done = subprocess.run(
        [sys.executable, str(WORKER), str(db), str(side), str(n)], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT flow_id, state FROM executions").fetchall())
    assert rows == EXPECTED


_HOLDER = """
import sys, anyio, actorflow as af
async def main():
    async with af.Runtime.open(sys.argv[1]):
        print("ready", flush=True)
        await anyio.sleep_forever()
anyio.run(main)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_writer_process_dies_with_its_runtime(tmp_path: Path) -> None:
    """SIGKILL of a runtime's process takes its SQLite writer process with it at once, so no
    batch of a dead runtime can land after another process took its executions over."""
    import select

    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "holder.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        writers = [
            int(c) for c in children if "_writer_proc" in Path(f"/proc/{c}/cmdline").read_text()
        ]
        assert len(writers) == 1
        pidfd = os.pidfd_open(writers[0])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    try:
        ready, _, _ = select.select([pidfd], [], [], 10.0)  # readable once the process is gone
        assert ready, "the writer process outlived its runtime"
    finally:
        os.close(pidfd)


IDEMPOTENCY = Path(__file__).with_name("idempotency_worker.py")


def _idem(db: Path, side: Path, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(IDEMPOTENCY), str(db), str(side), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(db: Path, side: Path) -> list[tuple[str, str, int]]:
    """Run the worker to the end; every attempt's (task-run id, idempotency key, attempt)."""
    proc = _idem(db, side, "finish")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    lines = [line.split() for line in side.read_text().splitlines()]
    return [(i, key, int(n)) for i, key, n in lines]


def _stored_charge(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT id, state FROM task_runs WHERE task_id = 'charge'")


def test_a_task_run_never_stored_runs_again_under_the_same_id(tmp_path: Path) -> None:
    """SIGKILL in the middle of an attempt whose task run was not stored yet: the task run is
    created again after the crash with the same id and idempotency key, which its retries
    keep too."""
    db, side = tmp_path / "idem.db", tmp_path / "side.log"
    crashed = _idem(db, side, "crash")
    crashed.communicate(timeout=120)
    assert crashed.returncode == -signal.SIGKILL
    assert _stored_charge(db) == []  # the interrupted attempt's task run was never stored
    attempts = _finish(db, side)
    assert [n for _, _, n in attempts] == [1, 1, 2]  # interrupted, failed, retried
    [(tr_id, state)] = _stored_charge(db)
    assert state == "SUCCESS"
    assert {(i, key) for i, key, _ in attempts} == {(tr_id, f"{tr_id}-1")}


def test_an_interrupted_attempt_runs_again_under_the_same_id(tmp_path: Path) -> None:
    """SIGKILL while an attempt of a stored task run is in flight: the next attempt has the
    same task-run id and idempotency key; the interrupted one is recorded FAILED."""
    db, side = tmp_path / "idem.db", tmp_path / "side.log"
    hung = _idem(db, side, "hang")
    try:
        poll("the attempt to be stored RUNNING", lambda: ("RUNNING",) in
             [(s,) for _, s in _stored_charge(db)], timeout=60)  # fmt: skip
    finally:
        hung.send_signal(signal.SIGKILL)
        hung.communicate()
    attempts = _finish(db, side)
    [(tr_id, state)] = _stored_charge(db)
    assert state == "SUCCESS"
    assert [n for _, _, n in attempts] == [1, 2, 3]
    assert {(i, key) for i, key, _ in attempts} == {(tr_id, f"{tr_id}-1")}
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT number, state, error FROM attempts WHERE task_run_id = ? ORDER BY number",
            (tr_id,),
        ).fetchall()
    assert [(n, s) for n, s, _ in rows] == [(1, "FAILED"), (2, "FAILED"), (3, "SUCCESS")]
    assert rows[0][2] == "interrupted"
