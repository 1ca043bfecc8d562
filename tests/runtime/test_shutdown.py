"""Closing a runtime is bounded however many executions run; what it interrupts, it records
itself (the attempt FAILED "interrupted", as recovery would) and commits before it releases
the leases; the next runtime resumes it without recording it twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import actorflow as af
from actorflow import StorageUnavailable
from actorflow.actors import ActorSystem
from actorflow.runtime import Runtime
from actorflow.runtime._core import _shutdown
from actorflow.runtime._tracing import Tracing

pytestmark = pytest.mark.anyio

N = 1_000


class Started:
    """Counts first attempts of ``stuck_once`` in flight; ``all_in`` is set at ``want``."""

    count = 0
    want = N
    all_in = anyio.Event()
    firsts = 0  # runs of ``first``: a completed task run is never run again

    @classmethod
    def reset(cls, want: int) -> None:
        cls.count, cls.want, cls.all_in, cls.firsts = 0, want, anyio.Event(), 0


@af.task(retry=af.Retry.constant(0, max_attempts=3))
async def stuck_once(ctx: af.TaskContext) -> dict[str, int]:
    """Blocks forever in its first attempt; a later attempt succeeds."""
    if ctx.attempt == 1:
        Started.count += 1
        if Started.count == Started.want:
            Started.all_in.set()
        await anyio.sleep_forever()
    return {"attempt": ctx.attempt}


@af.task
async def first(ctx: af.TaskContext) -> dict[str, int]:
    """Ends at once; counts its runs."""
    Started.firsts += 1
    return {"n": Started.firsts}


FLOW = af.Flow(id="stuck", namespace="shutdown", tasks=[stuck_once("work")])
TWO = af.Flow(id="two", namespace="shutdown", tasks=[first("a"), stuck_once("work")])


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Runtime.open arguments of a fresh database: an SQLite file, or PostgreSQL."""
    if request.param == "sqlite":
        return {"path": tmp_path / "s.db"}
    return {"path": request.getfixturevalue("pg_dsn"), "files": tmp_path / "files"}


async def _stored(db: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """What a reader sees of ``ids``: owners and leases, attempts, task runs, history."""
    async with Runtime.open(**db, read_only=True) as reader:
        store = reader.store
        rows = [await store.get_execution(i) for i in ids]
        return {
            "leases": {(r.owner, r.lease_expiry) for r in rows if r is not None},
            "states": {r.state for r in rows if r is not None},
            "attempts": [
                [(a.number, a.state, a.error, a.end is not None) for a in await store.attempts(i)]
                for i in ids
            ],
            "runs": [sorted((t.task_id, t.state) for t in await store.task_runs(i)) for i in ids],
            "history": [[(h.task_run_id, h.state) for h in await store.history(i)] for i in ids],
        }


async def test_a_thousand_running_executions_close_in_one_grace_and_one_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 1,000 attempts running, closing gives them one grace together (at its end one
    cancel of every actor left) and records all 1,000 interruptions in one write
    before releasing every lease; the next runtime resumes each with one new attempt."""
    Started.reset(N)
    db = tmp_path / "s.db"
    cancels: list[int] = []
    cancel_all = ActorSystem.cancel_all

    def counted_cancel_all(self: ActorSystem) -> None:
        cancels.append(len(self))
        cancel_all(self)

    monkeypatch.setattr(ActorSystem, "cancel_all", counted_cancel_all)
    writes: list[int] = []
    async with Runtime.open(db, flows=[FLOW], max_active=None, shutdown_timeout=0.5) as rt:
        ids = [(await rt.submit(FLOW)).id for _ in range(N)]
        await Started.all_in.wait()
        record = _shutdown.record_interrupted

        async def counted_record(engine: Any, flows: Any, execution_ids: Any) -> Any:
            write = engine.store.write

            def one_write(ops: Any) -> Any:
                writes.append(len(ops))
                return write(ops)

            engine.store.write = one_write
            try:
                return await record(engine, flows, execution_ids)
            finally:
                del engine.store.write

        monkeypatch.setattr("actorflow.runtime._runtime.record_interrupted", counted_record)
    # The grace ends for all at once: one cancel of every actor still alive.
    assert len(cancels) == 1 and cancels[0] >= N, cancels
    assert len(writes) == 1, writes  # one transaction for the 1,000 records
    stored = await _stored({"path": db}, ids)
    assert stored["leases"] == {(None, None)}
    assert all(a == [(1, "FAILED", "interrupted", True)] for a in stored["attempts"])
    async with Runtime.open(db, flows=[FLOW], max_active=None) as again:
        done = [await again.wait(i) for i in ids]
    assert {d.state for d in done} == {af.State.SUCCESS}
    attempts = [[(a.state, a.error) for a in d.task_run("work").attempts] for d in done]
    assert all(a == [(af.State.FAILED, "interrupted"), (af.State.SUCCESS, None)] for a in attempts)


async def test_closing_records_interrupted_attempts_and_commits_before_releasing(
    db: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after close the store shows each interrupted attempt FAILED "interrupted" (its task
    run still RUNNING, no extra history row), committed before the leases were released (owner
    and lease NULL); the next runtime starts attempt 2, records nothing twice, runs no completed
    task run again."""
    Started.reset(3)
    seen_at_release: list[set[str | None]] = []
    async with Runtime.open(**db, flows=[TWO], shutdown_timeout=0.2) as rt:
        ids = [(await rt.submit(TWO)).id for _ in range(3)]
        await Started.all_in.wait()
        await rt.store.flush()
        history_before = [
            [(h.task_run_id, h.state) for h in await rt.store.history(i)] for i in ids
        ]
        store = rt.store
        release = store.release_leases

        async def checked_release(owner: str, only: Any = None) -> int:
            # What another worker would read the moment the leases are gone.
            seen_at_release.append({a.error for i in ids for a in await store.attempts(i)})
            return await release(owner, only)

        monkeypatch.setattr(store, "release_leases", checked_release)
    assert seen_at_release == [{None, "interrupted"}]  # ``a``'s attempt, and the interrupted
    stored = await _stored(db, ids)
    assert stored["leases"] == {(None, None)} and stored["states"] == {"RUNNING"}
    assert stored["runs"] == [[("a", "SUCCESS"), ("work", "RUNNING")]] * 3
    interrupted = [
        [a for a in attempts if a[2] == "interrupted"] for attempts in stored["attempts"]
    ]
    assert interrupted == [[(1, "FAILED", "interrupted", True)]] * 3
    assert stored["history"] == history_before
    assert Started.firsts == 3
    async with Runtime.open(**db, flows=[TWO]) as again:
        done = [await again.wait(i) for i in ids]
    assert {d.state for d in done} == {af.State.SUCCESS}
    assert Started.firsts == 3  # no completed task run ran again
    for d in done:
        work = d.task_run("work")
        assert [(a.number, a.state, a.error) for a in work.attempts] == [
            (1, af.State.FAILED, "interrupted"),
            (2, af.State.SUCCESS, None),
        ]
        assert [e.state for e in work.history] == [
            af.State.CREATED, af.State.RUNNING, af.State.SUCCESS
        ]  # fmt: skip


class Gate:
    """``ends_in_grace`` waits for ``release``, set as the close begins."""

    release = anyio.Event()
    ran: list[str] = []


@af.task
async def ends_in_grace(ctx: af.TaskContext) -> dict[str, str]:
    Gate.ran.append(ctx.task_id)
    await Gate.release.wait()
    return {"ended": "in the grace"}


@af.task
async def after(ctx: af.TaskContext) -> None:
    Gate.ran.append(ctx.task_id)


async def test_nothing_new_starts_while_closing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task run that ends during the grace is stored SUCCESS, but what would follow it does
    not start while the runtime closes; the next runtime runs it, once."""
    Started.reset(1)
    Gate.release, Gate.ran = anyio.Event(), []
    shutdown = ActorSystem.shutdown

    async def release_first(self: ActorSystem, grace: float = 5.0) -> None:
        Gate.release.set()  # the quick task ends now, inside the grace
        await shutdown(self, grace)

    flow = af.Flow(id="grace", namespace="shutdown", tasks=[
        af.Parallel(id="p", tasks=[ends_in_grace("quick"), stuck_once("work")]),
    ], finally_=[after("next")])  # fmt: skip
    seq = af.Flow(id="seq", namespace="shutdown", tasks=[ends_in_grace("quick"), after("next")])
    db = tmp_path / "g.db"
    async with Runtime.open(db, flows=[flow, seq], shutdown_timeout=1.0) as rt:
        ids = [(await rt.submit(flow)).id, (await rt.submit(seq)).id]
        await Started.all_in.wait()
        while Gate.ran.count("quick") < 2:
            await anyio.wait_all_tasks_blocked()
        monkeypatch.setattr(ActorSystem, "shutdown", release_first)
    monkeypatch.undo()
    stored = await _stored({"path": db}, ids)
    assert stored["runs"][0] == [("p", "RUNNING"), ("quick", "SUCCESS"), ("work", "RUNNING")]
    assert stored["runs"][1] == [("quick", "SUCCESS")]
    assert "next" not in Gate.ran
    async with Runtime.open(db, flows=[flow, seq]) as again:
        done = [await again.wait(i) for i in ids]
    assert [d.state for d in done] == [af.State.SUCCESS, af.State.SUCCESS]
    assert Gate.ran.count("next") == 2 and Gate.ran.count("quick") == 2


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_closing_on_trio_records_interrupted_attempts(tmp_path: Path) -> None:
    """On trio too, the close stores the interrupted attempt FAILED "interrupted" and releases
    the lease; the next runtime finishes the execution with attempt 2."""
    Started.reset(1)
    db = tmp_path / "trio.db"
    async with Runtime.open(db, flows=[FLOW], shutdown_timeout=0.2) as rt:
        eid = (await rt.submit(FLOW)).id
        await Started.all_in.wait()
    stored = await _stored({"path": db}, [eid])
    assert stored["leases"] == {(None, None)}
    assert stored["attempts"] == [[(1, "FAILED", "interrupted", True)]]
    async with Runtime.open(db, flows=[FLOW]) as again:
        done = await again.wait(eid)
    assert [(a.state, a.error) for a in done.task_run("work").attempts] == [
        (af.State.FAILED, "interrupted"),
        (af.State.SUCCESS, None),
    ]


async def test_storage_failing_at_close_releases_nothing_it_could_not_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the record cannot be written at close, the attempt stays as stored (RUNNING, open)
    and its lease is kept; once the lease expires the next runtime recovers it as after a
    crash: one FAILED "interrupted" attempt, then a successful one."""
    Started.reset(1)
    db = tmp_path / "f.db"
    async with Runtime.open(db, flows=[FLOW], shutdown_timeout=0.2, lease_ttl=0.5) as rt:
        eid = (await rt.submit(FLOW)).id
        await Started.all_in.wait()
        owner = rt.engine.owner

        async def refused(*_: Any, **__: Any) -> Any:
            raise StorageUnavailable("disk gone (test)")

        monkeypatch.setattr(rt.store, "task_runs_of", refused)
    stored = await _stored({"path": db}, [eid])
    ((kept_owner, expiry),) = stored["leases"]
    assert kept_owner == owner and expiry is not None
    assert stored["attempts"] == [[(1, "RUNNING", None, False)]]
    async with Runtime.open(db, flows=[FLOW]) as again:
        done = await again.wait(eid)
    assert [(a.state, a.error) for a in done.task_run("work").attempts] == [
        (af.State.FAILED, "interrupted"),
        (af.State.SUCCESS, None),
    ]


async def test_a_record_out_of_time_keeps_the_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no time left to record (a zero timeout and no minimum), the close records nothing
    and keeps the lease rather than hand over an attempt the store shows running."""
    monkeypatch.setattr("actorflow.runtime._runtime.RECORD_MIN", 0.0)
    Started.reset(1)
    db = tmp_path / "z.db"
    async with Runtime.open(db, flows=[FLOW], shutdown_timeout=0.0, lease_ttl=0.5) as rt:
        eid = (await rt.submit(FLOW)).id
        await Started.all_in.wait()
        owner = rt.engine.owner
    stored = await _stored({"path": db}, [eid])
    assert {o for o, _ in stored["leases"]} == {owner}
    assert stored["attempts"] == [[(1, "RUNNING", None, False)]]
    monkeypatch.undo()
    async with Runtime.open(db, flows=[FLOW]) as again:
        done = await again.wait(eid)
    assert [(a.state, a.error) for a in done.task_run("work").attempts] == [
        (af.State.FAILED, "interrupted"),
        (af.State.SUCCESS, None),
    ]


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_an_interrupted_attempt_span_ends_failed_once(
    tmp_path: Path, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """With tracing on, the attempt the close interrupted ends with error status and
    ``interrupted``; the resuming runtime makes no second span for it, only attempt 2."""
    provider, exporter = spans
    Started.reset(1)
    db = tmp_path / "t.db"
    async with Runtime.open(
        db, flows=[FLOW], shutdown_timeout=0.2, tracing=Tracing(provider)
    ) as rt:
        eid = (await rt.submit(FLOW)).id
        await Started.all_in.wait()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "work attempt 1"]
    assert span.status.status_code is StatusCode.ERROR
    attrs = dict(span.attributes or {})
    assert attrs["error.type"] == "interrupted" and attrs["actorflow.state"] == "FAILED"
    exporter.clear()
    async with Runtime.open(db, flows=[FLOW], tracing=Tracing(provider)) as again:
        assert (await again.wait(eid)).state is af.State.SUCCESS
    names = sorted(s.name for s in exporter.get_finished_spans() if "attempt" in s.name)
    assert names == ["work attempt 2"]


async def test_a_bad_shutdown_timeout_is_refused() -> None:
    """A negative or NaN shutdown_timeout is a clear error before anything opens."""
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="shutdown_timeout"):
            async with Runtime.open(":memory:", shutdown_timeout=bad):
                pass


async def test_a_started_runtime_closes_with_aclose_within_its_timeout(tmp_path: Path) -> None:
    """Runtime.start opens without a with-block; aclose(timeout=) closes it the same way (the
    running attempt recorded FAILED "interrupted", the lease released) and a second aclose
    does nothing; the next runtime finishes the execution."""
    Started.reset(1)
    db = tmp_path / "s.db"
    rt = await Runtime.start(db, flows=[FLOW])
    eid = (await rt.submit(FLOW)).id
    await Started.all_in.wait()
    await rt.aclose(timeout=0.2)
    assert rt.shutdown_timeout == 0.2
    await rt.aclose()
    stored = await _stored({"path": db}, [eid])
    assert stored["leases"] == {(None, None)}
    assert stored["attempts"] == [[(1, "FAILED", "interrupted", True)]]
    with pytest.raises(af.RuntimeClosedError):
        await rt.submit(FLOW)
    async with Runtime.open(db, flows=[FLOW]) as again:
        assert (await again.wait(eid)).state is af.State.SUCCESS


async def test_aclose_of_a_with_block_runtime_says_how_it_closes() -> None:
    """aclose() on a runtime of an `async with Runtime.open()` block is refused, saying the
    block closes it; a bad timeout is refused by name."""
    async with Runtime.open(":memory:") as rt:
        with pytest.raises(af.IllegalOperation, match="block ends"):
            await rt.aclose()
    started = await Runtime.start(":memory:")
    with pytest.raises(ValueError, match="aclose timeout"):
        await started.aclose(timeout=-1)
    await started.aclose()
