"""Work that grows must cost linearly: big ForEach and Dag runs finish under a CPU-time limit
(a subprocess with RLIMIT_CPU) far below what the quadratic scheduling of old took."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CPU_LIMIT_S = 40  # the scheduling of old needed several minutes of CPU for this script

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[1]), int(sys.argv[1])))
    import anyio
    import actorflow as af

    @af.task
    async def nothing(ctx):
        return None

    async def main():
        chain = [af.DagTask(task=nothing(f"n{i}"), depends_on=[f"n{i - 1}"][:i])
                 for i in range(5_000)]
        flows = [
            af.Flow(id="each", tasks=[af.ForEach(id="each", values=list(range(20_000)),
                                                 concurrency=10, tasks=[nothing("t")])]),
            af.Flow(id="chain", tasks=[af.Dag(id="dag", nodes=chain)]),
        ]
        out = []
        async with af.Runtime.open(":memory:") as rt:
            for flow in flows:
                ex = await rt.run(flow)
                out.append([ex.state.value, len(ex.task_runs)])
        print(json.dumps(out))

    anyio.run(main)
""")


def test_big_foreach_and_dag_chain_run_in_linear_cpu_time() -> None:
    """A 20,000-value ForEach (10 at a time) and a 5,000-node Dag chain both succeed, every
    task run created once, within the CPU limit (SIGXCPU kills a quadratic run)."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(CPU_LIMIT_S)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == [["SUCCESS", 20_001], ["SUCCESS", 5_001]]
