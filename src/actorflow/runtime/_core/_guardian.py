"""The root of the runtime's supervision tree: every execution actor is its child.

An execution actor that crashes (a runtime fault: task failures are ordinary FAILED attempts)
is restarted from its last stored snapshot, at most ``MAX_RESTARTS`` times; after that the
execution is marked FAILED so nobody waits on it forever.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from actorflow._errors import ExecutionCorrupt
from actorflow.actors import Actor, Terminated
from actorflow.runtime._core._messages import Recover
from actorflow.runtime._core._persist import decode_tree, quarantine_op
from actorflow.runtime._records import StateEntry
from actorflow.runtime._states import State

if TYPE_CHECKING:
    from actorflow.actors import ActorRef
    from actorflow.runtime._core._engine import Engine
    from actorflow.runtime._flow import Flow

MAX_RESTARTS = 3
_log = logging.getLogger("actorflow.runtime")


class Guardian(Actor):
    """Parent of every execution actor of one runtime."""

    # Its children (executions / task runs) do not depend on one another: a shutdown gives
    # them one grace period together.
    stop_children_together = True

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.by_actor: dict[str, tuple[str, Flow]] = {}
        self.restarts: dict[str, int] = {}
        self._early: list[ActorRef] = []

    async def on_start(self) -> None:
        for ref in self._early:
            if ref.is_alive:
                self.context.link(ref)
        self._early.clear()

    def adopt(self, ref: ActorRef, execution_id: str, flow: Flow) -> None:
        """Link an execution actor spawned with this guardian as its parent."""
        self.by_actor[ref.name] = (execution_id, flow)
        if hasattr(self, "context"):
            self.context.link(ref)
        else:  # spawned before this actor's task started: linked in on_start
            self._early.append(ref)

    def live_flows(self) -> dict[str, Flow]:
        """The flow of each execution whose actor has not ended it (by execution id)."""
        return dict(self.by_actor.values())

    def release(self, name: str) -> None:
        """An execution actor ended its execution: nothing to restart if it stops now.

        Execution actors are spawned with ``notify_stop=False`` (one message fewer per
        execution): only a crash sends Terminated here; a normal end is this call.
        """
        self.by_actor.pop(name, None)

    async def receive(self, message: Any) -> Any:
        if not isinstance(message, Terminated):
            return await super().receive(message)
        entry = self.by_actor.pop(message.name, None)
        if entry is None or message.error is None:
            return None
        execution_id, flow = entry
        _log.error("execution actor %s crashed: %s", execution_id, message.error)
        await self._restart(execution_id, flow, message.error)
        return None

    async def _restart(self, execution_id: str, flow: Flow, error: str) -> None:
        engine = self.engine
        engine.live.pop(execution_id, None)
        try:
            await engine.store.flush()
            row = await engine.store.get_execution(execution_id)
        except Exception:  # storage failed: nothing to restart from
            return
        if row is None:
            return
        try:
            tree = decode_tree(row, await engine.store.task_runs(execution_id))
        except ExecutionCorrupt as exc:  # nothing to restart from: set aside, the rest runs on
            _log.error("execution %s is quarantined: %s", execution_id, exc)
            with contextlib.suppress(Exception):
                await engine.store.write(
                    (quarantine_op(execution_id, str(exc), engine.clock.now()),)
                )
            return
        except Exception:  # storage failed: nothing to restart from
            return
        record = msgspec.structs.replace(tree, task_runs=())
        if record.state.terminal:
            return
        runs = list(tree.task_runs)
        count = self.restarts.get(execution_id, 0) + 1
        self.restarts[execution_id] = count
        if count <= MAX_RESTARTS and engine.accepting:
            engine.spawn_execution(flow, record, runs, "recover", Recover())
            return
        entry = StateEntry(State.FAILED, engine.clock.now())
        failed = msgspec.structs.replace(
            record,
            state=State.FAILED,
            history=(*record.history, entry),
            error=f"execution actor crashed {count} times: {error}",
            task_runs=tuple(runs),
        )
        commit = engine.save_execution(failed, (entry,))
        engine.execution_ended(flow, failed, commit)
