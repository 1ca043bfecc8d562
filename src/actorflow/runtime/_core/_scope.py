"""What the task runs of one execution share: the engine, the flow, the record, the outputs.

Its own module so the task-run actor and the execution actor both depend on it, not on each
other.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from actorflow.runtime._context import TaskContext
from actorflow.runtime._flow import Flow
from actorflow.runtime._pebble import iso
from actorflow.runtime._records import Execution, TaskRun
from actorflow.runtime._states import State
from actorflow.runtime._tasks import WorkingDirectory
from actorflow.runtime._template import LazyVariables, template_limits
from actorflow.runtime._template_io import GLOBALS
from actorflow.storage import FileScope

if TYPE_CHECKING:
    from actorflow.actors import ActorRef
    from actorflow.runtime._core._engine import Engine


class ExecutionScope:
    """What the task runs of one execution share: engine, flow, ids, inputs, outputs."""

    __slots__ = ("current", "engine", "exec_ref", "flow", "outputs", "record", "runs")

    def __init__(self, engine: Engine, flow: Flow, record: Execution, exec_ref: ActorRef) -> None:
        self.engine = engine
        self.flow = flow
        self.record = record
        self.exec_ref = exec_ref
        self.outputs: dict[str, Any] = {}
        # Latest snapshot of each live task run, written by its actor on every change; the
        # execution hears only of ends and pauses, so it reads the rest here.
        self.current: dict[str, TaskRun] = {}
        # Every task run of the execution (the execution actor's own dict, flowables too):
        # what ``parents`` and ``errorLogs()`` read.
        self.runs: Mapping[str, TaskRun] = {}

    def variables(self, tr: TaskRun | None = None) -> dict[str, Any]:
        """Template variables for ``tr`` (or the execution)."""
        ex = self.record
        variables: dict[str, Any] = {
            "inputs": ex.inputs,
            "outputs": self.outputs,
            **self.kestra_variables(tr),
        }
        variables["taskrun"]["attempts_count"] = len(tr.attempts) if tr else 0
        variables["taskrun"]["attemptsCount"] = len(tr.attempts) if tr else 0
        lazy = variables.get("vars")
        if isinstance(lazy, LazyVariables):
            variables["vars"] = lazy.bound(variables)
        return variables

    def kestra_variables(self, tr: TaskRun | None, ex: Execution | None = None) -> dict[str, Any]:
        """What Kestra's expressions read besides inputs and outputs: ``taskrun``,
        ``execution``, ``flow``, ``labels``, ``vars``, ``parent``/``parents``, ``trigger``,
        ``errorLogs()``; of ``ex`` (default: the execution as it is now)."""
        ex = ex or self.record
        parents = self._parents(tr)
        kind = None
        if tr is not None:
            with contextlib.suppress(KeyError):
                kind = type(self.flow.task(tr.task_id)).__name__
        variables: dict[str, Any] = {
            # ``task.type``: the task's class (Kestra shows its Java class name).
            "task": {"id": tr.task_id if tr else None, "type": kind},
            "taskrun": {
                "id": tr.id if tr else None,
                "value": tr.value if tr else None,
                "iteration": tr.iteration if tr else None,
                "parentId": tr.parent_task_run_id if tr else None,
                "startDate": iso(tr.history[0].date) if tr and tr.history else None,
            },
            "execution": {
                "id": ex.id,
                "state": ex.state.value,
                "startDate": iso(ex.start_date),
                "originalId": ex.original_execution_id or ex.id,
            },
            "flow": {
                "id": ex.flow_id,
                "namespace": ex.namespace,
                "revision": ex.flow_revision,
                "description": self.flow.description,
            },
            "labels": dotted(ex.labels),
            "trigger": ex.trigger or {},
            "errorLogs": self._error_logs,
            "read": self._read,
            "currentEachOutput": functools.partial(_current_each_output, parents, tr),
            "envs": _envs(),
            "globals": GLOBALS,
            "parents": parents,
        }
        if any("." in k for k in ex.inputs):
            variables["inputs"] = dotted(ex.inputs)
        if parents:
            variables["parent"] = parents[0]
        if self.flow.variables:
            # Bound to the whole set of variables by whoever completes it (see ``bound``).
            variables["vars"] = LazyVariables(self.flow.variables, variables)
        return variables

    def _parents(self, tr: TaskRun | None) -> list[dict[str, Any]]:
        """The flowable task runs above ``tr``, nearest first (Kestra's ``parents``)."""
        out: list[dict[str, Any]] = []
        parent_id = tr.parent_task_run_id if tr else None
        while parent_id is not None and len(out) < 1000:
            parent = self.current.get(parent_id) or self.runs.get(parent_id)
            if parent is None:
                break
            out.append(
                {
                    "taskrun": {"id": parent.id, "value": parent.value},
                    "outputs": parent.outputs,
                    "task": {"id": parent.task_id},
                }
            )
            parent_id = parent.parent_task_run_id
        return out

    def _read(self, uri: Any) -> str:
        """``read(uri)``: a file of the internal storage as text (small ones: it is read
        while the template renders, and counts as output)."""
        if not isinstance(uri, str):
            raise ValueError(f"read: expected a file URI, got {type(uri).__name__}")
        if not FileScope(self.record.namespace).allows(uri):
            raise ValueError(f"read: {uri} is outside this namespace's files")
        limit = template_limits().max_output
        # Blocking, as rendering is: small files only, and the limit bounds the read.
        data = self.engine.files.read_small(uri, limit + 1)
        if len(data) > limit:
            raise ValueError(f"read: {uri} is larger than {limit:,} bytes (template limit)")
        return data.decode("utf-8", errors="replace")

    def _error_logs(self) -> list[dict[str, Any]]:
        """``errorLogs()``: the failures of this execution, as Kestra's ERROR log lines."""
        return [
            {"taskId": tr.task_id, "taskRunId": tr.id, "level": "ERROR",
             "message": _failure_message(tr.error)}
            for tr in {**self.runs, **self.current}.values()
            if tr.state is State.FAILED and tr.error
        ]  # fmt: skip

    def task_context(
        self, tr: TaskRun, attempt: int, working_dir: str | None = None
    ) -> TaskContext:
        """The context passed to a task's attempt."""
        ex = self.record
        value: Any = tr.value
        task = self.flow.task(tr.task_id)
        return TaskContext(
            engine=self.engine,
            execution_id=ex.id,
            task_run_id=tr.id,
            task_id=tr.task_id,
            namespace=ex.namespace,
            flow_id=ex.flow_id,
            flow_revision=ex.flow_revision,
            inputs=ex.inputs,
            outputs=self.outputs,
            attempt=attempt,
            value=value,
            iteration=tr.iteration,
            trigger=ex.trigger,
            # The task run (stable across attempts and crashes) in this run of the execution.
            idempotency_key=f"{tr.id}-{ex.attempt_number}",
            log_level=task.log_level,
            log_to_file=task.log_to_file,
            working_dir=working_dir,
            variables=Deferred(
                functools.partial(
                    self._worker_variables if working_dir else self.kestra_variables, tr, ex
                )
            ),
        )

    def _worker_variables(self, tr: TaskRun, ex: Execution | None = None) -> dict[str, Any]:
        """A task inside a WorkingDirectory also sees that task run as ``workerTaskrun``
        (Kestra runs them in the WorkingDirectory's context)."""
        variables = self.kestra_variables(tr, ex)
        parent_id = tr.parent_task_run_id
        for _ in range(1000):
            parent = (
                None
                if parent_id is None
                else self.current.get(parent_id) or self.runs.get(parent_id)
            )
            if parent is None:
                break
            with contextlib.suppress(KeyError):
                if isinstance(self.flow.task(parent.task_id), WorkingDirectory):
                    variables["workerTaskrun"] = self.kestra_variables(parent)["taskrun"]
                    break
            parent_id = parent.parent_task_run_id
        return variables

    def record_outputs(self, tr: TaskRun) -> None:
        """Expose ``tr``'s outputs as ``outputs.<task_id>``; inside loops keyed by the loop
        values, outermost first, as Kestra nests them (``outputs.t.<outer>.<inner>``)."""
        if tr.value is None and tr.parent_task_run_id is None:  # top level: no loop around
            self.outputs[tr.task_id] = tr.outputs
            return
        path = self._loop_values(tr)
        if not path:
            self.outputs[tr.task_id] = tr.outputs
            return
        node = self.outputs.setdefault(tr.task_id, {})
        for value in path[:-1]:
            if not isinstance(node, dict):
                return
            node = node.setdefault(value, {})
        if isinstance(node, dict):
            node[path[-1]] = tr.outputs

    def _loop_values(self, tr: TaskRun) -> list[str]:
        """The loop values of ``tr`` and its ancestors, outermost first (a value a task run
        inherits from its parent counts once)."""
        values: list[str] = []
        current: TaskRun | None = tr
        seen = 0
        while current is not None and seen < 1000:
            if current.value is not None and (not values or values[-1] != current.value):
                values.append(current.value)
            parent_id = current.parent_task_run_id
            current = None
            if parent_id is not None:
                current = self.current.get(parent_id) or self.runs.get(parent_id)
            seen += 1
        values.reverse()
        return values


class Deferred(Mapping[str, Any]):
    """A mapping built on first read: most attempts render no template, and building Kestra's
    variables (dates as text, the environment, parents) cost a third of a no-op task run."""

    __slots__ = ("_build", "_built")

    def __init__(self, build: Callable[[], dict[str, Any]]) -> None:
        self._build: Callable[[], dict[str, Any]] | None = build
        self._built: dict[str, Any] = {}

    def _values(self) -> dict[str, Any]:
        build = self._build
        if build is not None:
            self._build = None  # built once: the attempt sees one view of them
            self._built = build()
        return self._built

    def __getitem__(self, key: str) -> Any:
        return self._values()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


def _current_each_output(parents: list[dict[str, Any]], tr: TaskRun | None, value: Any) -> Any:
    """``currentEachOutput(outputs.x)``: the outputs of ``x`` in this task run's loop
    iteration (outputs inside loops are keyed by the loop values)."""
    keys = [p["taskrun"]["value"] for p in reversed(parents)]
    keys.append(tr.value if tr else None)
    for key in keys:
        if key is not None and isinstance(value, Mapping) and key in value:
            value = value[key]
    return value


def dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` also as ``{"a": {"b": 1}}``: Kestra reads dotted ids as nested keys."""
    out = dict(values)
    for key, value in values.items():
        if "." not in key:
            continue
        *parents, last = key.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node.setdefault(last, value)
    return out


def _envs() -> dict[str, str]:
    """``{{ envs.x }}``: environment variables ``KESTRA_X`` (Kestra's default prefix)."""
    return {k[7:].lower(): v for k, v in os.environ.items() if k.startswith("KESTRA_")}


def _failure_message(error: str) -> str:
    """``TaskFailure: Task failure`` -> ``Task failure`` (the message a log line shows)."""
    head, sep, rest = error.partition(": ")
    return rest if sep and head.isidentifier() else error


__all__ = ["ExecutionScope"]
