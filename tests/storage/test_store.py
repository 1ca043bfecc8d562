"""The Store contract, against every backend (the `store` fixture is SQLite and memory)."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from storage_helpers import TERMINAL, FakeClock, ex, tr

from actorflow import StorageUnavailable
from actorflow.storage import (
    AppendHistory,
    AppendLog,
    AttemptRow,
    ClaimExecution,
    DeleteExecution,
    DeleteTaskRuns,
    HistoryRow,
    LogRow,
    MetricRow,
    Op,
    OutputRow,
    PurgeProgress,
    QuarantineExecution,
    QuarantineRow,
    RejectedOp,
    ReleaseQuarantine,
    Store,
    UpsertAttempt,
    UpsertExecution,
    UpsertMetric,
    UpsertOutput,
    UpsertTaskRun,
)

pytestmark = pytest.mark.anyio


async def test_every_row_type_round_trips(store: Store) -> None:
    """Each op's row reads back exactly as written, every field included."""
    e1 = ex("e1", "FAILED", created=1.0, ended=3.0, parent_execution_id="p", owner="o1")
    t1 = tr("t1", "e1", "FAILED", created=1.5, ended=2.5, parent_task_run_id="t0", value="v")
    attempt = AttemptRow("e1", "t1", 1, "FAILED", 1.0, 2.0, "boom")
    metric = MetricRow("e1", "t1", "rows", "counter", {"b": "2", "a": "1"}, 5.0, 2)
    log = LogRow("e1", "t1", 1.2, "INFO", "hello ✓", "trace", "span")
    out = OutputRow("e1", "t1", b"\x81\xa1x\x01\x00")
    await store.write([
        UpsertExecution(e1), UpsertTaskRun(t1), UpsertAttempt(attempt),
        AppendHistory(HistoryRow("e1", None, "CREATED", 1.0)),
        AppendHistory(HistoryRow("e1", "t1", "CREATED", 1.1)),
        UpsertMetric(metric), AppendLog(log), UpsertOutput(out),
    ])  # fmt: skip
    assert await store.get_execution("e1") == e1
    assert await store.task_runs("e1") == [t1]
    assert await store.attempts("e1") == [attempt]
    assert await store.attempts("e1", "t1") == [attempt]
    assert await store.history("e1") == [HistoryRow("e1", None, "CREATED", 1.0),
                                         HistoryRow("e1", "t1", "CREATED", 1.1)]  # fmt: skip
    assert await store.metrics(execution_id="e1") == [metric]
    assert await store.logs("e1") == [log]
    assert await store.outputs("e1") == [out]
    assert await store.get_execution("nope") is None
    assert await store.task_runs("nope") == [] and await store.history("nope") == []


async def test_upserts_replace_every_column_and_keep_the_last(store: Store) -> None:
    """Repeated upserts of one key, in one write and across writes, leave only the last row."""
    store.write([UpsertExecution(ex("e1", "CREATED")), UpsertExecution(ex("e1", "RUNNING"))])
    last_run = tr(
        "t1", "e1", "SUCCESS", created=2.0, value="x", parent_task_run_id="p", task_id="b"
    )
    await store.write([UpsertTaskRun(tr("t1", "e1", "CREATED")), UpsertTaskRun(last_run)])
    await store.write([
        UpsertMetric(MetricRow("e1", "t1", "m", "counter", {"k": "v"}, 1.0)),
        UpsertMetric(MetricRow("e1", "t1", "m", "counter", {"k": "v"}, 3.0, 2)),
        UpsertMetric(MetricRow("e1", "t1", "m", "timer", {"k": "v"}, 0.5)),
        UpsertAttempt(AttemptRow("e1", "t1", 1, "RUNNING", 1.0)),
        UpsertAttempt(AttemptRow("e1", "t1", 1, "FAILED", 1.0, 2.0, "boom")),
        UpsertOutput(OutputRow("e1", "t1", b"first")),
        UpsertOutput(OutputRow("e1", "t1", b"last")),
    ])  # fmt: skip
    await store.write([UpsertMetric(MetricRow("e1", "t1", "m", "counter", {"k": "v"}, 7.0, 4))])
    assert (await store.get_execution("e1")) == ex("e1", "RUNNING")
    assert await store.task_runs("e1") == [last_run]
    assert [(m.kind, m.value, m.count) for m in await store.metrics(name="m")] == [
        ("counter", 7.0, 4),
        ("timer", 0.5, 1),
    ]
    assert await store.attempts("e1") == [AttemptRow("e1", "t1", 1, "FAILED", 1.0, 2.0, "boom")]
    assert [o.data for o in await store.outputs("e1")] == [b"last"]


async def test_an_upsert_keeps_the_rows_place(store: Store) -> None:
    """Updating a row does not move it: task runs stay in creation order, attempts in theirs."""
    await store.write([UpsertExecution(ex("e")), UpsertTaskRun(tr("a", "e", created=1.0)),
                       UpsertTaskRun(tr("b", "e", created=1.0)), UpsertTaskRun(tr("c", "e", created=0.5))])  # fmt: skip
    await store.write([UpsertTaskRun(tr("a", "e", "SUCCESS", created=1.0))])
    assert [r.id for r in await store.task_runs("e")] == ["c", "a", "b"]
    await store.write([UpsertAttempt(AttemptRow("e", "a", 1, "FAILED", 1.0)),
                       UpsertAttempt(AttemptRow("e", "b", 1, "RUNNING", 1.0))])  # fmt: skip
    await store.write([UpsertAttempt(AttemptRow("e", "a", 1, "SUCCESS", 1.0))])
    assert [(a.task_run_id, a.state) for a in await store.attempts("e")] == [
        ("a", "SUCCESS"),
        ("b", "RUNNING"),
    ]


async def test_ops_apply_in_order_across_deletes(store: Store) -> None:
    """A delete in the middle of queued writes sees what came before it and not what follows."""
    await store.write([UpsertExecution(ex("e")), UpsertTaskRun(tr("a", "e")), UpsertTaskRun(tr("b", "e"))])  # fmt: skip
    store.write([UpsertTaskRun(tr("a", "e", "FAILED"))])
    store.write([DeleteTaskRuns("e", ("a", "b"))])
    store.write([UpsertTaskRun(tr("a", "e", "CREATED", created=5.0))])
    await store.write([UpsertExecution(ex("gone")), AppendLog(LogRow("gone", None, 1.0, "INFO", "x")),
                       DeleteExecution("gone"), UpsertExecution(ex("back")), DeleteExecution("back"),
                       UpsertExecution(ex("back", "SUCCESS"))])  # fmt: skip
    assert [(r.id, r.state) for r in await store.task_runs("e")] == [("a", "CREATED")]
    assert await store.get_execution("gone") is None and await store.logs("gone") == []
    assert (await store.get_execution("back")) == ex("back", "SUCCESS")


async def test_list_filters_and_pages(store: Store) -> None:
    """Executions filter by flow, namespace, states and creation time, newest first, in pages."""
    await store.write([
        UpsertExecution(ex(f"e{i}", "SUCCESS" if i % 2 else "RUNNING", created=float(i),
                           flow_id="f" if i < 6 else "g", namespace="a" if i < 3 else "b"))
        for i in range(10)
    ])  # fmt: skip

    async def ids(**kw: object) -> list[str]:
        return [r.id for r in await store.list_executions(**kw)]  # type: ignore[arg-type]

    assert await ids(limit=3) == ["e9", "e8", "e7"]
    assert await ids(limit=3, offset=3) == ["e6", "e5", "e4"]
    assert await ids(limit=3, offset=9) == ["e0"]
    assert await ids(newest_first=False, limit=2) == ["e0", "e1"]
    assert await ids(flow_id="g") == ["e9", "e8", "e7", "e6"]
    assert await ids(namespace="a") == ["e2", "e1", "e0"]
    assert await ids(flow_id="f", namespace="b", states=["RUNNING"]) == ["e4"]
    assert await ids(states=["SUCCESS"], since=4, until=8) == ["e7", "e5"]
    assert await ids(states=[]) == []
    assert await ids(flow_id="nope") == []


async def test_unfinished_executions_are_the_non_terminal_ones(store: Store) -> None:
    """unfinished_executions lists every execution not in a terminal state, oldest first."""
    states = ["RUNNING", "SUCCESS", "PAUSED", "FAILED", "CREATED", "KILLED"]
    await store.write([UpsertExecution(ex(f"e{i}", s, created=float(10 - i))) for i, s in enumerate(states)])  # fmt: skip
    assert [r.id for r in await store.unfinished_executions(TERMINAL)] == ["e4", "e2", "e0"]


async def test_history_keeps_insertion_order(store: Store) -> None:
    """History comes back in the order appended, whatever the timestamps, and filters by level."""
    entries = [HistoryRow("e", None, "CREATED", 5.0), HistoryRow("e", "t1", "CREATED", 1.0),
               HistoryRow("e", "t2", "CREATED", 3.0), HistoryRow("e", "t1", "RUNNING", 2.0),
               HistoryRow("e", None, "RUNNING", 0.0)]  # fmt: skip
    await store.write(
        [UpsertExecution(ex("e")), AppendHistory(entries[0]), AppendHistory(entries[1])]
    )
    store.write([AppendHistory(entries[2])])
    await store.write([AppendHistory(h) for h in entries[3:]])
    assert await store.history("e") == entries
    assert await store.history("e", None) == [entries[0], entries[4]]
    assert await store.history("e", "t1") == [entries[1], entries[3]]


async def test_metrics_filter_by_tag_subset(store: Store) -> None:
    """A tags filter matches metrics carrying at least those tags; other filters combine."""
    await store.write([UpsertExecution(ex("e1"))] + [
        UpsertMetric(MetricRow("e1", f"t{i}", "rows", "counter", {"src": s, "env": "p"}, 1.0))
        for i, s in enumerate(["a", "b", "a"])
    ] + [UpsertMetric(MetricRow("e1", "t0", "time", "timer", {}, 2.0))])  # fmt: skip
    assert [m.task_run_id for m in await store.metrics(name="rows", tags={"src": "a"})] == [
        "t0",
        "t2",
    ]
    assert len(await store.metrics(name="rows", tags={"env": "p"})) == 3
    assert len(await store.metrics(tags={"env": "p", "src": "b"})) == 1
    assert await store.metrics(name="rows", tags={"src": "zzz"}) == []
    assert await store.metrics(tags={"missing": "p"}) == []
    assert [m.name for m in await store.metrics(task_run_id="t0")] == ["rows", "time"]
    assert len(await store.metrics(execution_id="e1", tags={})) == 4
    assert await store.metrics(execution_id="other") == []


async def test_logs_filter_and_limit(store: Store) -> None:
    """Logs come back in order, per task run or for the whole execution, limited on request."""
    lines = [LogRow("e", "t1" if i % 2 else None, float(i), "INFO", f"line {i}") for i in range(6)]
    await store.write([UpsertExecution(ex("e"))] + [AppendLog(lg) for lg in lines])
    assert await store.logs("e") == lines
    assert await store.logs("e", "t1") == lines[1::2]
    assert await store.logs("e", limit=2) == lines[:2]
    assert await store.logs("other") == []


async def test_purge_deletes_everything_of_an_execution(store: Store) -> None:
    """purge by age or id removes executions with all their rows and returns their ids."""
    ops: list[Op] = []
    for e, state, ended in (
        ("old", "SUCCESS", 2.0),
        ("new", "SUCCESS", 101.0),
        ("live", "RUNNING", None),
    ):
        ops += [UpsertExecution(ex(e, state, ended=ended)), UpsertTaskRun(tr(f"{e}-t", e)),
                UpsertAttempt(AttemptRow(e, f"{e}-t", 1, "SUCCESS", 1.0)),
                AppendHistory(HistoryRow(e, None, state, 2.0)),
                UpsertMetric(MetricRow(e, f"{e}-t", "m", "counter", {}, 1.0)),
                AppendLog(LogRow(e, f"{e}-t", 1.0, "INFO", "x")),
                UpsertOutput(OutputRow(e, f"{e}-t", b"o"))]  # fmt: skip
    await store.write(ops)
    await store.post_command("old", "kill")
    assert await store.purge() == []
    assert await store.purge(older_than=50.0, states=TERMINAL) == ["old"]
    for read in (store.task_runs("old"), store.attempts("old"), store.history("old"),
                 store.metrics(execution_id="old"), store.logs("old"), store.outputs("old")):  # fmt: skip
        assert await read == []
    assert await store.get_execution("old") is None
    assert await store.commands_after(0) == []
    assert await store.purge(execution_ids=["live"], states=TERMINAL) == []
    assert await store.purge(execution_ids=["new", "live", "unknown"]) == ["live", "new"]
    assert await store.list_executions() == []


async def test_delete_task_runs_removes_what_they_own(store: Store) -> None:
    """DeleteTaskRuns removes the task runs with their attempts, outputs and metrics, only them."""
    await store.write([UpsertExecution(ex("e")), UpsertTaskRun(tr("a", "e")), UpsertTaskRun(tr("b", "e")),
                       UpsertAttempt(AttemptRow("e", "a", 1, "FAILED", 1.0)),
                       UpsertAttempt(AttemptRow("e", "b", 1, "SUCCESS", 1.0)),
                       UpsertMetric(MetricRow("e", "a", "m", "counter", {}, 1.0)),
                       UpsertOutput(OutputRow("e", "a", b"x"))])  # fmt: skip
    await store.write([DeleteTaskRuns("e", ("a",))])
    assert [r.id for r in await store.task_runs("e")] == ["b"]
    assert [a.task_run_id for a in await store.attempts("e")] == ["b"]
    assert await store.outputs("e") == [] and await store.metrics(execution_id="e") == []
    assert await store.get_execution("e") is not None


async def test_commands_come_back_in_order(store: Store) -> None:
    """Commands are numbered upwards and read back after a given id."""
    await store.write([UpsertExecution(ex("e"))])
    a = await store.post_command("e", "kill", b"{}")
    b = await store.post_command("e", "resume", b'{"x":1}')
    assert b > a > 0
    cmds = await store.commands_after(0)
    assert [(c.id, c.execution_id, c.kind, c.payload) for c in cmds] == [
        (a, "e", "kill", b"{}"),
        (b, "e", "resume", b'{"x":1}'),
    ]
    assert [c.id for c in await store.commands_after(a)] == [b]
    assert await store.commands_after(b) == []


async def test_a_command_is_consumed_once_and_keeps_its_answer(store: Store) -> None:
    """A posted command is pending for the owner of its execution only; the first answer
    consumes it (status and answer kept), a second answer changes nothing."""
    await store.write([UpsertExecution(ex("mine", owner="me")),
                       UpsertExecution(ex("theirs", owner="them"))])  # fmt: skip
    a = await store.post_command("mine", "resume", b'{"ok":true}', b'{"run":2}')
    b = await store.post_command("theirs", "kill")
    c = await store.post_command("mine", "kill")
    got = await store.get_command(a)
    assert got is not None
    assert (got.status, got.answer, got.payload, got.target) == (
        "pending",
        None,
        b'{"ok":true}',
        b'{"run":2}',
    )
    assert [cmd.id for cmd in await store.pending_commands("me")] == [a, c]
    assert [cmd.id for cmd in await store.pending_commands("them")] == [b]
    assert await store.answer_command(a, "rejected", "execution mine is not paused (RUNNING)")
    assert not await store.answer_command(a, "applied", "resumed")
    done = await store.get_command(a)
    assert done is not None and done.answered is not None
    assert (done.status, done.answer) == ("rejected", "execution mine is not paused (RUNNING)")
    assert [cmd.id for cmd in await store.pending_commands("me")] == [c]
    assert await store.get_command(999_999) is None
    assert [cmd.status for cmd in await store.commands_after(0)] == [
        "rejected",
        "pending",
        "pending",
    ]
    assert done.error is None  # answered without naming an error class
    assert await store.answer_command(c, "rejected", "resume of mine: missing 'x'", "InputError")
    refused = await store.get_command(c)
    assert refused is not None and (refused.error, refused.answer) == (
        "InputError",
        "resume of mine: missing 'x'",
    )


async def test_compare_and_write_only_on_an_unchanged_row(store: Store) -> None:
    """compare_and_write applies its ops only if the execution still has the state and
    ``updated`` it was read with; of two concurrent ones exactly one succeeds."""
    await store.write([UpsertExecution(ex("e", "FAILED", updated=5.0))])
    restarted = ex("e", "RESTARTED", updated=6.0, owner="me", epoch=1, lease_expiry=9.0)
    # The upsert keeps the stored lease; the claim in the same transaction takes it.
    ops: list[Op] = [UpsertExecution(ex("e", "RESTARTED", updated=6.0)),
                     ClaimExecution("e", "me", 1, 9.0),
                     AppendHistory(HistoryRow("e", None, "RESTARTED", 6.0)),
                     UpsertTaskRun(tr("t", "e", "RESTARTED"))]  # fmt: skip
    assert not await store.compare_and_write("e", "FAILED", 4.0, ops)
    assert not await store.compare_and_write("e", "KILLED", 5.0, ops)
    assert not await store.compare_and_write("nope", "FAILED", 5.0, ops)
    assert await store.get_execution("e") == ex("e", "FAILED", updated=5.0)
    assert await store.task_runs("e") == [] and await store.history("e") == []
    results: list[bool] = []

    async def attempt() -> None:
        results.append(await store.compare_and_write("e", "FAILED", 5.0, ops))

    async with anyio.create_task_group() as tg:
        tg.start_soon(attempt)
        tg.start_soon(attempt)
    assert sorted(results) == [False, True]
    assert await store.get_execution("e") == restarted
    assert [r.state for r in await store.task_runs("e")] == ["RESTARTED"]
    assert [h.state for h in await store.history("e")] == ["RESTARTED"]


async def test_orphans_are_claimed_only_from_gone_owners(store: Store) -> None:
    """Executions of a live owner stay put; unowned, unregistered and released ones are taken."""
    for owner in ("alive", "dead", "me"):
        await store.register_owner(owner, 10)
    await store.write([UpsertExecution(ex("e1", owner="alive")), UpsertExecution(ex("e2", owner="dead")),
                       UpsertExecution(ex("e3", owner=None, created=0.5)),
                       UpsertExecution(ex("e4", "SUCCESS", owner=None)),
                       UpsertExecution(ex("e5", owner="never-registered")),
                       UpsertExecution(ex("e6", owner="me"))])  # fmt: skip
    await store.release_owner("dead")
    claimed = await store.claim_orphans("me", TERMINAL, stale_after=10)
    assert [r.id for r in claimed] == ["e3", "e2", "e5"]
    assert all(r.owner == "me" for r in claimed)
    assert (await store.get_execution("e2")).owner == "me"  # type: ignore[union-attr]
    assert (await store.get_execution("e1")).owner == "alive"  # type: ignore[union-attr]
    assert await store.claim_orphans("other", TERMINAL, stale_after=10) == []


async def test_a_stale_heartbeat_makes_executions_claimable(store: Store) -> None:
    """An owner whose heartbeat is older than stale_after loses its executions; a beating one keeps them."""
    clock = FakeClock()
    store.clock = clock  # type: ignore[attr-defined]
    await store.register_owner("a", 15)
    await store.register_owner("b", 15)
    await store.write([UpsertExecution(ex("ea", owner="a")), UpsertExecution(ex("eb", owner="b"))])
    clock.now += 10
    await store.heartbeat("b")
    assert await store.claim_orphans("c", TERMINAL, stale_after=15) == []
    clock.now += 10  # a: 20 s without a beat; b: 10 s
    assert [r.id for r in await store.claim_orphans("c", TERMINAL, stale_after=15)] == ["ea"]
    assert {o for o, _ in await store.owners()} == {"a", "b"}


async def test_two_owners_never_claim_the_same_execution(store: Store) -> None:
    """Concurrent claims by two owners split the orphans: each is taken exactly once."""
    await store.write([UpsertExecution(ex(f"e{i}", owner=None)) for i in range(50)])
    results: dict[str, list[str]] = {}

    async def claim(owner: str) -> None:
        await store.register_owner(owner, 10)
        results[owner] = [r.id for r in await store.claim_orphans(owner, TERMINAL, 10)]

    async with anyio.create_task_group() as tg:
        tg.start_soon(claim, "x")
        tg.start_soon(claim, "y")
    taken = results["x"] + results["y"]
    assert sorted(taken) == sorted(f"e{i}" for i in range(50))
    for owner, ids in results.items():
        for i in ids:
            assert (await store.get_execution(i)).owner == owner  # type: ignore[union-attr]


async def test_concurrent_writers_lose_nothing(store: Store) -> None:
    """10,000 executions written by 100 concurrent tasks are all there afterwards."""

    async def writer(k: int) -> None:
        for i in range(100):
            eid = f"e{k}-{i}"
            commit = store.write([UpsertExecution(ex(eid, created=float(i))), UpsertTaskRun(tr(f"t{k}-{i}", eid)),
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
    assert {r.id for r in rows} == {f"e{k}-{i}" for k in range(100) for i in range(100)}
    for k in (0, 57, 99):
        for i in (0, 50, 99):
            assert [r.id for r in await store.task_runs(f"e{k}-{i}")] == [f"t{k}-{i}"]
            assert len(await store.history(f"e{k}-{i}")) == 1


async def test_a_failed_write_is_never_silent(store: Store) -> None:
    """An injected write failure fails the waiting commit with StorageUnavailable, sets
    `failed`, refuses later writes and keeps what was committed before."""
    await store.write([UpsertExecution(ex("kept"))])
    store.fail_next = OSError("disk full")  # type: ignore[attr-defined]
    commit = store.write([UpsertExecution(ex("lost")), UpsertTaskRun(tr("t", "kept"))])
    with pytest.raises(StorageUnavailable, match="disk full"):
        await commit
    assert isinstance(store.failed, OSError)
    with pytest.raises(StorageUnavailable, match="disk full"):
        store.write([UpsertExecution(ex("later"))])
    with pytest.raises(StorageUnavailable):
        await store.flush()
    with pytest.raises(StorageUnavailable):
        await store.post_command("kept", "kill")
    assert await store.get_execution("kept") == ex("kept")
    assert await store.get_execution("lost") is None and await store.task_runs("kept") == []


async def test_a_closed_store_refuses_writes(store: Store) -> None:
    """After close, write raises StorageUnavailable instead of dropping the ops."""
    await store.write([UpsertExecution(ex("e"))])
    await store.close()
    with pytest.raises(StorageUnavailable, match="closed"):
        store.write([UpsertExecution(ex("f"))])
    await store.open()
    assert await store.get_execution("e") == ex("e")
    await store.write([UpsertExecution(ex("f"))])


async def test_flush_and_empty_writes(store: Store) -> None:
    """flush returns once everything queued is readable; an empty write commits at once."""
    await store.write([])
    for i in range(20):
        store.write([UpsertExecution(ex(f"e{i}"))])
    await store.flush()
    assert len(await store.list_executions()) == 20
    await store.flush()


async def test_rows_are_msgspec_round_trippable(store: Store) -> None:
    """Rows read back encode and decode with msgspec like the rows written (tags included)."""
    metric = MetricRow("e", "t", "m", "duration", {"x": "1"}, 0.25, 3)
    await store.write([UpsertExecution(ex("e")), UpsertMetric(metric)])
    (read,) = await store.metrics(execution_id="e")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(read), type=MetricRow) == metric


# -- write_latest: snapshots that change faster than they commit ---------------------------
class Builds:
    """A row builder that counts its calls (what ``write_latest`` must keep to a minimum)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, item: tuple[str, str]) -> list[Op]:
        run_id, state = item
        self.calls.append(f"{run_id}:{state}")
        return [UpsertTaskRun(tr(run_id, "e", state))]


async def test_write_latest_builds_only_the_last_item_of_a_key(store: Store) -> None:
    """Three snapshots of one task run before a commit: one build, the last state stored."""
    await store.write([UpsertExecution(ex("e"))])
    build = Builds()
    for state in ("CREATED", "RUNNING", "SUCCESS"):
        commit = store.write_latest("t1", build, ("t1", state))
    await commit
    await store.flush()
    assert [r.state for r in await store.task_runs("e")] == ["SUCCESS"]
    assert build.calls == ["t1:SUCCESS"]


async def test_write_latest_keys_keep_their_place_and_each_commits(store: Store) -> None:
    """Keys come back in first-write order; a later write of a committed key writes again."""
    await store.write([UpsertExecution(ex("e"))])
    build = Builds()
    store.write_latest("b", build, ("b", "RUNNING"))
    store.write_latest("a", build, ("a", "RUNNING"))
    await store.write_latest("b", build, ("b", "SUCCESS"))
    await store.flush()
    assert [(r.id, r.state) for r in await store.task_runs("e")] == [
        ("b", "SUCCESS"), ("a", "RUNNING")
    ]  # fmt: skip
    await store.write_latest("a", build, ("a", "FAILED"))
    await store.flush()
    assert {r.id: r.state for r in await store.task_runs("e")} == {"a": "FAILED", "b": "SUCCESS"}


async def test_write_latest_does_not_move_across_a_delete(store: Store) -> None:
    """A key written, deleted, then written again ends up present (the delete stays between)."""
    await store.write([UpsertExecution(ex("e"))])
    build = Builds()
    store.write_latest("t", build, ("t", "FAILED"))
    store.write([DeleteTaskRuns("e", ("t",))])
    store.write_latest("t", build, ("t", "RUNNING"))
    await store.flush()
    assert [(r.id, r.state) for r in await store.task_runs("e")] == [("t", "RUNNING")]


# -- purge in batches -----------------------------------------------------------------------
def _execution_with_rows(e: str, ended: float | None = 2.0, created: float = 1.0) -> list[Op]:
    state = "SUCCESS" if ended is not None else "RUNNING"
    return [UpsertExecution(ex(e, state, created=created, ended=ended)), UpsertTaskRun(tr(f"{e}-t", e)),
            UpsertAttempt(AttemptRow(e, f"{e}-t", 1, "SUCCESS", 1.0)),
            AppendHistory(HistoryRow(e, None, state, 2.0)),
            UpsertMetric(MetricRow(e, f"{e}-t", "m", "counter", {}, 1.0)),
            AppendLog(LogRow(e, f"{e}-t", 1.0, "INFO", "x")),
            UpsertOutput(OutputRow(e, f"{e}-t", b"o"))]  # fmt: skip


async def _rows_of(store: Store, e: str) -> list[int]:
    """How many rows of each kind an execution has (all 1 when whole, all 0 when purged)."""
    return [
        int(await store.get_execution(e) is not None),
        len(await store.task_runs(e)), len(await store.attempts(e)), len(await store.history(e)),
        len(await store.metrics(execution_id=e)), len(await store.logs(e)), len(await store.outputs(e)),
    ]  # fmt: skip


async def test_purge_goes_in_batches_and_reports_progress(store: Store) -> None:
    """purge deletes batch_size executions per batch, oldest first, and reports each batch
    (ids, running count, total, batch number) to a sync or async progress callback."""
    ops: list[Op] = []
    for i in range(25):
        ops += _execution_with_rows(f"e{i:02}", created=float(i))
    ops += _execution_with_rows("live", ended=None)
    await store.write(ops)
    seen: list[PurgeProgress] = []
    deleted = await store.purge(older_than=50.0, batch_size=10, progress=seen.append)
    assert deleted == [f"e{i:02}" for i in range(25)]
    assert [(p.deleted, p.total, p.batches, len(p.ids)) for p in seen] == [
        (10, 25, 1, 10), (20, 25, 2, 10), (25, 25, 3, 5)
    ]  # fmt: skip
    assert [i for p in seen for i in p.ids] == deleted
    assert await _rows_of(store, "live") == [1] * 7

    async def async_progress(p: PurgeProgress) -> None:
        seen.append(p)
        await anyio.lowlevel.checkpoint()

    seen.clear()
    assert await store.purge(execution_ids=["live"], batch_size=10, progress=async_progress) == [
        "live"
    ]
    assert [p.ids for p in seen] == [("live",)]
    with pytest.raises(ValueError, match="batch_size"):
        await store.purge(older_than=1.0, batch_size=0)


async def test_an_interrupted_purge_leaves_whole_executions_and_resumes(store: Store) -> None:
    """A purge stopped after its first batch has deleted that batch's executions whole and
    left the others whole; the same purge again deletes the rest."""
    ops: list[Op] = []
    for i in range(12):
        ops += _execution_with_rows(f"e{i:02}", created=float(i))
    await store.write(ops)
    await store.post_command("e00", "kill")

    def stop_after_first(p: PurgeProgress) -> None:
        raise KeyboardInterrupt if p.batches == 1 else AssertionError("went on")

    with pytest.raises(KeyboardInterrupt):
        await store.purge(older_than=50.0, batch_size=5, progress=stop_after_first)
    for i in range(12):
        assert await _rows_of(store, f"e{i:02}") == ([0] * 7 if i < 5 else [1] * 7)
    assert await store.commands_after(0) == []
    assert await store.purge(older_than=50.0, batch_size=5) == [f"e{i:02}" for i in range(5, 12)]
    assert await store.list_executions() == []


# -- one bad value fails one row -----------------------------------------------------------
async def test_bad_values_reject_only_their_rows(store: Store) -> None:
    """Ints beyond 64 bits, a lone surrogate and a NaN metric in one batch are left out and
    named with their execution; every other row of the batch (theirs too) commits, and the
    store goes on writing."""
    heard: list[RejectedOp] = []
    store.on_rejected = heard.extend
    ops: list[Op] = []
    for e in ("good", "huge", "big", "surrogate", "nan"):
        ops += [UpsertExecution(ex(e)), UpsertTaskRun(tr(f"{e}-t", e))]
    ops += [
        UpsertAttempt(
            AttemptRow("huge", "huge-t", 2**70, "RUNNING", 1.0)
        ),  # msgpack cannot carry it
        UpsertMetric(MetricRow("big", "big-t", "rows", "counter", {}, 1.0, 2**63)),  # SQLite cannot
        AppendLog(LogRow("surrogate", "surrogate-t", 1.0, "INFO", "half a pair: \ud800")),
        UpsertMetric(MetricRow("nan", "nan-t", "ratio", "timer", {}, float("nan"))),
        AppendLog(LogRow("good", "good-t", 1.0, "INFO", "fine ✓")),
        UpsertMetric(MetricRow("good", "good-t", "rows", "counter", {}, 3.0)),
    ]
    commit = store.write(ops)
    await commit
    got = {(r.execution_id, r.table, r.key): r.error for r in commit.rejected}
    assert set(got) == {("huge", "attempts", "huge-t"), ("big", "metrics", "big-t/rows"),
                        ("surrogate", "logs", "surrogate-t"), ("nan", "metrics", "nan-t/ratio")}  # fmt: skip
    assert (
        "OverflowError" in got["huge", "attempts", "huge-t"]
        and "attempts.number" in got["huge", "attempts", "huge-t"]
    )
    assert (
        "OverflowError" in got["big", "metrics", "big-t/rows"]
        and "metrics.count" in got["big", "metrics", "big-t/rows"]
    )
    assert "surrogates not allowed" in got["surrogate", "logs", "surrogate-t"]
    assert "NOT NULL constraint failed: metrics.value" in got["nan", "metrics", "nan-t/ratio"]
    assert tuple(heard) == commit.rejected
    assert store.failed is None
    for e in ("good", "huge", "big", "surrogate", "nan"):
        assert await store.get_execution(e) == ex(e) and len(await store.task_runs(e)) == 1
    assert [lg.message for lg in await store.logs("good")] == ["fine ✓"]
    assert [m.value for m in await store.metrics(execution_id="good")] == [3.0]
    assert await store.logs("surrogate") == [] and await store.metrics(execution_id="nan") == []
    assert await store.attempts("huge") == []
    later = store.write([UpsertExecution(ex("later"))])
    await later
    assert later.rejected == () and await store.get_execution("later") == ex("later")


async def test_a_snapshot_builder_that_raises_rejects_only_its_item(store: Store) -> None:
    """A write_latest builder that raises (an unencodable snapshot) is reported by its key;
    the other items of its batch are written."""
    heard: list[RejectedOp] = []
    store.on_rejected = heard.extend
    await store.write([UpsertExecution(ex("e"))])
    build = Builds()

    def broken(item: object) -> list[Op]:
        raise TypeError("Encoding objects of type function is unsupported")

    store.write_latest("a", build, ("a", "RUNNING"))
    store.write_latest(("bad", 1), broken, None)
    store.write_latest("b", build, ("b", "RUNNING"))
    with anyio.fail_after(30):
        await store.flush()
    assert [(r.execution_id, r.key) for r in heard] == [(None, "('bad', 1)")]
    assert "TypeError: Encoding objects" in heard[0].error
    assert [r.id for r in await store.task_runs("e")] == ["a", "b"]
    assert store.failed is None


async def test_a_storage_failure_still_stops_the_store_and_is_announced(store: Store) -> None:
    """After rows were rejected the store goes on, but a storage failure (disk full) stops
    it as before, and on_failed hears of it once."""
    failures: list[BaseException] = []
    store.on_failed = failures.append
    await store.write(
        [UpsertExecution(ex("e")), AppendLog(LogRow("e", None, float("nan"), "INFO", "x"))]
    )
    store.fail_next = OSError("disk full")  # type: ignore[attr-defined]
    with pytest.raises(StorageUnavailable, match="disk full"):
        await store.write([UpsertExecution(ex("lost"))])
    with pytest.raises(StorageUnavailable):
        store.write([UpsertExecution(ex("later"))])
    assert len(failures) == 1 and "disk full" in str(failures[0])


# -- quarantine -----------------------------------------------------------------------------
async def test_a_quarantined_execution_is_kept_listed_and_not_recovered(store: Store) -> None:
    """Quarantine keeps an execution's rows as they are, lists it with its reason, and keeps
    it out of unfinished_executions and claims until released; a purge removes the mark."""
    await store.write(
        _execution_with_rows("bad", ended=None) + _execution_with_rows("ok", ended=None)
    )
    await store.write(
        [QuarantineExecution(QuarantineRow("bad", "msgspec.DecodeError: truncated", 5.0))]
    )
    assert await store.quarantined() == [
        QuarantineRow("bad", "msgspec.DecodeError: truncated", 5.0)
    ]
    assert await _rows_of(store, "bad") == [1] * 7
    assert (await store.get_execution("bad")).data == b"snap-bad"  # type: ignore[union-attr]
    assert [r.id for r in await store.unfinished_executions(TERMINAL)] == ["ok"]
    assert [r.id for r in await store.claim_orphans("me", TERMINAL, 10)] == ["ok"]
    assert {r.id for r in await store.list_executions()} == {"bad", "ok"}
    await store.write([ReleaseQuarantine("bad")])
    assert await store.quarantined() == []
    assert [r.id for r in await store.claim_orphans("me", TERMINAL, 10)] == ["bad"]
    await store.write([QuarantineExecution(QuarantineRow("bad", "again", 6.0))])
    assert await store.purge(execution_ids=["bad"]) == ["bad"]
    assert await store.quarantined() == []
