"""Commands sent from this process to executions another, real process owns: they are
delivered (by the owner's doorbell, not only its poll), and the sender gets the owner's answer
as the exact error an in-process call raises: same class, same message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import pytest

import actorflow as af
from _support.command_owner import APPROVAL, FLOWS, GATED, HOLDING
from actorflow import CommandNotAnswered, ExecutionNotFound, IllegalOperation, InputError, State
from actorflow.runtime import Runtime
from actorflow.runtime._core import _recovery
from actorflow.runtime._core._notify import Bell, channel_of, owner_address

pytestmark = pytest.mark.anyio
OWNER = Path(__file__).parents[1] / "_support" / "command_owner.py"


class Owner:
    """A real process owning one execution of each test flow (see ``command_owner``)."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(OWNER), str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the owner process did not start"
        self.ids: dict[str, str] = json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@contextmanager
def owner_process(db: Path) -> Iterator[Owner]:
    owner = Owner(db)
    try:
        yield owner
    finally:
        owner.stop()


@asynccontextmanager
async def sender(db: Path) -> AsyncIterator[Runtime]:
    async with Runtime.open(db, flows=FLOWS, recover=False) as rt:
        yield rt


async def _in_process_error(flow: af.Flow, state: State, call: str, *args: object) -> Exception:
    """The error ``call`` raises in the owner's own process, with the id made neutral."""
    async with Runtime.open(":memory:", flows=FLOWS) as rt:
        ex_id = (await rt.submit(flow)).id
        await rt.wait_for(ex_id, state, timeout=10)
        try:
            await getattr(rt, call)(ex_id, *args)
        except af.ActorflowError as exc:
            return type(exc)(str(exc).replace(ex_id, "ID"))
        finally:
            with anyio.CancelScope(shield=True):
                if not (await rt.get(ex_id)).state.terminal:
                    await rt.kill(ex_id)
    raise AssertionError(f"{call} was applied")


def _neutral(exc: BaseException, ex_id: str) -> tuple[type[BaseException], str]:
    return type(exc), str(exc).replace(ex_id, "ID")


async def test_a_bad_resume_input_from_another_process_is_the_owners_input_error(
    tmp_path: Path,
) -> None:
    """A resume with a missing input sent to another process raises InputError with the
    message (the field named) an in-process resume gives; the execution stays paused, and a
    good resume is applied."""
    db = tmp_path / "x.db"
    local = await _in_process_error(APPROVAL, State.PAUSED, "resume", {"nope": "x"})
    assert isinstance(local, InputError) and "reason" in str(local)
    with owner_process(db) as owner:
        ex_id = owner.ids["approval"]
        async with sender(db) as rt:
            with anyio.fail_after(30), pytest.raises(InputError) as remote:
                await rt.resume(ex_id, {"nope": "x"})
            assert _neutral(remote.value, ex_id) == (type(local), str(local))
            assert (await rt.get(ex_id)).state is State.PAUSED
            with anyio.fail_after(30):
                await rt.resume(ex_id, {"reason": "fine"})
                done = await rt.wait(ex_id)
            assert done.state is State.SUCCESS
            assert done.task_run("approve").outputs == {
                "reason": "fine",
                "onResume": {"reason": "fine"},
            }


async def test_a_kill_of_a_finished_execution_says_it_already_ended(tmp_path: Path) -> None:
    """A kill of an execution that ended in its owner's process says in which state, as
    in-process; a kill of an unknown id is ExecutionNotFound in both."""
    db = tmp_path / "x.db"
    with owner_process(db) as owner:
        ex_id = owner.ids["done"]
        async with sender(db) as rt:
            with anyio.fail_after(30), pytest.raises(IllegalOperation) as remote:
                await rt.kill(ex_id)
            assert str(remote.value) == f"execution {ex_id} is already SUCCESS"
            with pytest.raises(ExecutionNotFound) as unknown:
                await rt.kill("nope")
    async with Runtime.open(":memory:") as local:
        with pytest.raises(ExecutionNotFound) as here:
            await local.kill("nope")
    assert str(unknown.value) == str(here.value)


async def test_pause_resume_kill_round_trip_across_processes(tmp_path: Path) -> None:
    """Pause, resume and kill sent to another process's running execution are each applied
    and answered; a second pause is refused with the in-process message."""
    db = tmp_path / "x.db"
    with owner_process(db) as owner:
        ex_id = owner.ids["holding"]
        async with sender(db) as rt:
            with anyio.fail_after(30):
                await rt.pause(ex_id)
                assert (await rt.get(ex_id)).state is State.PAUSED
                with pytest.raises(IllegalOperation) as again:
                    await rt.pause(ex_id)
                assert str(again.value) == (
                    f"execution {ex_id} is PAUSED; only RUNNING can be paused"
                )
                await rt.resume(ex_id)
                assert (await rt.get(ex_id)).state is State.RUNNING
                await rt.kill(ex_id)
                assert (await rt.wait(ex_id)).state is State.KILLED


async def test_a_second_pause_is_refused_in_process_with_the_same_words(tmp_path: Path) -> None:
    """The in-process refusal of a pause of a PAUSED execution is the one the cross-process
    test expects (so the two cannot drift apart)."""
    async with Runtime.open(":memory:", flows=FLOWS) as rt:
        ex_id = (await rt.submit(HOLDING)).id
        await rt.wait_for(ex_id, State.RUNNING, timeout=10)
        await rt.pause(ex_id)
        with pytest.raises(IllegalOperation) as again:
            await rt.pause(ex_id)
        assert str(again.value) == f"execution {ex_id} is PAUSED; only RUNNING can be paused"
        await rt.kill(ex_id)


async def test_a_command_for_an_execution_whose_owner_died_is_answered(tmp_path: Path) -> None:
    """A kill for an execution whose owner was SIGKILLed is answered at once: nobody can
    answer it (the process died); it stays pending for the runtime that takes it over."""
    db = tmp_path / "x.db"
    with owner_process(db) as owner:
        ex_id = owner.ids["gated"]
        owner.stop()  # SIGKILL
        async with sender(db) as rt:
            with anyio.fail_after(30), pytest.raises(CommandNotAnswered) as e:
                await rt.kill(ex_id)
            assert "the process died" in str(e.value) and "stays pending" in str(e.value)
            cmd = await rt.store.get_command(e.value.command_id)
            assert cmd is not None and cmd.status == "pending"


async def test_a_command_for_a_stopped_owner_times_out_naming_it(tmp_path: Path) -> None:
    """A kill for an execution whose owner process is stopped (SIGSTOP) ends with
    CommandNotAnswered after the given timeout, naming the owner; it never hangs, and the
    owner applies it once it runs again."""
    db = tmp_path / "x.db"
    with owner_process(db) as owner:
        ex_id = owner.ids["gated"]
        async with sender(db) as rt:
            row = await rt.store.get_execution(ex_id)
            assert row is not None and row.owner is not None
            os.kill(owner.proc.pid, signal.SIGSTOP)
            try:
                with anyio.fail_after(30), pytest.raises(CommandNotAnswered) as e:
                    await rt.kill(ex_id, timeout=0.5)
            finally:
                os.kill(owner.proc.pid, signal.SIGCONT)
            assert f"its owner {row.owner} did not answer within 0.5s" in str(e.value)
            with anyio.fail_after(30):
                assert (await rt.wait(ex_id)).state is State.KILLED
            cmd = await rt.store.get_command(e.value.command_id)
            assert cmd is not None and cmd.status == "applied"


async def test_restart_and_replay_from_another_process(tmp_path: Path) -> None:
    """Restart and replay of another process's executions answer as in-process: a running
    one is refused with the same message, a failed one is restarted here (once: a second
    restart is refused), an ended one is replayed."""
    db = tmp_path / "x.db"
    local = await _in_process_error(HOLDING, State.RUNNING, "restart")
    with owner_process(db) as owner:
        async with sender(db) as rt:
            held = owner.ids["holding"]
            with pytest.raises(IllegalOperation) as running:
                await rt.restart(held)
            assert _neutral(running.value, held) == (type(local), str(local))
            with pytest.raises(IllegalOperation, match=f"execution {held} is RUNNING; wait"):
                await rt.replay(held)
            with pytest.raises(ExecutionNotFound):
                await rt.restart("nope")
            failed = owner.ids["needs_file"]
            Path(f"{db}.marker").touch()
            with anyio.fail_after(30):
                done = await (await rt.restart(failed)).wait()
            assert done.state is State.SUCCESS and done.attempt_number == 2
            with pytest.raises(IllegalOperation, match="is SUCCESS; only FAILED"):
                await rt.restart(failed)
            with anyio.fail_after(30):
                again = await (await rt.replay(owner.ids["done"])).wait()
            assert again.state is State.SUCCESS
            assert again.original_execution_id == owner.ids["done"]


async def test_a_command_reaches_its_owner_by_the_doorbell_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the owner's poll an hour apart, pause and resume from another runtime are still
    applied: the doorbell delivers them; once the owner closed, its doorbell is gone."""
    monkeypatch.setattr(_recovery, "COMMAND_POLL", 3600.0)
    monkeypatch.setattr(_recovery, "DOORBELL_POLL", 3600.0)
    db = tmp_path / "x.db"
    async with Runtime.open(db, flows=FLOWS) as owner:
        ex_id = (await owner.submit(GATED)).id
        await owner.wait_for(ex_id, State.PAUSED, timeout=10)
        channel = channel_of(owner.store)
        assert channel is not None
        address = owner_address(channel, owner.engine.owner)
        async with sender(db) as rt:
            with anyio.fail_after(30):
                await rt.resume(ex_id)
                assert (await owner.wait(ex_id)).state is State.SUCCESS
        bell = Bell()
        try:
            assert bell.ring(address)
        finally:
            bell.close()
    bell = Bell()
    try:
        assert not bell.ring(address)
    finally:
        bell.close()
