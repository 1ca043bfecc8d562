"""Task-run ids: derived from what the task run is, so a crash cannot change them."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from actorflow.runtime._core._frames import Spec
    from actorflow.runtime._records import Execution

_encode = msgspec.json.encode


def task_run_id(ex: Execution, parent_id: str | None, spec: Spec) -> str:
    """The id of the task run ``spec`` creates under ``parent_id`` in ``ex``.

    A frame creates a given (task, branch, loop value, iteration) at most once under one
    parent, so the tuple names the task run; the execution's run number (``attempt_number``,
    raised by each restart) keeps a task run a restart creates again (an ``errors`` branch)
    apart from the one it replaced. A task run created again after a crash, because its
    creation was never stored, gets the id it had: ``ctx.task_run_id`` (and
    ``ctx.idempotency_key``) are the same in the attempt that was interrupted and the one that
    runs again. Costs one hash and no write.
    """
    key = _encode(
        (ex.id, ex.attempt_number, parent_id, spec.task.id, spec.branch, spec.value,
         spec.iteration)
    )  # fmt: skip
    return hashlib.blake2b(key, digest_size=10).hexdigest()


def child_execution_id(task_run_id: str, attempt: int) -> str:
    """The id of the subflow execution attempt ``attempt`` of task run ``task_run_id`` starts.

    The task-run id already names the parent execution, its run number, the task and its loop
    value and iteration; the attempt number tells a retry's new child from the one before. A
    parent recovered after a crash between storing its child and storing the child's id in
    its own task run finds that child by this id instead of starting a second one. Same
    length as :meth:`Engine.new_id`'s ids.
    """
    key = _encode(("subflow", task_run_id, attempt))
    return hashlib.blake2b(key, digest_size=9).hexdigest()


__all__ = ["child_execution_id", "task_run_id"]
