"""Supervision: strategies, restart types, intensity and escalation, shutdown timeouts."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest

from actorflow import EscalationError
from actorflow.actors import (
    Actor,
    ChildSpec,
    GetChild,
    Restart,
    Strategy,
    Supervisor,
    WhichChildren,
    open_actor_system,
)

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Child(Actor):
    """Counts starts per id; 'crash' raises, 'stop' stops normally."""

    def __init__(self, cid: str, starts: dict[str, int], got: list[tuple[str, Any]]) -> None:
        self.cid = cid
        self.starts = starts
        self.got = got

    async def on_start(self) -> None:
        self.starts[self.cid] = self.starts.get(self.cid, 0) + 1

    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.cid} crashed")
        if message == "stop":
            self.context.stop()
            return None
        self.got.append((self.cid, message))
        return message


def specs(
    starts: dict[str, int], got: list[Any], restart: Restart = Restart.PERMANENT
) -> list[ChildSpec]:
    return [
        ChildSpec(id=c, factory=partial(Child, c, starts, got), restart=restart)
        for c in ("a", "b", "c")
    ]


async def child(sup: Any, cid: str) -> Any:
    await anyio.wait_all_tasks_blocked()
    return await sup.ask(GetChild(cid))


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, {"a": 1, "b": 2, "c": 1}),
        (Strategy.ONE_FOR_ALL, {"a": 2, "b": 2, "c": 2}),
        (Strategy.REST_FOR_ONE, {"a": 1, "b": 2, "c": 2}),
    ],
)
async def test_strategies_restart_the_right_children(
    strategy: Strategy, expected: dict[str, int]
) -> None:
    """A crash of b restarts b (one_for_one), everyone (one_for_all), b and c (rest_for_one)."""
    starts: dict[str, int] = {}
    async with open_actor_system() as system:
        sup = system.spawn(lambda: Supervisor(specs(starts, []), strategy=strategy), name="sup")
        (await child(sup, "b")).tell_nowait("crash")
        await anyio.wait_all_tasks_blocked()
        assert starts == expected
        ids = [i for i, _ in await sup.ask(WhichChildren())]
        assert ids == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("restart", "crash_restarts", "stop_restarts"),
    [(Restart.PERMANENT, True, True), (Restart.TRANSIENT, True, False),
     (Restart.TEMPORARY, False, False)],
)  # fmt: skip
async def test_restart_types(restart: Restart, crash_restarts: bool, stop_restarts: bool) -> None:
    """permanent: always restarted; transient: only after a crash; temporary: never."""
    for how, expect in (("crash", crash_restarts), ("stop", stop_restarts)):
        starts: dict[str, int] = {}
        async with open_actor_system() as system:
            sup = system.spawn(partial(Supervisor, specs(starts, [], restart)))
            (await child(sup, "a")).tell_nowait(how)
            await anyio.wait_all_tasks_blocked()
            assert starts["a"] == (2 if expect else 1), (restart, how)
            assert ((await sup.ask(GetChild("a"))) is not None) == expect


async def test_restarted_child_gets_on_restart_with_the_error() -> None:
    """The new instance's on_restart sees the exception that killed the old one."""
    seen: list[BaseException] = []

    class Hooked(Child):
        async def on_restart(self, error: BaseException) -> None:
            seen.append(error)

    async with open_actor_system() as system:
        sup = system.spawn(lambda: Supervisor([ChildSpec("a", lambda: Hooked("a", {}, []))]))
        (await child(sup, "a")).tell_nowait("crash")
        await anyio.wait_all_tasks_blocked()
    assert len(seen) == 1 and "a crashed" in str(seen[0])


async def test_intensity_exceeded_escalates_to_parent_then_root() -> None:
    """Too many restarts: the inner supervisor stops its children and escalates; the outer
    restarts it; when the outer also gives up, on_escalation is called."""
    clock = Clock()
    starts: dict[str, int] = {}
    escalated: list[tuple[str, BaseException]] = []

    def inner() -> Supervisor:
        return Supervisor(specs(starts, [])[:1], max_restarts=2, within=10, clock=clock)

    async with open_actor_system(on_escalation=lambda n, e: escalated.append((n, e))) as system:
        outer = system.spawn(
            lambda: Supervisor([ChildSpec("inner", inner)], max_restarts=1, within=10, clock=clock),
            name="outer",
        )
        for _ in range(2 * 3):
            sup = await child(outer, "inner")
            if sup is None:
                break
            a = await child(sup, "a")
            if a is not None:
                a.tell_nowait("crash")
            await anyio.wait_all_tasks_blocked()
        await anyio.wait_all_tasks_blocked()
        assert not outer.is_alive
    assert escalated and escalated[0][0] == "outer"
    assert isinstance(escalated[0][1], EscalationError)
    assert starts["a"] == 6  # 3 starts per inner incarnation, 2 incarnations


async def test_restarts_outside_the_window_do_not_count() -> None:
    """Crashes spread beyond `within` seconds never reach the intensity limit."""
    clock = Clock()
    starts: dict[str, int] = {}
    async with open_actor_system() as system:
        sup = system.spawn(
            lambda: Supervisor(specs(starts, [])[:1], max_restarts=1, within=5, clock=clock)
        )
        for _ in range(5):
            (await child(sup, "a")).tell_nowait("crash")
            await anyio.wait_all_tasks_blocked()
            clock.now += 6
        assert sup.is_alive and starts["a"] == 6


class Stubborn(Actor):
    async def on_stop(self) -> None:
        await anyio.sleep_forever()


async def test_shutdown_timeout_cancels_a_stuck_child() -> None:
    """A child that does not stop within its shutdown_timeout is cancelled."""
    async with open_actor_system() as system:
        sup = system.spawn(lambda: Supervisor([ChildSpec("s", Stubborn, shutdown_timeout=0.05)]))
        stuck = await child(sup, "s")
        with anyio.fail_after(5):
            await sup.stop()
        assert not stuck.is_alive


async def test_a_crashing_child_leaves_siblings_alone_under_one_for_one() -> None:
    """Siblings keep their state (not restarted) when another child crashes."""
    got: list[Any] = []
    starts: dict[str, int] = {}
    async with open_actor_system() as system:
        sup = system.spawn(lambda: Supervisor(specs(starts, got)))
        c = await child(sup, "c")
        (await child(sup, "a")).tell_nowait("crash")
        assert await c.ask("hi") == "hi"
        assert starts["c"] == 1


async def test_supervisor_stops_children_in_reverse_start_order() -> None:
    """Stopping a supervisor stops its children last-started first."""
    order: list[str] = []

    class Logged(Actor):
        def __init__(self, cid: str) -> None:
            self.cid = cid

        async def on_stop(self) -> None:
            order.append(self.cid)

    async with open_actor_system() as system:
        sup = system.spawn(
            lambda: Supervisor([ChildSpec(c, partial(Logged, c)) for c in "abc"]), name="s"
        )
        assert [r.name for _, r in await sup.ask(WhichChildren())] == ["s/a", "s/b", "s/c"]
        await sup.stop()
    assert order == ["c", "b", "a"]
