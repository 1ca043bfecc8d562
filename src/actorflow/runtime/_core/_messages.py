"""Messages of execution and task-run actors: frozen, tagged msgspec Structs.

Kill, Pause and Resume come from the actor kernel (system lane: they never wait behind work).
"""

from __future__ import annotations

from typing import Any

import msgspec

from actorflow.actors import Kill, Pause, Resume, SystemMessage
from actorflow.runtime._records import TaskRun
from actorflow.runtime._states import State

__all__ = [
    "Command",
    "CommandTarget",
    "Complete",
    "Dequeue",
    "Fail",
    "Kill",
    "Pause",
    "PauseElapsed",
    "Recover",
    "Restart",
    "Resume",
    "ResumeWith",
    "Retry",
    "Snapshot",
    "Start",
    "TaskRunChanged",
]


class Start(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Begin: an execution starts its first task runs; a task run its first attempt."""


class Restart(SystemMessage, frozen=True, gc=False, tag=True):
    """Run a RESTARTED task run again (a new attempt) or resume a restarted execution.

    A system message, so the rebuild happens before any Kill/Pause/Resume sent right after.
    """


class Recover(SystemMessage, frozen=True, gc=False, tag=True):
    """Continue from a snapshot loaded after a crash (system lane, like Restart)."""


class Retry(SystemMessage, frozen=True, gc=False, tag=True):
    """The retry delay of a RETRYING task run elapsed: start the next attempt."""


class PauseElapsed(SystemMessage, frozen=True, gc=False, tag=True):
    """A Pause task's ``delay`` or ``timeout`` elapsed."""

    kind: str


class ResumeWith(SystemMessage, frozen=True, gc=False, tag=True):
    """Resume a paused execution or Pause task run with validated inputs."""

    inputs: dict[str, Any] = {}


class CommandTarget(msgspec.Struct, frozen=True, gc=False):
    """What a command from another process was meant for: the execution as its sender saw it.

    ``run`` is the execution's ``attempt_number`` (a restart raises it); ``paused_at`` the
    index in its history of the PAUSED entry a resume answers, ``task_run_id`` the Pause
    task run it resumes (None for a manual pause).
    """

    run: int
    paused_at: int | None = None
    task_run_id: str | None = None


class Command(SystemMessage, frozen=True, gc=False, tag=True):
    """A kill, pause or resume posted by another process; applied only to its target."""

    kind: str
    target: CommandTarget
    inputs: dict[str, Any] = {}


class Complete(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A subflow's child execution ended with ``state`` and ``outputs``."""

    state: State
    outputs: dict[str, Any] = {}
    error: str | None = None


class Fail(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Fail the task run from outside with ``error``."""

    error: str


class Dequeue(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A slot of the flow's concurrency limit is free: a QUEUED execution may run."""


class TaskRunChanged(msgspec.Struct, frozen=True, gc=False, tag=True):
    """A task-run actor reports its new snapshot to its execution."""

    task_run: TaskRun


class Snapshot(msgspec.Struct, frozen=True, gc=False, tag=True):
    """Ask an execution actor for its current tree."""
