"""Trigger fires in the store: each (trigger, fire) is claimed once, by one caller."""

from __future__ import annotations

import anyio
import pytest

from actorflow.storage import Store

pytestmark = pytest.mark.anyio


async def test_a_fire_is_claimed_once(store: Store) -> None:
    """The first claim of a (trigger, fire) wins; a second, by anyone, is refused."""
    assert await store.claim_fire("ns/f/every", "2026-01-01T00:00Z", 100.0, "ex1", "a")
    assert not await store.claim_fire("ns/f/every", "2026-01-01T00:00Z", 100.0, "ex2", "b")
    assert await store.claim_fire("ns/f/every", "2026-01-01T00:01Z", 160.0, "ex3", "a")
    assert await store.claim_fire("ns/f/other", "2026-01-01T00:00Z", 100.0, None, "a")
    assert await store.last_tick("ns/f/every") == 160.0
    assert await store.last_tick("ns/f/nothing") is None


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    """Fifty concurrent claims of one fire: exactly one succeeds."""
    wins: list[bool] = []

    async def claim(i: int) -> None:
        wins.append(await store.claim_fire("t", "tick", 1.0, f"ex{i}", f"o{i}"))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(claim, i)
    assert wins.count(True) == 1


async def test_unstarted_fires_of_dead_owners_are_listed(store: Store) -> None:
    """A fire whose execution was never stored is listed once its owner is not alive."""
    await store.register_owner("alive", 60)
    assert await store.claim_fire("t", "a", 1.0, "never-a", "alive")
    assert await store.claim_fire("t", "b", 2.0, "never-b", "gone")
    assert await store.claim_fire("t", "c", 3.0, None, "gone")  # a skipped tick: nothing to start
    assert await store.unstarted_fires(stale_after=30) == [("t", "b", 2.0, "never-b")]
