"""actorflow: an asyncio actor-model runtime for workflow executions.

The rooms, bottom up (each may import only the ones below it):

* ``actorflow.actors`` and ``actorflow.storage``: the actor kernel; stores and file storage;
* ``actorflow.runtime``: the engine and the embedding API (``Runtime``, ``Flow``, the tasks);
* ``actorflow.flows``: the flow-file language (YAML/JSON, task types, schema);
* ``actorflow.cli``: the ``actorflow`` command (a face: above everything else).

This package offers the names most programs need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    ExecutionCorrupt,
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

if TYPE_CHECKING:
    __version__: str
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

# The engine and the flow language load on first use of one of their names, both at once
# (the flow language installs the runtime's loader of stored flow sources, as it always
# did on ``import actorflow``): a program that only needs an error class, or a read-only CLI
# command (which imports ``actorflow.runtime`` alone), does not pay for the YAML loader, the
# task types and their imports.
_LAZY = {
    "load_flow": "actorflow.flows",
    "load_flow_text": "actorflow.flows",
    "task_type": "actorflow.flows",
    "Concurrency": "actorflow.runtime",
    "Dag": "actorflow.runtime",
    "DagTask": "actorflow.runtime",
    "Execution": "actorflow.runtime",
    "Fail": "actorflow.runtime",
    "Flow": "actorflow.runtime",
    "FlowTrigger": "actorflow.runtime",
    "ForEach": "actorflow.runtime",
    "If": "actorflow.runtime",
    "Input": "actorflow.runtime",
    "Log": "actorflow.runtime",
    "Parallel": "actorflow.runtime",
    "Pause": "actorflow.runtime",
    "Retry": "actorflow.runtime",
    "Return": "actorflow.runtime",
    "Runtime": "actorflow.runtime",
    "Schedule": "actorflow.runtime",
    "Scheduler": "actorflow.runtime",
    "Sequential": "actorflow.runtime",
    "Sleep": "actorflow.runtime",
    "State": "actorflow.runtime",
    "Subflow": "actorflow.runtime",
    "Switch": "actorflow.runtime",
    "TaskContext": "actorflow.runtime",
    "TaskRun": "actorflow.runtime",
    "Webhook": "actorflow.runtime",
    "task": "actorflow.runtime",
}


def _version() -> str:
    # importlib.metadata costs more to import than most commands take to run: on demand.
    import importlib.metadata

    try:
        return importlib.metadata.version("actorflow")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = version = _version()
        return version
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'actorflow' has no attribute {name!r}")
    import importlib

    importlib.import_module("actorflow.flows")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"__version__"})


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
    "ExecutionCorrupt",
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
