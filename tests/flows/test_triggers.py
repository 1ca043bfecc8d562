"""`triggers:` in flow files: Kestra's Schedule, Flow and Webhook shapes, and clear refusals."""

from __future__ import annotations

import pytest

import actorflow as af
from actorflow.flows import load_flow_text
from actorflow.runtime import FlowTrigger, RecoverMissed, Schedule, State, Webhook

HEAD = "id: t\nnamespace: io.kestra.tests\ntasks:\n  - id: l\n    type: log\n    message: m\n"


def test_kestra_schedule_and_backfill() -> None:
    """A Schedule with Kestra's names reads as one: cron, timezone, inputs, backfill,
    recoverMissedSchedules, disabled."""
    flow = load_flow_text(
        HEAD
        + """triggers:
  - id: daily
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "0 9 * * *"
    timezone: Europe/Paris
    recoverMissedSchedules: LAST
    backfill:
      start: 2024-01-01T00:00:00Z
    inputs:
      day: "{{ trigger.date }}"
  - id: old-name
    type: io.kestra.core.models.triggers.types.Schedule
    cron: "@hourly"
    disabled: true
"""
    )
    daily, old = flow.triggers
    assert isinstance(daily, Schedule) and daily.cron == "0 9 * * *"
    assert daily.timezone == "Europe/Paris" and daily.recover_missed is RecoverMissed.LAST
    assert daily.backfill_start == 1704067200.0 and daily.inputs == {"day": "{{ trigger.date }}"}
    assert isinstance(old, Schedule) and old.disabled


def test_kestra_flow_trigger_conditions_and_preconditions() -> None:
    """ExecutionStatus + ExecutionFlow conditions, ExecutionNamespace with prefix, and
    preconditions with one flow become the FlowTrigger they describe."""
    flow = load_flow_text(
        HEAD
        + """triggers:
  - id: listen
    type: io.kestra.plugin.core.trigger.Flow
    inputs:
      from-parent: "{{ outputs.only.value }}"
    conditions:
      - type: io.kestra.plugin.core.condition.ExecutionStatus
        in: [SUCCESS]
      - type: io.kestra.plugin.core.condition.ExecutionFlow
        namespace: io.kestra.tests.trigger
        flowId: trigger-flow
  - id: ns
    type: Flow
    conditions:
      - type: io.kestra.core.models.conditions.types.ExecutionNamespaceCondition
        namespace: io.kestra.tests
        prefix: true
  - id: pre
    type: io.kestra.plugin.core.trigger.Flow
    preconditions:
      id: pre
      flows:
        - namespace: io.kestra.tests.trigger
          flowId: a
          states: [SUCCESS, WARNING]
  - id: pause
    type: Flow
    states: [RUNNING, PAUSED]
"""
    )
    listen, ns, pre, pause = flow.triggers
    assert isinstance(listen, FlowTrigger) and listen.states == (State.SUCCESS,)
    assert (listen.namespace, listen.flow_id) == ("io.kestra.tests.trigger", "trigger-flow")
    assert isinstance(ns, FlowTrigger) and ns.namespace_prefix and ns.flow_id is None
    assert set(ns.states) == {s for s in State if s.terminal}
    assert isinstance(pre, FlowTrigger) and pre.flow_id == "a"
    assert pre.states == (State.SUCCESS, State.WARNING)
    assert isinstance(pause, FlowTrigger) and pause.states == (State.RUNNING, State.PAUSED)


def test_webhook_with_an_expression_condition() -> None:
    """A Webhook keeps its (templated) key and its ExpressionCondition."""
    flow = load_flow_text(
        HEAD
        + """triggers:
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: "{{ flow.id }}"
    conditions:
      - type: io.kestra.plugin.core.condition.ExpressionCondition
        expression: "{{ trigger.body.hello == 'world' }}"
"""
    )
    (hook,) = flow.triggers
    assert isinstance(hook, Webhook) and hook.key == "{{ flow.id }}"
    assert hook.conditions == ("{{ trigger.body.hello == 'world' }}",)


@pytest.mark.parametrize(
    ("trigger", "line", "message"),
    [
        ("  - id: x\n    type: Cron\n    cron: '* * * * *'\n", 9, "unknown trigger type 'Cron'"),
        ("  - id: x\n    type: Schedule\n", 8, "needs a cron expression"),
        ("  - id: x\n    type: Schedule\n    cron: '61 * * * *'\n", 10, "invalid cron"),
        (
            "  - id: x\n    type: Schedule\n    cron: '@daily'\n    timezone: Nowhere/Land\n",
            11,
            "unknown timezone",
        ),
        ("  - id: x\n    type: Webhook\n", 8, "needs a key"),
        (
            "  - id: x\n    type: Webhook\n    key: k\n    cron: '@daily'\n",
            11,
            "'cron' does not apply to a Webhook",
        ),
        (
            "  - id: x\n    type: Flow\n    conditions:\n"
            "      - type: io.kestra.plugin.core.condition.MultipleCondition\n",
            11,
            "a MultipleCondition needs named 'conditions'",
        ),
        ("  - id: x\n    type: Flow\n    states: [NOPE]\n", 10, "'NOPE' is not a state"),
        (
            "  - id: x\n    type: Webhook\n    key: a\n  - id: x\n    type: Webhook\n    key: b\n",
            11,
            "duplicate trigger id 'x'",
        ),
    ],
)
def test_bad_triggers_are_refused_with_line_and_field(
    trigger: str, line: int | None, message: str
) -> None:
    """Every bad trigger is a FlowValidationError naming what is wrong, with its line."""
    with pytest.raises(af.FlowValidationError) as caught:
        load_flow_text(HEAD + "triggers:\n" + trigger)
    problems = caught.value.problems
    assert any(message in p.message for p in problems), problems
    if line is not None:
        assert any(p.line == line for p in problems if message in p.message), problems
