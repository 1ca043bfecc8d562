"""Property test: random traffic, crashes included, to a supervised tree."""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorflow import DeadActorError
from actorflow.actors import (
    Actor,
    ActorRef,
    ChildSpec,
    GetChild,
    Strategy,
    Supervisor,
    open_actor_system,
)

MAX_RESTARTS = 3
IDS = ("a", "b", "c")


class Child(Actor):
    """Records every ordinary message it handles; 'crash' raises, 'sync' just answers."""

    def __init__(self, cid: str, got: list[int], starts: Counter[str]) -> None:
        self.cid = cid
        self.got = got
        self.starts = starts

    async def on_start(self) -> None:
        self.starts[self.cid] += 1

    async def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.cid} crashed")
        if isinstance(message, int):
            self.got.append(message)
        return message


async def current(sup: ActorRef, cid: str) -> ActorRef | None:
    """The live ref of child ``cid`` once every crash already queued for it has played out.

    Deterministic, no polling: an ask to the child is answered only after every earlier message;
    if one of them crashes it, the ask fails, and once the child is joined its Terminated is
    already in the supervisor's system lane, which overtakes our GetChild.
    """
    while True:
        try:
            ref: ActorRef | None = await sup.ask(GetChild(cid))
        except DeadActorError:
            return None
        if ref is None:
            return None
        try:
            await ref.ask("sync")
            return ref
        except (DeadActorError, RuntimeError):
            await ref.join()


ops = st.lists(
    st.tuples(st.sampled_from(IDS), st.sampled_from(["msg", "msg", "crash", "crash+sync", "sync"])),
    max_size=50,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(strategy=st.sampled_from(list(Strategy)), traffic=ops)
def test_random_traffic_to_a_supervised_tree(
    anyio_backend: str, strategy: Strategy, traffic: list[tuple[str, str]]
) -> None:
    """Every message is handled once or dead-lettered, never lost or duplicated; under
    one_for_one exactly the messages queued behind a crash are dead letters; restarts never
    exceed the intensity, and exceeding it escalates to the root."""

    async def scenario() -> None:
        got: list[int] = []
        starts: Counter[str] = Counter()
        sups: list[Supervisor] = []
        escalated: list[str] = []

        def make() -> Supervisor:
            specs = [ChildSpec(c, partial(Child, c, got, starts)) for c in IDS]
            sups.append(Supervisor(specs, strategy=strategy, max_restarts=MAX_RESTARTS,
                                   within=60, clock=lambda: 0.0))  # fmt: skip
            return sups[-1]

        async with open_actor_system(
            dead_letter_capacity=1000, on_escalation=lambda n, e: escalated.append(n)
        ) as system:
            sup = system.spawn(make, name="sup")
            refs: dict[str, ActorRef | None] = {c: await current(sup, c) for c in IDS}
            sent: dict[int, ActorRef] = {}
            crashed_refs: list[ActorRef] = []
            crash_before: dict[int, bool] = {}
            for i, (cid, kind) in enumerate(traffic):
                ref = refs[cid]
                if kind == "sync":
                    refs[cid] = await current(sup, cid)
                elif ref is None:
                    continue
                elif kind.startswith("crash"):
                    ref.tell_nowait("crash")
                    if ref not in crashed_refs:
                        crashed_refs.append(ref)
                    if kind == "crash+sync":
                        refs[cid] = await current(sup, cid)
                else:
                    ref.tell_nowait(i)
                    sent[i] = ref
                    crash_before[i] = ref in crashed_refs
            for cid in IDS:  # let every queued message and crash play out
                await current(sup, cid)

            dead = [d.message for d in system.dead_letters.recent if isinstance(d.message, int)]
            assert len(got) == len(set(got)), "a message was handled twice"
            assert sorted(got + dead) == sorted(sent), "a message was lost"
            restarts = sups[0].restart_count if sups else 0
            assert restarts <= MAX_RESTARTS
            assert len(sups) == 1  # the root supervisor is never restarted
            if sup.is_alive:
                assert not escalated
            else:
                assert escalated == ["sup"]
                assert restarts == MAX_RESTARTS
            if strategy is Strategy.ONE_FOR_ONE:
                assert sum(starts.values()) == len(IDS) + restarts
                if sup.is_alive:
                    # Exactly the messages queued behind a crash of their recipient are lost.
                    assert restarts == len(crashed_refs)
                    assert sorted(dead) == sorted(i for i in sent if crash_before[i])
                else:
                    assert len(crashed_refs) > MAX_RESTARTS

    anyio.run(scenario, backend=anyio_backend)
