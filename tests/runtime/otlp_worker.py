"""A runtime in a process of its own, exporting over OTLP, to be killed by SIGKILL mid-attempt.

``python otlp_worker.py DB``: submits :data:`FLOW`; task ``a`` ends, then the first attempt of
``b`` prints ``hanging`` and waits forever. The exporter settings come from the environment.
"""

from __future__ import annotations

import sys

import anyio

import actorflow as af


@af.task
async def quick(ctx: af.TaskContext) -> dict[str, int]:
    return {"attempt": ctx.attempt}


@af.task
async def hang_first(ctx: af.TaskContext) -> dict[str, int]:
    if ctx.attempt == 1:
        print("hanging", flush=True)
        await anyio.sleep_forever()
    return {"attempt": ctx.attempt}


FLOW = af.Flow(id="crashy", namespace="tests", tasks=[quick("a"), hang_first("b"), quick("c")])


async def main(db: str) -> None:
    async with af.Runtime.open(db, flows=[FLOW], tracing=True) as rt:
        handle = await rt.submit(FLOW)
        print(f"execution {handle.id}", flush=True)
        await handle.wait()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
