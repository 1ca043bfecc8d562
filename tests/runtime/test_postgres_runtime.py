"""A runtime on PostgreSQL: selected by URL, files in a shared folder, commands delivered by
NOTIFY instead of polling (the SIGKILL crash test runs on it in test_crash_recovery)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import actorflow as af
from actorflow import State, StorageError
from actorflow.runtime import Runtime
from actorflow.runtime._core import _recovery

pytestmark = pytest.mark.anyio

STEPS = af.Flow(
    id="steps",
    tasks=[af.Log(id="a", message="one"), af.Log(id="b", message="{{ 1 + 1 }}")],
)
GATED = af.Flow(id="gated", tasks=[af.Pause(id="gate"), af.Log(id="after", message="after")])


async def test_a_runtime_on_postgres_runs_and_reads_back_what_it_stored(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Runtime.open(postgresql://...) runs a flow to SUCCESS; a new runtime on the same
    database reads the same tree back."""
    async with Runtime.open(pg_dsn, flows=[STEPS], files=tmp_path / "files") as rt:
        done = await rt.run(STEPS)
        assert done.state is State.SUCCESS
    async with Runtime.open(pg_dsn, flows=[STEPS], files=tmp_path / "files") as rt:
        again = await rt.get(done.id)
        assert again.state is State.SUCCESS
        assert [t.task_id for t in again.task_runs] == ["a", "b"]
        assert [e.state for e in again.history] == [e.state for e in done.history]


async def test_a_postgres_runtime_needs_a_shared_files_folder(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without files= nor ACTORFLOW_FILES a writing runtime is refused, naming both; with
    ACTORFLOW_FILES its files go there; a reader needs neither."""
    monkeypatch.delenv("ACTORFLOW_FILES", raising=False)
    with pytest.raises(StorageError, match=r"files=.*ACTORFLOW_FILES"):
        async with Runtime.open(pg_dsn):
            pass
    monkeypatch.setenv("ACTORFLOW_FILES", str(tmp_path / "shared"))
    async with Runtime.open(pg_dsn) as rt:
        assert rt.engine.files.root == tmp_path / "shared"
    monkeypatch.delenv("ACTORFLOW_FILES")
    async with Runtime.open(pg_dsn, read_only=True) as reader:
        assert await reader.executions() == []


async def test_a_command_from_another_runtime_arrives_by_notify(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With polling and heartbeats an hour apart, a resume sent from another runtime is
    still applied and answered: the owner is woken by NOTIFY."""
    monkeypatch.setattr(_recovery, "COMMAND_POLL", 3600.0)
    monkeypatch.setattr(_recovery, "HEARTBEAT", 3600.0)
    files = tmp_path / "files"
    async with (
        Runtime.open(pg_dsn, flows=[GATED], files=files) as owner,
        Runtime.open(pg_dsn, flows=[GATED], files=files, recover=False) as sender,
    ):
        ex_id = (await owner.submit(GATED)).id
        await owner.wait_for(ex_id, State.PAUSED)
        with anyio.fail_after(30):
            await sender.resume(ex_id)
            done = await owner.wait(ex_id)
        assert done.state is State.SUCCESS
        [command] = await owner.store.commands_after(0)
        assert (command.kind, command.status) == ("resume", "applied")
