"""A process for the crash tests: submits a mix of executions (once) and runs what is unfinished.

Usage: python crash_worker.py DB SIDE_EFFECTS N

Every attempt appends "task_run_id attempt" to SIDE_EFFECTS before doing anything else, so the
test can tell which task runs ran again after a crash.
"""

from __future__ import annotations

import os
import sys

import anyio

import actorflow as af

SIDE = sys.argv[2] if len(sys.argv) > 2 else os.devnull


def _mark(ctx: af.TaskContext) -> None:
    fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.task_run_id} {ctx.attempt}\n".encode())
    finally:
        os.close(fd)


@af.task
async def step(ctx: af.TaskContext, n: int = 0) -> dict[str, int]:
    _mark(ctx)
    await anyio.sleep(0.01)
    return {"n": n}


@af.task
async def flaky(ctx: af.TaskContext) -> dict[str, int]:
    _mark(ctx)
    await anyio.sleep(0.002)
    if ctx.attempt < 3:
        raise ConnectionError(f"attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@af.task
async def broken(ctx: af.TaskContext) -> None:
    _mark(ctx)
    raise ValueError("always")


RETRY = af.Retry.constant(0.01, max_attempts=6)
FLOWS = {
    "seq": af.Flow(id="seq", namespace="crash", tasks=[step(f"s{i}", n=i) for i in range(12)]),
    "par": af.Flow(
        id="par",
        namespace="crash",
        tasks=[
            af.Parallel(id="p", concurrency=3, tasks=[step(f"p{i}", n=i) for i in range(6)]),
            step("after"),
        ],
    ),
    "retry": af.Flow(id="retry", namespace="crash", tasks=[flaky("f", retry=RETRY), step("end")]),
    "fail": af.Flow(
        id="fail",
        namespace="crash",
        tasks=[broken("b", retry=af.Retry.constant(0.01, max_attempts=2)), step("never")],
    ),
    "pause": af.Flow(
        id="pause",
        namespace="crash",
        tasks=[step("before"), af.Pause(id="wait", delay=0.2), step("resumed")],
    ),
    "each": af.Flow(
        id="each",
        namespace="crash",
        tasks=[
            af.ForEach(
                id="e", values=[1, 2, 3], concurrency=2, tasks=[step("x", n="{{ taskrun.value }}")]
            )
        ],
    ),
}
EXPECTED = {
    "seq": "SUCCESS", "par": "SUCCESS", "retry": "SUCCESS", "fail": "FAILED",
    "pause": "SUCCESS", "each": "SUCCESS",
}  # fmt: skip


async def main() -> None:
    db, n = sys.argv[1], int(sys.argv[3])
    async with af.Runtime.open(db, flows=FLOWS.values()) as rt:
        existing = await rt.executions(limit=100_000)
        for f in FLOWS.values():
            # A crash may have cut the submissions short: top each flow up to n.
            for _ in range(n - sum(1 for e in existing if e.flow_id == f.id)):
                await rt.submit(f)
        for ex in await rt.executions(limit=100_000):
            if not ex.state.terminal:
                await rt.wait(ex.id)
    print("done", flush=True)


if __name__ == "__main__":
    anyio.run(main)
