"""Commands between processes: each is consumed once, acts only on what it was meant for,
and its sender gets the owner's answer. Several runtimes on one SQLite file stand for several
processes (each has its own owner id); the crash test uses real processes and SIGKILL."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest

import actorflow as af
from actorflow import CommandNotAnswered, IllegalOperation, InputError, State
from actorflow.runtime import Runtime
from actorflow.runtime._core._commands import target_of

pytestmark = pytest.mark.anyio
WORKER = Path(__file__).with_name("command_worker.py")

TWO_PAUSES = af.Flow(
    id="two_pauses",
    tasks=[af.Pause(id="first"), af.Pause(id="second"), af.Log(id="done", message="done")],
)
APPROVAL = af.Flow(
    id="approval",
    tasks=[
        af.Pause(id="approve", on_resume=[af.Input(name="reason", type="string")]),
        af.Log(id="after", message="{{ outputs.approve.reason }}"),
    ],
)
GATED = af.Flow(id="gated", tasks=[af.Pause(id="gate"), af.Log(id="after", message="after")])
RUNS: list[str] = []
_RELEASE: list[anyio.Event] = []


def release() -> anyio.Event:
    """This test's event that lets ``hold`` return (made inside the test's event loop)."""
    if not _RELEASE:
        _RELEASE.append(anyio.Event())
    return _RELEASE[0]


@af.task
async def hold(ctx: af.TaskContext) -> None:
    RUNS.append(ctx.task_run_id)
    await release().wait()


@af.task
async def flaky(ctx: af.TaskContext) -> None:
    RUNS.append(ctx.task_run_id)
    if len(RUNS) == 1:
        raise ValueError("first run fails")


HOLDING = af.Flow(id="holding", tasks=[hold("h")])
FLAKY = af.Flow(id="flaky", tasks=[flaky("f")])
FLOWS = [TWO_PAUSES, APPROVAL, GATED, HOLDING, FLAKY]


@pytest.fixture(autouse=True)
def _fresh_task_state() -> None:
    RUNS.clear()
    _RELEASE.clear()


@asynccontextmanager
async def runtime(db: Path, *, recover: bool = True) -> AsyncIterator[Runtime]:
    async with Runtime.open(db, flows=FLOWS, recover=recover) as rt:
        yield rt


async def _command_rows(db: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT kind, status, answer FROM commands ORDER BY id").fetchall()
    return [(k, s, a) for k, s, a in rows]


async def _consumed(owner: Runtime, command_id: int) -> None:
    """Have ``owner`` consume its pending commands; the command is answered after it
    (by this round or by the owner's own housekeeping, whichever came first)."""
    await owner.apply_commands()
    cmd = await owner.store.get_command(command_id)
    assert cmd is not None and cmd.status != "pending", cmd


async def _paused_at(rt: Runtime, ex_id: str) -> list[str]:
    tree = await rt.get(ex_id)
    return [tr.task_id for tr in tree.task_runs if tr.state is State.PAUSED]


async def _resume_to_next_pause(owner: Runtime, ex_id: str, resume: Runtime) -> None:
    """Resume through ``resume`` and wait until ``owner`` runs the execution to its next
    pause (it leaves PAUSED first, so an old PAUSED does not count)."""
    running = owner.engine.state_waiter(ex_id, frozenset({State.RUNNING}))
    try:
        with anyio.fail_after(10):
            await resume.resume(ex_id)
            await running.wait()
    finally:
        owner.engine.drop_state_waiter(ex_id, running)
    await owner.wait_for(ex_id, State.PAUSED, timeout=10)


async def test_a_resume_from_another_process_gets_the_owners_answer(tmp_path: Path) -> None:
    """A resume sent from another process is applied by the owner and answered ``applied``,
    even though the execution is paused again (at its next Pause) by the time it is read."""
    db = tmp_path / "x.db"
    async with runtime(db) as owner, runtime(db, recover=False) as sender:
        ex_id = (await owner.submit(TWO_PAUSES)).id
        await owner.wait_for(ex_id, State.PAUSED)
        await _resume_to_next_pause(owner, ex_id, sender)
        assert await _paused_at(owner, ex_id) == ["second"]
        [(kind, status, answer)] = await _command_rows(db)
        assert (kind, status) == ("resume", "applied")
        assert answer is not None and "'first'" in answer


async def test_a_bad_resume_input_from_another_process_is_the_owners_error(
    tmp_path: Path,
) -> None:
    """A resume with a missing input sent from another process fails its sender with exactly
    the error an in-process resume gets, and changes nothing."""
    db = tmp_path / "x.db"
    async with runtime(db) as owner, runtime(db, recover=False) as sender:
        ex_id = (await owner.submit(APPROVAL)).id
        await owner.wait_for(ex_id, State.PAUSED)
        with pytest.raises(InputError) as local:  # in-process: the input error itself
            await owner.resume(ex_id, {"nope": "x"})
        with anyio.fail_after(10), pytest.raises(InputError) as remote:
            await sender.resume(ex_id, {"nope": "x"})
        assert type(remote.value) is type(local.value)
        assert str(remote.value) == str(local.value)
        assert "nope" in str(remote.value)
        assert await _paused_at(owner, ex_id) == ["approve"]
        with anyio.fail_after(10):
            await sender.resume(ex_id, {"reason": "fine"})
        done = await owner.wait(ex_id)
        assert done.state is State.SUCCESS and done.task_run("approve").outputs == {
            "reason": "fine",
            "onResume": {"reason": "fine"},
        }
        assert [s for _, s, _ in await _command_rows(db)] == ["rejected", "applied"]


async def test_a_kill_of_an_execution_that_ended_says_it_was_already_terminal(
    tmp_path: Path,
) -> None:
    """A kill of a finished execution is refused with its state, both when the sender sees
    the end and when the execution ended after the kill was sent (the owner answers)."""
    db = tmp_path / "x.db"
    async with runtime(db) as owner, runtime(db, recover=False) as sender:
        ex_id = (await owner.submit(GATED)).id
        await owner.wait_for(ex_id, State.PAUSED)
        sent_for = await sender.get(ex_id)  # what a sender saw just before it ended
        await owner.resume(ex_id)
        await owner.wait(ex_id)
        with pytest.raises(IllegalOperation, match=f"execution {ex_id} is already SUCCESS"):
            await sender.kill(ex_id)
        target = msgspec.json.encode(target_of(sent_for, "kill"))
        cid = await sender.store.post_command(ex_id, "kill", b"{}", target)
        await _consumed(owner, cid)
        assert await _command_rows(db) == [
            ("kill", "rejected", f"execution {ex_id} is already SUCCESS")
        ]
        assert (await owner.get(ex_id)).state is State.SUCCESS


async def test_a_command_whose_target_moved_on_is_rejected(tmp_path: Path) -> None:
    """A resume sent for a Pause the execution has left, a resume sent for a manual pause
    that was resumed and paused again, and a kill sent before a restart are all refused,
    with why, instead of acting on the later step."""
    db = tmp_path / "x.db"
    async with runtime(db) as owner, runtime(db, recover=False) as sender:
        store = sender.store
        ex_id = (await owner.submit(TWO_PAUSES)).id
        await owner.wait_for(ex_id, State.PAUSED)
        at_first = await sender.get(ex_id)
        await _resume_to_next_pause(owner, ex_id, owner)
        target = msgspec.json.encode(target_of(at_first, "resume"))
        cid = await store.post_command(ex_id, "resume", b"{}", target)
        await _consumed(owner, cid)
        [(_, status, answer)] = await _command_rows(db)
        assert status == "rejected" and answer is not None
        assert "moved on" in answer and "now waits at task 'second'" in answer
        assert await _paused_at(owner, ex_id) == ["second"]

        held = (await owner.submit(HOLDING)).id
        await owner.wait_for(held, State.RUNNING)
        await owner.pause(held)
        paused_once = await sender.get(held)
        await owner.resume(held)
        await owner.pause(held)
        target = msgspec.json.encode(target_of(paused_once, "resume"))
        cid = await store.post_command(held, "resume", b"{}", target)
        await _consumed(owner, cid)
        assert "resumed and paused again" in str((await _command_rows(db))[-1][2])
        assert (await owner.get(held)).state is State.PAUSED

        before_restart = await sender.get(held)
        await owner.kill(held)
        await owner.wait(held)
        await owner.restart(held)
        await owner.wait_for(held, State.RUNNING)
        target = msgspec.json.encode(target_of(before_restart, "kill"))
        cid = await store.post_command(held, "kill", b"{}", target)
        await _consumed(owner, cid)
        answer = str((await _command_rows(db))[-1][2])
        assert "was restarted after the kill was sent (run 1, now run 2)" in answer
        assert (await owner.get(held)).state is State.RUNNING
        release().set()
        assert (await owner.wait(held)).state is State.SUCCESS


async def test_a_new_runtime_applies_only_pending_commands(tmp_path: Path) -> None:
    """After its process goes, a consumed resume, pause and kill are never applied again by
    the runtime that takes the executions over: the later Pause stays paused, the resumed
    execution keeps running, the restarted one is not killed again."""
    db = tmp_path / "x.db"
    async with runtime(db) as first, runtime(db, recover=False) as sender:
        pauses = (await first.submit(TWO_PAUSES)).id
        await first.wait_for(pauses, State.PAUSED)
        await _resume_to_next_pause(first, pauses, sender)
        assert await _paused_at(first, pauses) == ["second"]
        held = (await first.submit(HOLDING)).id
        await first.wait_for(held, State.RUNNING)
        await sender.pause(held)
        await sender.resume(held)
        gated = (await first.submit(GATED)).id
        await first.wait_for(gated, State.PAUSED)
        await sender.kill(gated)
        assert (await first.wait(gated)).state is State.KILLED
        await sender.restart(gated)  # the sender runs it now
        await sender.wait_for(gated, State.PAUSED)
        assert [s for _, s, _ in await _command_rows(db)] == ["applied"] * 4
    async with runtime(db) as second:
        assert await second.apply_commands() == 0
        assert await _paused_at(second, pauses) == ["second"]
        assert (await second.get(held)).state is State.RUNNING
        assert (await second.get(gated)).state is State.PAUSED
        release().set()
        assert (await second.wait(held)).state is State.SUCCESS
        await second.kill(pauses)
        await second.kill(gated)


async def test_a_command_for_an_execution_whose_owner_is_gone(tmp_path: Path) -> None:
    """A kill for an execution whose process stopped says at once that nobody can answer;
    it stays pending, and the runtime that takes the execution over applies it."""
    db = tmp_path / "x.db"
    async with runtime(db) as first:
        ex_id = (await first.submit(GATED)).id
        await first.wait_for(ex_id, State.PAUSED)
    async with runtime(db, recover=False) as sender:
        with (
            anyio.fail_after(10),
            pytest.raises(CommandNotAnswered, match="no process owns it") as e,
        ):
            await sender.kill(ex_id)
        assert "stays pending" in str(e.value)
        cmd = await sender.store.get_command(e.value.command_id)
        assert cmd is not None and cmd.status == "pending"
    async with runtime(db) as second:
        await _consumed(second, e.value.command_id)
        assert (await second.wait(ex_id)).state is State.KILLED
        assert [s for _, s, _ in await _command_rows(db)] == ["applied"]


async def test_two_concurrent_restarts_exactly_one_wins(tmp_path: Path) -> None:
    """Two runtimes restarting the same FAILED execution at once: one restarts it, the other
    is told another restart took it first, and the failed task runs again once."""
    db = tmp_path / "x.db"
    async with runtime(db) as owner:
        failed = await owner.run(FLAKY)
        assert failed.state is State.FAILED
    async with runtime(db, recover=False) as a, runtime(db, recover=False) as b:
        outcomes: list[object] = []

        async def restart(rt: Runtime) -> None:
            try:
                outcomes.append(await rt.restart(failed.id))
            except IllegalOperation as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(restart, a)
            tg.start_soon(restart, b)
        errors = [o for o in outcomes if isinstance(o, IllegalOperation)]
        handles = [o for o in outcomes if isinstance(o, af.runtime.ExecutionHandle)]
        assert len(errors) == 1 and len(handles) == 1, outcomes
        why = str(errors[0])  # lost the compare-and-set, or came after the winner's change
        assert "another restart took it first" in why or "can be restarted" in why, why
        done = await handles[0].wait()
        assert done.state is State.SUCCESS
        assert len(RUNS) == 2  # the first run and one restart


def _rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_consumed_commands_are_not_replayed_after_a_sigkill(tmp_path: Path) -> None:
    """A resume applied just before its runtime is SIGKILLed is not applied again by the
    next process: the execution, paused at its next Pause, stays there."""
    db = tmp_path / "x.db"
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(db), "submit"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        ex_id = proc.stdout.readline().strip()
        assert ex_id, "the worker did not start"
        done = subprocess.run(
            [sys.executable, str(WORKER), str(db), "resume", ex_id],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert proc.stdout.readline().strip() == "paused at second"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _rows(db, "SELECT kind, status FROM commands") == [("resume", "applied")]
    again = subprocess.run(
        [sys.executable, str(WORKER), str(db), "recover", ex_id],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.split() == ["recovered", "paused", "at", "second"]
