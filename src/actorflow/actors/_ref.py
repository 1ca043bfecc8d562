"""Actor references and their two-lane mailboxes.

The ordinary lane is a bounded deque; the system lane is unbounded and always drained first.
``tell`` appends without yielding while there is room (no await on the fast path); only a full
ordinary lane makes ``tell`` wait, which is the backpressure. ``post`` is the one way past the
bound, for reports a recipient must never refuse and whose number it bounds itself (a parent
hears once from each child it spawned).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from actorflow._errors import AskTimeout, DeadActorError, MailboxFull
from actorflow.actors._messages import Stop, SystemMessage

if TYPE_CHECKING:
    from actorflow.actors._actor import Actor
    from actorflow.actors._system import ActorSystem


class FutureSignal:
    """A one-shot signal on a bare asyncio future: cheaper than an Event on the hot path."""

    __slots__ = ("_fut",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._fut: asyncio.Future[None] = loop.create_future()

    def set(self) -> None:
        """Wake the waiter (idempotent)."""
        if not self._fut.done():
            self._fut.set_result(None)

    def is_set(self) -> bool:
        """Whether :meth:`set` was called."""
        return self._fut.done()

    async def wait(self) -> None:
        """Until set."""
        await self._fut


Signal = anyio.Event | FutureSignal


def signal_factory(loop: asyncio.AbstractEventLoop | None) -> Callable[[], Signal]:
    """Future-based signals on asyncio, anyio Events elsewhere (trio)."""
    if loop is None:
        return anyio.Event
    return lambda: FutureSignal(loop)


class Reply:
    """A one-shot slot for the answer to an ask."""

    __slots__ = ("_event", "error", "is_set", "value")

    def __init__(self, event: Signal) -> None:
        self._event = event
        self.value: Any = None
        self.error: BaseException | None = None
        self.is_set = False

    def set(self, value: Any = None, error: BaseException | None = None) -> None:
        """Deliver the answer (first one wins)."""
        if not self.is_set:
            self.is_set = True
            self.value, self.error = value, error
            self._event.set()

    def expire(self, name: str, timeout: float, message: Any) -> None:
        """No answer in time: the asker gets AskTimeout (unless the answer won the race)."""
        self.set(
            error=AskTimeout(f"no reply from {name} within {timeout}s to {type(message).__name__}")
        )

    async def wait(self) -> Any:
        """The answer, or its exception re-raised."""
        await self._event.wait()
        if self.error is not None:
            raise self.error
        return self.value


Envelope = tuple[Any, Reply | None]
_log = logging.getLogger("actorflow.actors")


class ActorRef:
    """Address of an actor: send it messages; it outlives nothing (a dead ref drops letters)."""

    __slots__ = (
        "_actor",
        "_busy",
        "_cancelled",
        "_capacity",
        "_done",
        "_inflight",
        "_next",
        "_notify_stop",
        "_ordinary",
        "_room",
        "_scope",
        "_shielded",
        "_stopping",
        "_system",
        "_system_lane",
        "_task",
        "_wake",
        "alive",
        "name",
    )

    def __init__(self, system: ActorSystem, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox_size must be >= 1, got {capacity}")
        self._system = system
        self.name = name
        self._capacity = capacity
        # Lanes are made on first use and dropped when the actor idles: an idle actor (a
        # paused execution, say) keeps no buffers, and there may be a hundred thousand.
        self._system_lane: deque[Envelope] | None = None
        self._ordinary: deque[Envelope] | None = None
        # The oldest ordinary message while the ordinary deque is not made: most actors (a task
        # run gets Start and little else) never hold more than one, and a deque costs 600 bytes.
        # Set only while ``_ordinary`` is None, so everything in ``_ordinary`` is newer.
        self._next: Envelope | None = None
        self._wake: Signal | None = None
        self._room: deque[anyio.Event] | None = None  # senders waiting for room, when any
        self._done: anyio.Event | None = None  # made on first join: most actors never get one
        self._actor: Actor | None = None
        self._busy = False
        self._inflight: Reply | None = None
        self._stopping = False
        self._scope: anyio.CancelScope | None = None  # trio: the actor's cancel scope
        self._task: asyncio.Task[None] | None = None  # asyncio: the actor's task
        self._cancelled = False
        self._shielded = False
        self._notify_stop = True
        self.alive = True

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}{'' if self.alive else ' (dead)'}>"

    @property
    def is_alive(self) -> bool:
        """False once the actor has stopped."""
        return self.alive

    def _push(self, message: Any, reply: Reply | None) -> None:
        if not self.alive:
            self._system.dead_letters.record(self.name, message)
            if reply is not None:
                reply.set(error=DeadActorError(f"actor {self.name} is stopped"))
            return
        if isinstance(message, SystemMessage):
            lane = self._system_lane
            if lane is None:
                lane = self._system_lane = deque()
            lane.append((message, reply))
            actor = self._actor
            if self._busy and actor is not None and not isinstance(message, Stop):
                try:
                    actor.on_interrupt(message)
                except Exception:
                    # The sender must not pay for the recipient's hook; the message still goes in.
                    _log.exception("on_interrupt of %s failed for %r", self.name, message)
        else:
            lane = self._ordinary
            if lane is None:
                if self._next is None:
                    self._next = (message, reply)
                else:
                    if self._capacity < 2:
                        raise MailboxFull(f"mailbox of {self.name} is full (1 message)")
                    self._ordinary = deque(((message, reply),))
            else:
                if len(lane) + (self._next is not None) >= self._capacity:
                    raise MailboxFull(f"mailbox of {self.name} is full ({self._capacity} messages)")
                lane.append((message, reply))
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def _cancel(self) -> None:
        """Cancel the actor's task at once (shutdown timeout, host cancelled)."""
        if not self.alive or self._shielded:
            return
        if self._task is not None:
            # Not started yet (no actor): a cancelled task would never run its cleanup; the
            # Stop that follows every cancel on shutdown ends it instead.
            if not self._cancelled and self._actor is not None:
                self._cancelled = True
                self._task.cancel()
        elif self._scope is not None:
            self._scope.cancel()

    def _request_stop(self) -> None:
        """Stop after the current message, waking an idle actor so it notices."""
        self._stopping = True
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def tell_nowait(self, message: Any) -> None:
        """Send without waiting; MailboxFull if the ordinary lane is full."""
        self._push(message, None)

    def post(self, message: Any) -> None:
        """Send without waiting and never refused: onto the ordinary lane even past its size.

        In order with the ordinary messages. Only for messages the recipient bounds itself,
        such as each child's report of its end to the parent that spawned it: refusing those
        loses work (the children are done), and waiting would park every child on its parent.
        """
        if not self.alive or isinstance(message, SystemMessage):
            self._push(message, None)
            return
        lane = self._ordinary
        if lane is not None:
            lane.append((message, None))
        elif self._next is None:
            self._next = (message, None)
        else:
            self._ordinary = deque(((message, None),))
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    async def _room_for(self, message: Any) -> None:
        """Wait while the ordinary lane is full (system messages never wait)."""
        while self.alive and not isinstance(message, SystemMessage) and self._full():
            room = anyio.Event()
            if self._room is None:
                self._room = deque()
            self._room.append(room)
            try:
                await room.wait()
            except BaseException:
                if room.is_set():
                    # We were handed a free slot but will not use it: hand it on.
                    self._free_slot()
                elif self._room is not None:
                    self._room.remove(room)
                raise

    def _full(self) -> bool:
        lane = self._ordinary
        queued = (len(lane) if lane is not None else 0) + (self._next is not None)
        return queued >= self._capacity

    def _free_slot(self) -> None:
        """One slot freed up: wake the longest-waiting sender."""
        if self._room:
            self._room.popleft().set()

    async def tell(self, message: Any) -> None:
        """Send; waits for room only when the ordinary lane is full (backpressure)."""
        if self._full() and not isinstance(message, SystemMessage):
            await self._room_for(message)
        self._push(message, None)

    async def ask(self, message: Any, *, timeout: float | None = 5.0) -> Any:
        """Send and wait for ``receive``'s return value.

        Raises:
            AskTimeout: no reply within ``timeout`` seconds.
            DeadActorError: the actor is stopped or stopped before replying.
        """
        if not self.alive:
            raise DeadActorError(f"actor {self.name} is stopped")
        loop = self._system._aio_loop
        if loop is None or (self._full() and not isinstance(message, SystemMessage)):
            return await self._ask_slow(message, timeout)
        # asyncio fast path: a bare future and a loop timer cost far less than a cancel scope.
        reply = Reply(FutureSignal(loop))
        self._push(message, reply)
        if timeout is None:
            return await reply.wait()
        timer = loop.call_later(timeout, reply.expire, self.name, timeout, message)
        try:
            return await reply.wait()
        finally:
            timer.cancel()

    async def _ask_slow(self, message: Any, timeout: float | None) -> Any:
        reply = Reply(self._system._signal())
        if timeout is None:
            await self._room_for(message)
            self._push(message, reply)
            return await reply.wait()
        with anyio.move_on_after(timeout):
            await self._room_for(message)
            self._push(message, reply)
            return await reply.wait()
        reply.expire(self.name, timeout, message)  # a late answer is dropped
        return await reply.wait()

    async def stop(self) -> None:
        """Ask the actor to stop after its current message and wait until it has."""
        if self.alive:
            self._push(Stop(), None)
        await self.join()

    async def join(self) -> None:
        """Wait until the actor has stopped."""
        if not self.alive:
            await anyio.lowlevel.checkpoint()
            return
        if self._done is None:
            self._done = anyio.Event()
        await self._done.wait()
