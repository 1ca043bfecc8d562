"""Flows, executions and task runs as actors; the embedding :class:`Runtime`."""

from __future__ import annotations

from actorflow.runtime._builtin import HttpRequest, OutputValues, ShellCommands
from actorflow.runtime._clock import Clock, FakeClock
from actorflow.runtime._context import MetricRecorder, TaskContext, TaskLogger, TaskStorage
from actorflow.runtime._engine import Observer
from actorflow.runtime._flow import Concurrency, ConcurrencyBehavior, Flow, Input
from actorflow.runtime._loader import load_flow, load_flow_text, load_flows
from actorflow.runtime._records import Attempt, Execution, Metric, StateEntry, TaskRun
from actorflow.runtime._registry import TaskType, register_task_type, task_type
from actorflow.runtime._retry import NonRetryableError, Retry
from actorflow.runtime._runtime import ExecutionHandle, Runtime
from actorflow.runtime._schema import flow_schema
from actorflow.runtime._states import (
    EXECUTION_TRANSITIONS,
    MISTRAL_VIEW,
    TASK_RUN_TRANSITIONS,
    MistralState,
    State,
)
from actorflow.runtime._tasks import (
    Call,
    Dag,
    DagTask,
    Fail,
    Flowable,
    ForEach,
    If,
    Log,
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
    task,
)
from actorflow.runtime._tracing import Tracing, TracingObserver

__all__ = [
    "EXECUTION_TRANSITIONS",
    "MISTRAL_VIEW",
    "TASK_RUN_TRANSITIONS",
    "Attempt",
    "Call",
    "Clock",
    "Concurrency",
    "ConcurrencyBehavior",
    "Dag",
    "DagTask",
    "Execution",
    "ExecutionHandle",
    "Fail",
    "FakeClock",
    "Flow",
    "Flowable",
    "ForEach",
    "HttpRequest",
    "If",
    "Input",
    "Log",
    "Metric",
    "MetricRecorder",
    "MistralState",
    "NonRetryableError",
    "Observer",
    "OutputValues",
    "Parallel",
    "Pause",
    "PauseBehavior",
    "Retry",
    "Return",
    "Runnable",
    "Runtime",
    "Sequential",
    "ShellCommands",
    "Sleep",
    "State",
    "StateEntry",
    "Subflow",
    "Switch",
    "Task",
    "TaskContext",
    "TaskFailure",
    "TaskFunction",
    "TaskLogger",
    "TaskRun",
    "TaskStorage",
    "TaskType",
    "Tracing",
    "TracingObserver",
    "flow_schema",
    "load_flow",
    "load_flow_text",
    "load_flows",
    "register_task_type",
    "task",
    "task_type",
]
