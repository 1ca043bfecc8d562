"""The work queue of the store: claims are leases with a fencing token (every backend)."""

from __future__ import annotations

import pytest
from storage_helpers import FakeClock, ex, tr

from actorflow.storage import (
    AppendHistory,
    AppendLog,
    HistoryRow,
    LogRow,
    QuarantineExecution,
    QuarantineRow,
    Store,
    UpsertExecution,
    UpsertTaskRun,
)

pytestmark = pytest.mark.anyio


def _aged(store: Store) -> FakeClock:
    clock = FakeClock()
    store.clock = clock  # type: ignore[attr-defined]
    return clock


async def test_a_queued_execution_is_claimed_once_with_a_new_epoch(store: Store) -> None:
    """Of two workers claiming one queued execution, one gets it, with epoch 1."""
    _aged(store)
    await store.write([UpsertExecution(ex("e", "CREATED"))])
    assert [r.id for r in await store.claimable(10)] == ["e"]
    first = await store.claim_queued("w1", ["e"], 10.0)
    second = await store.claim_queued("w2", ["e"], 10.0)
    assert [(r.id, r.owner, r.epoch) for r in first] == [("e", "w1", 1)]
    assert second == []
    assert await store.claimable(10) == []


async def test_an_expired_lease_is_claimed_again_and_renewal_keeps_it(store: Store) -> None:
    """A renewed lease stays; one not renewed past its ttl goes to another worker, epoch + 1."""
    clock = _aged(store)
    await store.write([UpsertExecution(ex("e", "RUNNING"))])
    await store.claim_queued("w1", ["e"], 10.0)
    clock.now += 8
    assert await store.renew_leases("w1", 10.0) == ["e"]
    clock.now += 8
    assert await store.claim_queued("w2", ["e"], 10.0) == []  # renewed: 2 s left
    clock.now += 3
    taken = await store.claim_queued("w2", ["e"], 10.0)
    assert [(r.owner, r.epoch) for r in taken] == [("w2", 2)]
    assert await store.renew_leases("w1", 10.0) == []  # w1 holds nothing any more


async def test_writes_of_a_worker_whose_lease_was_taken_are_refused(store: Store) -> None:
    """After another claim, nothing the old holder writes for that execution is stored,
    on_fenced names it, and its writes for other executions still commit."""
    clock = _aged(store)
    await store.write([UpsertExecution(ex("e", "RUNNING")), UpsertExecution(ex("f", "RUNNING"))])
    await store.claim_queued("w1", ["e", "f"], 1.0)
    clock.now += 2
    await store.claim_queued("w2", ["e"], 10.0)
    fenced: list[tuple[tuple[str, str], ...]] = []
    store.on_fenced = fenced.append
    store.fences.update({"e": 1, "f": 1})
    store.fence_owner = "w1"
    await store.write(
        [
            UpsertExecution(ex("e", "SUCCESS", ended=5.0, updated=5.0)),
            UpsertTaskRun(tr("t1", "e", "SUCCESS")),
            AppendHistory(HistoryRow("e", None, "SUCCESS", 5.0)),
            AppendLog(LogRow("e", "t1", 5.0, "INFO", "late")),
            UpsertExecution(ex("f", "SUCCESS", ended=5.0, updated=5.0)),
        ]
    )
    await store.flush()
    e, f = await store.get_execution("e"), await store.get_execution("f")
    assert e is not None and (e.state, e.owner, e.epoch) == ("RUNNING", "w2", 2)
    assert f is not None and f.state == "SUCCESS"
    assert await store.task_runs("e") == [] and await store.history("e") == []
    assert await store.logs("e") == []
    assert [[ex_id for ex_id, _ in batch] for batch in fenced] == [["e"]]
    assert "w2" in fenced[0][0][1]


async def test_released_leases_are_claimable_at_once(store: Store) -> None:
    """release_leases puts unfinished executions back in the queue before their expiry,
    and a release fences the old holder's late writes too."""
    _aged(store)
    await store.write(
        [UpsertExecution(ex("e", "RUNNING")), UpsertExecution(ex("g", "SUCCESS", ended=2.0))]
    )
    assert [r.id for r in await store.claim_queued("w1", ["e", "g"], 60.0)] == ["e"]
    assert await store.release_leases("w1") == 1
    store.fences["e"] = 1
    store.fence_owner = "w1"
    await store.write([UpsertExecution(ex("e", "FAILED", ended=3.0))])
    await store.flush()
    row = await store.get_execution("e")
    assert row is not None and (row.state, row.owner) == ("RUNNING", None)
    assert [r.id for r in await store.claim_queued("w2", ["e"], 60.0)] == ["e"]


async def test_unloadable_executions_wait_visibly_and_last(store: Store) -> None:
    """An execution marked waiting keeps its reason until a worker claims it, and comes
    after the others in the queue; quarantined ones are never claimable."""
    _aged(store)
    await store.write(
        [
            UpsertExecution(ex("a", "CREATED", created=1.0)),
            UpsertExecution(ex("b", "CREATED", created=2.0)),
            UpsertExecution(ex("q", "CREATED", created=0.5)),
            QuarantineExecution(QuarantineRow("q", "bad row", 1.0)),
        ]
    )
    assert await store.claim_queued("w1", [], 10.0, [("a", "flow ns.f is not registered")]) == []
    row = await store.get_execution("a")
    assert row is not None and row.waiting == "flow ns.f is not registered"
    assert [r.id for r in await store.claimable(10)] == ["b", "a"]
    taken = await store.claim_queued("w2", ["a"], 10.0)
    assert [(r.id, r.waiting) for r in taken] == [("a", None)]


async def test_a_snapshot_upsert_keeps_the_stored_lease(store: Store) -> None:
    """Writing a snapshot again never changes owner, epoch or lease: only claims do."""
    _aged(store)
    await store.write([UpsertExecution(ex("e", "CREATED", owner="w1", epoch=1, lease_expiry=5.0))])
    await store.write([UpsertExecution(ex("e", "RUNNING", owner="other", epoch=7))])
    await store.flush()
    row = await store.get_execution("e")
    assert row is not None
    assert (row.state, row.owner, row.epoch, row.lease_expiry) == ("RUNNING", "w1", 1, 5.0)
