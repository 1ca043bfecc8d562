"""The trigger scheduler: Schedule ticks and Flow triggers of a runtime's registered flows.

Each fire is claimed in the store before its execution starts (``claim_fire``: a primary key
per trigger and tick, or per trigger and source execution), so a tick starts one execution
however many schedulers share the database and however often they restart. The claim carries
the id of the execution it will start; a scheduler that finds a claim whose owner died before
storing that execution starts it (``unstarted_fires``).

Time comes from the runtime's clock, so a :class:`~actorflow.runtime.FakeClock` drives it in
tests: :meth:`Scheduler.advanced` waits for the pass that follows a clock move.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

from actorflow._errors import ActorflowError
from actorflow.runtime._core._scope import dotted
from actorflow.runtime._records import Execution
from actorflow.runtime._triggers import (
    FlowTrigger,
    RecoverMissed,
    Schedule,
    trigger_enabled,
    trigger_key,
    trigger_met_key,
)

if TYPE_CHECKING:
    from actorflow.runtime._flow import Flow
    from actorflow.runtime._runtime import Runtime

_log = logging.getLogger("actorflow.scheduler")

#: A tick later than this (seconds) when its pass runs counts as missed (recover_missed).
GRACE = 1.0
#: Ticks handled per trigger and pass; the next pass follows at once (a long catch-up never
#: holds the loop).
MAX_TICKS_PER_PASS = 1000
#: How long a fire's owner may be silent before another scheduler starts its execution.
STALE_AFTER = 15.0


class Scheduler:
    """Fires Schedule and Flow triggers of ``runtime``'s flows while it runs.

    ``async with Scheduler(rt):`` (``actorflow server`` runs one). Flows registered later are
    picked up on the next pass.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.passes = 0
        self._wake = anyio.Event()
        self._pass_done = anyio.Event()
        self._changed: deque[Execution] = deque()
        self._in_pass = False

    # -- life --------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Scheduler]:
        """Run the scheduler in the background for the body of the ``async with``."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def __aenter__(self) -> Scheduler:
        self._cm = self.running()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._cm.__aexit__(*exc)

    def poke(self) -> None:
        """Run a pass now (a flow was deployed, the clock moved, an execution ended)."""
        self._wake.set()

    async def advanced(self) -> int:
        """Wait for the next complete pass; returns the pass count (tests move a FakeClock,
        then await this)."""
        self.poke()
        # A pass already under way may have read the clock before it moved: wait for the next.
        target = self.passes + (2 if self._in_pass else 1)
        while self.passes < target:
            await self._pass_done.wait()
        return self.passes

    async def run(self) -> None:
        """Fire triggers until cancelled."""
        engine = self.rt.engine
        engine.clock.subscribe(self.poke)
        engine.end_listeners.append(self._on_change)
        engine.state_listeners.append(self._on_change)
        try:
            await self._start_unstarted()
            while True:
                self._in_pass = True
                try:
                    deadline = await self._pass()
                finally:
                    self._in_pass = False
                self.passes += 1
                done, self._pass_done = self._pass_done, anyio.Event()
                done.set()
                if self._wake.is_set():
                    self._wake = anyio.Event()
                    continue
                await engine.clock.wait(deadline, self._wake)
                self._wake = anyio.Event()
        finally:
            with contextlib.suppress(ValueError):
                engine.end_listeners.remove(self._on_change)
            with contextlib.suppress(ValueError):
                engine.state_listeners.remove(self._on_change)

    def _on_change(self, ex: Execution) -> None:
        self._changed.append(ex)
        self.poke()

    # -- one pass ----------------------------------------------------------------------------
    async def _pass(self) -> float | None:
        """Fire what is due; returns when the next tick is due (None: none scheduled)."""
        deadline: float | None = None
        for flow in self.rt.flows():
            for trigger in flow.triggers:
                if not isinstance(trigger, Schedule):
                    continue
                try:
                    if not await trigger_enabled(self.rt.store, flow, trigger):
                        await self._pass_disabled(flow, trigger)
                        continue
                    nxt = await self._schedule(flow, trigger)
                except ActorflowError as exc:
                    _log.error("trigger %s of %s.%s: %s", trigger.id, flow.namespace, flow.id, exc)
                    continue
                if nxt is not None and (deadline is None or nxt < deadline):
                    deadline = nxt
        while self._changed:
            await self._flow_triggers(self._changed.popleft())
        return deadline

    async def _schedule(self, flow: Flow, sched: Schedule) -> float | None:
        store = self.rt.store
        key = trigger_key(flow.namespace, flow.id, sched.id)
        now = self.rt.engine.clock.now()
        last = await store.last_tick(key)
        if last is None:
            if sched.backfill_start is not None:
                last = sched.backfill_start - 1e-6  # the start itself is a tick to fire
            else:
                # First activation: from now on (Kestra fires no past tick without backfill).
                await store.claim_fire(key, f"activated@{sched.iso(now)}", now, None, self._owner)
                last = now
        due: list[float] = []
        for tick in sched.ticks_after(last):
            if tick > now or len(due) >= MAX_TICKS_PER_PASS:
                break
            due.append(tick)
        fire, skip = self._recover(sched, due, now)
        for tick in fire:
            await self._fire(flow, sched, key, sched.iso(tick), tick, sched.variables(tick))
        if skip:
            await store.claim_fire(key, f"skipped@{sched.iso(skip)}", skip, None, self._owner)
        if len(due) >= MAX_TICKS_PER_PASS:
            self.poke()  # more to catch up: another pass at once
            return now
        return next(sched.ticks_after(max(now, due[-1] if due else now)))

    async def _pass_disabled(self, flow: Flow, sched: Schedule) -> None:
        """A disabled schedule's ticks are passed, not kept for later: enabled again, it
        starts from then (as Kestra's trigger.Toggle)."""
        key = trigger_key(flow.namespace, flow.id, sched.id)
        last = await self.rt.store.last_tick(key)
        if last is None:
            return  # never active: its first activation starts from that moment
        now = self.rt.engine.clock.now()
        passed = None
        for count, tick in enumerate(sched.ticks_after(last)):
            if tick > now:
                break
            passed = tick
            if count >= MAX_TICKS_PER_PASS:
                self.poke()  # more to pass: another pass at once
                break
        if passed is not None:
            await self.rt.store.claim_fire(
                key, f"disabled@{sched.iso(passed)}", passed, None, self._owner
            )

    @staticmethod
    def _recover(sched: Schedule, due: list[float], now: float) -> tuple[list[float], float]:
        """Which due ticks fire, and the latest one skipped (0 if none)."""
        if sched.backfill_start is not None:
            end = sched.backfill_end if sched.backfill_end is not None else now
            backfill = [t for t in due if t <= end]
            rest = [t for t in due if t > end and t >= now - GRACE]
            skipped = [t for t in due if t > end and t < now - GRACE]
            return backfill + rest, max(skipped, default=0.0)
        missed = [t for t in due if t < now - GRACE]
        current = [t for t in due if t >= now - GRACE]
        if sched.recover_missed is RecoverMissed.ALL or not missed:
            return due, 0.0
        if sched.recover_missed is RecoverMissed.LAST:
            return [missed[-1], *current], max(missed[:-1], default=0.0)
        return current, missed[-1]

    async def _flow_triggers(self, ended: Execution) -> None:
        listening = [
            (flow, t)
            for flow in self.rt.flows()
            for t in flow.triggers
            if isinstance(t, FlowTrigger)
            and t.matches(ended)
            # An execution a flow trigger started never re-triggers that same trigger.
            and not (ended.flow_id == flow.id and ended.namespace == flow.namespace)
        ]
        listening = [
            (flow, t) for flow, t in listening if await trigger_enabled(self.rt.store, flow, t)
        ]
        if not listening:
            return
        tree = await self.rt.get(ended.id) if ended.state.terminal else ended
        outputs: dict[str, Any] = {}
        for tr in tree.task_runs:
            if tr.value is None:
                outputs[tr.task_id] = tr.outputs
            else:
                outputs.setdefault(tr.task_id, {})[tr.value] = tr.outputs
        for flow, trigger in listening:
            key = trigger_key(flow.namespace, flow.id, trigger.id)
            variables = trigger.variables(tree)
            if trigger.require:
                await self._requirements(flow, trigger, key, tree, variables, outputs)
                continue
            # One fire per execution and state change (a flow may pause and run again).
            fire = ended.id if ended.state.terminal else (
                f"{ended.id}:{ended.state.value}:{len(ended.history)}"
            )  # fmt: skip
            await self._fire(flow, trigger, key, fire, ended.history[-1].date, variables,
                             outputs=outputs)  # fmt: skip

    async def _requirements(
        self,
        flow: Flow,
        trigger: FlowTrigger,
        key: str,
        ended: Execution,
        variables: dict[str, Any],
        outputs: dict[str, Any],
    ) -> None:
        """A multi-flow trigger: store which of its requirements ``ended`` meets (one entry
        per requirement and window, so concurrent ends never overwrite each other's), and
        fire once all are met in the window."""
        store = self.rt.store
        now = ended.history[-1].date
        window = trigger.window_start(now)
        left = max(window + trigger.window - now, 1.0)
        context = {
            "labels": dotted(ended.labels),
            "outputs": outputs,
            "trigger": variables,
            "execution": {"id": ended.id, "state": ended.state.value},
            "flow": {"id": ended.flow_id, "namespace": ended.namespace},
        }
        met: dict[str, str] = {}
        for req in trigger.require:
            entry = trigger_met_key(flow.id, trigger.id, window, req.id)
            try:
                hit = req.met_by(ended, context, f"triggers.{trigger.id}")
            except ActorflowError as exc:
                _log.error("trigger %s of %s.%s: %s", trigger.id, flow.namespace, flow.id, exc)
                hit = False
            if hit:
                await store.kv_set(flow.namespace, entry, json.dumps(ended.id), ttl=left)
                met[req.id] = ended.id
            else:
                row = await store.kv_get(flow.namespace, entry)
                if row is not None:
                    met[req.id] = json.loads(row.value)
        if len(met) < len(trigger.require):
            return
        fire = f"{window:.0f}:" + ",".join(f"{k}={v}" for k, v in sorted(met.items()))
        if trigger.reset_on_success:
            for req in trigger.require:
                await store.kv_delete(flow.namespace, trigger_met_key(flow.id, trigger.id,
                                                                      window, req.id))  # fmt: skip
        await self._fire(flow, trigger, key, fire, now, variables, outputs=outputs)

    async def _fire(
        self,
        flow: Flow,
        trigger: Schedule | FlowTrigger,
        key: str,
        fire: str,
        tick: float,
        variables: dict[str, Any],
        *,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        """Claim one fire and start its execution, unless its conditions say no (recorded
        too, so no later pass reconsiders it)."""
        try:
            inputs = self._inputs(flow, trigger, variables, outputs)
        except ActorflowError as exc:
            # Recorded without an execution: a bad input must not fire again on every pass.
            if await self.rt.store.claim_fire(key, fire, tick, None, self._owner):
                _log.error("trigger %s of %s.%s: %s", trigger.id, flow.namespace, flow.id, exc)
            return
        if inputs is None:
            await self.rt.store.claim_fire(key, fire, tick, None, self._owner)
            return
        ex_id = self.rt.new_execution_id()
        if await self.rt.store.claim_fire(key, fire, tick, ex_id, self._owner):
            await self._start(flow, trigger, variables, inputs, ex_id)

    @staticmethod
    def _inputs(
        flow: Flow,
        trigger: Schedule | FlowTrigger,
        variables: dict[str, Any],
        outputs: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """The rendered inputs of a fire, or None when a condition is false."""
        return trigger.fire_inputs(
            {
                "trigger": variables,
                "flow": {"id": flow.id, "namespace": flow.namespace, "revision": flow.revision},
                "outputs": outputs or {},
            }
        )

    async def _start(
        self,
        flow: Flow,
        trigger: Schedule | FlowTrigger,
        variables: dict[str, Any],
        inputs: dict[str, Any],
        ex_id: str,
    ) -> None:
        try:
            await self.rt.submit(flow, inputs, trigger=variables, execution_id=ex_id)
        except ActorflowError as exc:
            _log.error("trigger %s of %s.%s could not start its execution: %s",
                       trigger.id, flow.namespace, flow.id, exc)  # fmt: skip

    async def _start_unstarted(self) -> None:
        """Start the executions of fires whose scheduler died between claim and start."""
        for key, _fire, tick, ex_id in await self.rt.store.unstarted_fires(STALE_AFTER):
            namespace, flow_id, trigger_id = key.rsplit("/", 2)
            flow = self.rt.flow(namespace, flow_id)
            trigger = next((t for t in flow.triggers if t.id == trigger_id), None) if flow else None
            if flow is None or not isinstance(trigger, Schedule | FlowTrigger):
                continue
            variables = trigger.variables(tick) if isinstance(trigger, Schedule) else {}
            try:
                inputs = self._inputs(flow, trigger, variables, None)
            except ActorflowError as exc:
                _log.error("trigger %s of %s.%s: %s", trigger.id, flow.namespace, flow.id, exc)
                continue
            if inputs is not None:
                await self._start(flow, trigger, variables, inputs, ex_id)

    @property
    def _owner(self) -> str:
        return self.rt.engine.owner


__all__ = ["GRACE", "MAX_TICKS_PER_PASS", "Scheduler"]
