"""Closing a runtime is bounded however many executions run; what it interrupts, the next
runtime resumes."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

import actorflow as af
from actorflow.runtime import Runtime

pytestmark = pytest.mark.anyio

N = 1_000


class Started:
    count = 0
    all_in = anyio.Event()


@af.task(retry=af.Retry.constant(0, max_attempts=3))
async def stuck_once(ctx: af.TaskContext) -> dict[str, int]:
    """Blocks forever in its first attempt; a later attempt succeeds."""
    if ctx.attempt == 1:
        Started.count += 1
        if Started.count == N:
            Started.all_in.set()
        await anyio.sleep_forever()
    return {"attempt": ctx.attempt}


FLOW = af.Flow(id="stuck", namespace="shutdown", tasks=[stuck_once("work")])


async def test_a_thousand_running_executions_close_within_the_timeout(tmp_path: Path) -> None:
    """With 1,000 attempts running, closing takes about shutdown_timeout (all share one grace,
    then are interrupted), not a grace each; the next runtime resumes every one of them with a
    new attempt after the interrupted one, and they succeed."""
    Started.count, Started.all_in = 0, anyio.Event()
    db = tmp_path / "s.db"
    async with Runtime.open(db, flows=[FLOW], max_active=None, shutdown_timeout=0.5) as rt:
        ids = [(await rt.submit(FLOW)).id for _ in range(N)]
        await Started.all_in.wait()
        closing = time.monotonic()
    took = time.monotonic() - closing
    # One grace for all: one grace each would be N x 0.5 s = 500 s.
    assert took < 30, f"closing {N} running executions took {took:.1f} s"
    async with Runtime.open(db, flows=[FLOW], max_active=None) as again:
        done = [await again.wait(i) for i in ids]
    assert {d.state for d in done} == {af.State.SUCCESS}
    attempts = [[a.state for a in d.task_run("work").attempts] for d in done]
    assert all(a[-1] is af.State.SUCCESS and af.State.FAILED in a for a in attempts)


async def test_a_bad_shutdown_timeout_is_refused() -> None:
    """A negative or NaN shutdown_timeout is a clear error before anything opens."""
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="shutdown_timeout"):
            async with Runtime.open(":memory:", shutdown_timeout=bad):
                pass
