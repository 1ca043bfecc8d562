"""actorflow: an asyncio actor-model runtime for workflow executions.

The rooms, bottom up (each may import only the ones below it):

* ``actorflow.actors`` and ``actorflow.storage``: the actor kernel; stores and file storage;
* ``actorflow.runtime``: the engine and the embedding API (``Runtime``, ``Flow``, the tasks);
* ``actorflow.flows``: the flow-file language (YAML/JSON, task types, schema);
* ``actorflow.cli``: the ``actorflow`` command (a face: above everything else).

This package offers the names most programs need.
"""

from __future__ import annotations

import importlib.metadata as _metadata

from actorflow._errors import (
    ActorError,
    ActorflowError,
    ActorNameTaken,
    ActorNotFound,
    AskTimeout,
    CommandNotAnswered,
    DatabaseInvalid,
    DeadActorError,
    EscalationError,
    ExecutionNotFound,
    FileAccessDenied,
    FlowError,
    FlowValidationError,
    IllegalOperation,
    InputError,
    InvalidTransition,
    MailboxFull,
    OutputError,
    Problem,
    RuntimeClosedError,
    SchemaTooNew,
    StorageError,
    StorageUnavailable,
    StoredFileNotFound,
    TaskNotAllowed,
    TemplateError,
    UnstorableValue,
)
from actorflow.flows import load_flow, load_flow_text, task_type
from actorflow.runtime import (
    Concurrency,
    Dag,
    DagTask,
    Execution,
    Fail,
    Flow,
    FlowTrigger,
    ForEach,
    If,
    Input,
    Log,
    Parallel,
    Pause,
    Retry,
    Return,
    Runtime,
    Schedule,
    Scheduler,
    Sequential,
    Sleep,
    State,
    Subflow,
    Switch,
    TaskContext,
    TaskRun,
    Webhook,
    task,
)

try:
    __version__ = _metadata.version("actorflow")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ActorError",
    "ActorNameTaken",
    "ActorNotFound",
    "ActorflowError",
    "AskTimeout",
    "CommandNotAnswered",
    "Concurrency",
    "Dag",
    "DagTask",
    "DatabaseInvalid",
    "DeadActorError",
    "EscalationError",
    "Execution",
    "ExecutionNotFound",
    "Fail",
    "FileAccessDenied",
    "Flow",
    "FlowError",
    "FlowTrigger",
    "FlowValidationError",
    "ForEach",
    "If",
    "IllegalOperation",
    "Input",
    "InputError",
    "InvalidTransition",
    "Log",
    "MailboxFull",
    "OutputError",
    "Parallel",
    "Pause",
    "Problem",
    "Retry",
    "Return",
    "Runtime",
    "RuntimeClosedError",
    "Schedule",
    "Scheduler",
    "SchemaTooNew",
    "Sequential",
    "Sleep",
    "State",
    "StorageError",
    "StorageUnavailable",
    "StoredFileNotFound",
    "Subflow",
    "Switch",
    "TaskContext",
    "TaskNotAllowed",
    "TaskRun",
    "TemplateError",
    "UnstorableValue",
    "Webhook",
    "__version__",
    "load_flow",
    "load_flow_text",
    "task",
    "task_type",
]
