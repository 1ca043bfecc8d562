"""``triggers:`` of a flow file: Kestra's Schedule, Flow and Webhook triggers.

Kestra's type names (``io.kestra.plugin.core.trigger.Schedule``, the older
``io.kestra.core.models.triggers.types.*``) and short ones (``Schedule``) are accepted; Flow
triggers take Kestra's ``conditions`` (ExecutionStatus, ExecutionFlow, ExecutionNamespace,
Expression, MultipleCondition) or ``preconditions`` (``flows``, ``where`` filters, a
``timeWindow`` of type DURATION_WINDOW). What is not supported yet (other time-window types,
a MultipleCondition inside another) is refused with the field that asks for it, never
ignored.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import msgspec

from actorflow.flows._registry import Duration, Id, Spec, SpecError
from actorflow.runtime import (
    FILTER_FIELDS,
    FILTER_OPS,
    Filter,
    FlowTrigger,
    RecoverMissed,
    Requirement,
    Schedule,
    State,
    Trigger,
    Webhook,
)

_DAY = 86400.0

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
    # MultipleCondition: named conditions all met within one window.
    window: Duration | None = None
    window_advance: Duration | None = None
    conditions: dict[str, ConditionSpec] | None = None

    def validate(self) -> None:
        kind = _short(self.type, _CONDITIONS)
        if kind is None:
            raise SpecError((("type",), f"unknown condition type {self.type!r}; use one of "
                             + ", ".join(_CONDITIONS)))  # fmt: skip
        if kind == "MultipleCondition":
            if not self.conditions:
                raise SpecError(((), "a MultipleCondition needs named 'conditions'"))
            for name, c in self.conditions.items():
                if _short(c.type, _CONDITIONS) == "MultipleCondition":
                    raise SpecError(
                        (
                            ("conditions", name, "type"),
                            "a MultipleCondition inside another is not supported",
                        )
                    )
            if self.window is not None and self.window <= 0:
                raise SpecError((("window",), "the window must be a positive duration"))
            return
        if self.conditions is not None or self.window is not None:
            raise SpecError((("conditions",), f"'conditions' and 'window' belong to a"
                             f" MultipleCondition, not to {kind}"))  # fmt: skip
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

    def requirement(self, name: str) -> Requirement:
        """This condition as one requirement of a multi-flow trigger."""
        kind = _short(self.type, _CONDITIONS)
        filters: list[Filter] = []
        if kind == "ExecutionStatus":
            if self.in_:
                filters.append(Filter("STATE", "IN", tuple(self.in_)))
            if self.not_in:
                filters.append(Filter("STATE", "NOT_IN", tuple(self.not_in)))
        elif kind == "ExecutionFlow":
            filters += [Filter("NAMESPACE", "EQUAL_TO", self.namespace),
                        Filter("FLOW_ID", "EQUAL_TO", self.flow_id)]  # fmt: skip
        elif kind == "ExecutionNamespace":
            prefix = self.prefix or self.comparison == "PREFIX"
            filters.append(Filter("NAMESPACE", "STARTS_WITH" if prefix else "EQUAL_TO",
                                  self.namespace))  # fmt: skip
        elif kind == "Expression":
            filters.append(Filter("EXPRESSION", "IS_TRUE", self.expression))
        return Requirement(id=name, filters=tuple(filters))


class PreconditionFlowSpec(Spec, kw_only=True):
    """One flow of a Flow trigger's ``preconditions``."""

    namespace: str
    flow_id: str | None = None
    states: list[str] | None = None


class FilterSpec(Spec, kw_only=True):
    """One filter of a ``preconditions.where`` entry."""

    field: Literal["NAMESPACE", "FLOW_ID", "STATE", "EXPRESSION"]
    type: str
    value: Any = None

    def validate(self) -> None:
        if self.type not in FILTER_OPS:
            raise SpecError((("type",), f"unknown filter type {self.type!r}; use one of "
                             + ", ".join(FILTER_OPS)))  # fmt: skip
        if self.field == "EXPRESSION" and self.type not in ("IS_TRUE", "IS_FALSE"):
            raise SpecError((("type",), "an EXPRESSION filter is IS_TRUE or IS_FALSE"))
        if self.field != "EXPRESSION" and self.type in ("IS_TRUE", "IS_FALSE"):
            raise SpecError((("type",), f"{self.type} applies to an EXPRESSION filter"))
        if self.type in ("IN", "NOT_IN") and not isinstance(self.value, list):
            raise SpecError((("value",), f"{self.type} needs a list of values"))
        if self.type not in ("IN", "NOT_IN") and not isinstance(self.value, str):
            raise SpecError((("value",), "expected a string"))
        assert self.field in FILTER_FIELDS


class WhereSpec(Spec, kw_only=True):
    """One ``preconditions.where`` entry: filters an ended execution must pass."""

    id: Id
    operand: Literal["AND", "OR"] = "AND"
    filters: list[FilterSpec]


class TimeWindowSpec(Spec, kw_only=True):
    """``preconditions.timeWindow``."""

    type: str = "DURATION_WINDOW"
    window: Duration | None = None
    window_advance: Duration | None = None

    def validate(self) -> None:
        if self.type != "DURATION_WINDOW":
            raise SpecError((("type",), f"time window {self.type!r} is not supported yet;"
                             " use DURATION_WINDOW"))  # fmt: skip
        if self.window is not None and self.window <= 0:
            raise SpecError((("window",), "the window must be a positive duration"))


class PreconditionsSpec(Spec, kw_only=True):
    """A Flow trigger's ``preconditions`` (Kestra 0.19+)."""

    id: str | None = None
    flows: list[PreconditionFlowSpec] = []
    where: list[WhereSpec] = []
    time_window: TimeWindowSpec | None = None
    reset_on_success: bool = True

    def validate(self) -> None:
        if not self.flows and not self.where:
            raise SpecError((("flows",), "preconditions need 'flows' or 'where'"))
        ids = [w.id for w in self.where]
        for i, w in enumerate(self.where):
            if ids.index(w.id) != i:
                raise SpecError((("where", i, "id"), f"duplicate where id {w.id!r}"))

    def single(self) -> PreconditionFlowSpec | None:
        """The one flow, when that is all the preconditions say (a plain Flow trigger)."""
        return self.flows[0] if len(self.flows) == 1 and not self.where else None

    def requirements(self) -> tuple[Requirement, ...]:
        """Each flow and each ``where`` entry as a requirement of a multi-flow trigger."""
        out: list[Requirement] = []
        for pre in self.flows:
            filters = [Filter("NAMESPACE", "EQUAL_TO", pre.namespace)]
            if pre.flow_id is not None:
                filters.append(Filter("FLOW_ID", "EQUAL_TO", pre.flow_id))
            if pre.states:
                filters.append(Filter("STATE", "IN", tuple(pre.states)))
            out.append(Requirement(id=f"{pre.namespace}.{pre.flow_id or '*'}",
                                   filters=tuple(filters)))  # fmt: skip
        for w in self.where:
            out.append(Requirement(
                id=f"where:{w.id}", operand=w.operand,
                filters=tuple(Filter(f.field, f.type, tuple(f.value) if isinstance(
                    f.value, list) else f.value) for f in w.filters),
            ))  # fmt: skip
        return tuple(out)


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
        kw: dict[str, Any] = {}
        for c in self.conditions:
            if _short(c.type, _CONDITIONS) == "MultipleCondition" and c.conditions:
                kw["require"] = tuple(c.requirement(n) for n, c in c.conditions.items())
                kw["window"] = c.window or _DAY
                kw["window_advance"] = c.window_advance or 0.0
        pre_all = self.preconditions
        if pre_all is not None:
            pre = pre_all.single()
            if pre is not None:
                namespace, flow_id = pre.namespace, pre.flow_id
                if pre.states:
                    states = [State(s) for s in pre.states]
            else:
                window = pre_all.time_window
                kw["require"] = pre_all.requirements()
                kw["window"] = (window.window if window else None) or _DAY
                kw["window_advance"] = (window.window_advance if window else None) or 0.0
                kw["reset_on_success"] = pre_all.reset_on_success
        if states is not None:
            kw["states"] = tuple(states)
        return FlowTrigger(namespace=namespace, namespace_prefix=prefix, flow_id=flow_id,
                           **kw, **common)  # fmt: skip


__all__ = [
    "ConditionSpec",
    "FilterSpec",
    "PreconditionsSpec",
    "TimeWindowSpec",
    "TriggerSpec",
    "WhereSpec",
]
