"""A corrupt execution row met by the runtime is logged and quarantined; the rest run on."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

import pytest

import actorflow as af

pytestmark = pytest.mark.anyio

FLOW = af.Flow(
    id="held", namespace="t", tasks=[af.Pause(id="wait"), af.Log(id="after", message="on")]
)


async def _two_paused(db: Path) -> tuple[str, str]:
    async with af.Runtime.open(db, flows=[FLOW]) as rt:
        ids = []
        for _ in range(2):
            h = await rt.submit(FLOW)
            await rt.wait_for(h.id, af.State.PAUSED)
            ids.append(h.id)
    return ids[0], ids[1]


def _corrupt(db: Path, sql: str, execution_id: str) -> None:
    # 0xc1 is the one byte msgpack never uses: no decoder accepts it.
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        assert conn.execute(sql, (execution_id,)).rowcount >= 1


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE executions SET data = x'c1' WHERE id = ?",
        "UPDATE task_runs SET data = x'c1' WHERE execution_id = ?",
    ],
    ids=["execution row", "task-run row"],
)
async def test_recover_quarantines_a_corrupt_execution_and_runs_the_others(
    tmp_path: Path, sql: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Runtime.open(recover=True) over a hand-corrupted row starts, logs and quarantines that
    execution (its bytes kept), and resumes the other one to SUCCESS."""
    db = tmp_path / "x.db"
    bad, good = await _two_paused(db)
    _corrupt(db, sql, bad)
    with caplog.at_level(logging.ERROR, logger="actorflow.runtime"):
        async with af.Runtime.open(db, flows=[FLOW]) as rt:
            [q] = await rt.store.quarantined()
            assert q.execution_id == bad and "cannot be decoded" in q.reason
            await rt.resume(good)
            assert (await rt.wait(good)).state is af.State.SUCCESS
            with pytest.raises(af.ExecutionCorrupt, match=f"execution '{bad}'"):
                await rt.get(bad)
            # A listing decodes execution rows only: one whose task run is bad still shows.
            listed = {e.id for e in await rt.executions()}
            assert listed == ({good} if "executions" in sql else {good, bad})
    assert any(bad in r.getMessage() and "quarantined" in r.getMessage() for r in caplog.records)
    with contextlib.closing(sqlite3.connect(db)) as conn:  # nothing of it was deleted
        assert conn.execute("SELECT count(*) FROM executions WHERE id = ?", (bad,)).fetchone() == (
            1,
        )
    async with af.Runtime.open(db, flows=[FLOW]) as rt:  # and later starts leave it aside
        assert [q.execution_id for q in await rt.store.quarantined()] == [bad]


async def test_a_corrupt_row_met_on_load_is_quarantined(tmp_path: Path) -> None:
    """An ended execution whose row is corrupt: get() raises ExecutionCorrupt naming it (not
    a DecodeError), the listing leaves it out, and it is quarantined."""
    db = tmp_path / "x.db"
    flow = af.Flow(id="quick", namespace="t", tasks=[af.Log(id="a", message="x")])
    async with af.Runtime.open(db) as rt:
        ok = (await rt.run(flow)).id
        broken = (await rt.run(flow)).id
    _corrupt(db, "UPDATE executions SET data = x'c1' WHERE id = ?", broken)
    async with af.Runtime.open(db) as rt:
        assert [e.id for e in await rt.executions()] == [ok]
        with pytest.raises(af.ExecutionCorrupt, match="cannot be decoded"):
            await rt.get(broken)
        assert (await rt.get(ok)).state is af.State.SUCCESS
        assert [q.execution_id for q in await rt.store.quarantined()] == [broken]
