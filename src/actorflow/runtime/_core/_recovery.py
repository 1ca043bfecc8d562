"""What a runtime does besides running: resume the executions of dead processes, heartbeat
its ownership, and apply the commands other processes post for its executions."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import msgspec

from actorflow._errors import IllegalOperation
from actorflow.actors import Kill, Pause
from actorflow.runtime._core._messages import Recover, ResumeWith
from actorflow.runtime._core._persist import decode_execution, decode_task_run
from actorflow.runtime._states import TERMINAL, State
from actorflow.storage import ExecutionRow, Store

if TYPE_CHECKING:
    from actorflow.runtime._core._engine import Engine
    from actorflow.runtime._flow import Flow
    from actorflow.runtime._records import Execution

TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)
COMMAND_POLL = 0.2
HEARTBEAT = 2.0
STALE_AFTER = 15.0


class Recovery:
    """Recovery and background work of :class:`~actorflow.runtime.Runtime`."""

    engine: Engine
    store: Store
    _last_command: int
    _restarted_at: dict[str, float]

    def _flow_for(self, ex: Execution) -> Flow:  # pragma: no cover - the Runtime's
        raise NotImplementedError

    async def recover(self) -> list[str]:
        """Resume unfinished executions whose owner is gone; returns their ids."""
        store = self.store
        for owner in await _dead_local_owners(store):
            await store.release_owner(owner)
        rows = await store.claim_orphans(self.engine.owner, TERMINAL_NAMES, STALE_AFTER)
        with _collector_paused(len(rows) > 1000):
            resumed = await self._resume_claimed(rows)
            # Let the new actors take their first steps (rebuild, re-arm) inside the pause.
            for _ in range(4):
                await anyio.lowlevel.checkpoint()
        return resumed

    async def _resume_claimed(self, rows: list[ExecutionRow]) -> list[str]:
        store = self.store
        resumed: list[str] = []
        for start in range(0, len(rows), 1000):
            chunk = [decode_execution(r.data) for r in rows[start : start + 1000]]
            runs_of = await store.task_runs_of([ex.id for ex in chunk])
            for ex in chunk:
                try:
                    flow = self._flow_for(ex)
                except IllegalOperation:
                    continue
                runs = [decode_task_run(r.data) for r in runs_of[ex.id]]
                if ex.state in (State.CREATED, State.QUEUED):  # not started: wait for a slot
                    self.engine.start_execution(flow, ex, runs, "recover", Recover())
                else:
                    self.engine.spawn_execution(flow, ex, runs, "recover", Recover())
                resumed.append(ex.id)
        return resumed

    async def _housekeeping(self) -> None:
        """Heartbeat the ownership, apply commands from other processes."""
        next_beat = 0.0
        while True:
            await anyio.sleep(COMMAND_POLL)
            now = time.monotonic()
            try:
                if now >= next_beat:
                    await self.store.heartbeat(self.engine.owner)
                    next_beat = now + HEARTBEAT
                for cmd in await self.store.commands_after(self._last_command):
                    self._last_command = cmd.id
                    if cmd.created < self._restarted_at.get(cmd.execution_id, 0.0):
                        continue
                    await self._apply(cmd.execution_id, cmd.kind, cmd.payload)
            except Exception:
                continue

    async def _apply(self, execution_id: str, kind: str, payload: bytes) -> None:
        ref = self.engine.live.get(execution_id) or self.engine.unpark(execution_id)
        if ref is None or not ref.is_alive:
            return
        message: Any
        if kind == "kill":
            message = Kill()
        elif kind == "pause":
            message = Pause()
        elif kind == "resume":
            message = ResumeWith(dict(decode_any_json(payload) or {}))
        else:
            return
        with contextlib.suppress(Exception):
            await ref.ask(message, timeout=30.0)


@contextlib.contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """Pause the cycle collector while thousands of actors come back at once.

    Everything they allocate is alive, so its passes find nothing to free, yet a full pass
    walks every object: recovering 10,000 executions spent two thirds of its time there. The
    host's own setting is restored afterwards (a disabled collector stays disabled).
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def decode_any_json(payload: bytes) -> Any:
    """JSON payload of a command."""
    return msgspec.json.decode(payload) if payload else None


async def _dead_local_owners(store: Store) -> list[str]:
    """Owners registered from this host whose process is gone (crashed)."""
    owners_fn = getattr(store, "owners", None)
    if owners_fn is None:
        return []
    host = os.uname().nodename
    dead: list[str] = []
    for owner in await owners_fn():
        name = owner[0] if isinstance(owner, tuple) else owner
        parts = str(name).split(":")
        if len(parts) >= 2 and parts[0] == host and parts[1].isdigit():
            pid = int(parts[1])
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                dead.append(name)
            except PermissionError:
                pass
    return dead
