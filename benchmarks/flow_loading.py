"""Loading a large flow file: 100,000 tasks (10,000 with ``--quick``), in a fresh interpreter.

Baseline: PyYAML's C loader alone turning the same file into dicts (no validation, no lines,
no tasks built). ``python -m benchmarks.flow_loading N`` prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import row

ROOT = Path(__file__).resolve().parents[1]


def write_flow(n: int, path: Path) -> None:
    """A flow of ``n`` log tasks, each with a template."""
    lines = ["id: big", "namespace: bench", "tasks:"]
    for i in range(n):
        lines.append(f"  - id: t{i}\n    type: log\n    message: 'hello {{{{ inputs.x }}}} {i}'")
    path.write_text("\n".join(lines) + "\n")


def child(n: int) -> dict[str, float]:
    import yaml

    from actorflow.flows import load_flow

    path = Path(tempfile.mkdtemp(prefix="actorflow-bench-")) / "big.yaml"
    write_flow(n, path)
    start, cpu = time.perf_counter(), time.process_time()
    flow = load_flow(path)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert len(flow.tasks) == n
    start = time.perf_counter()
    yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    baseline = time.perf_counter() - start
    return {"wall": wall, "cpu": cpu, "rss": rss, "baseline": baseline}


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 10_000 if quick else 100_000
    args = [sys.executable, "-m", "benchmarks.flow_loading", str(n)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return [
        row("flow_loading", f"load + validate {n:,} tasks (YAML)", r["wall"], r["baseline"], "s",
            higher_is_better=False, cpu_s=r["cpu"],
            note="baseline: yaml.load with CSafeLoader, dicts only"),
        row("flow_loading", f"peak RSS loading {n:,} tasks", r["rss"], None, "MiB",
            higher_is_better=False),
    ]  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]))))
