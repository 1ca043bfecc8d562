"""The shell task is safe by default: off unless allowed, a minimal environment, no process
left behind (timeouts, kills, exits, a SIGKILLed runtime), bounded output."""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from _support.cli import af
from actorflow import TaskNotAllowed
from actorflow.flows import ShellCommands, load_flow_text
from actorflow.flows._shell import TASK_RUN_VAR, kill_leftovers
from actorflow.runtime import Execution, Flow, Runtime, State, Subflow

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model"),
]

ROOT = Path(__file__).resolve().parents[2]


async def _run(flow: Flow, tmp_path: Path, *flows: Flow) -> Execution:
    async with Runtime.open(
        ":memory:", files=tmp_path / "files", flows=flows, allow_types={"shell"}
    ) as rt:
        return await rt.run(flow, timeout=30)


def _exited(pids: list[int], within: float = 10.0) -> list[int]:
    """The pids still running after ``within`` seconds (waits on pidfds, no polling)."""
    left = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            ready, _, _ = select.select([fd], [], [], within)
            if not ready:
                left.append(pid)
        finally:
            os.close(fd)
    return left


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "pids.fifo"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield path, fd
    finally:
        os.close(fd)


def _read_fifo(fd: int, within: float = 20.0) -> list[int]:
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], within)
        assert ready, "the shell task never wrote its pids"
        data += os.read(fd, 4096)
    return [int(p) for p in data.split()]


async def _read_fifo_async(fd: int) -> list[int]:
    data = b""
    with anyio.fail_after(20):
        while not data.endswith(b"\n"):
            await anyio.wait_readable(fd)
            data += os.read(fd, 4096)
    return [int(p) for p in data.split()]


# -- off unless allowed ---------------------------------------------------------------------
SHELL_FLOW = "id: sh\ntasks:\n  - {id: hello, type: shell, commands: ['echo hi']}\n"


async def test_shell_is_refused_unless_allowed(tmp_path: Path) -> None:
    """Without allow_types a flow with a shell task (directly or in a registered subflow) is
    refused at submit, naming the task and how to allow it; nothing is stored or run."""
    child = load_flow_text(SHELL_FLOW)
    parent = Flow(id="parent", tasks=[Subflow(id="call", flow_id="sh")])
    async with Runtime.open(":memory:", files=tmp_path / "f", flows=[child]) as rt:
        with pytest.raises(TaskNotAllowed) as direct:
            await rt.submit(child)
        with pytest.raises(TaskNotAllowed) as nested:
            await rt.submit(parent)
        assert await rt.executions() == []
    [problem] = direct.value.problems
    assert problem.field == "tasks.hello"
    assert "--allow shell" in problem.message and "allow_types={'shell'}" in problem.message
    assert "subflow default.sh" in str(nested.value)
    async with Runtime.open(":memory:", files=tmp_path / "g", allow_types="shell") as rt:
        assert (await rt.run(child)).state is State.SUCCESS


def test_cli_refuses_shell_without_allow(tmp_path: Path) -> None:
    """`actorflow run` of a shell flow exits 2 with the file and the --allow hint; with
    --allow shell it runs."""
    flow = tmp_path / "sh.yaml"
    flow.write_text(SHELL_FLOW)
    proc = af("run", flow, "--db", tmp_path / "x.db", code=2)
    assert str(flow) in proc.stderr and "tasks.hello" in proc.stderr
    assert "--allow shell" in proc.stderr
    af("run", flow, "--allow", "shell", "--db", tmp_path / "x.db")


async def test_child_sees_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command sees PATH, HOME, LANG, its own TMPDIR (removed afterwards) and its task's
    env, never the rest of the runtime's environment."""
    monkeypatch.setenv("ACTORFLOW_TEST_SECRET", "s3cr3t")
    flow = load_flow_text(
        "id: env\ntasks:\n  - id: show\n    type: shell\n    env: {GREETING: hi}\n"
        "    commands: ['env', 'test -d \"$TMPDIR\"']\n"
    )
    ex = await _run(flow, tmp_path)
    assert ex.state is State.SUCCESS
    env = dict(line.split("=", 1) for line in ex.task_run("show").outputs["stdout"].split("\n") if "=" in line)  # fmt: skip
    assert "ACTORFLOW_TEST_SECRET" not in env and "s3cr3t" not in json.dumps(env)
    assert env["GREETING"] == "hi" and env["PATH"] == os.environ["PATH"]
    assert {"HOME", "LANG", "TMPDIR"} <= set(env)
    assert not Path(env["TMPDIR"]).exists()


async def test_a_command_that_cannot_start_fails_clearly(tmp_path: Path) -> None:
    """A missing interpreter fails the attempt with the reason, not a hang."""
    flow = Flow(id="f", tasks=[ShellCommands(id="x", commands=("true",), interpreter=("/nope/sh", "-c"))])  # fmt: skip
    ex = await _run(flow, tmp_path)
    assert ex.state is State.FAILED
    assert "cannot start the command" in (ex.task_run("x").error or "")
    assert "/nope/sh" in (ex.task_run("x").error or "")


# -- nothing left behind --------------------------------------------------------------------
ESCAPEES = """
      - setsid sleep 1000 &
      - echo $! >> {pids}
      - (sleep 1000; echo late) &
      - echo $! >> {pids}
      - env -i setsid sleep 1001 > /dev/null 2>&1 &
      - echo $! >> {pids}
      - echo $$ >> {pids}
"""


async def test_timeout_kills_setsid_grandchildren_and_pipe_holders(tmp_path: Path) -> None:
    """On a timeout the whole tree goes: the group, a setsid grandchild, a background child
    holding stdout, and one that also cleared its environment."""
    pids = tmp_path / "pids"
    flow = load_flow_text(
        "id: slow\ntasks:\n  - id: slow\n    type: shell\n    timeout: 0.5s\n    commands:"
        + ESCAPEES.format(pids=pids)
        + "      - wait\n"
    )
    ex = await _run(flow, tmp_path)
    assert ex.state is State.FAILED and "Timeout" in (ex.task_run("slow").error or "")
    assert len(_pids(pids)) == 4
    assert _exited(_pids(pids)) == []


async def test_exit_does_not_wait_for_background_children(tmp_path: Path) -> None:
    """A shell that exits 0 ends its task run at once: background children holding its
    stdout (setsid ones included) are killed, not waited for."""
    pids = tmp_path / "pids"
    flow = load_flow_text(
        "id: bg\ntasks:\n  - id: bg\n    type: shell\n    commands:"
        + ESCAPEES.format(pids=pids)
        + "      - echo done\n"
    )
    ex = await _run(flow, tmp_path)  # with a 30 s bound: waiting for them would fail it
    assert ex.state is State.SUCCESS
    assert ex.task_run("bg").outputs["stdout"] == "done\n"
    assert _exited(_pids(pids)) == []


async def test_kill_ends_the_tree(tmp_path: Path, fifo: tuple[Path, int]) -> None:
    """Killing the execution kills the shell and what it started."""
    path, fd = fifo
    flow = load_flow_text(f"""
id: k
tasks:
  - id: k
    type: shell
    commands:
      - setsid sleep 1000 &
      - echo "$$ $!" > {path}
      - wait
""")
    async with Runtime.open(":memory:", files=tmp_path / "f", allow_types={"shell"}) as rt:
        handle = await rt.submit(flow)
        pids = await _read_fifo_async(fd)
        await rt.kill(handle.id)
        assert (await handle.wait(timeout=30)).state is State.KILLED
    assert _exited(pids) == []


async def test_sigterm_ignored_gets_sigkill_after_the_grace(tmp_path: Path) -> None:
    """A command that ignores SIGTERM is SIGKILLed after the grace period, children too."""
    pids = tmp_path / "pids"
    flow = load_flow_text(f"""
id: stubborn
tasks:
  - id: s
    type: shell
    timeout: 0.3s
    commands:
      - trap '' TERM
      - sh -c 'trap "" TERM; sleep 1000' &
      - echo $! >> {pids}
      - echo $$ >> {pids}
      - wait
""")
    ex = await _run(flow, tmp_path)
    assert ex.state is State.FAILED and "Timeout" in (ex.task_run("s").error or "")
    assert _exited(_pids(pids)) == []


async def test_a_dead_supervisor_fails_the_task_and_is_replaced(
    tmp_path: Path, fifo: tuple[Path, int]
) -> None:
    """If the supervisor process is killed, its running command dies with it (pdeathsig),
    the task run fails saying why, and the next shell task gets a new supervisor."""
    path, fd = fifo
    flow = load_flow_text(f"""
id: lost
tasks:
  - id: lost
    type: shell
    commands:
      - echo $$ > {path}
      - sleep 1000
""")
    async with Runtime.open(":memory:", files=tmp_path / "f", allow_types={"shell"}) as rt:
        handle = await rt.submit(flow)
        [shell] = await _read_fifo_async(fd)
        stat = Path(f"/proc/{shell}/stat").read_text()
        supervisor = int(stat.rsplit(")", 1)[1].split()[1])
        os.kill(supervisor, signal.SIGKILL)
        ex = await handle.wait(timeout=30)
        assert ex.state is State.FAILED
        assert "supervisor process went away" in (ex.task_run("lost").error or "")
        assert _exited([shell]) == []
        again = await rt.run(load_flow_text(SHELL_FLOW), timeout=30)
        assert again.state is State.SUCCESS


RUNTIME = """
import sys, anyio
from actorflow.flows import load_flow_text
from actorflow.runtime import Runtime

FLOW = '''
id: orphan
tasks:
  - id: hold
    type: shell
    commands:
      - sleep 1000 &
      - bg=$!
      - setsid sleep 1000 &
      - echo "$$ $bg $!" > {fifo}
      - wait
'''

async def main():
    async with Runtime.open(sys.argv[1], allow_types={{"shell"}}) as rt:
        await rt.submit(load_flow_text(FLOW))
        await anyio.sleep_forever()

anyio.run(main)
"""


def test_sigkilled_runtime_leaves_no_shell_running(tmp_path: Path, fifo: tuple[Path, int]) -> None:
    """SIGKILL of the runtime process ends its shell task, the shell's children (a setsid
    one too), and the supervisor process: recovery will not find an orphan beside it."""
    path, fd = fifo
    script = tmp_path / "runtime.py"
    script.write_text(textwrap.dedent(RUNTIME.format(fifo=path)))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "x.db")], cwd=ROOT)
    try:
        pids = _read_fifo(fd)
        stat = Path(f"/proc/{pids[0]}/stat").read_text()
        supervisor = int(stat.rsplit(")", 1)[1].split()[1])
        assert supervisor != proc.pid  # the shell is the supervisor's child
        assert _exited(pids, within=0.0) == pids  # all running before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _exited([*pids, supervisor]) == []


def test_leftovers_of_an_earlier_attempt_are_found_by_task_run(tmp_path: Path) -> None:
    """Processes carrying a task run's id (a runtime that died with its supervisor left them)
    are killed before that task run's next attempt, others are not."""
    theirs = subprocess.Popen(["sleep", "1000"], env={**os.environ, TASK_RUN_VAR: "tr-1"})
    other = subprocess.Popen(["sleep", "1000"], env={**os.environ, TASK_RUN_VAR: "tr-2"})
    try:
        assert kill_leftovers("tr-1") == [theirs.pid]
        assert theirs.wait(timeout=10) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for p in (theirs, other):
            p.kill()
            p.wait()


# -- output volume ----------------------------------------------------------------------------
VOLUME = """
import json, sys, anyio
from actorflow.flows import ShellCommands
from actorflow.runtime import Flow, Runtime

async def main():
    task = ShellCommands(id="loud", commands=(sys.argv[1],), log_lines=1000,
                         log_bytes=100_000, line_bytes=4096)
    async with Runtime.open(":memory:", allow_types={"shell"}) as rt:
        ex = await rt.run(Flow(id="loud", tasks=[task]), timeout=120)
        rows = await rt.logs(ex.id)
    print(json.dumps({"state": ex.state.value, "messages": [r.message for r in rows],
                      "stdout": len(ex.task_run("loud").outputs["stdout"])}))

anyio.run(main)
"""


def _limited(memory: int, cpu: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))


def test_output_volume_is_capped_and_linear(tmp_path: Path) -> None:
    """A million lines and a 30 MB line: stored rows stay under the task's caps (a last row
    says how much was left out), the long line is cut, and the runtime stays within 400 MB
    of address space and 30 CPU-seconds."""
    script = tmp_path / "volume.py"
    script.write_text(VOLUME)
    command = "seq 1000000; head -c 30000000 /dev/zero | tr '\\0' x; echo; echo tail"
    proc = subprocess.run(
        [sys.executable, str(script), command],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: _limited(400 << 20, 30),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["state"] == "SUCCESS"
    messages = result["messages"]
    stored = [line for m in messages[:-1] for line in m.split("\n")]
    assert stored[:3] == ["1", "2", "3"] and len(stored) == 1000
    assert sum(len(m) for m in messages[:-1]) <= 100_000
    assert len(messages) < 100  # lines read together share a row
    total_lines = 1_000_000 + 2  # seq's, the long one, "tail"
    assert messages[-1].startswith(f"... {total_lines - 1000} more lines (")
    assert messages[-1].endswith("not stored: over the task's log limit (1000 lines, 100000 bytes)")
    assert result["stdout"] == 1 << 20  # the output keeps its first MiB


def test_long_lines_are_cut_at_the_cap(tmp_path: Path) -> None:
    """A line longer than the line cap is stored cut (and marked), the next line whole."""
    script = tmp_path / "volume.py"
    script.write_text(VOLUME)
    command = "head -c 30000000 /dev/zero | tr '\\0' x; echo; echo tail >&2"
    proc = subprocess.run(
        [sys.executable, str(script), command],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: _limited(400 << 20, 30),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    messages = json.loads(proc.stdout)["messages"]
    assert messages == ["x" * 4096 + " [line cut]", "tail"]
