"""A process for the task-run id crash tests: one execution whose task records its ids.

Usage: python idempotency_worker.py DB SIDE_EFFECTS MODE

The task ``charge`` appends "task_run_id idempotency_key attempt" to SIDE_EFFECTS, then by
MODE: ``crash`` SIGKILLs its own process at once (before anything of its task run could be
stored: the runtime has not run since the attempt started), ``hang`` waits to be killed,
``finish`` fails its first attempt in this process (so a retry follows) and then succeeds.
"""

from __future__ import annotations

import os
import signal
import sys

import anyio

import actorflow as af

DB, SIDE, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
_failed_here: list[int] = []


@af.task(retry=af.Retry.constant(0.01, max_attempts=5))
async def charge(ctx: af.TaskContext) -> dict[str, str]:
    fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.task_run_id} {ctx.idempotency_key} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)
    if MODE == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if MODE == "hang":
        await anyio.sleep_forever()
    if not _failed_here:
        _failed_here.append(ctx.attempt)
        raise ConnectionError("the payment service timed out")
    return {"charged": ctx.idempotency_key}


# The Pause makes the execution's creation durable long before the attempt starts.
FLOW = af.Flow(id="idem", tasks=[af.Pause(id="gate", delay=0.05), charge("charge")])


async def main() -> None:
    async with af.Runtime.open(DB, flows=[FLOW]) as rt:
        if not await rt.executions():
            await rt.submit(FLOW)
        for ex in await rt.executions():
            await rt.wait(ex.id)
    print("done", flush=True)


if __name__ == "__main__":
    anyio.run(main)
