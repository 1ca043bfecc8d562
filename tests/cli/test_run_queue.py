"""`actorflow run` through the work queue: --no-wait only submits; with a live worker on the
database, run submits and follows what that worker does."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from _support.cli import af, af_json, env, finish, poll, query

FLOW = """
id: queued
namespace: cli.queue
tasks:
  - id: hello
    type: log
    message: hello from a worker
"""
# A worker process with no flows of its own: it loads what it runs from the stored source.
WORKER = """
import signal, sys, anyio
import actorflow as af
import actorflow.flows

async def main():
    async with af.Runtime.open(sys.argv[1], lease_ttl=5.0):
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            print("ready", flush=True)  # once a SIGTERM is ours to handle
            async for _ in signals:
                break

anyio.run(main)
"""


def _flow(tmp_path: Path) -> Path:
    path = tmp_path / "queued.yaml"
    path.write_text(FLOW)
    return path


def _worker(db: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def test_run_no_wait_only_queues_the_execution(tmp_path: Path) -> None:
    """--no-wait prints the id of a CREATED execution no process owns; a worker started
    later runs it from its stored flow source."""
    db = tmp_path / "q.db"
    ex_id = af("run", _flow(tmp_path), "--no-wait", "--db", db).stdout.strip()
    assert query(db, "SELECT state, owner FROM executions WHERE id = ?", ex_id) == [
        ("CREATED", None)
    ]
    listed = af_json("executions", "--db", db)
    assert [(e["id"], e["state"], e["waiting"]) for e in listed] == [(ex_id, "CREATED", None)]
    worker = _worker(db)
    try:
        poll("the worker to run it", lambda: query(
            db, "SELECT 1 FROM executions WHERE id = ? AND state = 'SUCCESS'", ex_id))  # fmt: skip
    finally:
        worker.send_signal(signal.SIGTERM)
        code, _, err = finish(worker)
    assert code == 0, err
    logs = af("logs", ex_id, "--db", db).stdout
    assert "hello from a worker" in logs


def test_run_goes_through_a_live_worker_and_follows(tmp_path: Path) -> None:
    """With a worker on the database, run queues the execution, the worker runs it, and
    run reports its end (exit 0) without running it itself."""
    db = tmp_path / "w.db"
    af("run", _flow(tmp_path), "--no-wait", "--db", db)  # the database exists
    worker = _worker(db)
    try:
        out = af("run", _flow(tmp_path), "--db", db).stdout
        assert "queued" in out and "SUCCESS" in out
        owners = query(db, "SELECT owner FROM executions WHERE state = 'SUCCESS'")
        assert len(owners) == 2 and all(f":{worker.pid}:" in o[0] for o in owners)
    finally:
        worker.send_signal(signal.SIGTERM)
        finish(worker)
