"""A worker process for the lease tests: runs queued executions until SIGTERM.

Usage: python lease_worker.py DB SIDE_EFFECTS LEASE_TTL [--extra] [--submit-hold N SECONDS]
    [--max-active N]

Every attempt appends "execution_id task_run_id attempt pid" to SIDE_EFFECTS before anything
else. ``--extra`` also registers the flow ``extra`` (other workers cannot load it);
``--submit-hold N SECONDS`` submits N executions of ``hold`` itself first (their first
attempt lasts SECONDS) and prints their ids.
Prints "ready" once it runs.
PostgreSQL only: ``--idle-timeout SECONDS`` opens the store with that idle-in-transaction
timeout; ``--hold-tx`` (after the submissions) makes the writer's next batch that locks
leased rows wait 8 s inside its transaction, printing "in-transaction" (the test then
SIGSTOPs it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import anyio

import actorflow as af
from actorflow.runtime import ConcurrencyBehavior
from actorflow.storage import PostgresStore

SIDE = sys.argv[2] if __name__ == "__main__" else ""  # imported by the tests for its flows


def _mark(ctx: af.TaskContext) -> None:
    fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        line = f"{ctx.execution_id} {ctx.task_run_id} {ctx.attempt} {os.getpid()}\n"
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@af.task
async def touch(ctx: af.TaskContext) -> dict[str, int]:
    _mark(ctx)
    return {"pid": os.getpid()}


@af.task
async def hold(ctx: af.TaskContext, seconds: float = 3600.0) -> dict[str, int]:
    """The first attempt hangs (the test kills or stops its worker meanwhile); later ones end."""
    _mark(ctx)
    if ctx.attempt == 1:
        await anyio.sleep(seconds)
    return {"attempt": ctx.attempt}


@af.task
async def gate(ctx: af.TaskContext, path: str) -> dict[str, int]:
    """Runs until the test creates the file ``path``."""
    _mark(ctx)
    while not os.path.exists(path):
        await anyio.sleep(0.01)
    return {"pid": os.getpid()}


def _limited(behavior: ConcurrencyBehavior, *tasks: af.Task) -> af.Flow:
    return af.Flow(
        id=f"conc-{behavior.value.lower()}{'-pause' if tasks else ''}",
        namespace="lease",
        concurrency=af.Concurrency(limit=1, behavior=behavior),
        inputs=[af.Input(name="gate", type="string")],
        tasks=[gate("g", path="{{ inputs.gate }}"), *tasks],
    )


LIMITED = [
    *(_limited(b) for b in ConcurrencyBehavior),
    _limited(ConcurrencyBehavior.QUEUE, af.Pause(id="pause", delay=0.2), touch("after")),
]
TOUCH = af.Flow(id="touch", namespace="lease", tasks=[touch("a"), touch("b")])
HOLD = af.Flow(id="hold", namespace="lease", tasks=[hold("h", seconds="{{ inputs.seconds }}")],
               inputs=[af.Input(name="seconds", type="float", default=3600.0)])  # fmt: skip
EXTRA = af.Flow(id="extra", namespace="lease", tasks=[touch("x")])
GATED = af.Flow(id="gated", namespace="lease", inputs=[af.Input(name="gate", type="string")],
                tasks=[gate("g", path="{{ inputs.gate }}")])  # fmt: skip


def _hold_once(store: PostgresStore) -> None:
    async def hold() -> None:
        store.in_transaction = None  # once: the batch's retry goes through
        await _hold_transaction()

    store.in_transaction = hold


async def _hold_transaction() -> None:
    print("in-transaction", flush=True)
    # The test stops this process meanwhile; once it resumes, the batch goes on (on a
    # connection the server has ended by then).
    await anyio.sleep(8.0)


async def main() -> None:
    db, ttl = sys.argv[1], float(sys.argv[3])
    flows = [TOUCH, HOLD, GATED, *LIMITED, *([EXTRA] if "--extra" in sys.argv else [])]
    active = (
        int(sys.argv[sys.argv.index("--max-active") + 1]) if "--max-active" in sys.argv else 128
    )
    async with contextlib.AsyncExitStack() as stack:
        store = None
        if "--idle-timeout" in sys.argv:
            idle = float(sys.argv[sys.argv.index("--idle-timeout") + 1])
            store = await stack.enter_async_context(PostgresStore(db, idle_timeout=idle))
        rt = await stack.enter_async_context(
            af.Runtime.open(
                db, flows=flows, lease_ttl=ttl, shutdown_timeout=2.0, max_active=active,
                store=store,
            )
        )  # fmt: skip
        if "--submit-hold" in sys.argv:
            at = sys.argv.index("--submit-hold")
            n, seconds = int(sys.argv[at + 1]), float(sys.argv[at + 2])
            for _ in range(n):
                handle = await rt.submit(HOLD, {"seconds": seconds})
                print(handle.id, flush=True)
        if "--hold-tx" in sys.argv and isinstance(rt.store, PostgresStore):
            _hold_once(rt.store)
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            print("ready", flush=True)
            async for _ in signals:
                break


if __name__ == "__main__":
    anyio.run(main)
