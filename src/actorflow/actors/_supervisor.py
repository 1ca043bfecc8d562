"""OTP-style supervision: child specs, strategies, restart types, intensity, escalation."""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actorflow._errors import EscalationError
from actorflow.actors._actor import Actor
from actorflow.actors._messages import GetChild, Terminated, WhichChildren
from actorflow.actors._ref import ActorRef
from actorflow.actors._system import stop_within


class Strategy(enum.Enum):
    """Which children restart when one fails."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    """When a child is restarted: always, only after a crash, or never."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


@dataclass(frozen=True)
class ChildSpec:
    """How to start (and restart) one child."""

    id: str
    factory: Callable[[], Actor]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    mailbox_size: int = 1024


class Supervisor(Actor):
    """Starts children in order and keeps them running within a restart intensity.

    More than ``max_restarts`` restarts within ``within`` seconds: every child is stopped in
    reverse start order and the supervisor crashes with :class:`EscalationError`, so its own
    supervisor decides; a root supervisor reports to the system's ``on_escalation``.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        within: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        ids = [c.id for c in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate child ids in {ids}")
        self.specs = list(children)
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self.clock = clock
        self.running: dict[str, ActorRef] = {}
        self.restarts: deque[float] = deque()
        self.restart_count = 0
        self._expected: set[str] = set()

    async def on_start(self) -> None:
        for spec in self.specs:
            self._start(spec, None)

    def _start(self, spec: ChildSpec, error: BaseException | None) -> None:
        name = f"{self.context.name}/{spec.id}"
        ref = self.context.system._spawn(
            spec.factory, name, spec.mailbox_size, self.context.self_ref, error
        )
        self.context.link(ref)
        self.running[spec.id] = ref

    async def _stop(self, spec: ChildSpec) -> None:
        ref = self.running.pop(spec.id, None)
        if ref is not None and ref.alive:
            self._expected.add(ref.name)
            await stop_within(ref, spec.shutdown_timeout)

    async def on_stop(self) -> None:
        for spec in reversed(self.specs):
            await self._stop(spec)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Terminated):
            await self._child_ended(message)
            return None
        if isinstance(message, WhichChildren):
            return [(s.id, self.running[s.id]) for s in self.specs if s.id in self.running]
        if isinstance(message, GetChild):
            return self.running.get(message.id)
        return await super().receive(message)

    async def _child_ended(self, msg: Terminated) -> None:
        if msg.name in self._expected:
            self._expected.discard(msg.name)
            return
        index = next(
            (i for i, s in enumerate(self.specs) if self.running.get(s.id) is msg.ref), None
        )
        if index is None:
            return
        spec = self.specs[index]
        del self.running[spec.id]
        crashed = msg.error is not None
        wanted = spec.restart is Restart.PERMANENT or (
            spec.restart is Restart.TRANSIENT and crashed
        )
        if not wanted:
            if spec.restart is Restart.TEMPORARY:
                self.specs.pop(index)
            return
        now = self.clock()
        self.restarts.append(now)
        while self.restarts and self.restarts[0] < now - self.within:
            self.restarts.popleft()
        if len(self.restarts) > self.max_restarts:
            for s in reversed(self.specs):
                await self._stop(s)
            raise EscalationError(
                f"supervisor {self.context.name}: more than {self.max_restarts} restarts within"
                f" {self.within}s (last: child {spec.id!r}, {msg.error or 'stopped'})"
            )
        self.restart_count += 1
        error = msg.exc if isinstance(msg.exc, BaseException) else None
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [spec]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group = list(self.specs)
        else:
            group = self.specs[index:]
        for s in reversed(group):
            if s is not spec:
                await self._stop(s)
        for s in group:
            self._start(s, error if s is spec else None)
