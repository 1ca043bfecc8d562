"""Triggers: what starts executions by itself (Kestra's Schedule, Flow and Webhook triggers).

A flow lists them in ``triggers``; the :class:`~actorflow.runtime.Scheduler` fires Schedule
and Flow triggers, the HTTP API's webhook route fires Webhook ones. Each execution a trigger
starts records it (``Execution.trigger``, ``{{ trigger.* }}`` in templates).
"""

from __future__ import annotations

import datetime
import enum
import json
import re
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actorflow._errors import Problem
from actorflow.runtime._records import Execution
from actorflow.runtime._states import TERMINAL, State
from actorflow.runtime._template import render, truthy

if TYPE_CHECKING:
    from actorflow.runtime._flow import Flow
    from actorflow.storage import Store


class RecoverMissed(enum.StrEnum):
    """What a Schedule does with ticks missed while no scheduler ran (Kestra's names)."""

    ALL = "ALL"  #: start one execution per missed tick
    LAST = "LAST"  #: start one, for the latest missed tick
    NONE = "NONE"  #: start none; carry on from now


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """Base of every trigger: ``id`` is unique in its flow; ``inputs`` (templates rendered
    with ``trigger``) are the inputs of the executions it starts."""

    id: str
    disabled: bool = False
    inputs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: Templates over ``trigger`` (and ``outputs`` for Flow triggers) that must all render
    #: truthy for a fire to start an execution (Kestra's ExpressionCondition).
    conditions: Sequence[str] = ()

    def problems(self) -> list[Problem]:
        """What is wrong with this trigger (field paths relative to it)."""
        return [] if self.id else [Problem("a trigger needs an id", field="id")]

    def fire_inputs(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        """The inputs of an execution this trigger starts, rendered with ``context``
        (``trigger``, ``flow``, ...), or None when one of its conditions is false."""
        for i, condition in enumerate(self.conditions):
            if not truthy(render(condition, context, where=f"triggers.{self.id}.conditions[{i}]")):
                return None
        inputs: dict[str, Any] = render(
            dict(self.inputs), context, where=f"triggers.{self.id}.inputs"
        )
        return inputs


@dataclass(frozen=True, kw_only=True)
class Schedule(Trigger):
    """Fires at each tick of a cron expression (5 fields, 6 with ``with_seconds``, or an
    alias such as ``@daily``), in ``timezone``.

    ``backfill_start`` (epoch seconds) catches up every tick from then (to ``backfill_end``)
    as well; ``recover_missed`` says what to do with ticks missed during downtime.
    """

    cron: str
    timezone: str = "UTC"
    with_seconds: bool = False
    backfill_start: float | None = None
    backfill_end: float | None = None
    recover_missed: RecoverMissed = RecoverMissed.ALL

    def problems(self) -> list[Problem]:
        found = super().problems()
        try:
            self.zone()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            found.append(Problem(f"unknown timezone {self.timezone!r}", field="timezone"))
            return found
        try:
            self.ticks_after(0.0).__next__()
        except Exception as exc:
            found.append(Problem(f"invalid cron expression {self.cron!r}: {exc}", field="cron"))
        return found

    def zone(self) -> zoneinfo.ZoneInfo:
        """The schedule's timezone."""
        return zoneinfo.ZoneInfo(self.timezone)

    def ticks_after(self, after: float) -> Iterator[float]:
        """Tick times strictly after ``after`` (epoch seconds), in order, forever."""
        from croniter import croniter

        start = datetime.datetime.fromtimestamp(after, self.zone())
        fields = self.cron.split()
        if not self.cron.startswith("@") and len(fields) != (6 if self.with_seconds else 5):
            raise ValueError(
                f"expected {6 if self.with_seconds else 5} fields, got {len(fields)}"
                + ("" if self.with_seconds else " (set with_seconds for 6)")
            )
        it = croniter(self.cron, start, second_at_beginning=self.with_seconds)
        while True:
            yield float(it.get_next(float))

    def tick_before(self, tick: float) -> float | None:
        """The tick before ``tick`` (``{{ trigger.previous }}``)."""
        from croniter import croniter

        it = croniter(
            self.cron, datetime.datetime.fromtimestamp(tick, self.zone()),
            second_at_beginning=self.with_seconds,
        )  # fmt: skip
        return float(it.get_prev(float))

    def variables(self, tick: float) -> dict[str, Any]:
        """``{{ trigger.* }}`` for the execution of ``tick``."""
        nxt = next(self.ticks_after(tick))
        prev = self.tick_before(tick)
        return {
            "type": "Schedule",
            "id": self.id,
            "date": self.iso(tick),
            "next": self.iso(nxt),
            "previous": self.iso(prev) if prev is not None else None,
            "timestamp": tick,
        }

    def iso(self, epoch: float) -> str:
        """An ISO-8601 date in the schedule's timezone."""
        text = datetime.datetime.fromtimestamp(epoch, self.zone()).isoformat()
        return text.replace("+00:00", "Z") if self.timezone == "UTC" else text


#: Operators of a Requirement's filters (Kestra's ``where`` filter types).
FILTER_OPS = ("EQUAL_TO", "NOT_EQUAL_TO", "STARTS_WITH", "ENDS_WITH", "IN", "NOT_IN",
              "IS_TRUE", "IS_FALSE", "REGEX")  # fmt: skip
#: What a filter reads of an ended execution.
FILTER_FIELDS = ("NAMESPACE", "FLOW_ID", "STATE", "EXPRESSION")


@dataclass(frozen=True)
class Filter:
    """One test of an ended execution: ``field`` (NAMESPACE, FLOW_ID, STATE, or EXPRESSION,
    a template rendered with the execution's ``labels``, ``outputs``, ``trigger``) against
    ``value`` with ``op`` (one of :data:`FILTER_OPS`)."""

    field: str
    op: str
    value: Any = None

    def test(self, ex: Execution, context: Mapping[str, Any], where: str) -> bool:
        """Whether ``ex`` passes."""
        if self.field == "EXPRESSION":
            yes = truthy(render(self.value, context, where=where))
            return yes if self.op == "IS_TRUE" else not yes
        text: dict[str, str] = {
            "NAMESPACE": ex.namespace, "FLOW_ID": ex.flow_id, "STATE": ex.state.value
        }  # fmt: skip
        got = text[self.field]
        op, value = self.op, self.value
        if op == "EQUAL_TO":
            return bool(got == value)
        if op == "NOT_EQUAL_TO":
            return bool(got != value)
        if op == "STARTS_WITH":
            return got.startswith(str(value))
        if op == "ENDS_WITH":
            return got.endswith(str(value))
        if op == "IN":
            return got in value
        if op == "NOT_IN":
            return got not in value
        if op == "REGEX":
            return re.fullmatch(str(value), got) is not None
        return False


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """One named condition of a multi-flow trigger (Kestra's MultipleCondition entry, a
    ``preconditions`` flow or ``where`` entry): an ended execution meets it when its
    ``filters`` all (``operand`` AND) or any (OR) pass."""

    id: str
    filters: Sequence[Filter] = ()
    operand: str = "AND"

    def met_by(self, ex: Execution, context: Mapping[str, Any], where: str) -> bool:
        """Whether ``ex`` meets this condition."""
        results = (f.test(ex, context, f"{where}.{self.id}") for f in self.filters)
        return any(results) if self.operand == "OR" else all(results)


@dataclass(frozen=True, kw_only=True)
class FlowTrigger(Trigger):
    """Fires when an execution of another flow reaches one of ``states`` (its end, in any
    terminal state, by default; RUNNING or PAUSED fire at each such change), of flow
    ``flow_id`` and namespace ``namespace`` when given (a namespace prefix with
    ``namespace_prefix``). ``inputs`` are rendered with that execution's ``outputs`` and
    ``trigger`` (``executionId``, ``namespace``, ``flowId``, ``state``...)."""

    namespace: str | None = None
    namespace_prefix: bool = False
    flow_id: str | None = None
    states: Sequence[State] = tuple(sorted(TERMINAL, key=lambda s: s.value))
    #: Several flows (Kestra's MultipleCondition, ``preconditions`` with ``flows``/``where``):
    #: it fires once every requirement was met by some ended execution within one window
    #: of ``window`` seconds (windows start at ``window_advance`` past each multiple of
    #: ``window`` since the epoch, UTC). What was met is stored, so it counts across
    #: processes and restarts; ``reset_on_success``: a fire starts the count again.
    require: Sequence[Requirement] = ()
    window: float = 86400.0
    window_advance: float = 0.0
    reset_on_success: bool = True

    def window_start(self, when: float) -> float:
        """The start of the window holding ``when``."""
        return (when - self.window_advance) // self.window * self.window + self.window_advance

    def problems(self) -> list[Problem]:
        found = super().problems()
        if self.require and not self.window > 0:
            found.append(Problem("the window must be a positive duration", field="window"))
        for i, s in enumerate(self.states):
            if not isinstance(s, State) or s is State.CREATED:
                found.append(Problem(f"{s!r} is not a state a trigger can listen to",
                                     field=f"states[{i}]"))  # fmt: skip
        return found

    def matches(self, ex: Execution) -> bool:
        """Whether the end of ``ex`` fires this trigger."""
        if self.disabled or ex.state not in self.states:
            return False
        if self.flow_id is not None and ex.flow_id != self.flow_id:
            return False
        if self.namespace is not None:
            if self.namespace_prefix:
                return ex.namespace == self.namespace or ex.namespace.startswith(
                    self.namespace + "."
                )
            return ex.namespace == self.namespace
        return True

    def variables(self, ex: Execution) -> dict[str, Any]:
        """``{{ trigger.* }}`` for the execution started by the end of ``ex``."""
        return {
            "type": "Flow",
            "id": self.id,
            "executionId": ex.id,
            "namespace": ex.namespace,
            "flowId": ex.flow_id,
            "flowRevision": ex.flow_revision,
            "state": ex.state.value,
            "outputs": dict(ex.outputs),
            "labels": dict(ex.labels),
        }


@dataclass(frozen=True, kw_only=True)
class Webhook(Trigger):
    """Fires on ``POST``/``GET /api/v1/executions/webhook/{namespace}/{flowId}/{key}``;
    ``{{ trigger.body }}``, ``{{ trigger.headers }}`` and ``{{ trigger.parameters }}`` carry
    the request. ``key`` may be a template over ``flow``."""

    key: str

    def problems(self) -> list[Problem]:
        found = super().problems()
        if not self.key:
            found.append(Problem("a webhook needs a key", field="key"))
        return found


def trigger_problems(triggers: Sequence[Trigger]) -> list[Problem]:
    """Problems of a flow's ``triggers`` (with ``triggers[i]`` paths), duplicates included."""
    found: list[Problem] = []
    seen: set[str] = set()
    for i, t in enumerate(triggers):
        for p in t.problems():
            found.append(Problem(p.message, field=f"triggers[{i}].{p.field}" if p.field else None))
        if t.id in seen:
            found.append(Problem(f"duplicate trigger id {t.id!r}", field=f"triggers[{i}].id"))
        seen.add(t.id)
    return found


def trigger_key(namespace: str, flow_id: str, trigger_id: str) -> str:
    """The store's name of a flow's trigger."""
    return f"{namespace}/{flow_id}/{trigger_id}"


def trigger_met_key(flow_id: str, trigger_id: str, window: float, requirement: str) -> str:
    """The key-value entry (in the flow's namespace) recording which execution met one
    requirement of a multi-flow trigger in one window; ``~`` as in :func:`trigger_switch_key`."""
    return f"~triggers/{flow_id}/{trigger_id}/met/{window:.0f}/{requirement}"


def trigger_switch_key(flow_id: str, trigger_id: str) -> str:
    """The key-value entry (in the flow's namespace) where trigger.Toggle keeps whether a
    trigger is enabled; ``~`` keeps it out of the keys flows may set."""
    return f"~triggers/{flow_id}/{trigger_id}"


async def trigger_enabled(store: Store, flow: Flow, trigger: Trigger) -> bool:
    """Whether ``trigger`` of ``flow`` fires: as trigger.Toggle last set it, else as the flow
    file says (``disabled``)."""
    row = await store.kv_get(flow.namespace, trigger_switch_key(flow.id, trigger.id))
    if row is None:
        return not trigger.disabled
    return json.loads(row.value) is True


__all__ = [
    "FILTER_FIELDS",
    "FILTER_OPS",
    "Filter",
    "FlowTrigger",
    "RecoverMissed",
    "Requirement",
    "Schedule",
    "Trigger",
    "Webhook",
    "trigger_enabled",
    "trigger_key",
    "trigger_met_key",
    "trigger_problems",
    "trigger_switch_key",
]
