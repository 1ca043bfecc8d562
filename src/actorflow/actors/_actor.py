"""The actor base class and what an actor knows about itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actorflow.actors._messages import Kill, SystemMessage

if TYPE_CHECKING:
    from actorflow.actors._ref import ActorRef
    from actorflow.actors._system import ActorSystem


class Actor:
    """Subclass and override ``receive``; one task runs it, one message at a time."""

    context: ActorContext

    async def on_start(self) -> None:
        """Called before the first message."""

    async def receive(self, message: Any) -> Any:
        """Handle one message; the return value answers an ``ask``.

        The default stops the actor on ``Kill`` and ignores everything else.
        """
        if isinstance(message, Kill):
            self.context.stop()
        return None

    async def on_stop(self) -> None:
        """Called after the last message (not after a crash)."""

    async def on_restart(self, error: BaseException) -> None:
        """Called on the new instance, before ``on_start``, when a supervisor restarts it."""

    def on_interrupt(self, message: SystemMessage) -> None:
        """Called synchronously when a system message arrives while ``receive`` runs.

        Lets long work cancel itself (e.g. ``scope.cancel()``); the message is delivered to
        ``receive`` next as well.
        """


class ActorContext:
    """An actor's view of itself: name, ref, system, parent and linked children."""

    __slots__ = ("children", "name", "parent", "self_ref", "system")

    def __init__(
        self, name: str, self_ref: ActorRef, system: ActorSystem, parent: ActorRef | None
    ) -> None:
        self.name = name
        self.self_ref = self_ref
        self.system = system
        self.parent = parent
        self.children: dict[str, ActorRef] = {}

    def spawn(
        self, factory: Callable[[], Actor], *, name: str | None = None, mailbox_size: int = 1024
    ) -> ActorRef:
        """Start a child linked to this actor: it gets ``Terminated`` when the child stops,
        and the child is stopped before this actor stops."""
        ref = self.system._spawn(factory, name, mailbox_size, self.self_ref, None)
        self.children[ref.name] = ref
        return ref

    def stop(self) -> None:
        """Stop after the current message."""
        self.self_ref._request_stop()
