"""A process for the command crash test.

Usage: python command_worker.py DB submit | resume ID | recover ID

``submit`` starts an execution that pauses twice, prints its id, then "paused at second"
once another process resumed the first pause, and waits to be killed. ``resume`` resumes it
from another process. ``recover`` opens the database again (taking the execution over),
consumes the pending commands once and prints where the execution waits.
"""

from __future__ import annotations

import sys

import anyio

import actorflow as af

FLOW = af.Flow(
    id="two_pauses",
    tasks=[af.Pause(id="first"), af.Pause(id="second"), af.Log(id="done", message="done")],
)


async def _paused(rt: af.Runtime, ex_id: str) -> str:
    tree = await rt.get(ex_id)
    return " ".join(tr.task_id for tr in tree.task_runs if tr.state is af.State.PAUSED)


async def main() -> None:
    db, mode = sys.argv[1], sys.argv[2]
    async with af.Runtime.open(db, flows=[FLOW], recover=mode != "resume") as rt:
        if mode == "submit":
            ex_id = (await rt.submit(FLOW)).id
            await rt.wait_for(ex_id, af.State.PAUSED)
            running = rt.engine.state_waiter(ex_id, frozenset({af.State.RUNNING}))
            print(ex_id, flush=True)
            await running.wait()
            await rt.wait_for(ex_id, af.State.PAUSED)
            print(f"paused at {await _paused(rt, ex_id)}", flush=True)
            await anyio.sleep_forever()
        elif mode == "resume":
            await rt.resume(sys.argv[3])
        else:
            await rt.apply_commands()
            print(f"recovered paused at {await _paused(rt, sys.argv[3])}", flush=True)


if __name__ == "__main__":
    anyio.run(main)
