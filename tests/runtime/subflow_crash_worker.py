"""A process for the subflow crash test: a parent whose child is stored, killed (SIGKILL)
before the parent stored the child's id in its own task run.

Usage: python subflow_crash_worker.py DB (with $SUBFLOW_GATE naming a file that does not
exist yet: the child's task kills this process while it is missing).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import anyio

import actorflow as af


@af.task
async def gate(ctx: af.TaskContext) -> dict[str, str]:
    if not os.path.exists(os.environ["SUBFLOW_GATE"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"passed": ctx.execution_id}


CHILD = af.Flow(id="child", namespace="crash", tasks=[gate("g")])
PARENT = af.Flow(
    id="parent",
    namespace="crash",
    tasks=[
        af.Subflow(id="call", namespace="crash", flow_id="child"),
        af.Log(id="after", message="done"),
    ],
)


def _hold_back_the_child_id() -> None:
    """The crash window, made certain: the parent's task run never stores its child's id."""
    from actorflow.runtime._core._engine import Engine

    real = Engine.save_task_run

    def save(self: Engine, tr: Any, new: Sequence[Any] = ()) -> Any:
        if tr.child_execution_id is not None:
            return self.store.write(())
        return real(self, tr, new)

    Engine.save_task_run = save  # type: ignore[method-assign]


async def main(db: str) -> None:
    _hold_back_the_child_id()
    async with af.Runtime.open(db, flows=[PARENT, CHILD]) as rt:
        await rt.run(PARENT)  # never returns: the child's task kills the process


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
