"""``triggers:`` of a flow file: Kestra's Schedule, Flow and Webhook triggers.

Kestra's type names (``io.kestra.plugin.core.trigger.Schedule``, the older
``io.kestra.core.models.triggers.types.*``) and short ones (``Schedule``) are accepted; Flow
triggers take Kestra's ``conditions`` (ExecutionStatus, ExecutionFlow, ExecutionNamespace) or
``preconditions`` with one flow. What is not supported yet (MultipleCondition, several
precondition flows, ``where`` filters) is refused with the field that asks for it, never
ignored.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import msgspec

from actorflow.flows._registry import Id, Spec, SpecError
from actorflow.runtime import FlowTrigger, RecoverMissed, Schedule, State, Trigger, Webhook

_KINDS = {
    "schedule": "Schedule",
    "flow": "Flow",
    "webhook": "Webhook",
}
_CONDITIONS = (
    "ExecutionStatus", "ExecutionFlow", "ExecutionNamespace", "Expression", "MultipleCondition"
)  # fmt: skip


def _short(type_name: str, known: Mapping[str, str] | tuple[str, ...]) -> str | None:
    """``io.kestra.plugin.core.trigger.Schedule`` -> ``Schedule`` (None when unknown)."""
    last = type_name.rsplit(".", 1)[-1]
    if isinstance(known, tuple):
        base = last.removesuffix("Condition") if last != "MultipleCondition" else last
        return base if base in known else None
    return known.get(last.lower())


class ConditionSpec(Spec, kw_only=True):
    """One of a Flow trigger's ``conditions``."""

    type: str
    id: str | None = None
    in_: list[str] | None = msgspec.field(default=None, name="in")
    not_in: list[str] | None = None
    namespace: str | None = None
    flow_id: str | None = None
    prefix: bool = False
    comparison: Literal["EQUALS", "PREFIX", "SUFFIX"] | None = None
    expression: str | None = None
    # MultipleCondition's fields: read so that the refusal names the condition, not a key.
    window: Any = None
    window_advance: Any = None
    conditions: Any = None

    def validate(self) -> None:
        kind = _short(self.type, _CONDITIONS)
        if kind is None:
            raise SpecError((("type",), f"unknown condition type {self.type!r}; use one of "
                             + ", ".join(_CONDITIONS)))  # fmt: skip
        if kind == "MultipleCondition":
            raise SpecError((("type",), "MultipleCondition is not supported yet"))
        if kind == "ExecutionStatus" and not (self.in_ or self.not_in):
            raise SpecError(((), "an ExecutionStatus condition needs 'in' or 'notIn'"))
        if kind == "ExecutionFlow" and not (self.namespace and self.flow_id):
            raise SpecError(((), "an ExecutionFlow condition needs namespace and flowId"))
        if kind == "Expression" and not self.expression:
            raise SpecError(((), "an ExpressionCondition needs an expression"))
        if kind == "ExecutionNamespace" and not self.namespace:
            raise SpecError(((), "an ExecutionNamespace condition needs a namespace"))
        if self.comparison == "SUFFIX":
            raise SpecError((("comparison",), "comparison SUFFIX is not supported yet"))
        for field in ("in_", "not_in"):
            for i, s in enumerate(getattr(self, field) or ()):
                if s not in State.__members__ or s == "CREATED":
                    name = "in" if field == "in_" else "notIn"
                    raise SpecError(((name, i), f"{s!r} is not a state a trigger listens to"))


class PreconditionFlowSpec(Spec, kw_only=True):
    """One flow of a Flow trigger's ``preconditions``."""

    namespace: str
    flow_id: str | None = None
    states: list[str] | None = None


class PreconditionsSpec(Spec, kw_only=True):
    """A Flow trigger's ``preconditions`` (Kestra 0.19+)."""

    id: str | None = None
    flows: list[PreconditionFlowSpec] = []
    where: Any = None
    time_window: Any = None
    reset_on_success: bool | None = None

    def validate(self) -> None:
        if len(self.flows) != 1:
            raise SpecError((("flows",), "preconditions on several flows are not supported yet;"
                             " list one flow"))  # fmt: skip
        if self.where is not None:
            raise SpecError((("where",), "preconditions 'where' filters are not supported yet"))


class BackfillSpec(Spec, kw_only=True):
    """A Schedule's ``backfill``: ticks from ``start`` (to ``end``) fire as well."""

    # YAML reads an unquoted date-time as one; a quoted one is a string: both are fine.
    start: Any
    end: Any = None

    def validate(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                try:
                    _epoch(value)
                except (ValueError, TypeError):
                    raise SpecError(((name,), f"not an ISO-8601 date-time: {value!r}")) from None


def _epoch(value: str | datetime.datetime) -> float:
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        value = datetime.datetime(value.year, value.month, value.day)
    if not isinstance(value, str | datetime.datetime):
        raise TypeError(value)
    parsed = (
        value
        if isinstance(value, datetime.datetime)
        else datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


class TriggerSpec(Spec, kw_only=True):
    """One of a flow's ``triggers``."""

    aliases: ClassVar[Mapping[str, str]] = {"recoverMissedSchedules": "recover_missed"}

    id: Id
    type: str
    description: str = ""
    disabled: bool = False
    inputs: dict[str, Any] = {}
    # Schedule
    cron: str | None = None
    timezone: str = "UTC"
    with_seconds: bool = False
    backfill: BackfillSpec | None = None
    recover_missed: Literal["ALL", "LAST", "NONE"] = "ALL"
    # Flow
    conditions: list[ConditionSpec] = []
    preconditions: PreconditionsSpec | None = None
    states: list[str] | None = None
    # Webhook
    key: str | None = None

    def kind(self) -> str | None:
        """Schedule, Flow or Webhook (None when the type is unknown)."""
        return _short(self.type, _KINDS)

    def validate(self) -> None:
        kind = self.kind()
        if kind is None:
            raise SpecError(
                (
                    ("type",),
                    f"unknown trigger type {self.type!r}; use Schedule, Flow or Webhook"
                    " (or Kestra's io.kestra.plugin.core.trigger.*)",
                )
            )
        if kind == "Schedule" and not self.cron:
            raise SpecError(((), "a Schedule trigger needs a cron expression"))
        if kind == "Webhook" and not self.key:
            raise SpecError(((), "a Webhook trigger needs a key"))
        for i, st in enumerate(self.states or ()):
            if st not in State.__members__ or st == "CREATED":
                raise SpecError((("states", i), f"{st!r} is not a state a trigger listens to"))
        for i, pre in enumerate(self.preconditions.flows if self.preconditions else ()):
            for j, st in enumerate(pre.states or ()):
                if st not in State.__members__ or st == "CREATED":
                    raise SpecError((("preconditions", "flows", i, "states", j),
                                     f"{st!r} is not a state a trigger listens to"))  # fmt: skip
        own = {"Schedule": {"cron", "with_seconds", "backfill"},
               "Flow": {"preconditions", "states"}, "Webhook": {"key"}}  # fmt: skip
        for other, fields in own.items():
            if other != kind:
                for f in fields:
                    if getattr(self, f) not in (None, [], False):
                        raise SpecError(((f,), f"{f!r} does not apply to a {kind} trigger"))

    def to_trigger(self) -> Trigger:
        """The runtime's trigger."""
        common: dict[str, Any] = {
            "id": self.id,
            "disabled": self.disabled,
            "inputs": dict(self.inputs),
            "description": self.description,
            "conditions": tuple(c.expression for c in self.conditions if c.expression),
        }
        kind = self.kind()
        if kind == "Schedule":
            assert self.cron is not None
            return Schedule(
                cron=self.cron, timezone=self.timezone, with_seconds=self.with_seconds,
                backfill_start=_epoch(self.backfill.start) if self.backfill else None,
                backfill_end=_epoch(self.backfill.end)
                if self.backfill and self.backfill.end else None,
                recover_missed=RecoverMissed(self.recover_missed), **common,
            )  # fmt: skip
        if kind == "Webhook":
            assert self.key is not None
            return Webhook(key=self.key, **common)
        return self._flow_trigger(common)

    def _flow_trigger(self, common: dict[str, Any]) -> FlowTrigger:
        namespace: str | None = None
        prefix = False
        flow_id: str | None = None
        states = [State(s) for s in self.states] if self.states else None
        for c in self.conditions:
            kind = _short(c.type, _CONDITIONS)
            if kind == "ExecutionStatus":
                chosen = [State(s) for s in c.in_ or ()] or [
                    s for s in State if s.terminal and s.value not in (c.not_in or ())
                ]  # notIn alone: the ends it does not name
                states = [s for s in (states or chosen) if s in chosen]
            elif kind == "ExecutionFlow":
                namespace, flow_id = c.namespace, c.flow_id
            elif kind == "ExecutionNamespace":
                namespace = c.namespace
                prefix = c.prefix or c.comparison == "PREFIX"
        if self.preconditions is not None:
            (pre,) = self.preconditions.flows
            namespace, flow_id = pre.namespace, pre.flow_id
            if pre.states:
                states = [State(s) for s in pre.states]
        kw: dict[str, Any] = {} if states is None else {"states": tuple(states)}
        return FlowTrigger(namespace=namespace, namespace_prefix=prefix, flow_id=flow_id,
                           **kw, **common)  # fmt: skip


__all__ = ["ConditionSpec", "PreconditionsSpec", "TriggerSpec"]
