"""The actor system: owns the task group in which every actor's one task runs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

from actorflow._errors import ActorNameTaken, ActorNotFound, DeadActorError, EscalationError
from actorflow.actors._actor import Actor, ActorContext
from actorflow.actors._messages import Stop, Terminated
from actorflow.actors._ref import ActorRef, signal_factory

_log = logging.getLogger("actorflow.actors")
BATCH = 256  # messages handled before yielding to other tasks


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message sent to an actor that had stopped."""

    recipient: str
    message: Any


class DeadLetters:
    """Count and last N of the messages that found no live actor."""

    def __init__(self, capacity: int) -> None:
        self.count = 0
        self.recent: deque[DeadLetter] = deque(maxlen=capacity)

    def record(self, recipient: str, message: Any) -> None:
        """Remember one dead letter."""
        self.count += 1
        self.recent.append(DeadLetter(recipient, message))


class ActorSystem:
    """Spawns actors, finds them by name, records dead letters, crashes and escalations."""

    def __init__(
        self,
        tg: anyio.abc.TaskGroup,
        name: str,
        dead_letter_capacity: int,
        on_escalation: Callable[[str, BaseException], None] | None,
    ) -> None:
        self._tg = tg
        self.name = name
        self._actors: dict[str, ActorRef] = {}
        self._top: dict[str, ActorRef] = {}
        self._ids = itertools.count(1)
        self.dead_letters = DeadLetters(dead_letter_capacity)
        self.crashes: list[tuple[str, BaseException]] = []
        self.escalations: list[tuple[str, BaseException]] = []
        self._on_escalation = on_escalation
        self._closing = False
        # Set while shutting down: every stop shares it, so the whole tree stops in time.
        self._deadline: float | None = None
        # On asyncio, spawning with loop.create_task is ~5x faster than anyio's start_soon;
        # the actor task still runs under its own anyio CancelScope and never raises.
        self._aio_loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # no running asyncio loop: trio
            self._aio_loop = asyncio.get_running_loop()
        self._signal = signal_factory(self._aio_loop)

    def spawn(
        self, factory: Callable[[], Actor], *, name: str | None = None, mailbox_size: int = 1024
    ) -> ActorRef:
        """Start a top-level actor; messages told before it starts are queued."""
        ref = self._spawn(factory, name, mailbox_size, None, None)
        self._top[ref.name] = ref
        return ref

    def _spawn(
        self,
        factory: Callable[[], Actor],
        name: str | None,
        mailbox_size: int,
        parent: ActorRef | None,
        restart_error: BaseException | None,
    ) -> ActorRef:
        if self._closing:
            raise DeadActorError(f"actor system {self.name} is shutting down")
        if name is None:
            name = f"$a{next(self._ids)}"
        elif name in self._actors:
            raise ActorNameTaken(f"an actor named {name!r} is already running")
        ref = ActorRef(self, name, mailbox_size)
        self._actors[name] = ref
        if self._aio_loop is not None:
            task = self._aio_loop.create_task(self._life(ref, factory, parent, restart_error))
            # Held by ref._task while the ref is in _actors (asyncio keeps only weak refs):
            # no set of tasks to grow with every actor ever spawned.
            ref._task = task
        else:
            self._tg.start_soon(self._run, ref, factory, parent, restart_error, name=name)
        return ref

    def lookup(self, name: str) -> ActorRef:
        """The live actor named ``name``; ActorNotFound otherwise."""
        ref = self._actors.get(name)
        if ref is None:
            raise ActorNotFound(f"no live actor named {name!r}")
        return ref

    def get(self, name: str) -> ActorRef | None:
        """The live actor named ``name``, or None."""
        return self._actors.get(name)

    def __len__(self) -> int:
        return len(self._actors)

    async def _life(
        self,
        ref: ActorRef,
        factory: Callable[[], Actor],
        parent: ActorRef | None,
        restart_error: BaseException | None,
    ) -> None:
        """An actor's whole life: make it, run its hooks, drain its mailbox, stop its children,
        clean up. One coroutine for all of it: every frame held for an actor's life costs about
        300 bytes, and a fan-out may hold a hundred thousand actors.

        On asyncio it is the actor's task, with no anyio cancel scope (one costs more than the
        rest of a short actor's life): the system cancels the task itself
        (:meth:`ActorRef._cancel`). Other backends (trio) run it inside :meth:`_run`'s scope.
        """
        error: BaseException | None = None
        try:
            actor = factory()
            del factory  # not held for the actor's life
            actor.context = ActorContext(ref.name, ref, self, parent)
            ref._actor = actor
            if restart_error is not None:
                await actor.on_restart(restart_error)
            hooks = _hooks(type(actor))
            if hooks[0]:
                await actor.on_start()
            while not ref._stopping:
                if not ref._system_lane and ref._next is None and not ref._ordinary:
                    ref._system_lane = ref._ordinary = None  # idle: keep no buffers
                    wake = self._signal()
                    ref._wake = wake
                    await wake.wait()
                    continue
                budget = BATCH
                while budget:
                    budget -= 1
                    # Read the lanes afresh: a push during receive may have made one.
                    system_lane = ref._system_lane
                    if system_lane:
                        message, reply = system_lane.popleft()
                        if type(message) is Stop:
                            ref._stopping = True
                            break
                    else:
                        # Unpacked at once, never kept in a local: a local would hold the
                        # envelope through the whole receive (a task run's whole attempt).
                        if ref._next is not None:
                            message, reply = ref._next
                            ref._next = None
                        else:
                            ordinary = ref._ordinary
                            if not ordinary:
                                break
                            message, reply = ordinary.popleft()
                        if ref._room:
                            # Free the slot at once: a blocked sender may be what receive awaits.
                            ref._free_slot()
                    ref._busy = True
                    ref._inflight = reply
                    try:
                        result = await actor.receive(message)
                    except Exception as exc:
                        if reply is not None:
                            reply.set(error=exc)
                        raise
                    finally:
                        ref._busy = False
                    ref._inflight = None
                    if reply is not None:
                        reply.set(result)
                    if ref._stopping:
                        break
                if ref._system_lane or ref._next is not None or ref._ordinary:
                    # Only a full batch yields here; an empty mailbox yields by waiting.
                    await anyio.lowlevel.checkpoint()
            if hooks[1]:
                await actor.on_stop()
        except Exception as exc:
            error = exc
        except asyncio.CancelledError:
            if not ref._cancelled:
                raise  # not the system's doing (the loop is closing): let it end the task
            task = ref._task
            if task is not None:
                task.uncancel()
        finally:
            try:
                children = self._children_of(ref)
                if children:
                    if self._aio_loop is not None:
                        ref._shielded = True  # children must stop even if the system cancels us
                        await self._stop_children(ref, children)
                    else:
                        with anyio.CancelScope(shield=True):
                            await self._stop_children(ref, children)
            finally:
                self._cleanup(ref, parent, error)

    @staticmethod
    def _children_of(ref: ActorRef) -> list[ActorRef]:
        actor = ref._actor
        # The context's own dict, not the read-only view: most actors end with no children.
        children = actor.context._children if actor is not None else None
        return list(children.values()) if children else []

    async def _run(
        self,
        ref: ActorRef,
        factory: Callable[[], Actor],
        parent: ActorRef | None,
        restart_error: BaseException | None,
    ) -> None:
        """The actor's task on other backends (trio): in an anyio cancel scope of its own."""
        with anyio.CancelScope() as scope:
            ref._scope = scope
            await self._life(ref, factory, parent, restart_error)

    def _cleanup(self, ref: ActorRef, parent: ActorRef | None, error: BaseException | None) -> None:
        # Synchronous on purpose: nothing can interleave between death and the notices.
        ref.alive = False
        ref._stopping = True
        ref._actor = None  # breaks ref -> actor -> context -> ref: freed without the GC
        self._actors.pop(ref.name, None)
        self._top.pop(ref.name, None)
        if ref._inflight is not None:  # cancelled inside receive
            ref._inflight.set(error=DeadActorError(f"actor {ref.name} stopped before replying"))
            ref._inflight = None
        nxt = ref._next
        ref._next = None
        for lane in (ref._system_lane, None if nxt is None else deque((nxt,)), ref._ordinary):
            while lane:  # None or empty: nothing left
                message, reply = lane.popleft()
                if reply is not None:
                    reply.set(error=DeadActorError(f"actor {ref.name} stopped before replying"))
                # Stop and Terminated are kernel traffic, not letters anyone wrote.
                if not isinstance(message, Stop | Terminated):
                    self.dead_letters.record(ref.name, message)
        room = ref._room
        while room:
            room.popleft().set()
        if ref._done is not None:
            ref._done.set()
        if parent is not None and parent.alive:
            parent_actor = parent._actor
            if parent_actor is not None:
                parent_actor.context.unlink(ref.name)
            if error is not None or ref._notify_stop:
                terminated = Terminated(
                    ref=ref, name=ref.name, error=repr(error) if error else None, exc=error
                )
                parent._push(terminated, None)
        elif isinstance(error, EscalationError):
            self.escalate(ref.name, error)
        elif error is not None:
            self.crashes.append((ref.name, error))
            _log.error("actor %s crashed: %r", ref.name, error)

    def escalate(self, name: str, error: BaseException) -> None:
        """A root supervisor gave up: record it and tell the host."""
        self.escalations.append((name, error))
        _log.error("supervisor %s escalated: %r", name, error)
        if self._on_escalation is not None:
            try:
                self._on_escalation(name, error)
            except Exception:
                # Runs in an actor's cleanup: a faulty host callback must not break shutdown.
                _log.exception("on_escalation callback failed for %s", name)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop every actor within ``grace`` seconds in all, however many there are: top-level
        actors in reverse spawn order (each stops its children first), all within one
        deadline, after which whatever still runs is cancelled."""
        deadline = self._deadline = anyio.current_time() + grace
        for ref in reversed(list(self._top.values())):  # in order, within one deadline
            await stop_all([ref], deadline)
        self._closing = True
        await stop_all(list(self._actors.values()), deadline)
        tasks = [ref._task for ref in self._actors.values() if ref._task is not None]
        if tasks:
            await asyncio.wait(tasks)

    def _stop_deadline(self) -> float:
        """When a stopping child must be gone: the shutdown's deadline, else 5 s from now."""
        return self._deadline if self._deadline is not None else anyio.current_time() + 5.0

    async def _stop_children(self, ref: ActorRef, children: list[ActorRef]) -> None:
        """Stop a stopping actor's children: in reverse start order, each within the grace;
        all at once when the actor says its children are independent
        (``Actor.stop_children_together``), so a thousand of them share one grace."""
        if getattr(ref._actor, "stop_children_together", False):
            await stop_all(list(reversed(children)), self._stop_deadline())
            return
        for child in reversed(children):
            await stop_all([child], self._stop_deadline())

    def cancel_all(self) -> None:
        """Cancel every actor at once (the host is being cancelled)."""
        for ref in list(self._actors.values()):
            ref._cancel()


_HOOKS: dict[type, tuple[bool, bool]] = {}


def _hooks(cls: type[Actor]) -> tuple[bool, bool]:
    """Whether ``cls`` overrides on_start / on_stop: a short-lived actor (a task run) skips
    awaiting the empty defaults."""
    found = _HOOKS.get(cls)
    if found is None:
        found = _HOOKS[cls] = (cls.on_start is not Actor.on_start, cls.on_stop is not Actor.on_stop)
    return found


async def stop_all(refs: list[ActorRef], deadline: float) -> None:
    """Stop ``refs`` together; cancel those still alive at ``deadline`` (anyio time)."""
    alive = [r for r in refs if r.alive]
    for ref in alive:
        ref._push(Stop(), None)
    # Only the living are awaited: a join of a stopped actor still yields once, and a loop
    # turn per actor (thousands stop together) would cost more than the stopping itself.
    with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
        for ref in alive:
            if ref.alive:
                await ref.join()
    for ref in alive:
        if ref.alive:
            ref._cancel()
    for ref in alive:
        if ref.alive:
            await ref.join()


async def stop_within(ref: ActorRef, timeout: float) -> None:
    """Stop ``ref`` gracefully; cancel it if it does not stop within ``timeout`` seconds."""
    if not ref.alive:
        return
    ref._push(Stop(), None)
    with anyio.move_on_after(timeout):
        await ref.join()
        return
    ref._cancel()
    await ref.join()


@contextlib.asynccontextmanager
async def open_actor_system(
    *,
    name: str = "actorflow",
    dead_letter_capacity: int = 100,
    on_escalation: Callable[[str, BaseException], None] | None = None,
) -> AsyncIterator[ActorSystem]:
    """``async with open_actor_system() as system``: every actor stops when the block ends.

    An exception from the block propagates as itself (not wrapped in an ExceptionGroup).
    """
    error: BaseException | None = None
    async with anyio.create_task_group() as tg:
        system = ActorSystem(tg, name, dead_letter_capacity, on_escalation)
        try:
            yield system
        except BaseException as exc:
            # Re-raised below, outside the task group, so the caller sees it unwrapped.
            error = exc
            system.cancel_all()
        finally:
            with anyio.CancelScope(shield=True):
                await system.shutdown()
    if error is not None:
        raise error
