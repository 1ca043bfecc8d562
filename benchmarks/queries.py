"""Queries at 100,000 executions (10,000 with ``--quick``): listing by state and by namespace,
and the unfinished-executions scan of ``recover=True``, before and after schema v7's indexes.

The rows are inserted directly (no engine). "before" is the same database with the v6 index
set and the v6 query text; "after" is the current schema through the store's own API, so
the after figure includes the hop to the reader thread. Each figure is the median of
``REPS`` calls, in one process; ``python -m benchmarks.queries`` prints the rows.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import row

ROOT = Path(__file__).resolve().parents[1]
REPS = 21
TERMINAL = ("SUCCESS", "FAILED", "KILLED", "WARNING", "SKIPPED", "CANCELLED")

_V6_INDEXES = """
CREATE INDEX ix_executions_state ON executions(state);
CREATE INDEX ix_executions_flow ON executions(namespace, flow_id, created);
CREATE INDEX ix_executions_created ON executions(created);
CREATE INDEX ix_executions_flow_id ON executions(flow_id, created);
"""
_V7_ONLY = (
    "ix_executions_state_created",
    "ix_executions_ns_created",
    "ix_executions_ns_flow_created",
    "ix_executions_flow_created",
    "ix_executions_created_id",
)
_COLS = (
    "id, namespace, flow_id, flow_revision, state, created, updated, ended,"
    " parent_execution_id, owner, data"
)
# The v6 query text (before ended IS NULL was added to the unfinished scan).
_V6_LIST = (
    f"SELECT {_COLS} FROM executions WHERE {{where}} ORDER BY created DESC, id DESC LIMIT 100"
)
_V6_UNFINISHED = (
    f"SELECT {_COLS} FROM executions WHERE state NOT IN ({','.join('?' * len(TERMINAL))})"
    " AND id NOT IN (SELECT execution_id FROM quarantine) ORDER BY created, id"
)


def build(path: Path, n: int) -> None:
    """A current-schema database holding ``n`` executions: 10 namespaces, 100 flows, 2% FAILED,
    100 unfinished (PAUSED), the rest SUCCESS."""
    import actorflow as af

    async def create() -> None:
        async with af.Runtime.open(str(path), recover=False):
            pass

    asyncio.run(create())
    blob = b"\x80" * 200  # a typical snapshot's size; never decoded here
    rows = []
    for i in range(n):
        state = "PAUSED" if i % (n // 100) == 0 else "FAILED" if i % 50 == 1 else "SUCCESS"
        created = 1_700_000_000.0 + i
        ended = None if state == "PAUSED" else created + 1
        rows.append((f"e{i:08d}", f"ns{i % 10}", f"f{i % 100}", 1, state, created,
                     created + 1, ended, None, None, blob))  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.executemany(f"INSERT INTO executions ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.close()


def _median_ms(fn: Any) -> float:
    times = []
    for _ in range(REPS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def before(path: Path) -> dict[str, float]:
    """The v6 index set and query text on the same rows."""
    conn = sqlite3.connect(path)
    for name in _V7_ONLY:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    conn.executescript(_V6_INDEXES)

    def q(sql: str, params: tuple[Any, ...]) -> None:
        conn.execute(sql, params).fetchall()

    out = {
        "state": _median_ms(lambda: q(_V6_LIST.format(where="state IN (?)"), ("FAILED",))),
        "namespace": _median_ms(lambda: q(_V6_LIST.format(where="namespace = ?"), ("ns3",))),
        "unfinished": _median_ms(lambda: q(_V6_UNFINISHED, TERMINAL)),
    }
    conn.close()
    return out


def after(path: Path) -> dict[str, float]:
    """The current schema, through the store's API."""
    from actorflow.storage import SQLiteStore

    async def main() -> dict[str, float]:
        store = SQLiteStore(path)
        await store.open()
        try:

            async def med(make: Any) -> float:
                times = []
                for _ in range(REPS):
                    start = time.perf_counter()
                    await make()
                    times.append(time.perf_counter() - start)
                return statistics.median(times) * 1e3

            return {
                "state": await med(lambda: store.list_executions(states=["FAILED"])),
                "namespace": await med(lambda: store.list_executions(namespace="ns3")),
                "unfinished": await med(lambda: store.unfinished_executions(TERMINAL)),
            }
        finally:
            await store.close()

    return asyncio.run(main())


def child(n: int) -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="actorflow-bench-"))
    try:
        build(tmp / "after.db", n)
        shutil.copy(tmp / "after.db", tmp / "before.db")
        return {"before": before(tmp / "before.db"), "after": after(tmp / "after.db")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool = False) -> list[dict[str, Any]]:
    import json

    n = 10_000 if quick else 100_000
    args = [sys.executable, "-m", "benchmarks.queries", str(n)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    b, a = r["before"], r["after"]
    return [
        row("queries", f"executions(state=FAILED) p50 at {n:,} executions", a["state"],
            b["state"], "ms", higher_is_better=False, note="baseline: v6 indexes"),
        row("queries", f"executions(namespace=) p50 at {n:,} executions", a["namespace"],
            b["namespace"], "ms", higher_is_better=False, note="baseline: v6 indexes"),
        row("queries", f"unfinished scan (recover=True) at {n:,} executions", a["unfinished"],
            b["unfinished"], "ms", higher_is_better=False,
            note="100 unfinished; baseline: v6 indexes and query"),
    ]  # fmt: skip


if __name__ == "__main__":
    import json

    if len(sys.argv) == 2 and sys.argv[1].isdigit():
        print(json.dumps(child(int(sys.argv[1]))))
    else:
        from benchmarks.__main__ import print_table

        print_table(run(quick="--quick" in sys.argv))
