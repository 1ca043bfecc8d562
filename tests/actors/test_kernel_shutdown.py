"""Bounded shutdown: the whole tree stops within one grace; independent children stop
together."""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import pytest

from actorflow.actors import Actor, open_actor_system

pytestmark = pytest.mark.anyio

CHILDREN = 30


class Barrier:
    """Opens once every child is inside its on_stop at the same time."""

    def __init__(self) -> None:
        self.inside = 0
        self.open = anyio.Event()
        self.graceful = 0


class Child(Actor):
    def __init__(self, barrier: Barrier) -> None:
        self.barrier = barrier

    async def on_stop(self) -> None:
        self.barrier.inside += 1
        if self.barrier.inside == CHILDREN:
            self.barrier.open.set()
        await self.barrier.open.wait()  # never, unless all stop at once
        self.barrier.graceful += 1


class Parent(Actor):
    together: ClassVar[bool] = False

    def __init__(self, barrier: Barrier) -> None:
        self.barrier = barrier

    async def on_start(self) -> None:
        for _ in range(CHILDREN):
            self.context.spawn(lambda: Child(self.barrier))

    async def receive(self, message: Any) -> Any:
        return len(self.context.children)


class TogetherParent(Parent):
    stop_children_together = True


@pytest.mark.parametrize(("parent", "all_graceful"), [(TogetherParent, True), (Parent, False)])
async def test_independent_children_share_one_grace(
    parent: type[Parent], all_graceful: bool
) -> None:
    """A parent whose children are independent stops them all at once, so each gets the
    grace and all end gracefully; by default they stop one by one, and the shared deadline
    ends the rest: either way the system is down when shutdown returns."""
    barrier = Barrier()
    async with open_actor_system() as system:
        ref = system.spawn(lambda: parent(barrier))
        assert await ref.ask("count") == CHILDREN
        await system.shutdown(grace=0.5)
        assert not ref.alive
    assert (barrier.graceful == CHILDREN) is all_graceful
