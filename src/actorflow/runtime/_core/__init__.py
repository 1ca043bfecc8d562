"""The engine's machinery: execution and task-run actors, frames, persistence, recovery.

Private to ``actorflow.runtime``: an :class:`Engine` holds what every actor of one runtime
shares (store, files, clock, timers, admission, flow concurrency slots, waiters); one
``ExecutionActor`` per execution decides what runs next through frames and spawns a
``TaskRunActor`` per runnable task run; the guardian restarts crashed execution actors from
their snapshots; ``_persist`` turns records into storage rows; ``_recovery`` adopts the work
of dead processes and applies commands from other processes.

May import: the runtime's model modules (``_states``, ``_records``, ``_retry``, ``_clock``,
``_template``, ``_context``, ``_tasks``, ``_flow``, ``_observer``), ``actorflow.actors``,
``actorflow.storage`` and ``actorflow._errors``. Never ``_runtime``/``_tracing`` or any room
above the runtime.
"""

from __future__ import annotations

from actorflow.runtime._core._engine import Engine
from actorflow.runtime._core._execution import ExecutionActor
from actorflow.runtime._core._scope import ExecutionScope
from actorflow.runtime._core._taskrun import TaskRunActor

__all__ = ["Engine", "ExecutionActor", "ExecutionScope", "TaskRunActor"]
