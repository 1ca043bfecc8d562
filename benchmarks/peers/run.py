"""`make bench-peers`: Prefect 3 and DBOS Transact on actorflow's benchmark workloads.

Standard library only, so it runs from a fresh clone with nothing but ``python3``. For each
peer it creates ``benchmarks/peers/.venv-<peer>`` when missing or when its requirements file
changed, runs ``bench_<peer>.py`` with that interpreter (progress on stdout, the peer's own log
output in ``benchmarks/results/peers-<peer>.log``), then merges the rows into
``benchmarks/results/peers.json`` and prints one table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
PEERS = ("dbos", "prefect")


def venv_python(peer: str) -> Path:
    """The interpreter of a peer's virtual environment."""
    return HERE / f".venv-{peer}" / "bin" / "python"


def ensure_venv(peer: str) -> None:
    """Create (or rebuild) ``.venv-<peer>`` from ``requirements-<peer>.txt`` if needed."""
    venv = HERE / f".venv-{peer}"
    req = HERE / f"requirements-{peer}.txt"
    digest = hashlib.sha256(req.read_bytes()).hexdigest()
    stamp = venv / ".requirements.sha256"
    if venv_python(peer).exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return
    if venv.exists():
        print(f"[{peer}] {req.name} changed: rebuilding {venv.name}", flush=True)
        shutil.rmtree(venv)
    print(f"[{peer}] creating {venv.name} and installing {req.name} ...", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    install_log = RESULTS / f"peers-{peer}-install.log"
    with install_log.open("w") as out:
        proc = subprocess.run(
            [str(venv_python(peer)), "-m", "pip", "install", "--quiet", "-r", str(req)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        print(install_log.read_text()[-4000:], file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError(f"pip install -r {req.name} failed (log: {install_log})")
    stamp.write_text(digest + "\n")
    print(f"[{peer}] installed in {time.perf_counter() - started:.0f} s", flush=True)


def run_peer(
    peer: str, extra: list[str], out: Path, timeout: float, name: str | None = None
) -> dict[str, Any] | None:
    """Run one peer's script; its JSON document, or None if it failed. ``name`` (the peer's
    by default) names its log and its entry in the results."""
    log_path = RESULTS / f"peers-{name or peer}.log"
    cmd = [str(venv_python(peer)), str(HERE / f"bench_{peer}.py"), *extra, "--out", str(out)]
    print(f"[{peer}] {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    print(f"[{peer}] peer log output -> {log_path}", flush=True)
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The script imports _peer from its own folder, which PYTHONSAFEPATH would drop from sys.path.
    env.pop("PYTHONSAFEPATH", None)
    try:
        with log_path.open("w") as err:
            proc = subprocess.run(cmd, stderr=err, timeout=timeout, env=env)
        failed = proc.returncode != 0
        reason = f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        failed, reason = True, f"timed out after {timeout:.0f} s"
    elapsed = time.perf_counter() - started
    if failed or not out.exists():
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        print(f"[{peer}] FAILED ({reason}); last lines of {log_path}:", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
        return None
    doc: dict[str, Any] = json.loads(out.read_text())
    doc["process_s"] = elapsed
    print(f"[{peer}] done in {elapsed:.1f} s", flush=True)
    return doc


def run_dbos_on_postgres(
    extra: list[str], out: Path, args: argparse.Namespace
) -> dict[str, Any] | None:
    """DBOS's workloads 2 and 3 with its system database on a throwaway PostgreSQL started
    as actorflow's PostgreSQL benchmark starts its own (``benchmarks/_pgcluster.py``: fsync
    on, synchronous_commit off), so the figures sit beside ``python -m benchmarks postgres``."""
    sys.path.insert(0, str(HERE.parent.parent))  # the repository root: benchmarks._pgcluster
    from benchmarks import _pgcluster  # standard library only, like this script

    try:
        cluster = _pgcluster.start(fsync=True, throwaway=True)
    except _pgcluster.Unavailable as exc:
        print(f"[dbos-postgres] skipped: {exc}", file=sys.stderr)
        return None
    try:
        url = f"postgresql://postgres@127.0.0.1:{cluster.port}"
        extra = [*extra, "--system-db", url, "--workloads", "2,3"]
        return run_peer("dbos", extra, out, args.timeout, name="dbos-postgres")
    finally:
        cluster.stop()


def fmt(value: Any) -> str:
    """A number for the table."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The combined table (notes are in the JSON)."""
    cols = ["peer", "workload", "metric", "value", "unit", "n"]
    cells = [
        [fmt(r.get(c)) if c in ("value", "n") else str(r.get(c, "")) for c in cols] for r in rows
    ]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for line in cells:
        print(
            "  ".join(
                v.rjust(w) if cols[i] in ("value", "n") else v.ljust(w)
                for i, (v, w) in enumerate(zip(line, widths, strict=True))
            )
        )


def main() -> int:
    """Build the venvs, run the peers, merge and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes, 1 rep")
    parser.add_argument("--only", choices=PEERS, action="append", help="run only this peer")
    parser.add_argument("--dbos-args", default="", help="extra options for bench_dbos.py")
    parser.add_argument("--prefect-args", default="", help="extra options for bench_prefect.py")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per peer")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also run DBOS's workloads 2 and 3 on a throwaway PostgreSQL (as actorflow's)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    docs: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for peer in args.only or PEERS:
        extra = shlex.split(getattr(args, f"{peer}_args")) + (["--quick"] if args.quick else [])
        try:
            ensure_venv(peer)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"[{peer}] skipped: {exc}", file=sys.stderr)
            failed.append(peer)
            continue
        doc = run_peer(peer, extra, RESULTS / f"peers-{peer}{suffix}.json", args.timeout)
        if doc is None:
            failed.append(peer)
        else:
            docs[peer] = doc
    if args.postgres and "dbos" in docs:
        extra = shlex.split(args.dbos_args) + (["--quick"] if args.quick else [])
        doc = run_dbos_on_postgres(extra, RESULTS / f"peers-dbos-postgres{suffix}.json", args)
        if doc is None:
            failed.append("dbos-postgres")
        else:
            docs["dbos-postgres"] = doc
    rows = [r for doc in docs.values() for r in doc["rows"]]
    total = time.perf_counter() - started
    merged = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "peers": {
            p: {k: d[k] for k in ("versions", "settings", "total_s", "process_s")}
            for p, d in docs.items()
        },
        "failed": failed,
        "total_s": total,
        "rows": rows,
    }
    out = RESULTS / f"peers{suffix}.json"
    out.write_text(json.dumps(merged, indent=2) + "\n")
    print()
    if rows:
        print_table(rows)
    for peer, doc in docs.items():
        vers = ", ".join(f"{k} {v}" for k, v in doc["versions"].items())
        print(f"{peer}: {vers}; process {doc['process_s']:.1f} s")
    print(f"wrote {out} in {total:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
