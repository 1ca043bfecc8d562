"""actorflow on PostgreSQL beside actorflow on SQLite, in the same run.

Workloads (as in ``benchmarks/durable.py``):

2. one execution of N sequential no-op tasks;
3. C concurrent executions of 5 no-op tasks, each awaited by its own caller.

The PostgreSQL server is a throwaway cluster (``benchmarks/_pgcluster.py``, or
``ACTORFLOW_TEST_POSTGRES_DSN``) with ``fsync=on`` and ``synchronous_commit=off``: the same
promise as SQLite's WAL with ``synchronous=NORMAL`` (a crash of the process or the server
loses nothing committed; a power loss may lose the last commits, never consistency). Each
measurement runs in a fresh interpreter; it reports wall time and CPU seconds of the
runtime process, of its SQLite writer process (none on PostgreSQL) and of the PostgreSQL
server (the postmaster and its children, from ``/proc``), in µs per task run.

Skipped, with the reason, when no PostgreSQL can start here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

import actorflow as af
from benchmarks import _pgcluster
from benchmarks._common import (
    Window,
    cpu_us,
    median_of,
    noop,
    proc_cpu,
    row,
    spread,
    tmpdb,
    writer_pid,
)

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results"


def tree_cpu(pid: int | None) -> float:
    """CPU seconds so far of a process, its live children and those that exited (and were
    waited for): for the PostgreSQL server, the postmaster with one backend per connection,
    the WAL writer, the checkpointer...; for a worker, itself and its SQLite writer."""
    if pid is None:
        return 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return proc_cpu(pid, with_reaped=True) + sum(proc_cpu(int(c)) for c in children)


class ServerWindow(Window):
    """:class:`Window` with the CPU seconds of the PostgreSQL server too (``cpu_server``)."""

    def __init__(self, child_pid: int | None, postmaster: int | None) -> None:
        super().__init__(child_pid)
        self.postmaster = postmaster

    def __enter__(self) -> ServerWindow:
        self._server0 = tree_cpu(self.postmaster)
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.result["cpu_server"] = tree_cpu(self.postmaster) - self._server0


async def seq(db: str, n: int, postmaster: int | None) -> dict[str, float]:
    flow = af.Flow(id=f"seq{n}", namespace="bench", tasks=[noop(f"t{i}") for i in range(n)])
    files = tempfile.mkdtemp(prefix="actorflow-bench-files-")
    async with af.Runtime.open(db, files=files) as rt:
        with ServerWindow(writer_pid(rt), postmaster) as w:
            ex = await rt.run(flow)
    assert ex.state is af.State.SUCCESS
    return w.result


async def concurrent(db: str, executions: int, postmaster: int | None) -> dict[str, float]:
    flow = af.Flow(id="c5", namespace="bench", tasks=[noop(f"t{i}") for i in range(5)])
    files = tempfile.mkdtemp(prefix="actorflow-bench-files-")

    async def one(rt: af.Runtime) -> None:
        assert (await rt.run(flow)).state is af.State.SUCCESS

    async with af.Runtime.open(db, files=files) as rt:
        with ServerWindow(writer_pid(rt), postmaster) as w:
            await asyncio.gather(*(one(rt) for _ in range(executions)))
    return w.result


_WORKLOADS: dict[str, Any] = {"seq": seq, "concurrent": concurrent}


def _new_database(base: Any) -> str:
    return base.dsn(anyio.run(_pgcluster.create_database, base))


def _one(kind: str, size: int, db: str, postmaster: int | None) -> dict[str, float]:
    """One measurement in this (fresh) process, after a warm-up at a tenth of the size on
    a database of its own."""
    fn = _WORKLOADS[kind]
    anyio.run(fn, db, max(size // 10, 10), None)
    result: dict[str, float] = anyio.run(fn, db, size, postmaster)
    return result


def measure(kind: str, size: int, db: str, postmaster: int | None) -> dict[str, float]:
    args = [sys.executable, "-m", "benchmarks.postgres", kind, str(size), db, str(postmaster or 0)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} on {db} failed: {out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def postmaster_pid(cluster: Any) -> int | None:
    data = getattr(cluster, "data", None)
    if data is None:
        return None  # a server given by DSN: maybe not on this machine
    return int((data / "postmaster.pid").read_text().split()[0])


def run(quick: bool = False) -> list[dict[str, Any]]:
    try:
        cluster = _pgcluster.start(fsync=True)
    except _pgcluster.Unavailable as exc:
        print(f"skipping postgres: {exc}", file=sys.stderr)
        return [{"benchmark": "postgres", "metric": "skipped", "note": f"no PostgreSQL: {exc}"}]
    try:
        return _run(cluster, quick)
    finally:
        cluster.stop()


def _run(cluster: Any, quick: bool) -> list[dict[str, Any]]:
    postmaster = postmaster_pid(cluster)
    reps = 1 if quick else 3
    rows: list[dict[str, Any]] = []
    for label, kind, size, task_runs in (
        ("(2) {n:,} sequential tasks", "seq", 300 if quick else 1_000, 1),
        ("(3) {n:,} concurrent executions x 5 tasks", "concurrent", 1_000 if quick else 10_000, 5),
    ):  # fmt: skip
        by: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgres": []}
        for _ in range(reps):
            by["sqlite"].append(measure(kind, size, str(tmpdb()), None))
            by["postgres"].append(measure(kind, size, _new_database(cluster), postmaster))
        med = {k: {f: median_of([r[f] for r in v]) for f in v[0]} for k, v in by.items()}
        n_runs = size * task_runs
        pg, lite = med["postgres"], med["sqlite"]
        rows.append(row("postgres", label.format(n=size) + ": PostgreSQL vs SQLite",
                        n_runs / pg["seconds"], n_runs / lite["seconds"], "task runs/s",
                        spread=spread([n_runs / r["seconds"] for r in by["postgres"]]),
                        sqlite_spread=spread([n_runs / r["seconds"] for r in by["sqlite"]]),
                        **cpu_us(pg, n_runs), server_process_us=pg["cpu_server"] / n_runs * 1e6,
                        runs=reps))  # fmt: skip
        for who, m, runs in (("PostgreSQL", pg, by["postgres"]), ("SQLite", lite, by["sqlite"])):
            total = [(r["cpu_self"] + r["cpu_children"] + r["cpu_server"]) / n_runs * 1e6
                     for r in runs]  # fmt: skip
            rows.append(row("postgres", f"{label.format(n=size)}: CPU per task run, {who}",
                            (m["cpu_self"] + m["cpu_children"] + m["cpu_server"]) / n_runs * 1e6,
                            None, "µs", higher_is_better=False, **cpu_us(m, n_runs),
                            server_process_us=m["cpu_server"] / n_runs * 1e6,
                            spread=spread(total), runs=reps))  # fmt: skip
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 5:
        pm = int(sys.argv[4]) or None
        print(json.dumps(_one(sys.argv[1], int(sys.argv[2]), sys.argv[3], pm)))
    else:
        from benchmarks.__main__ import print_table

        result = run(quick="--quick" in sys.argv)
        print_table(result)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "postgres.json").write_text(json.dumps(result, indent=2))
