"""The trigger scheduler on a fake clock: Schedule ticks fire once each, across restarts and
two schedulers on one database; backfill and missed schedules; Flow triggers chain flows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import actorflow as af
from actorflow.runtime import FakeClock, RecoverMissed, Runtime, Schedule, Scheduler

pytestmark = pytest.mark.anyio

#: 2023-11-14T22:13:00Z: a whole minute, so "every minute" ticks at +60, +120...
START = 1_699_999_980.0


def every_minute(**kw: object) -> af.Flow:
    return af.Flow(
        id="cron", namespace="sched",
        inputs=[af.Input(name="at", default="")],
        tasks=[af.Log(id="log", message="tick {{ trigger.date }}")],
        triggers=[Schedule(id="minute", cron="* * * * *", inputs={"at": "{{ trigger.date }}"},
                           **kw)],  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def rt_fake(tmp_path: Path, fake: FakeClock) -> AsyncIterator[Runtime]:
    async with Runtime.open(tmp_path / "s.db", clock=fake) as runtime:
        yield runtime


async def _fired(rt: Runtime) -> list[str]:
    """The trigger dates of the stored executions of the cron flow, oldest first."""
    rows = await rt.executions(flow="cron", limit=1000)
    for ex in rows:
        await rt.wait(ex.id)
    return sorted(str((ex.trigger or {}).get("date")) for ex in rows)


async def test_a_schedule_fires_once_per_tick_with_its_dates(
    rt_fake: Runtime, fake: FakeClock
) -> None:
    """Each minute starts one execution whose trigger vars are the tick, the next and the
    previous one; nothing fires for ticks before the schedule was activated."""
    rt_fake.register(every_minute())
    async with Scheduler(rt_fake) as sched:
        await sched.advanced()
        assert await _fired(rt_fake) == []
        fake.advance(60)
        await sched.advanced()
        await sched.advanced()  # a second pass for the same tick fires nothing more
    (ex,) = await rt_fake.executions(flow="cron")
    done = await rt_fake.wait(ex.id)
    assert done.trigger == {
        "type": "Schedule", "id": "minute", "date": "2023-11-14T22:14:00Z",
        "next": "2023-11-14T22:15:00Z", "previous": "2023-11-14T22:13:00Z",
        "timestamp": START + 60,
    }  # fmt: skip
    assert done.inputs == {"at": "2023-11-14T22:14:00Z"}
    logs = await rt_fake.logs(ex.id)
    assert any("tick 2023-11-14T22:14:00Z" in line.message for line in logs)


async def test_each_tick_fires_once_across_a_restart(rt_fake: Runtime, fake: FakeClock) -> None:
    """A scheduler stopped and started again does not fire a tick twice, and catches up the
    ticks it missed (recover_missed ALL, the default)."""
    rt_fake.register(every_minute())
    async with Scheduler(rt_fake) as sched:
        await sched.advanced()
        fake.advance(60)
        await sched.advanced()
    fake.advance(180)  # three ticks while no scheduler runs
    async with Scheduler(rt_fake) as sched:
        await sched.advanced()
        await sched.advanced()
    fired = await _fired(rt_fake)
    assert fired == [f"2023-11-14T22:{m}:00Z" for m in (14, 15, 16, 17)]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RecoverMissed.ALL, ["22:14", "22:15", "22:16", "22:17", "22:18"]),
        (RecoverMissed.LAST, ["22:18"]),
        (RecoverMissed.NONE, []),
    ],
)
async def test_missed_schedules_are_recovered_as_asked(
    rt_fake: Runtime, fake: FakeClock, policy: RecoverMissed, expected: list[str]
) -> None:
    """After 5 minutes of downtime (plus 30 s), ALL fires every missed tick, LAST the latest,
    NONE none; the schedule then goes on from now."""
    rt_fake.register(every_minute(recover_missed=policy))
    async with Scheduler(rt_fake) as sched:
        await sched.advanced()
    fake.advance(5 * 60 + 30)
    async with Scheduler(rt_fake) as sched:
        await sched.advanced()
        assert [d[11:16] for d in await _fired(rt_fake)] == expected
        fake.advance(30)
        await sched.advanced()
    assert [d[11:16] for d in await _fired(rt_fake)] == [*expected, "22:19"]


async def test_backfill_fires_every_tick_from_its_start(rt_fake: Runtime, fake: FakeClock) -> None:
    """A backfill start 3 minutes ago fires the ticks from then, once each."""
    rt_fake.register(every_minute(backfill_start=START - 180))
    async with Scheduler(rt_fake) as sched:
        await sched.advanced()
        await sched.advanced()
    assert [d[11:16] for d in await _fired(rt_fake)] == ["22:10", "22:11", "22:12", "22:13"]


async def test_two_schedulers_on_one_database_fire_each_tick_once(
    tmp_path: Path, fake: FakeClock
) -> None:
    """Two runtimes on one SQLite file, each with a scheduler: every tick starts exactly one
    execution between them."""
    db = tmp_path / "shared.db"
    async with Runtime.open(db, clock=fake) as a, Runtime.open(db, clock=fake) as b:
        for rt in (a, b):
            rt.register(every_minute())
        async with Scheduler(a) as sa, Scheduler(b) as sb:
            await sa.advanced()
            await sb.advanced()
            for _ in range(5):
                fake.advance(60)
                await sa.advanced()
                await sb.advanced()
        both = [ex for rt in (a, b) for ex in await rt.executions(flow="cron", limit=100)]
        for ex in both:
            owner = a if ex.id in {e.id for e in await a.executions(flow="cron")} else b
            await owner.wait(ex.id)
    dates = sorted(
        str((ex.trigger or {})["date"])[11:16] for ex in {e.id: e for e in both}.values()
    )
    assert dates == ["22:14", "22:15", "22:16", "22:17", "22:18"]


async def test_a_disabled_schedule_never_fires(rt_fake: Runtime, fake: FakeClock) -> None:
    """disabled: true keeps a schedule silent."""
    rt_fake.register(every_minute(disabled=True))
    async with Scheduler(rt_fake) as sched:
        await sched.advanced()
        fake.advance(600)
        await sched.advanced()
    assert await _fired(rt_fake) == []


async def test_a_bad_cron_or_timezone_is_refused_with_its_field() -> None:
    """A cron that does not parse, or an unknown timezone, is refused when the flow is made."""
    with pytest.raises(af.FlowValidationError, match=r"triggers\[0\]\.cron"):
        af.Flow(id="x", tasks=[af.Log(id="l", message="m")],
                triggers=[Schedule(id="s", cron="61 * * * *")])  # fmt: skip
    with pytest.raises(af.FlowValidationError, match=r"triggers\[0\]\.timezone"):
        af.Flow(id="x", tasks=[af.Log(id="l", message="m")],
                triggers=[Schedule(id="s", cron="@daily", timezone="Mars/Olympus")])  # fmt: skip
    with pytest.raises(af.FlowValidationError, match="duplicate trigger id"):
        af.Flow(id="x", tasks=[af.Log(id="l", message="m")],
                triggers=[Schedule(id="s", cron="@daily"), Schedule(id="s", cron="@hourly")])  # fmt: skip


@af.task
async def produce(ctx: af.TaskContext) -> dict[str, str]:
    return {"value": "from upstream"}


@af.task(retry=None)
async def explode(ctx: af.TaskContext) -> None:
    raise RuntimeError("no")


async def test_flow_triggers_chain_flows_with_outputs_and_states(rt: Runtime) -> None:
    """A SUCCESS of the upstream flow starts the listener with inputs rendered from its outputs
    and trigger vars; a FAILED one starts only the listener of FAILED; each end fires once."""
    upstream = af.Flow(id="up", namespace="chain", tasks=[produce("only")])
    failing = af.Flow(id="bad", namespace="chain", tasks=[explode("x")])
    listener = af.Flow(
        id="listen", namespace="chain",
        inputs=[af.Input(name="got")],
        tasks=[af.Log(id="l", message="{{ inputs.got }} via {{ trigger.executionId }}")],
        triggers=[af.FlowTrigger(id="on-up", flow_id="up", namespace="chain",
                                 states=[af.State.SUCCESS],
                                 inputs={"got": "{{ outputs.only.value }}"})],
    )  # fmt: skip
    on_fail = af.Flow(
        id="alert", namespace="chain", tasks=[af.Log(id="l", message="{{ trigger.state }}")],
        triggers=[af.FlowTrigger(id="on-fail", states=[af.State.FAILED])],
    )  # fmt: skip
    for f in (upstream, failing, listener, on_fail):
        rt.register(f)
    async with Scheduler(rt) as sched:
        up = await rt.run(upstream)
        await sched.advanced()
        bad = await rt.run(failing)
        await sched.advanced()
        await sched.advanced()
    (heard,) = await rt.executions(flow="listen")
    heard = await rt.wait(heard.id)
    assert heard.inputs == {"got": "from upstream"}
    assert heard.trigger is not None and heard.trigger["executionId"] == up.id
    assert heard.trigger["state"] == "SUCCESS" and heard.trigger["flowId"] == "up"
    (alert,) = await rt.executions(flow="alert")
    alert = await rt.wait(alert.id)
    assert alert.trigger is not None and alert.trigger["executionId"] == bad.id


async def test_a_fire_whose_scheduler_died_before_starting_it_is_started(
    rt_fake: Runtime, fake: FakeClock
) -> None:
    """A fire claimed by an owner that died before storing its execution is started, once,
    under the id the claim recorded."""
    rt_fake.register(every_minute())
    key = "sched/cron/minute"
    await rt_fake.store.claim_fire(key, "2023-11-14T22:13:00Z", START, "orphan-ex", "dead-owner")
    async with Scheduler(rt_fake) as sched:
        await sched.advanced()
    done = await rt_fake.wait("orphan-ex")
    assert done.state is af.State.SUCCESS and done.trigger is not None
    assert done.trigger["date"] == "2023-11-14T22:13:00Z"
