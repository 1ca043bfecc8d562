"""A parent recovered after a SIGKILL does not start a second child execution."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from subflow_crash_worker import CHILD, PARENT

import actorflow as af

pytestmark = pytest.mark.anyio
WORKER = Path(__file__).with_name("subflow_crash_worker.py")


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


async def test_a_recovered_parent_adopts_its_stored_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL after the child execution is stored but before the parent's task run holds
    its id: on recovery the parent finds that child by its derived id, waits for it, and ends
    SUCCESS with exactly one child."""
    db, gate = tmp_path / "x.db", tmp_path / "gate"
    monkeypatch.setenv("SUBFLOW_GATE", str(gate))
    proc = subprocess.run([sys.executable, str(WORKER), str(db)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    [(child_id, parent_id)] = _rows(
        db, "SELECT id, parent_execution_id FROM executions WHERE parent_execution_id IS NOT NULL"
    )
    gate.write_text("")
    async with af.Runtime.open(db, flows=[PARENT, CHILD]) as rt:
        parent = await rt.wait(str(parent_id), timeout=60)
        assert parent.state is af.State.SUCCESS
        [call] = [tr for tr in parent.task_runs if tr.task_id == "call"]
        assert call.child_execution_id == child_id
        assert call.outputs["execution_id"] == child_id
    children = _rows(db, "SELECT id, state FROM executions WHERE parent_execution_id IS NOT NULL")
    assert children == [(child_id, "SUCCESS")]
    assert os.path.exists(gate)
