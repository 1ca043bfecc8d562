"""Ctrl-C on a running CLI: the first closes the runtime gracefully, the second interrupts the
running attempts at once; the next start resumes them."""

from __future__ import annotations

import re
import signal
import urllib.request
from pathlib import Path

import anyio
import pytest

import actorflow as af
from _support.cli import finish, poll, query, start

pytestmark = pytest.mark.anyio

SLOW = """\
id: slow
namespace: cli
tasks:
  - id: nap
    type: sleep
    duration: 3600
"""


def _running(db: Path) -> bool:
    return bool(query(db, "SELECT 1 FROM task_runs WHERE task_id = 'nap' AND state = 'RUNNING'"))


async def test_a_second_ctrl_c_interrupts_running_tasks_and_exits_130(tmp_path: Path) -> None:
    """With a grace of an hour, the first SIGINT starts the graceful close (said on stderr) and
    the second interrupts the hour-long attempt at once: exit 130; the next runtime records
    that attempt FAILED 'interrupted' and starts a new one."""
    flow = tmp_path / "slow.yaml"
    flow.write_text(SLOW)
    db = tmp_path / "i.db"
    proc = start("run", flow, "--db", db, "--shutdown-timeout", "3600")
    poll("the attempt to run", lambda: _running(db))
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # written once the first signal was handled
    assert "stopping" in line and "3600s" in line and "Ctrl-C again" in line, line
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=60)  # never the hour: the second one cut the grace
    assert code == 130, err
    assert "interrupting running tasks" in err
    (execution_id,) = [r[0] for r in query(db, "SELECT id FROM executions")]
    async with af.Runtime.open(db, shutdown_timeout=0) as rt:
        with anyio.fail_after(30):  # the recovered task run records it, then runs attempt 2
            while len((tr := (await rt.get(execution_id)).task_run("nap")).attempts) < 2:
                await anyio.wait_all_tasks_blocked()
        assert tr.attempts[0].state is af.State.FAILED
        assert tr.attempts[0].error == "interrupted"
        await rt.kill(execution_id)


def test_one_ctrl_c_closes_gracefully_within_the_grace(tmp_path: Path) -> None:
    """A single SIGINT with a zero grace ends the command with 130 and the runtime closed
    (no second signal needed); the execution stays unfinished for the next start."""
    flow = tmp_path / "slow.yaml"
    flow.write_text(SLOW)
    db = tmp_path / "g.db"
    proc = start("run", flow, "--db", db, "--shutdown-timeout", "0")
    poll("the attempt to run", lambda: _running(db))
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=60)
    assert code == 130, err
    assert "stopping" in err and "Traceback" not in err
    assert [r[0] for r in query(db, "SELECT state FROM executions")] == ["RUNNING"]


def test_a_second_signal_stops_a_server_with_running_tasks_at_once(tmp_path: Path) -> None:
    """The server's first SIGTERM starts its graceful stop (said on stderr), the second
    interrupts the running attempt without waiting the hour of grace; it exits 0."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "slow.yaml").write_text(SLOW)
    db = tmp_path / "s.db"
    proc = start("server", "--db", db, "--flows", flows, "--port", "0",
                 "--shutdown-timeout", "3600")  # fmt: skip
    assert proc.stderr is not None
    found = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stderr.readline())
    assert found
    url = f"http://127.0.0.1:{found.group(1)}/api/v1/executions/cli/slow"
    req = urllib.request.Request(url, data=b"{}", method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status < 300
    poll("the attempt to run", lambda: _running(db))
    proc.send_signal(signal.SIGTERM)
    line = proc.stderr.readline()
    assert "stopping" in line and "3600s" in line, line
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc, timeout=60)
    assert code == 0, err
    assert "interrupting running tasks" in err


PAIR = """\
id: pair
namespace: cli
tasks:
  - id: both
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - id: nap
        type: sleep
        duration: 3600
      - id: doze
        type: sleep
        duration: 3600
"""


async def test_sigterm_records_the_running_attempts_before_letting_go(tmp_path: Path) -> None:
    """A SIGTERM to ``actorflow run`` with two attempts running closes the runtime (exit 143):
    right after, the store shows both attempts FAILED "interrupted" and the execution RUNNING
    with no owner or lease; the next runtime starts attempt 2 of each, recording nothing twice."""
    flow = tmp_path / "pair.yaml"
    flow.write_text(PAIR)
    db = tmp_path / "t.db"
    proc = start("run", flow, "--db", db, "--shutdown-timeout", "1")
    both = "SELECT count(*) FROM attempts WHERE state = 'RUNNING'"
    try:
        poll("both attempts to run", lambda: query(db, both) == [(2,)])
    finally:
        proc.send_signal(signal.SIGTERM)  # a failed wait leaves no process behind either
    code, _, err = finish(proc, timeout=60)
    assert code == 143, err
    assert query(db, "SELECT state, error, end IS NOT NULL FROM attempts ORDER BY task_run_id") == [
        ("FAILED", "interrupted", 1),
        ("FAILED", "interrupted", 1),
    ]
    assert query(db, "SELECT state, owner, lease_expiry FROM executions") == [
        ("RUNNING", None, None)
    ]
    (execution_id,) = [r[0] for r in query(db, "SELECT id FROM executions")]
    async with af.Runtime.open(db, shutdown_timeout=0) as rt:
        with anyio.fail_after(30):
            while True:
                ex = await rt.get(execution_id)
                runs = [ex.task_run("nap"), ex.task_run("doze")]
                if all(len(tr.attempts) == 2 for tr in runs):
                    break
                await anyio.wait_all_tasks_blocked()
        for tr in runs:
            assert [(a.number, a.state, a.error) for a in tr.attempts] == [
                (1, af.State.FAILED, "interrupted"),
                (2, af.State.RUNNING, None),
            ]
        await rt.kill(execution_id)
