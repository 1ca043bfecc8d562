"""A process that owns executions for the cross-process command tests.

Usage: python command_owner.py DB

Starts one execution of each flow below, waits until each reached the state named in
``READY``, prints their ids as one JSON object, then holds them until its stdin closes (or it
is killed). The tests import the same flows, to compare with in-process calls and to restart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

import actorflow as af


@af.task
async def hold(ctx: af.TaskContext) -> None:
    """Runs until the execution is killed."""
    await anyio.sleep_forever()


@af.task
async def needs_file(ctx: af.TaskContext, path: str) -> str:
    """Fails until ``path`` exists (a restart after creating it succeeds)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is not there yet")
    return "found"


APPROVAL = af.Flow(
    id="approval",
    tasks=[
        af.Pause(id="approve", on_resume=[af.Input(name="reason", type="string")]),
        af.Log(id="after", message="{{ outputs.approve.reason }}"),
    ],
)
GATED = af.Flow(id="gated", tasks=[af.Pause(id="gate"), af.Log(id="after", message="after")])
HOLDING = af.Flow(id="holding", tasks=[hold("h")])
DONE = af.Flow(id="done", tasks=[af.Log(id="hello", message="hello")])
NEEDS_FILE = af.Flow(
    id="needs_file",
    inputs=[af.Input(name="path", type="string")],
    tasks=[needs_file("check", path="{{ inputs.path }}")],
)
FLOWS = [APPROVAL, GATED, HOLDING, DONE, NEEDS_FILE]
READY = {
    "approval": af.State.PAUSED,
    "gated": af.State.PAUSED,
    "holding": af.State.RUNNING,
    "done": af.State.SUCCESS,
    "needs_file": af.State.FAILED,
}


async def main(db: str) -> None:
    async with af.Runtime.open(db, flows=FLOWS) as rt:
        ids: dict[str, str] = {}
        for flow in FLOWS:
            inputs = {"path": f"{db}.marker"} if flow is NEEDS_FILE else None
            ex_id = (await rt.submit(flow, inputs)).id
            wanted = READY[flow.id]
            if wanted.terminal:
                got = await rt.wait(ex_id, timeout=30)
            else:
                got = await rt.wait_for(ex_id, wanted, timeout=30)
            assert got.state is wanted, (flow.id, got.state)
            ids[flow.id] = ex_id
        print(json.dumps(ids), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
