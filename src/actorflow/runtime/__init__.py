"""The engine and the embedding API: flows, executions and task runs as actors.

What users build flows with (``Flow``, the task classes, ``Retry``, ``State``, records), the
:class:`Runtime` they embed, and the observers (tracing). The engine's own machinery (execution
and task-run actors, frames, persistence, admission, recovery) lives in ``runtime._core``,
built only on this room's model and the kernel.

May import: ``actorflow.actors``, ``actorflow.storage``, ``actorflow._errors``. Never
``actorflow.flows`` (the flow-file language sits above and installs its source loader here)
nor the faces (``actorflow.cli``). Inside the room, the model modules (states, records, retry,
clock, templates, context, tasks, flow, observer) never import ``_core``; ``_runtime`` and
``_tracing`` sit on top.
"""

from __future__ import annotations

from typing import Any

from actorflow.runtime._clock import MAX_DURATION, Clock, FakeClock
from actorflow.runtime._context import (
    MetricRecorder,
    TaskContext,
    TaskKV,
    TaskLogger,
    TaskStorage,
)
from actorflow.runtime._flow import (
    Concurrency,
    ConcurrencyBehavior,
    Flow,
    FlowOutput,
    Input,
    Sla,
    set_source_loader,
    validate_inputs,
)
from actorflow.runtime._observer import DURATION_METRIC, Observer
from actorflow.runtime._pebble import to_text
from actorflow.runtime._records import Attempt, Execution, Metric, StateEntry, TaskRun
from actorflow.runtime._retry import NonRetryableError, Retry
from actorflow.runtime._runtime import ExecutionHandle, Runtime, live_workers
from actorflow.runtime._scheduler import Scheduler
from actorflow.runtime._states import (
    EXECUTION_TRANSITIONS,
    MISTRAL_VIEW,
    TASK_RUN_TRANSITIONS,
    MistralState,
    State,
)
from actorflow.runtime._tasks import (
    AllowFailure,
    Call,
    Dag,
    DagTask,
    Fail,
    Flowable,
    ForEach,
    If,
    Labels,
    Log,
    OutputRef,
    Parallel,
    Pause,
    PauseBehavior,
    Return,
    Runnable,
    Sequential,
    Sleep,
    Subflow,
    Switch,
    Task,
    TaskFailure,
    TaskFunction,
    WaitFor,
    WorkingDirectory,
    labels_mapping,
    task,
)
from actorflow.runtime._template import (
    TemplateLimits,
    check_template,
    has_template,
    render,
    set_template_limits,
    template_limits,
    truthy,
)
from actorflow.runtime._tracing import ObserverGroup, Tracing, TracingObserver, tracing_observer
from actorflow.runtime._triggers import (
    FILTER_FIELDS,
    FILTER_OPS,
    Filter,
    FlowTrigger,
    RecoverMissed,
    Requirement,
    Schedule,
    Trigger,
    Webhook,
    trigger_enabled,
    trigger_key,
    trigger_switch_key,
)
from actorflow.runtime._watch import Change, ChangeWatch

__all__ = [
    "DURATION_METRIC",
    "EXECUTION_TRANSITIONS",
    "FILTER_FIELDS",
    "FILTER_OPS",
    "MAX_DURATION",
    "MISTRAL_VIEW",
    "TASK_RUN_TRANSITIONS",
    "AllowFailure",
    "Attempt",
    "Call",
    "Change",
    "ChangeWatch",
    "Clock",
    "Concurrency",
    "ConcurrencyBehavior",
    "Dag",
    "DagTask",
    "Execution",
    "ExecutionHandle",
    "Fail",
    "FakeClock",
    "Filter",
    "Flow",
    "FlowOutput",
    "FlowTrigger",
    "Flowable",
    "ForEach",
    "If",
    "Input",
    "Labels",
    "Log",
    "Metric",
    "MetricRecorder",
    "MistralState",
    "NonRetryableError",
    "Observer",
    "ObserverGroup",
    "OutputRef",
    "Parallel",
    "Pause",
    "PauseBehavior",
    "RecoverMissed",
    "Requirement",
    "Retry",
    "Return",
    "Runnable",
    "Runtime",
    "Schedule",
    "Scheduler",
    "Sequential",
    "Sla",
    "Sleep",
    "State",
    "StateEntry",
    "Subflow",
    "Switch",
    "Task",
    "TaskContext",
    "TaskFailure",
    "TaskFunction",
    "TaskKV",
    "TaskLogger",
    "TaskRun",
    "TaskStorage",
    "TemplateLimits",
    "Tracing",
    "TracingObserver",
    "Trigger",
    "WaitFor",
    "Webhook",
    "WorkingDirectory",
    "check_template",
    "has_template",
    "labels_mapping",
    "live_workers",
    "render",
    "set_source_loader",
    "set_template_limits",
    "task",
    "template_limits",
    "to_text",
    "tracing_observer",
    "trigger_enabled",
    "trigger_key",
    "trigger_switch_key",
    "truthy",
    "validate_inputs",
]

# Names of the flow-file language that ``actorflow.runtime`` exported before it had a room of
# its own: resolved on first use so that old imports keep working, while this room never
# imports the one above it at import time.
_MOVED_TO_FLOWS = frozenset(
    {
        "HttpRequest",
        "OutputValues",
        "ShellCommands",
        "TaskType",
        "flow_schema",
        "load_flow",
        "load_flow_text",
        "load_flows",
        "register_task_type",
        "task_type",
    }
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_FLOWS:
        import importlib
        import warnings

        warnings.warn(
            f"actorflow.runtime.{name} moved to actorflow.flows.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("actorflow.flows"), name)
    raise AttributeError(f"module 'actorflow.runtime' has no attribute {name!r}")
