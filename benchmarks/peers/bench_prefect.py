"""Prefect 3 on actorflow's benchmark workloads (issue 7 numbering), ephemeral API on SQLite.

Run it with the interpreter of ``benchmarks/peers/.venv-prefect`` (``run.py`` does). It imports
only Prefect, the standard library and ``_peer.py`` beside it (the helpers both peers share).
Workloads:

1. messaging kernel: not applicable (Prefect has no actor/messaging primitive);
2. one async flow with 1,000 sequential no-op async tasks;
3. ``--flows`` async flows of 5 no-op tasks, at most ``--concurrency`` running at once;
5. one flow whose task fails twice then succeeds (retries=2, delay 0), beside one whose task
   succeeds at once.

Startup (import, ephemeral server start on a fresh SQLite DB, first flow) is timed apart from
the workloads. Each workload is repeated ``--reps`` times; the reported value is the median.
"""

from __future__ import annotations

import os
import tempfile
import time

# Prefect reads its settings on import: a fresh PREFECT_HOME (so a fresh prefect.db) and no
# setting inherited from the caller's environment, so the API is always the ephemeral one.
_HOME = tempfile.mkdtemp(prefix="actorflow-peer-prefect-")
for _key in [k for k in os.environ if k.startswith("PREFECT_")]:
    del os.environ[_key]
os.environ["PREFECT_HOME"] = _HOME
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
_T_IMPORT = time.perf_counter()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import _peer  # noqa: E402
from prefect import flow, get_client, task  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    TaskRunFilter,
    TaskRunFilterFlowRunId,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType  # noqa: E402
from prefect.context import get_run_context  # noqa: E402

IMPORT_S = time.perf_counter() - _T_IMPORT
PEER = "prefect"
row = partial(_peer.row, PEER)
log = partial(_peer.log, PEER)
# The packages whose versions matter for these numbers (the API server's stack included).
PACKAGES = (
    "prefect",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "aiosqlite",
    "pydantic",
    "httpx",
)


# --------------------------------------------------------------------------- flows and tasks


@task
async def noop() -> None:
    """A no-op task: measures the orchestration alone."""
    return None


@task(retries=2, retry_delay_seconds=0)
async def flaky(key: str) -> int:
    """Fails on its first two attempts for ``key``, succeeds on the third."""
    return _peer.fail_twice(key)


@flow
async def seq_flow(n: int) -> tuple[str, float]:
    """``n`` sequential no-op tasks; returns the flow run id and the in-flow seconds."""
    start = time.perf_counter()
    for _ in range(n):
        await noop()
    return str(get_run_context().flow_run.id), time.perf_counter() - start


@flow
async def five_flow() -> None:
    """Five sequential no-op tasks."""
    for _ in range(5):
        await noop()


@flow
async def retry_flow(key: str) -> int:
    """One task that fails twice then succeeds."""
    return await flaky(key)


@flow
async def once_flow() -> None:
    """One task that succeeds at once."""
    await noop()


# --------------------------------------------------------------------------- helpers


class RetryCounter(logging.Filter):
    """Counts the Prefect client's retried API requests (HTTP 503 'database is locked' ...).

    The client logs them at DEBUG; this filter counts them and lets only WARNING and above
    through, so the console stays as quiet as PREFECT_LOGGING_LEVEL=WARNING makes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "retryable" in msg:
            key = "exception" if "exception" in msg else msg.split("status code", 1)[-1][:5]
            self.seen.append(key.strip(" ."))
        return record.levelno >= logging.WARNING

    def since(self, mark: int) -> str:
        """The retries counted after ``len(self.seen)`` was ``mark``, e.g. ``12 (503 x12)``."""
        keys = self.seen[mark:]
        by_key = {k: keys.count(k) for k in sorted(set(keys))}
        return f"{len(keys)}" + (
            " (" + ", ".join(f"{k} x{v}" for k, v in by_key.items()) + ")" if keys else ""
        )


RETRIES = RetryCounter()


async def recorded_task_runs(flow_run_id: str) -> int:
    """How many COMPLETED task runs of ``flow_run_id`` the API has recorded so far."""
    flt = TaskRunFilter(
        flow_run_id=TaskRunFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]),
        state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED])),
    )
    async with get_client() as client:
        resp = await client._client.post(
            "/task_runs/count", json={"task_runs": flt.model_dump(mode="json", exclude_unset=True)}
        )
        resp.raise_for_status()
        return int(resp.json())


# --------------------------------------------------------------------------- workloads


async def startup() -> list[dict[str, Any]]:
    """Server start on a fresh DB + the first flow and first task run (not in any workload)."""
    start = time.perf_counter()
    await once_flow()
    first = time.perf_counter() - start
    await seq_flow(1)  # warm the second code path too
    return [
        row("startup", "import prefect", IMPORT_S, "s", 1),
        row(
            "startup",
            "first flow run (starts ephemeral API server, fresh SQLite DB)",
            first,
            "s",
            1,
            "excluded from every timed workload",
        ),
    ]


def messaging() -> list[dict[str, Any]]:
    """Workload 1 does not apply: say so instead of inventing a number."""
    note = (
        "not applicable: Prefect has no actor/mailbox or workflow-to-workflow messaging "
        "primitive (flows communicate through task results, events or external storage)"
    )
    return [row("1 messaging", "tell throughput / ask round trip", None, "-", None, note)]


async def sequential(n: int, reps: int) -> list[dict[str, Any]]:
    """Workload 2: one flow with ``n`` sequential no-op tasks."""
    rates: list[float] = []
    inflow: list[float] = []
    recorded: list[float] = []
    for rep in range(reps):
        start = time.perf_counter()
        flow_run_id, inside = await seq_flow(n)
        wall = time.perf_counter() - start
        # Prefect 3 records task runs from events, after the fact: wait until all are stored.
        deadline = time.perf_counter() + 120
        count = await recorded_task_runs(flow_run_id)
        while count < n and time.perf_counter() < deadline:
            await asyncio.sleep(0.5)  # light polling: each count is a query on the same DB
            count = await recorded_task_runs(flow_run_id)
        stored = time.perf_counter() - start
        rates.append(n / wall)
        inflow.append(inside / n * 1000)
        recorded.append(n / stored if count >= n else float("nan"))
        log(
            f"2 sequential rep {rep + 1}: {n / wall:,.1f} task runs/s, "
            f"{inside / n * 1000:.2f} ms/task in-flow, {count}/{n} recorded after {stored:.2f} s"
        )
    w = f"2 sequential ({n} tasks, 1 flow)"
    return [
        row(
            w,
            "task runs/s (flow call to return)",
            statistics.median(rates),
            "task runs/s",
            n,
            f"median of {reps}; async flow, async no-op tasks",
            rates,
        ),
        row(
            w,
            "per task inside the flow",
            statistics.median(inflow),
            "ms",
            n,
            f"median of {reps}",
            inflow,
        ),
        row(
            w,
            "task runs/s until all recorded COMPLETED by the API",
            statistics.median(recorded),
            "task runs/s",
            n,
            f"median of {reps}; Prefect 3 stores task-run states asynchronously from events",
            recorded,
        ),
    ]


async def concurrent(flows: int, concurrency: int, reps: int) -> list[dict[str, Any]]:
    """Workload 3: ``flows`` flows of 5 tasks, at most ``concurrency`` in flight."""
    tally = _peer.Tally()
    sem = asyncio.Semaphore(concurrency)

    async def one() -> float:
        async with sem:
            start = time.perf_counter()
            await five_flow()
            return time.perf_counter() - start

    for rep in range(reps):
        start = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(flows)), return_exceptions=True)
        wall = time.perf_counter() - start
        lat, errs = tally.add(results, wall)
        log(
            f"3 concurrent rep {rep + 1}: {len(lat)}/{flows} flows ok in {wall:.2f} s, "
            f"{tally.rates[-1]:,.1f} task runs/s, errors {len(errs)}"
            + (f" (first: {type(errs[0]).__name__}: {str(errs[0])[:120]})" if errs else "")
        )
    w = f"3 concurrent ({flows} flows x 5 tasks, <= {concurrency} at once)"
    note = (
        f"median of {reps}; {flows} flows per rep (actorflow: 10,000); failed flows {tally.errors}"
    )
    return [
        row(
            w,
            "task runs/s",
            statistics.median(tally.rates),
            "task runs/s",
            flows * 5,
            note,
            tally.rates,
        ),
        row(
            w,
            "latency p50 (flow call to finish, after a concurrency slot)",
            statistics.median(tally.p50s) if tally.p50s else None,
            "ms",
            flows,
            f"median of {reps}",
            tally.p50s,
        ),
        row(
            w,
            "latency p99 (flow call to finish, after a concurrency slot)",
            statistics.median(tally.p99s) if tally.p99s else None,
            "ms",
            flows,
            f"median of {reps}",
            tally.p99s,
        ),
    ]


async def retry(executions: int, reps: int) -> list[dict[str, Any]]:
    """Workload 5: flow with a task that fails twice then succeeds, beside a plain one."""
    flaky_ms, once_ms = await _peer.time_retries(
        PEER, retry_flow, once_flow, executions, reps, digits=1
    )
    return _peer.retry_rows(
        PEER,
        "5 retry (1 flow, 1 task)",
        "fails twice, succeeds on 3rd (retries=2, delay 0)",
        flaky_ms,
        once_ms,
        reps,
        executions,
        digits=1,
    )


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every workload in order, in one process and one ephemeral server."""
    logging.getLogger("prefect.client").setLevel(logging.DEBUG)
    logging.getLogger("prefect.client").addFilter(RETRIES)
    log("starting the ephemeral API server (fresh SQLite DB) ...")
    rows = await startup()
    log(f"startup done: first flow after {rows[-1]['value']:.1f} s")
    rows += messaging()
    workloads: list[Callable[[], Awaitable[list[dict[str, Any]]]]] = [
        lambda: sequential(args.tasks, args.reps),
        lambda: concurrent(args.flows, args.concurrency, args.reps),
        lambda: retry(args.executions, args.reps),
    ]
    for workload in workloads:
        mark = len(RETRIES.seen)
        these = await workload()
        for r in these:
            r["note"] += f"; client-retried API requests: {RETRIES.since(mark)}"
        rows += these
    return rows


def main() -> int:
    """Parse options, run, print the table, write JSON."""
    parser = _peer.arg_parser(__doc__)
    parser.add_argument("--tasks", type=int, default=1000, help="workload 2 task count")
    parser.add_argument("--flows", type=int, default=40, help="workload 3 flow count")
    parser.add_argument("--concurrency", type=int, default=10, help="workload 3 cap")
    parser.add_argument("--executions", type=int, default=10, help="workload 5 per rep")
    parser.add_argument("--out", type=Path, default=_peer.RESULTS / "peers-prefect.json")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.tasks, args.flows, args.executions = 1, 50, 10, 3
    wall = time.perf_counter()
    try:
        rows = asyncio.run(run(args))
    finally:
        shutil.rmtree(_HOME, ignore_errors=True)
    total = time.perf_counter() - wall
    settings = {
        "quick": args.quick,
        "reps": args.reps,
        "tasks": args.tasks,
        "flows": args.flows,
        "concurrency": args.concurrency,
        "executions": args.executions,
        "logging": "WARNING",
        "api": "ephemeral (uvicorn subprocess), SQLite in a fresh PREFECT_HOME",
    }
    _peer.report(
        PEER,
        args.out,
        PACKAGES,
        settings,
        total + IMPORT_S,
        rows,
        client_retried_requests=RETRIES.since(0),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
