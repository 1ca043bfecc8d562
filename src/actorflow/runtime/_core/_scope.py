"""What the task runs of one execution share: the engine, the flow, the record, the outputs.

Its own module so the task-run actor and the execution actor both depend on it, not on each
other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow.runtime._context import TaskContext
from actorflow.runtime._flow import Flow
from actorflow.runtime._records import Execution, TaskRun

if TYPE_CHECKING:
    from actorflow.actors import ActorRef
    from actorflow.runtime._core._engine import Engine


class ExecutionScope:
    """What the task runs of one execution share: engine, flow, ids, inputs, outputs."""

    __slots__ = ("current", "engine", "exec_ref", "flow", "outputs", "record")

    def __init__(self, engine: Engine, flow: Flow, record: Execution, exec_ref: ActorRef) -> None:
        self.engine = engine
        self.flow = flow
        self.record = record
        self.exec_ref = exec_ref
        self.outputs: dict[str, Any] = {}
        # Latest snapshot of each live task run, written by its actor on every change; the
        # execution hears only of ends and pauses, so it reads the rest here.
        self.current: dict[str, TaskRun] = {}

    def variables(self, tr: TaskRun | None = None) -> dict[str, Any]:
        """Template variables for ``tr`` (or the execution)."""
        ex = self.record
        return {
            "inputs": ex.inputs,
            "outputs": self.outputs,
            "taskrun": {
                "id": tr.id if tr else None,
                "value": tr.value if tr else None,
                "iteration": tr.iteration if tr else None,
                "attempts_count": len(tr.attempts) if tr else 0,
                "attemptsCount": len(tr.attempts) if tr else 0,
            },
            "task": {"id": tr.task_id if tr else None},
            "execution": {"id": ex.id, "state": ex.state.value},
            "flow": {"id": ex.flow_id, "namespace": ex.namespace, "revision": ex.flow_revision},
            "trigger": ex.trigger or {},
        }

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
        )

    def record_outputs(self, tr: TaskRun) -> None:
        """Expose ``tr``'s outputs as ``outputs.<task_id>`` (``[value]`` inside loops)."""
        if tr.value is None:
            self.outputs[tr.task_id] = tr.outputs
        else:
            per_value = self.outputs.setdefault(tr.task_id, {})
            if isinstance(per_value, dict):
                per_value[tr.value] = tr.outputs


__all__ = ["ExecutionScope"]
