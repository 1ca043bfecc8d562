"""DBOS Transact on actorflow's benchmark workloads (issue 7 numbering), SQLite system database
(or PostgreSQL with ``--system-db``).

Run it with the interpreter of ``benchmarks/peers/.venv-dbos`` (``run.py`` does). It imports only
DBOS, the standard library and ``_peer.py`` beside it (the helpers both peers share). Workloads:

1. messaging: ``DBOS.send`` / ``DBOS.recv`` between two workflows: send throughput, delivery
   throughput, and a ping-pong round trip (send -> recv -> reply) with DBOS's default
   notification polling (1 s on SQLite) and with 10 ms polling;
2. one async workflow with 1,000 sequential no-op async steps;
3. ``--workflows`` async workflows of 5 no-op steps, all started at once;
5. one workflow whose step fails twice then succeeds (3 attempts, interval 0), beside one whose
   step succeeds at once.

Each workload gets a fresh DBOS instance on a fresh SQLite file; ``DBOS.launch()`` (migrations)
and one warm-up workflow are timed apart. ``--system-db postgresql://user@host:port`` puts each
instance's system database on that server instead, a fresh database each (DBOS creates it at
launch); ``--workloads 2,3`` runs only those. Each workload is repeated ``--reps`` times; the
reported value is the median.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import _peer

_T_IMPORT = time.perf_counter()
from dbos import DBOS, DBOSConfig, SetWorkflowID  # noqa: E402

IMPORT_S = time.perf_counter() - _T_IMPORT
PEER = "dbos"
row = partial(_peer.row, PEER)
log = partial(_peer.log, PEER)
PACKAGES = ("dbos", "sqlalchemy")  # the packages whose versions matter for these numbers
DEFAULT_POLL_S = 1.0  # DBOSConfig notification_listener_polling_interval_sec default
SYSTEM_DB: str | None = None  # a PostgreSQL server URL (no database), from --system-db


# --------------------------------------------------------------------------- workflows and steps


@DBOS.step()
async def noop() -> None:
    """A no-op step: measures the checkpointing alone."""
    return None


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0, backoff_rate=1.0)
async def flaky(key: str) -> int:
    """Fails on its first two attempts for ``key``, succeeds on the third."""
    return _peer.fail_twice(key)


@DBOS.workflow()
async def seq_wf(n: int) -> float:
    """``n`` sequential no-op steps; returns the in-workflow seconds."""
    start = time.perf_counter()
    for _ in range(n):
        await noop()
    return time.perf_counter() - start


@DBOS.workflow()
async def five_wf() -> None:
    """Five sequential no-op steps."""
    for _ in range(5):
        await noop()


@DBOS.workflow()
async def retry_wf(key: str) -> int:
    """One step that fails twice then succeeds."""
    return await flaky(key)


@DBOS.workflow()
async def once_wf() -> None:
    """One step that succeeds at once."""
    await noop()


@DBOS.workflow()
async def receiver(n: int) -> None:
    """Receives ``n`` messages on topic ``m``."""
    for _ in range(n):
        await DBOS.recv_async("m", timeout_seconds=300)


@DBOS.workflow()
async def sender(destination: str, n: int) -> None:
    """Sends ``n`` messages on topic ``m`` to ``destination`` (each send is a durable step)."""
    for i in range(n):
        await DBOS.send_async(destination, i, "m")


@DBOS.workflow()
async def ponger(n: int) -> None:
    """Answers ``n`` pings: recv the pinger's id, send a reply to it."""
    for _ in range(n):
        source = await DBOS.recv_async("ping", timeout_seconds=300)
        await DBOS.send_async(source, "pong", "pong")


@DBOS.workflow()
async def pinger(destination: str, n: int) -> list[float]:
    """``n`` round trips send -> (ponger recv, reply) -> recv; returns their seconds."""
    me = DBOS.workflow_id
    assert me is not None
    out: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        await DBOS.send_async(destination, me, "ping")
        await DBOS.recv_async("pong", timeout_seconds=300)
        out.append(time.perf_counter() - start)
    return out


# --------------------------------------------------------------------------- helpers


class Launches:
    """Launch times of every DBOS instance the run made (fresh SQLite file each)."""

    def __init__(self) -> None:
        self.launch_s: list[float] = []
        self.warmup_s: list[float] = []


@contextmanager
def dbos_instance(launches: Launches, poll_s: float | None = None) -> Iterator[None]:
    """A fresh DBOS on a fresh SQLite file (or PostgreSQL database), launched; destroyed (and
    the file removed) after."""
    folder = tempfile.mkdtemp(prefix="actorflow-peer-dbos-")
    url = f"sqlite:///{folder}/dbos.sqlite"
    if SYSTEM_DB is not None:
        url = f"{SYSTEM_DB.rstrip('/')}/actorflow_peer_{uuid.uuid4().hex[:12]}"
    config: DBOSConfig = {
        "name": "actorflow-peer-bench",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    if poll_s is not None:
        config["notification_listener_polling_interval_sec"] = poll_s
    start = time.perf_counter()
    DBOS(config=config)
    DBOS.launch()
    launches.launch_s.append(time.perf_counter() - start)
    try:
        yield
    finally:
        DBOS.destroy()
        shutil.rmtree(folder, ignore_errors=True)


async def warm_up(launches: Launches) -> None:
    """One workflow with one step, outside every timed section."""
    start = time.perf_counter()
    await once_wf()
    launches.warmup_s.append(time.perf_counter() - start)


# --------------------------------------------------------------------------- workloads


async def send_throughput(launches: Launches, n: int, reps: int) -> list[dict[str, Any]]:
    """Workload 1a: one workflow sends ``n`` messages to another, which receives them all."""
    sent: list[float] = []
    delivered: list[float] = []
    with dbos_instance(launches):
        await warm_up(launches)
        for rep in range(reps):
            start = time.perf_counter()
            recv_handle = await DBOS.start_workflow_async(receiver, n)
            send_handle = await DBOS.start_workflow_async(sender, recv_handle.workflow_id, n)
            await send_handle.get_result()
            sent_s = time.perf_counter() - start
            await recv_handle.get_result()
            done_s = time.perf_counter() - start
            sent.append(n / sent_s)
            delivered.append(n / done_s)
            log(
                f"1 send rep {rep + 1}: {n / sent_s:,.0f} sent/s, "
                f"{n / done_s:,.0f} received/s (all {n} in {done_s:.2f} s)"
            )
    w = f"1 messaging ({n} messages, workflow -> workflow)"
    return [
        row(
            w,
            "send throughput (DBOS.send_async in a workflow)",
            statistics.median(sent),
            "messages/s",
            n,
            f"median of {reps}; from the sender's start to its end",
            sent,
        ),
        row(
            w,
            "delivery throughput (until the receiver got all N)",
            statistics.median(delivered),
            "messages/s",
            n,
            f"median of {reps}; receiver uses DBOS.recv_async, default config",
            delivered,
        ),
    ]


async def round_trip(
    launches: Launches, n: int, reps: int, poll_s: float | None
) -> list[dict[str, Any]]:
    """Workload 1b: ping-pong between two workflows, ``n`` round trips per rep."""
    p50s: list[float] = []
    p99s: list[float] = []
    with dbos_instance(launches, poll_s):
        await warm_up(launches)
        for rep in range(reps):
            pong = await DBOS.start_workflow_async(ponger, n)
            ping = await DBOS.start_workflow_async(pinger, pong.workflow_id, n)
            lat = await ping.get_result()
            await pong.get_result()
            p50s.append(_peer.pct(lat, 0.5) * 1000)
            p99s.append(_peer.pct(lat, 0.99) * 1000)
            log(
                f"1 round trip (poll {poll_s or DEFAULT_POLL_S} s) rep {rep + 1}: "
                f"p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms"
            )
    poll = poll_s or DEFAULT_POLL_S
    how = "default config" if poll_s is None else "notification_listener_polling_interval_sec"
    w = f"1 messaging (ping-pong, {n} round trips/rep)"
    note = f"median of {reps}; {how} = {poll:g} s (SQLite has no LISTEN/NOTIFY: recv polls)"
    return [
        row(w, f"round trip p50, polling {poll:g} s", statistics.median(p50s), "ms", n, note, p50s),
        row(w, f"round trip p99, polling {poll:g} s", statistics.median(p99s), "ms", n, note, p99s),
    ]


async def sequential(launches: Launches, n: int, reps: int) -> list[dict[str, Any]]:
    """Workload 2: one workflow with ``n`` sequential no-op steps."""
    rates: list[float] = []
    inside: list[float] = []
    with dbos_instance(launches):
        await warm_up(launches)
        for rep in range(reps):
            workflow_id = f"seq-{rep}"
            start = time.perf_counter()
            with SetWorkflowID(workflow_id):
                in_wf = await seq_wf(n)
            wall = time.perf_counter() - start
            steps = await DBOS.list_workflow_steps_async(workflow_id, load_output=False)
            if len(steps) != n:
                raise RuntimeError(f"expected {n} checkpointed steps, found {len(steps)}")
            rates.append(n / wall)
            inside.append(in_wf / n * 1000)
            log(
                f"2 sequential rep {rep + 1}: {n / wall:,.1f} steps/s, "
                f"{in_wf / n * 1000:.2f} ms/step in-workflow"
            )
    w = f"2 sequential ({n} steps, 1 workflow){_on()}"
    note = f"median of {reps}; async workflow, async no-op steps; all {n} step rows checked"
    return [
        row(
            w,
            "task runs/s (workflow call to return)",
            statistics.median(rates),
            "task runs/s",
            n,
            note,
            rates,
        ),
        row(
            w,
            "per step inside the workflow",
            statistics.median(inside),
            "ms",
            n,
            f"median of {reps}",
            inside,
        ),
    ]


async def concurrent(launches: Launches, workflows: int, reps: int) -> list[dict[str, Any]]:
    """Workload 3: ``workflows`` workflows of 5 steps, all started at once."""
    tally = _peer.Tally()

    async def finish(handle: Any, submitted: float) -> float:
        await handle.get_result()
        return time.perf_counter() - submitted

    with dbos_instance(launches):
        await warm_up(launches)
        for rep in range(reps):
            start = time.perf_counter()
            waits = []
            for _ in range(workflows):
                submitted = time.perf_counter()
                handle = await DBOS.start_workflow_async(five_wf)
                waits.append(finish(handle, submitted))
            results = await asyncio.gather(*waits, return_exceptions=True)
            wall = time.perf_counter() - start
            lat, errs = tally.add(results, wall)
            log(
                f"3 concurrent rep {rep + 1}: {len(lat)}/{workflows} ok in {wall:.2f} s, "
                f"{tally.rates[-1]:,.1f} task runs/s, errors {len(errs)}"
                + (f" (first: {type(errs[0]).__name__}: {errs[0]})" if errs else "")
            )
    w = f"3 concurrent ({workflows} workflows x 5 steps, all at once){_on()}"
    note = (
        f"median of {reps}; {workflows} per rep (actorflow: 10,000); "
        f"start_workflow_async for each; failed workflows {tally.errors}"
    )
    lat_note = f"median of {reps}; from start_workflow_async to get_result"
    return [
        row(
            w,
            "task runs/s",
            statistics.median(tally.rates),
            "task runs/s",
            workflows * 5,
            note,
            tally.rates,
        ),
        row(
            w,
            "latency p50 (submit to finish)",
            statistics.median(tally.p50s) if tally.p50s else None,
            "ms",
            workflows,
            lat_note,
            tally.p50s,
        ),
        row(
            w,
            "latency p99 (submit to finish)",
            statistics.median(tally.p99s) if tally.p99s else None,
            "ms",
            workflows,
            lat_note,
            tally.p99s,
        ),
    ]


async def retry(launches: Launches, executions: int, reps: int) -> list[dict[str, Any]]:
    """Workload 5: workflow with a step that fails twice then succeeds, beside a plain one."""
    with dbos_instance(launches):
        await warm_up(launches)
        flaky_ms, once_ms = await _peer.time_retries(
            PEER, retry_wf, once_wf, executions, reps, digits=2
        )
    return _peer.retry_rows(
        PEER,
        "5 retry (1 workflow, 1 step)",
        "fails twice, succeeds on 3rd (max_attempts=3, interval 0)",
        flaky_ms,
        once_ms,
        reps,
        executions,
        digits=2,
    )


# --------------------------------------------------------------------------- main


def _fresh() -> str:
    return "SQLite file" if SYSTEM_DB is None else "PostgreSQL database"


def _on() -> str:
    """What a workload's label says of the system database (nothing for SQLite, as before)."""
    return "" if SYSTEM_DB is None else ", PostgreSQL"


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every workload in order, each on its own fresh DBOS instance and SQLite file."""
    launches = Launches()
    rows: list[dict[str, Any]] = []
    todo = set(args.workloads.split(","))
    if "1" in todo:
        rows += await send_throughput(launches, args.messages, args.reps)
        rows += await round_trip(launches, args.round_trips_default, 1, None)
        rows += await round_trip(launches, args.round_trips, args.reps, 0.01)
    if "2" in todo:
        rows += await sequential(launches, args.steps, args.reps)
    if "3" in todo:
        rows += await concurrent(launches, args.workflows, args.reps)
    if "5" in todo:
        rows += await retry(launches, args.executions, args.reps)
    startup = [
        row("startup", "import dbos", IMPORT_S, "s", 1),
        row(
            "startup",
            f"DBOS() + launch() on a fresh {_fresh()} (migrations)",
            launches.launch_s[0],
            "s",
            1,
            f"first launch; median of all {len(launches.launch_s)} launches "
            f"{statistics.median(launches.launch_s):.3f} s; excluded from every workload",
            launches.launch_s,
        ),
        row(
            "startup",
            "first workflow (1 step) after launch",
            launches.warmup_s[0],
            "s",
            1,
            "warm-up, excluded from every workload",
            launches.warmup_s,
        ),
    ]
    return startup + rows


def main() -> int:
    """Parse options, run, print the table, write JSON."""
    parser = _peer.arg_parser(__doc__)
    parser.add_argument("--messages", type=int, default=1000, help="workload 1 send count")
    parser.add_argument("--round-trips", type=int, default=200, help="ping-pongs, 10 ms poll")
    parser.add_argument(
        "--round-trips-default", type=int, default=10, help="ping-pongs, default 1 s poll (1 rep)"
    )
    parser.add_argument("--steps", type=int, default=1000, help="workload 2 step count")
    parser.add_argument("--workflows", type=int, default=500, help="workload 3 workflow count")
    parser.add_argument("--executions", type=int, default=50, help="workload 5 per rep")
    parser.add_argument("--out", type=Path, default=_peer.RESULTS / "peers-dbos.json")
    parser.add_argument("--workloads", default="1,2,3,5", help="which to run, e.g. 2,3")
    parser.add_argument(
        "--system-db", help="a postgresql:// server URL: system databases there, not SQLite"
    )
    args = parser.parse_args()
    global SYSTEM_DB
    SYSTEM_DB = args.system_db
    if args.quick:
        args.reps, args.messages, args.round_trips, args.round_trips_default = 1, 50, 20, 2
        args.steps, args.workflows, args.executions = 50, 20, 5
    logging.getLogger("dbos").setLevel(logging.WARNING)
    wall = time.perf_counter()
    rows = asyncio.run(run(args))
    total = time.perf_counter() - wall
    settings = {
        "quick": args.quick,
        "reps": args.reps,
        "messages": args.messages,
        "round_trips": args.round_trips,
        "round_trips_default": args.round_trips_default,
        "steps": args.steps,
        "workflows": args.workflows,
        "executions": args.executions,
        "logging": "WARNING",
        "system_database": "SQLite, a fresh file per workload"
        if SYSTEM_DB is None
        else "PostgreSQL, a fresh database per workload",
        "workloads": args.workloads,
    }
    _peer.report(PEER, args.out, PACKAGES, settings, total + IMPORT_S, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
