"""Built-in task types of flow files (with Kestra's aliases), and the runnables only files need:
output values, HTTP requests (``_http``) and shell commands (``_shell``)."""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec

from actorflow.flows._http import DEFAULT_MAX_SIZE, HttpRequest
from actorflow.flows._registry import (
    ID_PATTERN,
    MAX_ID_LENGTH,
    REGISTRY,
    ChildTask,
    Duration,
    DurationOrTemplate,
    FlowableSpec,
    Id,
    InputSpec,
    LogLevel,
    Registry,
    Spec,
    SpecError,
    TaskSpec,
    TaskType,
    common,
    flowable_common,
    tasks_of,
)
from actorflow.flows._shell import ShellCommands
from actorflow.runtime import (
    AllowFailure,
    Dag,
    DagTask,
    Fail,
    ForEach,
    If,
    Labels,
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
    WaitFor,
    WorkingDirectory,
    has_template,
    labels_mapping,
    render,
    to_text,
    trigger_switch_key,
)

if TYPE_CHECKING:
    from actorflow.runtime import TaskContext


# -- runnables that exist for flow files ----------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class OutputValues(Runnable):
    """Outputs ``{"values": <rendered values>}`` (Kestra's OutputValues): each template
    string gives text, as Kestra renders its values (``{{ 1 + 1 }}`` is ``"2"``); other
    values keep their type."""

    values: Mapping[str, Any] = field(default_factory=dict)

    async def run(self, ctx: TaskContext) -> Any:
        values = dict(self.values)
        return {"values": _rendered_text(values, ctx.render(values, field="values"))}


def _rendered_text(raw: Any, rendered: Any) -> Any:
    """``rendered`` with what each template string of ``raw`` gave printed as Pebble does."""
    if isinstance(raw, str):
        return to_text(rendered)
    if isinstance(raw, Mapping) and isinstance(rendered, Mapping):
        return {k: _rendered_text(raw.get(k), v) for k, v in rendered.items()}
    if isinstance(raw, list | tuple) and isinstance(rendered, list) and len(raw) == len(rendered):
        return [_rendered_text(r, v) for r, v in zip(raw, rendered, strict=True)]
    return rendered


@dataclass(frozen=True, kw_only=True)
class LocalFiles(Runnable):
    """Writes ``inputs`` (file name -> rendered content) into the working directory, then
    stores the files matching ``outputs`` (glob patterns) as ``outputs.<id>.uris``.

    Inside a WorkingDirectory the files stay for the tasks after it; elsewhere the task has a
    directory of its own, removed when it ends (Kestra's storage.LocalFiles).
    """

    inputs: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()

    async def run(self, ctx: TaskContext) -> Any:
        import shutil
        import tempfile

        own = ctx.working_dir is None
        root = tempfile.mkdtemp(prefix="actorflow-files-") if own else ctx.working_dir
        assert root is not None
        try:
            os.makedirs(root, exist_ok=True)
            base = os.path.realpath(root)
            files = ctx.render(dict(self.inputs), field="inputs")
            for name, content in files.items():
                path = _inside(base, str(name), f"task {self.id!r} inputs")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                data = content if isinstance(content, str | bytes) else str(content)
                with open(path, "wb") as f:
                    f.write(data.encode() if isinstance(data, str) else data)
            uris: dict[str, str] = {}
            for pattern in self.outputs:
                rendered = str(ctx.render(pattern, field="outputs"))
                for path in sorted(glob.glob(os.path.join(base, rendered), recursive=True)):
                    rel = os.path.relpath(path, base)
                    if os.path.isfile(path) and not rel.startswith(".."):
                        with open(path, "rb") as f:
                            uris[rel] = await ctx.storage.put(rel.replace(os.sep, "_"), f.read())
            return {"uris": uris}
        finally:
            if own:
                shutil.rmtree(root, ignore_errors=True)


# -- the namespace key-value store: Kestra's kv.* and state.* -------------------------------
class KVMissing(Exception):
    """A key (or a state) that a task with ``error_on_missing`` needed is not set."""


@dataclass(frozen=True, kw_only=True)
class KVSet(Runnable):
    """Sets ``key`` to ``value`` (rendered) in ``namespace``'s key-value store (this flow's by
    default); ``overwrite: false`` fails on an existing key; ``ttl`` seconds to live."""

    key: str
    value: Any = None
    namespace: str | None = None
    overwrite: bool = True
    ttl: float | None = None

    async def run(self, ctx: TaskContext) -> Any:
        key = str(ctx.render(self.key, field="key"))
        ns = None if self.namespace is None else str(ctx.render(self.namespace, field="namespace"))
        if not self.overwrite and await ctx.kv.has(key, namespace=ns):
            raise ValueError(f"key {key!r} already exists in namespace {ns or ctx.namespace}")
        await ctx.kv.set(key, ctx.render(self.value, field="value"), namespace=ns, ttl=self.ttl)
        return None


@dataclass(frozen=True, kw_only=True)
class KVGet(Runnable):
    """Outputs ``{"value": ...}`` of ``key`` (null when missing, unless ``error_on_missing``)."""

    key: str
    namespace: str | None = None
    error_on_missing: bool = False

    async def run(self, ctx: TaskContext) -> Any:
        key = str(ctx.render(self.key, field="key"))
        ns = None if self.namespace is None else str(ctx.render(self.namespace, field="namespace"))
        value = await ctx.kv.get(key, _ABSENT, namespace=ns)
        if value is _ABSENT:
            if self.error_on_missing:
                raise KVMissing(f"key {key!r} is not set in namespace {ns or ctx.namespace}")
            value = None
        return {"value": value}


@dataclass(frozen=True, kw_only=True)
class KVDelete(Runnable):
    """Removes ``key``; outputs ``{"deleted": bool}`` (fails on a missing key with
    ``error_on_missing``)."""

    key: str
    namespace: str | None = None
    error_on_missing: bool = False

    async def run(self, ctx: TaskContext) -> Any:
        key = str(ctx.render(self.key, field="key"))
        ns = None if self.namespace is None else str(ctx.render(self.namespace, field="namespace"))
        deleted = await ctx.kv.delete(key, namespace=ns)
        if not deleted and self.error_on_missing:
            raise KVMissing(f"key {key!r} is not set in namespace {ns or ctx.namespace}")
        return {"deleted": deleted}


_ABSENT: Any = object()


@dataclass(frozen=True, kw_only=True)
class StateTask(Runnable):
    """Kestra's state.Get/Set/Delete: a named mapping kept in the key-value store, per flow
    (or per namespace with ``namespace: true``) and per loop value (``taskrun_value``)."""

    action: Literal["get", "set", "delete"]
    name: str = "default"
    namespace: bool = False
    taskrun_value: bool = True
    data: Mapping[str, Any] = field(default_factory=dict)
    error_on_missing: bool = False

    def _key(self, ctx: TaskContext) -> str:
        name = str(ctx.render(self.name, field="name"))
        parts = ["states", "" if self.namespace else ctx.flow_id, name]
        if self.taskrun_value and ctx.value is not None:
            parts.append(str(ctx.value))
        # The parts are quoted so that no name can reach another flow's state.
        return "/".join(_quote(p) for p in parts)

    async def run(self, ctx: TaskContext) -> Any:
        key = self._key(ctx)
        current = await ctx.kv.get(key, _ABSENT)
        if self.action == "delete":
            deleted = current is not _ABSENT and await ctx.kv.delete(key)
            if not deleted and self.error_on_missing:
                raise KVMissing(f"state {self.name!r} is not set")
            return {"deleted": deleted}
        if current is _ABSENT or not isinstance(current, dict):
            if current is _ABSENT and self.action == "get" and self.error_on_missing:
                raise KVMissing(f"state {self.name!r} is not set")
            current = {}
        if self.action == "get":
            return {"count": len(current), "data": current}
        merged = {**current, **ctx.render(dict(self.data), field="data")}
        await ctx.kv.set(key, merged)
        return {"count": len(merged), "key": key}


# -- tasks that act on executions and triggers -------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ResumeExecution(Runnable):
    """Resumes another PAUSED execution (Kestra's execution.Resume), with ``inputs`` for the
    Pause it waits on; fails when that execution is not paused."""

    execution_id: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)

    async def run(self, ctx: TaskContext) -> Any:
        target = (
            ctx.execution_id
            if self.execution_id is None
            else str(ctx.render(self.execution_id, field="execution_id"))
        )
        controller = ctx.engine.controller
        if controller is None:
            raise RuntimeError("no runtime to resume executions through")
        inputs = ctx.render(dict(self.inputs), field="inputs") if self.inputs else None
        await controller.resume(target, inputs)
        return {"execution_id": target}


@dataclass(frozen=True, kw_only=True)
class ToggleTrigger(Runnable):
    """Enables or disables a trigger of a flow (this one unless named), for every scheduler
    sharing the store (Kestra's trigger.Toggle)."""

    trigger: str
    enabled: bool = False
    flow_id: str | None = None
    namespace: str | None = None

    async def run(self, ctx: TaskContext) -> Any:
        ns = ctx.namespace if self.namespace is None else str(ctx.render(self.namespace))
        flow_id = ctx.flow_id if self.flow_id is None else str(ctx.render(self.flow_id))
        trigger = str(ctx.render(self.trigger, field="trigger"))
        flow = ctx.engine.find_flow(ns, flow_id)
        if flow is None:
            raise ValueError(f"flow {ns}.{flow_id} is not registered")
        if not any(t.id == trigger for t in flow.triggers):
            known = ", ".join(sorted(t.id for t in flow.triggers)) or "none"
            raise ValueError(f"flow {ns}.{flow_id} has no trigger {trigger!r} (it has: {known})")
        key = trigger_switch_key(flow_id, trigger)
        await ctx.engine.store.kv_set(ns, key, "true" if self.enabled else "false")
        return {"enabled": self.enabled}


@dataclass(frozen=True, kw_only=True)
class FetchLogs(Runnable):
    """Stores the log lines of an execution (this one unless named) at ``level`` or above,
    of ``task_ids`` only if given, as a file of JSON lines: outputs ``size`` and ``uri``
    (Kestra's log.Fetch)."""

    execution_id: str | None = None
    task_ids: tuple[str, ...] = ()
    level: str = "INFO"

    async def run(self, ctx: TaskContext) -> Any:
        target = (
            ctx.execution_id
            if self.execution_id is None
            else str(ctx.render(self.execution_id, field="execution_id"))
        )
        store = ctx.engine.store
        await store.flush()  # lines logged just before are in the store
        rows = await store.logs(target)
        if self.task_ids:
            wanted = {str(ctx.render(t, field="task_ids")) for t in self.task_ids}
            runs = {r.id: r.task_id for r in await store.task_runs(target)}
            rows = [r for r in rows if runs.get(r.task_run_id or "") in wanted]
        floor = _LEVEL_RANK[self.level]
        rows = [r for r in rows if _LEVEL_RANK.get(r.level, 0) >= floor]
        text = "".join(
            json.dumps(
                {"timestamp": r.ts, "level": r.level, "message": r.message,
                 "taskRunId": r.task_run_id, "executionId": r.execution_id},
                ensure_ascii=False,
            ) + "\n"
            for r in rows
        )  # fmt: skip
        uri = await ctx.storage.put("logs.jsonl", text)
        return {"size": len(rows), "uri": uri}


_LEVEL_RANK = {"DEBUG": 0, "INFO": 1, "WARNING": 2, "ERROR": 3, "CRITICAL": 4}


# -- ForEachItem: split a file of items, one subflow execution per batch, merge ---------------
@dataclass(frozen=True, kw_only=True)
class ForEachItemSplit(Runnable):
    """Splits the file ``items`` (a URI; one item per line) into batch files of ``rows``
    lines (or ``partitions`` files); outputs their URIs as ``batches``."""

    items: str
    rows: int | str | None = 1
    partitions: int | None = None

    async def run(self, ctx: TaskContext) -> Any:
        uri = str(ctx.render(self.items, field="items"))
        lines = (await ctx.storage.get(uri)).decode().splitlines(keepends=True)
        lines = [line if line.endswith("\n") else line + "\n" for line in lines if line.strip()]
        if self.partitions is not None:
            size = max(1, -(-len(lines) // self.partitions))
        else:
            size = int(str(ctx.render(self.rows, field="batch.rows")))
            if size < 1:
                raise ValueError(f"batch.rows must be at least 1, got {size}")
        batches = []
        for i, start in enumerate(range(0, len(lines), size)):
            batches.append(await ctx.storage.put(f"{i}.txt", "".join(lines[start : start + size])))
        return {"batches": batches}


@dataclass(frozen=True, kw_only=True)
class ForEachItemRun(Runnable):
    """Starts one execution of ``namespace.flow_id`` per batch of ``split_id`` (inputs
    rendered with ``{{ taskrun.items }}`` = the batch's URI), each with an id derived from
    this task run (a retry or a crash never starts a batch twice); with ``wait``, waits for
    them all. Outputs Kestra's ``numberOfBatches``, ``submitted`` and ``iterations`` (counts
    by state); with ``transmit_failed`` a failed or killed batch fails it."""

    split_id: str
    flow_id: str
    namespace: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    wait: bool = True
    transmit_failed: bool = True
    labels: Mapping[str, Any] = field(default_factory=dict)
    inherit_labels: bool = False

    async def run(self, ctx: TaskContext) -> Any:
        import hashlib

        batches = ctx.outputs.get(self.split_id, {}).get("batches", [])
        ns = ctx.namespace if self.namespace is None else str(ctx.render(self.namespace))
        flow_id = str(ctx.render(self.flow_id, field="flow_id"))
        flow = ctx.engine.find_flow(ns, flow_id)
        if flow is None:
            raise ValueError(f"subflow {ns}.{flow_id} is not registered")
        parent = await ctx.engine.load_execution(ctx.execution_id)
        parent_labels = parent.labels if parent is not None else {}
        labels: dict[str, str] = {"system.correlationId": ctx.execution_id}
        # Kestra's children always carry their parent's system labels, its others on request.
        labels.update(
            parent_labels
            if self.inherit_labels
            else {k: v for k, v in parent_labels.items() if k.startswith("system.")}
        )
        if self.labels:
            labels.update(labels_mapping(ctx.render(dict(self.labels)), f"task {self.id!r}"))
        ids = []
        for i, uri in enumerate(batches):
            variables = ctx.variables
            variables["taskrun"] = _Fields({**variables["taskrun"], "items": uri, "iteration": i})
            inputs = render(dict(self.inputs), variables, where=f"task {self.id!r} field 'inputs'")
            digest = hashlib.sha256(f"{ctx.idempotency_key}/{i}".encode()).hexdigest()[:20]
            ids.append(digest)
            await ctx.engine.start_linked(
                flow, inputs, parent_id=ctx.execution_id, parent_task_run_id=ctx.task_run_id,
                labels=labels, execution_id=digest,
            )  # fmt: skip
        counts = dict.fromkeys(("CREATED", "RUNNING", "SUCCESS", "WARNING", "FAILED",
                                "KILLED"), 0)  # fmt: skip
        if not self.wait:
            counts["CREATED"] = len(ids)
        else:
            controller = ctx.engine.controller
            if controller is None:
                raise RuntimeError("no runtime to wait for the batches through")
            for child in ids:
                done = await controller.wait(child)
                counts[done.state.value] = counts.get(done.state.value, 0) + 1
        outputs = {"numberOfBatches": len(ids), "submitted": len(ids), "iterations": counts,
                   "executionIds": ids}  # fmt: skip
        failed = counts["FAILED"] + counts["KILLED"]
        if self.wait and self.transmit_failed and failed:
            raise RuntimeError(f"{failed} of {len(ids)} batch execution(s) failed")
        return outputs


class _Fields:
    """Template variables read as attributes first: ``{{ taskrun.items }}`` is the key, not
    a mapping's ``items`` method."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __getitem__(self, key: str) -> Any:
        return self.__dict__[key]


@dataclass(frozen=True, kw_only=True)
class ForEachItemMerge(Runnable):
    """Stores the outputs of the batch executions of ``items_id`` as one JSON-lines file:
    outputs ``subflowOutputs`` (its URI); nothing when the batches were not waited for."""

    items_id: str
    wait: bool = True

    async def run(self, ctx: TaskContext) -> Any:
        if not self.wait:
            return None
        ids = ctx.outputs.get(self.items_id, {}).get("executionIds", [])
        lines = []
        for child in ids:
            done = await ctx.engine.load_execution(child)
            if done is not None:
                outputs = {tr.task_id: tr.outputs for tr in done.task_runs if tr.outputs}
                lines.append(json.dumps(outputs, ensure_ascii=False, default=str) + "\n")
        return {"subflowOutputs": await ctx.storage.put("outputs.jsonl", "".join(lines))}


def _quote(part: str) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]", lambda m: f"%{ord(m.group()):02X}", part) or "_"


def _inside(base: str, name: str, where: str) -> str:
    """``name`` under directory ``base``; a name that leaves it is refused."""
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base or path == base:
        raise ValueError(f"{where}: file name {name!r} is outside the working directory")
    return path


# -- file schema of the built-in types --------------------------------------------------------
Level = LogLevel
_LEVELS = {"TRACE": "DEBUG", "WARN": "WARNING"}


class LogSpec(TaskSpec, kw_only=True):
    """``log``: log a message (or each of a list of messages)."""

    message: str | list[str]
    level: Level = "INFO"


class ReturnSpec(TaskSpec, kw_only=True):
    """``return``: outputs ``value`` (Kestra's ``format``)."""

    aliases: ClassVar[Mapping[str, str]] = {"format": "value"}
    value: Any = None


class OutputSpec(TaskSpec, kw_only=True):
    """``output``: outputs ``values`` (a mapping, templates rendered)."""

    values: dict[str, Any]


class SleepSpec(TaskSpec, kw_only=True):
    """``sleep``: wait ``duration``."""

    duration: DurationOrTemplate


class FailSpec(TaskSpec, kw_only=True):
    """``fail``: fail with ``message``, only when ``condition`` is truthy if it is given."""

    aliases: ClassVar[Mapping[str, str]] = {"errorMessage": "message"}
    message: str = "Task failure"
    condition: Any = None


class EchoSpec(TaskSpec, kw_only=True):
    """``echo``: Kestra's deprecated debug.Echo, a log line of ``format``."""

    aliases: ClassVar[Mapping[str, str]] = {"message": "format"}
    format: str
    level: Level = "INFO"


class PauseSpec(FlowableSpec, kw_only=True):
    """``pause``: wait for a resume, or for ``delay``; ``timeout`` applies ``behavior``."""

    aliases: ClassVar[Mapping[str, str]] = {"pauseDuration": "delay"}
    delay: DurationOrTemplate | None = None
    behavior: Literal["RESUME", "WARN", "FAIL", "CANCEL"] | None = None
    on_resume: list[InputSpec] = []
    tasks: list[ChildTask] = []


class SequentialSpec(FlowableSpec, kw_only=True):
    """``sequential``: ``tasks`` one after another."""

    tasks: list[ChildTask]


class ParallelSpec(FlowableSpec, kw_only=True):
    """``parallel``: ``tasks`` at once, at most ``concurrency`` (0: no limit)."""

    aliases: ClassVar[Mapping[str, str]] = {"concurrent": "concurrency"}
    tasks: list[ChildTask]
    concurrency: Annotated[int, msgspec.Meta(ge=0)] = 0


class ForEachSpec(FlowableSpec, kw_only=True):
    """``foreach``: ``tasks`` once per value (``{{ taskrun.value }}``), ``concurrency`` groups
    at a time (0: no limit)."""

    aliases: ClassVar[Mapping[str, str]] = {"concurrencyLimit": "concurrency"}
    values: list[Any] | str
    tasks: list[ChildTask]
    concurrency: Annotated[int, msgspec.Meta(ge=0)] = 1


class EachSpec(FlowableSpec, kw_only=True):
    """``each_sequential`` / ``each_parallel``: Kestra's deprecated forms of ForEach, over
    ``value`` (a list or a JSON text). EachParallel runs every (value, task) pair at once,
    at most ``concurrency`` (0: no limit)."""

    aliases: ClassVar[Mapping[str, str]] = {"concurrent": "concurrency"}
    value: list[Any] | str
    tasks: list[ChildTask]
    concurrency: Annotated[int, msgspec.Meta(ge=0)] = 0


class CheckFrequencySpec(Spec, kw_only=True):
    """``checkFrequency`` of a WaitFor: the pause between iterations and the limits."""

    interval: Duration = 1.0
    max_iterations: Annotated[int, msgspec.Meta(ge=1)] | None = 100
    max_duration: Duration | None = 3600.0


class WaitForSpec(FlowableSpec, kw_only=True):
    """``wait_for``: ``tasks`` again and again until ``condition`` is truthy."""

    condition: str | bool
    tasks: list[ChildTask]
    check_frequency: CheckFrequencySpec = msgspec.field(default_factory=CheckFrequencySpec)
    fail_on_max_reached: bool = False

    def validate(self) -> None:
        """Called by the loader: a loop needs a task to repeat."""
        if not self.tasks:
            raise SpecError((("tasks",), "a WaitFor needs at least one task"))


class WorkingDirectorySpec(FlowableSpec, kw_only=True):
    """``working_directory``: ``tasks`` in sequence, sharing one directory; ``input_files``
    written into it first, ``output_files`` (glob patterns) stored last (``outputFiles``)."""

    tasks: list[ChildTask]
    input_files: dict[str, Any] = {}
    output_files: list[str] = []


class LocalFilesSpec(TaskSpec, kw_only=True):
    """``local_files``: write ``inputs`` into the working directory, store ``outputs``."""

    inputs: dict[str, Any] = {}
    outputs: list[str] = []


class LabelsSpec(TaskSpec, kw_only=True):
    """``labels``: set labels on the running execution."""

    labels: dict[str, Any] | list[dict[str, Any]] | str


KVKey = Annotated[str, msgspec.Meta(max_length=255)]


class KVSetSpec(TaskSpec, kw_only=True):
    """``kv_set``: set ``key`` to ``value`` in a namespace's key-value store."""

    key: KVKey
    value: Any = None
    namespace: str | None = None
    overwrite: bool = True
    ttl: Duration | None = None
    kv_type: str | None = None


class KVGetSpec(TaskSpec, kw_only=True):
    """``kv_get``: outputs ``value`` of ``key``."""

    key: KVKey
    namespace: str | None = None
    error_on_missing: bool = False


class StateSpec(TaskSpec, kw_only=True):
    """``state_get`` / ``state_delete``: a named state of this flow (or namespace)."""

    name: str = "default"
    namespace: bool = False
    taskrun_value: bool = True
    error_on_missing: bool = False


class StateSetSpec(TaskSpec, kw_only=True):
    """``state_set``: merge ``data`` into a named state."""

    name: str = "default"
    namespace: bool = False
    taskrun_value: bool = True
    data: dict[str, Any]


class ResumeSpec(TaskSpec, kw_only=True):
    """``resume``: resume a paused execution (this one unless ``execution_id``)."""

    execution_id: str | None = None
    inputs: dict[str, Any] = {}
    namespace: str | None = None
    flow_id: str | None = None


class ToggleSpec(TaskSpec, kw_only=True):
    """``toggle_trigger``: enable or disable a flow's trigger."""

    trigger: str
    enabled: bool = False
    namespace: str | None = None
    flow_id: str | None = None


class FetchSpec(TaskSpec, kw_only=True):
    """``fetch_logs``: an execution's log lines as a file."""

    aliases: ClassVar[Mapping[str, str]] = {"tasksId": "task_ids"}
    execution_id: str | None = None
    task_ids: list[str] = []
    level: Level = "INFO"


class BatchSpec(Spec, kw_only=True):
    """``batch`` of a ForEachItem: ``rows`` per batch (a number or a template) or
    ``partitions`` batches."""

    rows: int | str | None = None
    partitions: Annotated[int, msgspec.Meta(ge=1)] | None = None


class ForEachItemSpec(FlowableSpec, kw_only=True):
    """``foreach_item``: one execution of ``flow_id`` per batch of the file ``items``."""

    items: str
    batch: BatchSpec = msgspec.field(default_factory=BatchSpec)
    namespace: str | None = None
    flow_id: str
    inputs: dict[str, Any] = {}
    wait: bool = True
    transmit_failed: bool = True
    labels: dict[str, Any] | list[dict[str, Any]] = {}
    inherit_labels: bool = False
    revision: int | None = None


class IfSpec(FlowableSpec, kw_only=True):
    """``if``: ``then`` when ``condition`` is truthy, else ``else``."""

    condition: Any
    then: list[ChildTask]
    else_: list[ChildTask] = msgspec.field(default_factory=list, name="else")


class SwitchSpec(FlowableSpec, kw_only=True):
    """``switch``: the case whose key equals ``value``, else ``defaults``."""

    value: Any
    cases: dict[str, list[ChildTask]] = {}
    defaults: list[ChildTask] | None = []  # an empty ``defaults:`` (null) is none, as in Kestra


class DagNodeSpec(Spec, kw_only=True):
    """One node of a ``dag``: a task and the ids of the nodes it waits for."""

    task: ChildTask
    depends_on: list[str] = []


class DagSpec(FlowableSpec, kw_only=True):
    """``dag``: each task starts once the tasks it depends on ended."""

    aliases: ClassVar[Mapping[str, str]] = {"concurrent": "concurrency"}
    tasks: list[DagNodeSpec]
    concurrency: Annotated[int, msgspec.Meta(ge=0)] = 0


class SubflowSpec(TaskSpec, kw_only=True):
    """``subflow``: run another registered flow as a child execution. ``flow_id`` and
    ``namespace`` may be templates; ``outputs`` is rendered against the child's outputs."""

    namespace: str | None = None
    flow_id: Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
    inputs: dict[str, Any] = {}
    wait: bool = True
    transmit_failed: bool = True
    labels: dict[str, Any] | list[dict[str, Any]] = {}
    inherit_labels: bool = False
    outputs: dict[str, Any] | None = None

    def validate(self) -> None:
        """Called by the loader: a literal flow id or namespace must be a valid one."""
        if not has_template(self.flow_id) and not _ID.match(self.flow_id):
            raise SpecError(
                (("flow_id",), f"expected a string matching {ID_PATTERN}, got {self.flow_id!r}")
            )
        ns = self.namespace
        if ns is not None and not has_template(ns) and not _NAMESPACE.match(ns):
            raise SpecError((("namespace",), f"invalid namespace {ns!r}"))
        if isinstance(self.labels, list):
            for i, item in enumerate(self.labels):
                if set(item) != {"key", "value"}:
                    raise SpecError((("labels", i), "expected a mapping with key and value"))


_ID = re.compile(ID_PATTERN)
_NAMESPACE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$")


class HttpSpec(TaskSpec, kw_only=True):
    """``http``: an HTTP(S) request; outputs ``code``, ``headers``, ``body``. ``timeout``
    bounds the whole request (default 60 s); a body over ``max_size`` bytes fails it."""

    aliases: ClassVar[Mapping[str, str]] = {"url": "uri"}
    uri: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    headers: dict[str, str] = {}
    body: Any = None
    content_type: str | None = None
    allow_failed: bool = False
    max_size: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_MAX_SIZE
    follow_redirects: bool = True


class ShellSpec(TaskSpec, kw_only=True):
    """``shell``: run ``commands`` as one script (``set -e`` unless ``fail_fast: false``);
    only in a runtime that allows ``shell``. The script sees PATH, HOME, LANG, TMPDIR and
    ``env``, nothing else of the runtime's environment."""

    commands: Annotated[list[str], msgspec.Meta(min_length=1)]
    interpreter: Annotated[list[str], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["/bin/sh", "-c"]
    )
    env: dict[str, str] = {}
    working_dir: str | None = None
    fail_fast: bool = True


# -- builders -----------------------------------------------------------------------------
def _log(s: LogSpec) -> Task:
    message = "\n".join(s.message) if isinstance(s.message, list) else s.message
    return Log(message=message, level=_LEVELS.get(s.level, s.level), **common(s))


def _pause(s: PauseSpec) -> Task:
    on_resume = []
    for i, spec in enumerate(s.on_resume):
        try:
            on_resume.append(spec.to_input())
        except SpecError as exc:
            raise SpecError(*((("on_resume", i, *p), m) for p, m in exc.problems)) from exc
    return Pause(
        delay=s.delay,
        behavior=PauseBehavior(s.behavior) if s.behavior else None,
        on_resume=tuple(on_resume),
        tasks=tasks_of(s.tasks),
        **flowable_common(s),
    )


def _echo(s: EchoSpec) -> Task:
    return Log(message=s.format, level=_LEVELS.get(s.level, s.level), **common(s))


def _each(parallel: bool) -> Any:
    def build(s: EachSpec) -> Task:
        return ForEach(
            values=s.value,
            tasks=tasks_of(s.tasks),
            concurrency=s.concurrency if parallel else 1,
            parallel_tasks=parallel,
            **flowable_common(s),
        )

    return build


def _wait_for(s: WaitForSpec) -> Task:
    freq = s.check_frequency
    return WaitFor(
        condition=s.condition,
        tasks=tasks_of(s.tasks),
        interval=freq.interval,
        max_iterations=freq.max_iterations,
        max_duration=freq.max_duration,
        fail_on_max_reached=s.fail_on_max_reached,
        **flowable_common(s),
    )


def _state(action: Literal["get", "set", "delete"]) -> Any:
    def build(s: StateSpec | StateSetSpec) -> Task:
        return StateTask(
            action=action,
            name=s.name,
            namespace=s.namespace,
            taskrun_value=s.taskrun_value,
            data=s.data if isinstance(s, StateSetSpec) else {},
            error_on_missing=s.error_on_missing if isinstance(s, StateSpec) else False,
            **common(s),
        )

    return build


def _foreach_item(s: ForEachItemSpec) -> Task:
    labels = s.labels
    if isinstance(labels, list):
        labels = {str(i.get("key")): i.get("value") for i in labels}
    rows: int | str | None = s.batch.rows
    if rows is None and s.batch.partitions is None:
        rows = 1
    # Kestra's three task runs inside the ForEachItem: split, items (the executions), merge.
    split = ForEachItemSplit(id=f"{s.id}_split", items=s.items, rows=rows,
                             partitions=s.batch.partitions)  # fmt: skip
    items = ForEachItemRun(
        id=f"{s.id}_items", split_id=split.id, flow_id=s.flow_id, namespace=s.namespace,
        inputs=s.inputs, wait=s.wait, transmit_failed=s.transmit_failed, labels=labels,
        inherit_labels=s.inherit_labels, retry=common(s)["retry"],
    )  # fmt: skip
    # The merge runs without wait too (Kestra's four task runs); it has nothing to merge then.
    merge = ForEachItemMerge(id=f"{s.id}_merge", items_id=items.id, wait=s.wait)
    tasks: tuple[Task, ...] = (split, items, merge)
    kw = flowable_common(s)
    kw["retry"] = None  # the items task retries, as in Kestra
    return Sequential(tasks=tasks, **kw)


def _working_directory(s: WorkingDirectorySpec) -> Task:
    tasks = tasks_of(s.tasks)
    collect = None
    # inputFiles and outputFiles are LocalFiles task runs of their own, first and last.
    if s.input_files:
        tasks = (LocalFiles(id=f"{s.id}_inputFiles", inputs=s.input_files), *tasks)
    if s.output_files:
        collect = f"{s.id}_outputFiles"
        tasks = (*tasks, LocalFiles(id=collect, outputs=tuple(s.output_files)))
    return WorkingDirectory(tasks=tasks, collect_from=collect, **flowable_common(s))


def _subflow(s: SubflowSpec) -> Task:
    labels = s.labels
    if isinstance(labels, list):
        labels = {str(i["key"]): i["value"] for i in labels}
    return Subflow(
        flow_id=s.flow_id,
        namespace=s.namespace,
        inputs=s.inputs,
        wait=s.wait,
        transmit_failed=s.transmit_failed,
        labels=labels,
        inherit_labels=s.inherit_labels,
        outputs=s.outputs,
        **common(s),
    )


def _dag(s: DagSpec) -> Task:
    nodes = [DagTask(task=n.task.task, depends_on=tuple(n.depends_on)) for n in s.tasks]
    ids = {n.task.id for n in nodes}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, n in enumerate(nodes):
        for j, dep in enumerate(n.depends_on):
            if dep not in ids:
                problems.append((("tasks", i, "depends_on", j), f"unknown task id {dep!r}"))
    if not problems:
        remaining = {n.task.id: set(n.depends_on) for n in nodes}
        while True:
            free = [k for k, deps in remaining.items() if not deps]
            if not free:
                break
            for k in free:
                del remaining[k]
            for deps in remaining.values():
                deps.difference_update(free)
        if remaining:
            problems.append((("tasks",), f"cyclic dependency between {sorted(remaining)}"))
    if problems:
        raise SpecError(*problems)
    return Dag(nodes=tuple(nodes), concurrency=s.concurrency, **flowable_common(s))


_K = "io.kestra.plugin.core."
_OLD = "io.kestra.core.tasks."

BUILTINS: tuple[TaskType, ...] = (
    TaskType("log", LogSpec, _log, (f"{_K}log.Log", f"{_OLD}log.Log")),
    TaskType(
        "return",
        ReturnSpec,
        lambda s: Return(value=s.value, null_text=True, **common(s)),
        (f"{_K}debug.Return", f"{_OLD}debugs.Return"),
    ),
    TaskType(
        "output",
        OutputSpec,
        lambda s: OutputValues(values=s.values, **common(s)),
        (f"{_K}output.OutputValues",),
    ),
    TaskType(
        "sleep",
        SleepSpec,
        lambda s: Sleep(duration=s.duration, **common(s)),
        (f"{_K}flow.Sleep",),
    ),
    TaskType(
        "fail",
        FailSpec,
        lambda s: Fail(message=s.message, condition=s.condition, **common(s)),
        (f"{_K}execution.Fail", f"{_K}flow.Fail", f"{_OLD}executions.Fail"),
    ),
    TaskType("pause", PauseSpec, _pause, (f"{_K}flow.Pause", f"{_OLD}flows.Pause")),
    TaskType(
        "sequential",
        SequentialSpec,
        lambda s: Sequential(tasks=tasks_of(s.tasks), **flowable_common(s)),
        (f"{_K}flow.Sequential", f"{_OLD}flows.Sequential"),
    ),
    TaskType(
        "allow_failure",
        SequentialSpec,
        lambda s: AllowFailure(
            tasks=tasks_of(s.tasks), **{**flowable_common(s), "allow_failure": True}
        ),
        (f"{_K}flow.AllowFailure", f"{_OLD}flows.AllowFailure"),
    ),
    TaskType(
        "parallel",
        ParallelSpec,
        lambda s: Parallel(
            tasks=tasks_of(s.tasks), concurrency=s.concurrency, **flowable_common(s)
        ),
        (f"{_K}flow.Parallel", f"{_OLD}flows.Parallel"),
    ),
    TaskType(
        "foreach",
        ForEachSpec,
        lambda s: ForEach(
            values=s.values,
            tasks=tasks_of(s.tasks),
            concurrency=s.concurrency,
            **flowable_common(s),
        ),
        (f"{_K}flow.ForEach",),
    ),
    TaskType(
        "if",
        IfSpec,
        lambda s: If(
            condition=s.condition,
            then=tasks_of(s.then),
            else_=tasks_of(s.else_),
            **flowable_common(s),
        ),
        (f"{_K}flow.If", f"{_OLD}flows.If"),
    ),
    TaskType(
        "switch",
        SwitchSpec,
        lambda s: Switch(
            value=s.value,
            cases={k: tasks_of(v) for k, v in s.cases.items()},
            defaults=tasks_of(s.defaults or []),
            **flowable_common(s),
        ),
        (f"{_K}flow.Switch", f"{_OLD}flows.Switch"),
    ),
    TaskType("dag", DagSpec, _dag, (f"{_K}flow.Dag", f"{_OLD}flows.Dag")),
    TaskType(
        "subflow",
        SubflowSpec,
        _subflow,
        (f"{_K}flow.Subflow", f"{_OLD}flows.Subflow", f"{_OLD}flows.Flow"),
    ),
    TaskType("echo", EchoSpec, _echo, (f"{_K}debug.Echo", f"{_OLD}debugs.Echo")),
    TaskType(
        "each_sequential",
        EachSpec,
        _each(parallel=False),
        (f"{_K}flow.EachSequential", f"{_OLD}flows.EachSequential"),
    ),
    TaskType(
        "each_parallel",
        EachSpec,
        _each(parallel=True),
        (f"{_K}flow.EachParallel", f"{_OLD}flows.EachParallel"),
    ),
    TaskType(
        "wait_for",
        WaitForSpec,
        _wait_for,
        (f"{_K}flow.WaitFor", f"{_K}flow.LoopUntil"),
    ),
    TaskType(
        "working_directory",
        WorkingDirectorySpec,
        _working_directory,
        (f"{_K}flow.WorkingDirectory", f"{_OLD}flows.WorkingDirectory"),
    ),
    TaskType(
        "local_files",
        LocalFilesSpec,
        lambda s: LocalFiles(inputs=s.inputs, outputs=tuple(s.outputs), **common(s)),
        (f"{_K}storage.LocalFiles", f"{_OLD}storages.LocalFiles"),
    ),
    TaskType(
        "kv_set",
        KVSetSpec,
        lambda s: KVSet(
            key=s.key,
            value=s.value,
            namespace=s.namespace,
            overwrite=s.overwrite,
            ttl=s.ttl,
            **common(s),
        ),
        (f"{_K}kv.Set",),
    ),
    TaskType(
        "kv_get",
        KVGetSpec,
        lambda s: KVGet(
            key=s.key, namespace=s.namespace, error_on_missing=s.error_on_missing, **common(s)
        ),
        (f"{_K}kv.Get",),
    ),
    TaskType(
        "kv_delete",
        KVGetSpec,
        lambda s: KVDelete(
            key=s.key, namespace=s.namespace, error_on_missing=s.error_on_missing, **common(s)
        ),
        (f"{_K}kv.Delete",),
    ),
    TaskType("state_get", StateSpec, _state("get"), (f"{_K}state.Get", f"{_OLD}states.Get")),
    TaskType("state_set", StateSetSpec, _state("set"), (f"{_K}state.Set", f"{_OLD}states.Set")),
    TaskType(
        "state_delete", StateSpec, _state("delete"), (f"{_K}state.Delete", f"{_OLD}states.Delete")
    ),
    TaskType(
        "foreach_item",
        ForEachItemSpec,
        _foreach_item,
        (f"{_K}flow.ForEachItem", f"{_OLD}flows.ForEachItem"),
    ),
    TaskType(
        "resume",
        ResumeSpec,
        lambda s: ResumeExecution(execution_id=s.execution_id, inputs=s.inputs, **common(s)),
        (f"{_K}execution.Resume", f"{_OLD}executions.Resume"),
    ),
    TaskType(
        "toggle_trigger",
        ToggleSpec,
        lambda s: ToggleTrigger(
            trigger=s.trigger,
            enabled=s.enabled,
            namespace=s.namespace,
            flow_id=s.flow_id,
            **common(s),
        ),
        (f"{_K}trigger.Toggle", f"{_OLD}trigger.Toggle"),
    ),
    TaskType(
        "fetch_logs",
        FetchSpec,
        lambda s: FetchLogs(
            execution_id=s.execution_id,
            task_ids=tuple(s.task_ids),
            level=_LEVELS.get(s.level, s.level),
            **common(s),
        ),
        (f"{_K}log.Fetch", f"{_OLD}log.Fetch"),
    ),
    TaskType(
        "labels",
        LabelsSpec,
        lambda s: Labels(labels=s.labels, **common(s)),
        (f"{_K}execution.Labels", f"{_OLD}executions.Labels"),
    ),
    TaskType(
        "http",
        HttpSpec,
        lambda s: HttpRequest(
            uri=s.uri,
            method=s.method,
            headers=s.headers,
            body=s.body,
            content_type=s.content_type,
            allow_failed=s.allow_failed,
            max_size=s.max_size,
            follow_redirects=s.follow_redirects,
            **common(s),
        ),
        (f"{_K}http.Request",),
    ),
    TaskType(
        "shell",
        ShellSpec,
        lambda s: ShellCommands(
            commands=tuple(s.commands),
            interpreter=tuple(s.interpreter),
            env=s.env,
            working_dir=s.working_dir,
            fail_fast=s.fail_fast,
            **common(s),
        ),
        ("io.kestra.plugin.scripts.shell.Commands",),
    ),
)


def register_builtins(registry: Registry) -> None:
    """Add every built-in type (and its Kestra aliases) to ``registry``."""
    for task_type in BUILTINS:
        registry.add(task_type, replace=True)


register_builtins(REGISTRY)


__all__ = [
    "BUILTINS",
    "FetchLogs",
    "ForEachItemMerge",
    "ForEachItemRun",
    "ForEachItemSplit",
    "HttpRequest",
    "Id",
    "KVDelete",
    "KVGet",
    "KVMissing",
    "KVSet",
    "LocalFiles",
    "OutputValues",
    "ResumeExecution",
    "ShellCommands",
    "StateTask",
    "ToggleTrigger",
    "register_builtins",
]
