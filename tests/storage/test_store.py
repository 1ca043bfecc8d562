"""The Store contract, against every backend."""

from __future__ import annotations

import anyio
import pytest

from actorflow.storage import (
    AppendHistory,
    AppendLog,
    AttemptRow,
    DeleteExecution,
    DeleteTaskRuns,
    ExecutionRow,
    HistoryRow,
    LogRow,
    MetricRow,
    OutputRow,
    Store,
    TaskRunRow,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertOutput,
    UpsertTaskRun,
)

pytestmark = pytest.mark.anyio
TERMINAL = ("SUCCESS", "FAILED", "WARNING", "KILLED", "CANCELLED", "SKIPPED")


def ex(i: str, state: str = "RUNNING", created: float = 1.0, **kw: object) -> ExecutionRow:
    return ExecutionRow(id=i, namespace=kw.pop("namespace", "ns"), flow_id=kw.pop("flow_id", "f"),  # type: ignore[arg-type]
                        flow_revision=1, state=state, created=created, updated=created,
                        data=b"snap-" + i.encode(), **kw)  # type: ignore[arg-type]  # fmt: skip


def tr(i: str, e: str, state: str = "RUNNING", created: float = 1.0) -> TaskRunRow:
    return TaskRunRow(id=i, execution_id=e, task_id="t-" + i, state=state, created=created,
                      updated=created, data=b"tr")  # fmt: skip


async def test_every_row_type_round_trips(store: Store) -> None:
    """Each op's row reads back as written."""
    await store.write([
        UpsertExecution(ex("e1")),
        UpsertTaskRun(tr("t1", "e1")),
        UpsertAttempt(AttemptRow("e1", "t1", 1, "FAILED", 1.0, 2.0, "boom")),
        AppendHistory(HistoryRow("e1", None, "CREATED", 1.0)),
        AppendHistory(HistoryRow("e1", "t1", "CREATED", 1.1)),
        UpsertMetric(MetricRow("e1", "t1", "rows", "counter", {"b": "2", "a": "1"}, 5.0, 2)),
        AppendLog(LogRow("e1", "t1", 1.2, "INFO", "hello", "trace", "span")),
        UpsertOutput(OutputRow("e1", "t1", b"\x81\xa1x\x01")),
    ])  # fmt: skip
    assert await store.get_execution("e1") == ex("e1")
    assert await store.task_runs("e1") == [tr("t1", "e1")]
    assert await store.attempts("e1") == [AttemptRow("e1", "t1", 1, "FAILED", 1.0, 2.0, "boom")]
    assert [h.state for h in await store.history("e1")] == ["CREATED", "CREATED"]
    assert [h.task_run_id for h in await store.history("e1", None)] == [None]
    assert (await store.metrics(execution_id="e1"))[0].tags == {"a": "1", "b": "2"}
    assert (await store.logs("e1"))[0] == LogRow("e1", "t1", 1.2, "INFO", "hello", "trace", "span")
    assert (await store.outputs("e1"))[0].data == b"\x81\xa1x\x01"
    assert await store.get_execution("nope") is None


async def test_upserts_replace_and_keep_the_last(store: Store) -> None:
    """Several upserts of one key in one batch and across batches keep the last one."""
    store.write([UpsertExecution(ex("e1", "CREATED")), UpsertExecution(ex("e1", "RUNNING"))])
    await store.write(
        [UpsertTaskRun(tr("t1", "e1", "CREATED")), UpsertTaskRun(tr("t1", "e1", "SUCCESS"))]
    )
    await store.write([UpsertMetric(MetricRow("e1", "t1", "m", "counter", {}, 1.0)),
                       UpsertMetric(MetricRow("e1", "t1", "m", "counter", {}, 3.0, 2))])  # fmt: skip
    assert (await store.get_execution("e1")).state == "RUNNING"  # type: ignore[union-attr]
    assert [r.state for r in await store.task_runs("e1")] == ["SUCCESS"]
    assert [(m.value, m.count) for m in await store.metrics(name="m")] == [(3.0, 2)]


async def test_list_filters_and_pages(store: Store) -> None:
    """Executions filter by flow, namespace, state and time, newest first, with paging."""
    ops = [UpsertExecution(ex(f"e{i}", "SUCCESS" if i % 2 else "RUNNING", created=float(i),
                              flow_id="f" if i < 6 else "g")) for i in range(10)]  # fmt: skip
    await store.write(ops)
    assert [r.id for r in await store.list_executions(limit=3)] == ["e9", "e8", "e7"]
    assert [r.id for r in await store.list_executions(limit=3, offset=3)] == ["e6", "e5", "e4"]
    assert {r.id for r in await store.list_executions(flow_id="g")} == {"e6", "e7", "e8", "e9"}
    assert {r.id for r in await store.list_executions(states=["SUCCESS"], since=4, until=8)} == {
        "e5",
        "e7",
    }
    assert [r.id for r in await store.list_executions(newest_first=False, limit=2)] == ["e0", "e1"]
    assert {r.id for r in await store.unfinished_executions(TERMINAL)} == {
        "e0",
        "e2",
        "e4",
        "e6",
        "e8",
    }


async def test_metrics_filter_by_tag_subset(store: Store) -> None:
    """A tags filter matches metrics carrying at least those tags."""
    await store.write([UpsertExecution(ex("e1"))] + [
        UpsertMetric(MetricRow("e1", f"t{i}", "rows", "counter", {"src": s, "env": "p"}, 1.0))
        for i, s in enumerate(["a", "b", "a"])
    ])  # fmt: skip
    assert len(await store.metrics(name="rows", tags={"src": "a"})) == 2
    assert len(await store.metrics(name="rows", tags={"env": "p"})) == 3
    assert await store.metrics(name="rows", tags={"src": "zzz"}) == []


async def test_purge_deletes_everything_of_an_execution(store: Store) -> None:
    """purge by age or id removes the executions with all their rows and returns the ids."""
    await store.write([
        UpsertExecution(ex("old", "SUCCESS", created=1.0, ended=2.0)),
        UpsertExecution(ex("new", "SUCCESS", created=100.0, ended=101.0)),
        UpsertExecution(ex("live", "RUNNING", created=1.0)),
        UpsertTaskRun(tr("t1", "old")),
        AppendLog(LogRow("old", "t1", 1.0, "INFO", "x")),
        AppendHistory(HistoryRow("old", None, "SUCCESS", 2.0)),
    ])  # fmt: skip
    assert await store.purge(older_than=50.0, states=TERMINAL) == ["old"]
    assert await store.get_execution("old") is None
    assert await store.task_runs("old") == [] and await store.logs("old") == []
    assert await store.history("old") == []
    assert await store.purge(execution_ids=["live"], states=TERMINAL) == []
    assert await store.purge(execution_ids=["new"]) == ["new"]
    await store.write([DeleteExecution("live")])
    assert await store.get_execution("live") is None


async def test_delete_task_runs(store: Store) -> None:
    """DeleteTaskRuns removes task runs and their attempts and outputs."""
    await store.write([UpsertExecution(ex("e")), UpsertTaskRun(tr("a", "e")), UpsertTaskRun(tr("b", "e")),
                       UpsertAttempt(AttemptRow("e", "a", 1, "FAILED", 1.0)),
                       UpsertOutput(OutputRow("e", "a", b"x"))])  # fmt: skip
    await store.write([DeleteTaskRuns("e", ("a",))])
    assert [r.id for r in await store.task_runs("e")] == ["b"]
    assert await store.attempts("e") == [] and await store.outputs("e") == []


async def test_commands_are_ordered(store: Store) -> None:
    """Commands come back in order after a given id."""
    await store.write([UpsertExecution(ex("e"))])
    a = await store.post_command("e", "kill", b"{}")
    b = await store.post_command("e", "resume", b'{"x":1}')
    assert [c.kind for c in await store.commands_after(0)] == ["kill", "resume"]
    assert [c.id for c in await store.commands_after(a)] == [b]


async def test_orphans_are_claimed_only_from_dead_owners(store: Store) -> None:
    """Unfinished executions of a live owner stay; those of a gone owner are claimed."""
    for owner in ("alive", "dead", "me"):
        await store.register_owner(owner, 10)
    await store.write([UpsertExecution(ex("e1", owner="alive")), UpsertExecution(ex("e2", owner="dead")),
                       UpsertExecution(ex("e3", owner=None)), UpsertExecution(ex("e4", "SUCCESS", owner=None))])  # fmt: skip
    await store.release_owner("dead")
    claimed = await store.claim_orphans("me", TERMINAL, stale_after=10)
    assert sorted(r.id for r in claimed) == ["e2", "e3"]
    assert all(r.owner == "me" for r in claimed)
    assert await store.claim_orphans("other", TERMINAL, stale_after=10) == []
    stale = await store.claim_orphans("other", TERMINAL, stale_after=-1)
    assert sorted(r.id for r in stale) == ["e1", "e2", "e3"]


async def test_concurrent_writers_lose_nothing(store: Store) -> None:
    """10,000 executions written by 100 concurrent tasks are all there afterwards."""

    async def writer(k: int) -> None:
        for i in range(100):
            eid = f"e{k}-{i}"
            commit = store.write([UpsertExecution(ex(eid)), UpsertTaskRun(tr(f"t{k}-{i}", eid)),
                                  AppendHistory(HistoryRow(eid, None, "CREATED", 1.0))])  # fmt: skip
            if i % 10 == 0:
                await commit
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for k in range(100):
            tg.start_soon(writer, k)
    await store.flush()
    rows = await store.list_executions(limit=20_000)
    assert len(rows) == 10_000
    assert len(await store.task_runs("e99-99")) == 1
