"""The actor base class and what an actor knows about itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from actorflow.actors._cancel import Interruptible
from actorflow.actors._messages import Kill, SystemMessage

if TYPE_CHECKING:
    from actorflow.actors._ref import ActorRef
    from actorflow.actors._system import ActorSystem


class Actor:
    """Subclass and override ``receive``; one task runs it, one message at a time.

    Subclasses may declare ``__slots__`` (fewer objects for the GC when actors are many).
    """

    __slots__ = ("__weakref__", "context")
    context: ActorContext
    #: Children are independent of one another: when this actor stops, they all stop at
    #: once and share one grace period (default: one at a time, in reverse start order).
    stop_children_together: ClassVar[bool] = False

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


_NO_CHILDREN: Mapping[str, ActorRef] = MappingProxyType({})


class ActorContext:
    """An actor's view of itself: name, ref, system, parent and linked children."""

    __slots__ = ("_children", "name", "parent", "self_ref", "system")

    def __init__(
        self, name: str, self_ref: ActorRef, system: ActorSystem, parent: ActorRef | None
    ) -> None:
        self.name = name
        self.self_ref = self_ref
        self.system = system
        self.parent = parent
        self._children: dict[str, ActorRef] | None = None  # most actors never have any

    @property
    def children(self) -> Mapping[str, ActorRef]:
        """Linked children by name, in spawn order."""
        return self._children if self._children is not None else _NO_CHILDREN

    def link(self, ref: ActorRef) -> None:
        """Count ``ref`` among the children (stopped before this actor stops)."""
        if self._children is None:
            self._children = {}
        self._children[ref.name] = ref

    def unlink(self, name: str) -> None:
        """Forget a child."""
        if self._children is not None:
            self._children.pop(name, None)

    def spawn(
        self,
        factory: Callable[[], Actor],
        *,
        name: str | None = None,
        mailbox_size: int = 1024,
        notify_stop: bool = True,
    ) -> ActorRef:
        """Start a child linked to this actor: it gets ``Terminated`` when the child stops
        (only when it crashes, with ``notify_stop=False``), and the child is stopped before
        this actor stops."""
        ref = self.system._spawn(factory, name, mailbox_size, self.self_ref, None)
        ref._notify_stop = notify_stop
        self.link(ref)
        return ref

    def stop(self) -> None:
        """Stop after the current message."""
        self.self_ref._request_stop()

    def interruptible(self) -> Interruptible:
        """A region of ``receive`` that ``on_interrupt`` can cancel (see :class:`Interruptible`)."""
        return Interruptible(self.self_ref._task)
