"""Mailboxes, refs, ask/tell, dead letters, interrupts and shutdown of the actor kernel."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest

from actorflow import AskTimeout, DeadActorError, MailboxFull
from actorflow.actors import Actor, Kill, Pause, Stop, Terminated, open_actor_system

pytestmark = pytest.mark.anyio


class Recorder(Actor):
    def __init__(self, log: list[Any], gate: anyio.Event | None = None) -> None:
        self.log = log
        self.gate = gate

    async def receive(self, message: Any) -> Any:
        if self.gate is not None and message == "block":
            await self.gate.wait()
        if message == "boom":
            raise RuntimeError("boom")
        self.log.append(message)
        return message


async def test_messages_from_one_sender_arrive_in_order() -> None:
    """Messages told by one sender are received in the order sent."""
    log: list[Any] = []
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder(log), mailbox_size=10_000)
        for i in range(5000):
            ref.tell_nowait(i)
        assert await ref.ask("end") == "end"
    assert log == [*range(5000), "end"]


async def test_full_mailbox_applies_backpressure() -> None:
    """tell_nowait raises MailboxFull on a full lane; tell waits until there is room."""
    log: list[Any] = []
    gate = anyio.Event()
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder(log, gate), mailbox_size=2)
        ref.tell_nowait("block")
        await anyio.wait_all_tasks_blocked()
        ref.tell_nowait(1)
        ref.tell_nowait(2)
        with pytest.raises(MailboxFull):
            ref.tell_nowait(3)
        sent = anyio.Event()

        async def sender() -> None:
            await ref.tell(3)
            sent.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            await anyio.wait_all_tasks_blocked()
            assert not sent.is_set()
            gate.set()
        assert sent.is_set()
        await ref.ask("end")
    assert log == ["block", 1, 2, 3, "end"]


async def test_post_is_never_refused_and_keeps_order() -> None:
    """post queues past a full ordinary lane, in order with told messages, and loses none."""
    log: list[Any] = []
    gate = anyio.Event()
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder(log, gate), mailbox_size=2)
        ref.tell_nowait("block")
        await anyio.wait_all_tasks_blocked()
        ref.tell_nowait(0)
        ref.tell_nowait(1)
        for i in range(2, 10_002):
            ref.post(i)
        with pytest.raises(MailboxFull):
            ref.tell_nowait("refused")  # the bound still holds for ordinary sends
        gate.set()
        assert await ref.ask("end") == "end"
    assert log == ["block", *range(10_002), "end"]
    assert system.dead_letters.count == 0


async def test_post_to_a_stopped_actor_is_a_dead_letter() -> None:
    """post to a stopped actor records a dead letter instead of raising."""
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder([]))
        await ref.stop()
        ref.post("late")
        assert system.dead_letters.count == 1


async def test_system_messages_overtake_a_full_mailbox() -> None:
    """A system message is accepted by a full mailbox and handled before queued ones."""
    log: list[Any] = []
    gate = anyio.Event()
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder(log, gate), mailbox_size=2)
        ref.tell_nowait("block")
        await anyio.wait_all_tasks_blocked()
        ref.tell_nowait(1)
        ref.tell_nowait(2)
        ref.tell_nowait(Pause())
        gate.set()
        await ref.ask("end")
    assert log == ["block", Pause(), 1, 2, "end"]


class Worker(Actor):
    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.outcome: list[str] = []

    def on_interrupt(self, message: Any) -> None:
        if isinstance(message, Kill) and self.scope is not None:
            self.scope.cancel()

    async def receive(self, message: Any) -> Any:
        if message == "work":
            with anyio.CancelScope() as self.scope:
                await anyio.sleep_forever()
            self.outcome.append("interrupted")
        elif isinstance(message, Kill):
            self.outcome.append("kill handled")
        return self.outcome


async def test_on_interrupt_reaches_a_busy_actor() -> None:
    """A Kill told during a long receive calls on_interrupt at once, then reaches receive."""
    worker = Worker()
    async with open_actor_system() as system:
        ref = system.spawn(lambda: worker)
        ref.tell_nowait("work")
        await anyio.wait_all_tasks_blocked()
        ref.tell_nowait(Kill())
        assert await ref.ask("status") == ["interrupted", "kill handled"]


async def test_ask_timeout_and_dead_actor() -> None:
    """ask raises AskTimeout without a reply, DeadActorError for a stopped actor."""
    gate = anyio.Event()
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder([], gate))
        with pytest.raises(AskTimeout):
            await ref.ask("block", timeout=0.01)
        gate.set()
        await ref.stop()
        assert not ref.is_alive
        with pytest.raises(DeadActorError):
            await ref.ask("x")


async def test_ask_reraises_and_the_actor_crashes() -> None:
    """An exception in receive reaches the asker; the unsupervised actor stops, recorded."""
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder([]), name="crasher")
        with pytest.raises(RuntimeError, match="boom"):
            await ref.ask("boom")
        await ref.join()
        assert system.crashes and system.crashes[0][0] == "crasher"


async def test_dead_letters_are_counted_and_kept() -> None:
    """Messages to a stopped actor are dead letters: counted, last N kept."""
    async with open_actor_system(dead_letter_capacity=3) as system:
        ref = system.spawn(lambda: Recorder([]), name="gone")
        await ref.stop()
        for i in range(5):
            ref.tell_nowait(i)
        assert system.dead_letters.count == 5
        assert [d.message for d in system.dead_letters.recent] == [2, 3, 4]
        assert all(d.recipient == "gone" for d in system.dead_letters.recent)


async def test_a_crash_does_not_affect_siblings() -> None:
    """One actor crashing leaves its siblings and the system running."""
    log: list[Any] = []
    async with open_actor_system() as system:
        bad = system.spawn(lambda: Recorder([]))
        good = system.spawn(lambda: Recorder(log))
        bad.tell_nowait("boom")
        await bad.join()
        assert await good.ask("still here") == "still here"
    assert log == ["still here"]


class Parent(Actor):
    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def on_start(self) -> None:
        for name in ("c1", "c2", "c3"):
            self.context.spawn(partial(Named, name, self.order), name=name)

    async def on_stop(self) -> None:
        self.order.append("parent")


class Named(Actor):
    def __init__(self, name: str, order: list[str]) -> None:
        self.name = name
        self.order = order

    async def on_stop(self) -> None:
        self.order.append(self.name)


async def test_children_stop_in_reverse_start_order() -> None:
    """Stopping a parent stops its children last-started first, then the parent itself."""
    order: list[str] = []
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Parent(order))
        await anyio.wait_all_tasks_blocked()
        await ref.stop()
    assert order == ["parent", "c3", "c2", "c1"] or order == ["c3", "c2", "c1", "parent"]
    assert order.index("c3") < order.index("c2") < order.index("c1")


async def test_system_exit_stops_top_level_actors_in_reverse_order() -> None:
    """Leaving the system block stops top-level actors in reverse spawn order."""
    order: list[str] = []
    async with open_actor_system() as system:
        for name in ("a", "b", "c"):
            system.spawn(partial(Named, name, order), name=name)
        await anyio.wait_all_tasks_blocked()
    assert order == ["c", "b", "a"]


async def test_cancellation_is_not_swallowed() -> None:
    """Cancelling the host scope cancels actors; the cancellation propagates."""
    with anyio.move_on_after(0.05) as scope:
        async with open_actor_system() as system:
            ref = system.spawn(lambda: Recorder([], anyio.Event()))
            ref.tell_nowait("block")
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert not ref.is_alive


async def test_lookup_by_name() -> None:
    """Named actors are found by name; unknown names raise ActorNotFound; names are unique."""
    from actorflow import ActorNameTaken, ActorNotFound

    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder([]), name="x")
        assert system.lookup("x") is ref
        with pytest.raises(ActorNameTaken):
            system.spawn(lambda: Recorder([]), name="x")
        with pytest.raises(ActorNotFound):
            system.lookup("nope")


async def test_a_blocked_sender_gets_the_slot_as_soon_as_it_frees() -> None:
    """A sender waiting for room is woken when receive takes a message, not after the batch."""
    sent = anyio.Event()
    log: list[Any] = []

    class WaitsForSender(Actor):
        async def receive(self, message: Any) -> Any:
            if message == 1:
                await sent.wait()  # would deadlock if the slot were freed only after receive
            log.append(message)

    async with open_actor_system() as system:
        ref = system.spawn(WaitsForSender, mailbox_size=1)
        with anyio.fail_after(5):
            await ref.tell(1)
            await ref.tell(2)  # lane full: waits until the actor takes 1
            sent.set()
            await ref.ask("end")
    assert log == [1, 2, "end"]


async def test_a_cancelled_sender_hands_its_slot_on() -> None:
    """A waiting sender that is cancelled after being woken passes the free slot to the next."""
    gate = anyio.Event()
    log: list[Any] = []
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder(log, gate), mailbox_size=1)
        ref.tell_nowait("block")
        await anyio.wait_all_tasks_blocked()
        ref.tell_nowait(1)
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()

            async def doomed() -> None:
                with first:
                    await ref.tell("never")

            tg.start_soon(doomed)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(ref.tell, 2)
            await anyio.wait_all_tasks_blocked()
            gate.set()
            first.cancel()
        await ref.ask("end")
    assert log == ["block", 1, 2, "end"]


async def test_a_pending_ask_fails_when_the_actor_stops() -> None:
    """Asks queued behind a Stop, or in flight when the actor is cancelled, get DeadActorError."""
    gate = anyio.Event()
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder([], gate))
        results: list[BaseException] = []

        async def ask(message: str) -> None:
            try:
                await ref.ask(message, timeout=None)
            except DeadActorError as exc:
                results.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "block")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(ask, "queued")
            await anyio.wait_all_tasks_blocked()
            ref._cancel()  # what a shutdown timeout does
        assert len(results) == 2 and not ref.is_alive


async def test_context_stop_from_outside_receive_wakes_an_idle_actor() -> None:
    """context.stop() called while the actor idles stops it without another message."""
    actor = Recorder([])
    async with open_actor_system() as system:
        ref = system.spawn(lambda: actor)
        await ref.ask("started")
        actor.context.stop()
        with anyio.fail_after(5):
            await ref.join()
        assert system.dead_letters.count == 0


async def test_parent_gets_terminated_with_the_childs_error() -> None:
    """A linked child's crash reaches the parent as Terminated with error text and exception."""
    seen: list[Terminated] = []
    got = anyio.Event()

    class Watcher(Actor):
        async def on_start(self) -> None:
            self.context.spawn(lambda: Recorder([]), name="kid").tell_nowait("boom")
            self.context.spawn(lambda: Recorder([]), name="calm").tell_nowait(Stop())

        async def receive(self, message: Any) -> Any:
            if isinstance(message, Terminated):
                seen.append(message)
                if len(seen) == 2:
                    got.set()

    async with open_actor_system() as system:
        system.spawn(Watcher)
        await got.wait()
        assert not system.crashes  # the parent was told; the crash is not unsupervised
    by_name = {t.name: t for t in seen}
    assert by_name["calm"].error is None and by_name["calm"].exc is None
    assert by_name["kid"].error is not None and "boom" in by_name["kid"].error
    assert isinstance(by_name["kid"].exc, RuntimeError)


async def test_an_error_in_the_block_propagates_unwrapped() -> None:
    """An exception raised inside `async with open_actor_system()` surfaces as itself."""
    with pytest.raises(KeyError):
        async with open_actor_system() as system:
            system.spawn(lambda: Recorder([]))
            raise KeyError("mine")


async def test_kill_stops_an_actor_by_default_and_stop_never_interrupts() -> None:
    """An actor that does not handle Kill is stopped by it; Stop never calls on_interrupt."""
    interrupts: list[Any] = []
    gate = anyio.Event()

    class Plain(Recorder):
        def on_interrupt(self, message: Any) -> None:
            interrupts.append(message)

    async with open_actor_system() as system:
        killed = system.spawn(Actor)  # the base receive handles Kill
        killed.tell_nowait(Kill("enough"))
        with anyio.fail_after(5):
            await killed.join()
        busy = system.spawn(lambda: Plain([], gate))
        busy.tell_nowait("block")
        await anyio.wait_all_tasks_blocked()
        busy.tell_nowait(Stop())
        assert interrupts == []
        gate.set()
        await busy.join()
        assert not system.crashes


async def test_ask_times_out_while_waiting_for_room() -> None:
    """An ask to a full mailbox that never frees up raises AskTimeout, not a hang."""
    gate = anyio.Event()
    async with open_actor_system() as system:
        ref = system.spawn(lambda: Recorder([], gate), mailbox_size=1)
        ref.tell_nowait("block")
        await anyio.wait_all_tasks_blocked()
        ref.tell_nowait(1)
        with pytest.raises(AskTimeout):
            await ref.ask(2, timeout=0.01)
        gate.set()


async def test_an_interruptible_region_is_cancelled_from_outside_and_only_it() -> None:
    """cancel() ends the region's block at once; the caller goes on; a later cancel is a no-op."""
    from actorflow.actors import Interruptible

    region = Interruptible()
    after: list[str] = []

    async def work() -> None:
        with region:
            await anyio.sleep_forever()
        after.append("went on")
        await anyio.sleep(0)  # a cancel left behind would hit here
        after.append("not cancelled again")

    async with anyio.create_task_group() as tg:
        tg.start_soon(work)
        await anyio.wait_all_tasks_blocked()
        region.cancel()
    region.cancel()
    assert region.cancelled_caught
    assert after == ["went on", "not cancelled again"]


async def test_an_interruptible_region_lets_an_outer_cancellation_through() -> None:
    """Cancelling the enclosing scope is not swallowed by a region that was not cancelled."""
    from actorflow.actors import Interruptible

    region = Interruptible()
    with anyio.CancelScope() as outer:

        async def work() -> None:
            with region:
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            await anyio.wait_all_tasks_blocked()
            outer.cancel()
    assert outer.cancelled_caught and not region.cancelled_caught


async def test_notify_stop_false_reports_only_crashes() -> None:
    """A child spawned with notify_stop=False sends Terminated when it crashes, not when it stops."""
    seen: list[Terminated] = []
    got = anyio.Event()

    class Watcher(Actor):
        async def on_start(self) -> None:
            spawn = self.context.spawn
            spawn(lambda: Recorder([]), name="calm", notify_stop=False).tell_nowait(Stop())
            spawn(lambda: Recorder([]), name="kid", notify_stop=False).tell_nowait("boom")

        async def receive(self, message: Any) -> Any:
            if isinstance(message, Terminated):
                seen.append(message)
                got.set()

    async with open_actor_system() as system:
        system.spawn(Watcher)
        await got.wait()
        await anyio.wait_all_tasks_blocked()
    assert [t.name for t in seen] == ["kid"]
