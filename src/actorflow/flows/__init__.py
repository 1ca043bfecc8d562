"""The flow-file language: YAML/JSON flows, the task types a file may name, their schema.

``load_flow`` turns a file into a :class:`~actorflow.runtime.Flow` with every problem reported
at once (file, line, field); the registry maps type names (built-ins, Kestra's names, user
types from Python or entry points) to task classes; the built-in file task types (``http``,
``shell``, ``OutputValues``) and the JSON Schema for editors live here too. Importing this room
installs its loader in the runtime, so executions of file flows recover from their stored
source.

May import: ``actorflow.runtime`` (its public API), ``actorflow.storage``,
``actorflow._errors``. Never the faces (``actorflow.cli``).
"""

from __future__ import annotations

from actorflow.flows._builtin import HttpRequest, OutputValues, ShellCommands
from actorflow.flows._loader import (
    LoadLimits,
    load_flow,
    load_flow_text,
    load_flows,
    load_subflows,
    parse_duration,
)
from actorflow.flows._registry import TaskType, register_task_type, task_type
from actorflow.flows._schema import flow_schema
from actorflow.runtime import set_source_loader

set_source_loader(load_flow_text)

__all__ = [
    "HttpRequest",
    "LoadLimits",
    "OutputValues",
    "ShellCommands",
    "TaskType",
    "flow_schema",
    "load_flow",
    "load_flow_text",
    "load_flows",
    "load_subflows",
    "parse_duration",
    "register_task_type",
    "task_type",
]
