"""Commands from other processes: what they target, and how the owner applies them.

A command names the step it was meant for (:class:`CommandTarget`), taken from the stored
execution when it is sent; the execution actor checks it against its live state in the same
message, so a command never acts on a later step: a kill or pause sent before a restart, or a
resume sent for a Pause the execution has since left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actorflow._errors import ActorflowError, IllegalOperation
from actorflow.runtime._core._messages import Command, CommandTarget
from actorflow.runtime._records import Execution
from actorflow.runtime._states import State

if TYPE_CHECKING:
    from actorflow.runtime._core._execution import ExecutionActor

KINDS = ("kill", "pause", "resume")


def _paused_at(ex: Execution) -> int | None:
    for i in range(len(ex.history) - 1, -1, -1):
        if ex.history[i].state is State.PAUSED:
            return i
    return None


def target_of(ex: Execution, kind: str) -> CommandTarget:
    """What a ``kind`` command sent now for ``ex`` (a full tree) is meant for.

    Raises:
        IllegalOperation: a resume of an execution that is not paused.
    """
    if kind != "resume":
        return CommandTarget(run=ex.attempt_number)
    if ex.state is not State.PAUSED:
        raise IllegalOperation(f"execution {ex.id} is not paused ({ex.state.value})")
    paused = next((tr for tr in ex.task_runs if tr.state is State.PAUSED), None)
    return CommandTarget(
        run=ex.attempt_number,
        paused_at=_paused_at(ex),
        task_run_id=None if paused is None else paused.id,
    )


def check_target(ex: Execution, cmd: Command) -> None:
    """Refuse ``cmd`` if ``ex`` (the live tree) moved on from what it was meant for."""
    target = cmd.target
    if target.run != ex.attempt_number:
        raise IllegalOperation(
            f"execution {ex.id} was restarted after the {cmd.kind} was sent (run"
            f" {target.run}, now run {ex.attempt_number}); not applied"
        )
    if cmd.kind != "resume":
        return
    if ex.state is not State.PAUSED:
        raise IllegalOperation(f"execution {ex.id} is not paused ({ex.state.value})")
    if target.task_run_id is None:
        # A manual pause: the same one only if the execution has not paused since.
        if _paused_at(ex) != target.paused_at:
            raise IllegalOperation(
                f"execution {ex.id} was resumed and paused again after the resume was sent;"
                " not applied to the new pause"
            )
        return
    tr = next((r for r in ex.task_runs if r.id == target.task_run_id), None)
    if tr is None or tr.state is not State.PAUSED:
        now = next((r for r in ex.task_runs if r.state is State.PAUSED), None)
        where = f"; it now waits at task {now.task_id!r}" if now is not None else ""
        was = "gone" if tr is None else tr.state.value
        raise IllegalOperation(
            f"execution {ex.id} moved on: the pause the resume was sent for (task run"
            f" {target.task_run_id}) is {was}{where}; not applied"
        )


async def apply_command(actor: ExecutionActor, cmd: Command) -> str | Exception:
    """Apply ``cmd`` in the execution actor: its answer, or the error that refused it."""
    try:
        check_target(actor.snapshot(), cmd)
        if cmd.kind == "kill":
            actor._kill()
            return "killed"
        if cmd.kind == "pause":
            actor._pause()
            return "paused"
        if cmd.kind == "resume":
            task_run_id = cmd.target.task_run_id
            await actor._resume(dict(cmd.inputs), task_run_id)
            if task_run_id is None:
                return "resumed"
            return f"resumed task {actor.runs[task_run_id].task_id!r} (task run {task_run_id})"
        return IllegalOperation(f"unknown command {cmd.kind!r}; expected one of {KINDS}")
    except ActorflowError as exc:
        return exc


__all__ = ["KINDS", "apply_command", "check_target", "target_of"]
