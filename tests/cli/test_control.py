"""kill, pause, resume and restart from another process: each gets the owner's answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _support.cli import af, af_json, env, finish, poll, query, start

GATES = """
id: gates
tasks:
  - id: first
    type: pause
  - id: second
    type: pause
  - id: done
    type: log
    message: done
"""

APPROVAL = """
id: approval
tasks:
  - id: approve
    type: pause
    on_resume:
      - id: approved
        type: bool
  - id: after
    type: log
    message: "approved: {{ outputs.approve.approved }}"
"""

ONCE = """
id: once
inputs:
  - id: marker
    type: string
  - id: count
    type: string
tasks:
  - id: effect
    type: shell
    commands:
      - echo ran >> "{{ inputs.count }}"
      - test -f "{{ inputs.marker }}"
"""


# `actorflow ARGS` once GO exists: both restarts are started (imports done) before either
# begins, so they race for the execution instead of running one after the other.
_AT_ONCE = """
import os, sys, time
from actorflow.cli._cli import main
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
sys.exit(main(sys.argv[2:]))
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _paused(db: Path, task_id: str) -> list[tuple[object, ...]]:
    return query(
        db, "SELECT execution_id FROM task_runs WHERE task_id = ? AND state = 'PAUSED'", task_id
    )


def test_resume_of_an_execution_that_moves_on_to_its_next_pause_says_applied(
    tmp_path: Path,
) -> None:
    """A resume applied by the runner is reported applied, although the execution is paused
    again (at its next Pause) moments later; the second resume finishes it."""
    db = tmp_path / "x.db"
    runner = start("run", _write(tmp_path, "gates.yaml", GATES), "--db", db)
    try:
        [(ex_id,)] = poll("the first pause", lambda: _paused(db, "first"))
        proc = af("resume", ex_id, "--db", db)
        assert proc.stdout.startswith("resume: applied; execution"), proc.stdout
        poll("the second pause", lambda: _paused(db, "second"))
        out = af_json("resume", ex_id, "--db", db)
        assert out["applied"] is True and out["id"] == ex_id
        code, stdout, _ = finish(runner)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert code == 0 and "✔ done SUCCESS" in stdout
    rows = query(db, "SELECT kind, status FROM commands ORDER BY id")
    assert rows == [("resume", "applied"), ("resume", "applied")]


def test_a_bad_resume_input_gets_the_runners_validation_error(tmp_path: Path) -> None:
    """A resume missing a required input is refused by the runner with the validation error,
    shown by the sender on one line (exit 2, as for any invalid input); a correct one then
    goes through."""
    db = tmp_path / "x.db"
    runner = start("run", _write(tmp_path, "approval.yaml", APPROVAL), "--db", db)
    try:
        [(ex_id,)] = poll("the pause", lambda: _paused(db, "approve"))
        proc = af("resume", ex_id, "--db", db, code=2)
        assert "resume:" in proc.stderr and "approved" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "no running process" not in proc.stderr and "Traceback" not in proc.stderr
        out = json.loads(af("resume", ex_id, "--input", "wrong=1", "--json", "--db", db, code=2)
                         .stdout)  # fmt: skip
        assert out["applied"] is False and "wrong" in out["error"] and out["state"] == "PAUSED"
        assert out["error_class"] == "InputError"
        af("resume", ex_id, "--input", "approved=true", "--db", db)
        code, stdout, _ = finish(runner)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert code == 0 and "✔ after SUCCESS" in stdout
    statuses = [s for (s,) in query(db, "SELECT status FROM commands ORDER BY id")]
    assert statuses == ["rejected", "rejected", "applied"]


def test_kill_of_a_finished_execution_says_it_was_already_terminal(tmp_path: Path) -> None:
    """kill of an execution that already ended says so, with its state, and exits 1."""
    db = tmp_path / "x.db"
    flow = _write(tmp_path, "f.yaml", "id: f\ntasks:\n  - {id: a, type: log, message: hi}\n")
    ex_id = json.loads(af("run", flow, "--json", "--db", db).stdout)["id"]
    proc = af("kill", ex_id, "--db", db, code=1)
    assert f"kill: execution {ex_id} is already SUCCESS" in proc.stderr
    out = json.loads(af("kill", ex_id, "--json", "--db", db, code=1).stdout)
    assert out == {
        "id": ex_id, "command": "kill", "applied": False, "state": "SUCCESS",
        "error": f"execution {ex_id} is already SUCCESS", "error_class": "IllegalOperation",
    }  # fmt: skip


def test_two_concurrent_restarts_exactly_one_wins(tmp_path: Path) -> None:
    """Two `actorflow restart ID` at once, ten times: each time exactly one restarts the
    execution, the other exits 1 with a clear error, and the failed task runs again once."""
    db = tmp_path / "x.db"
    flow = _write(tmp_path, "once.yaml", ONCE)
    af("validate", flow)
    rounds = range(10)
    files = [(tmp_path / f"marker{i}", tmp_path / f"count{i}") for i in rounds]
    # The failed executions are made in parallel (ten runners at once): only the restarts
    # need to be one pair at a time.
    runners = [start("run", flow, "--allow", "shell", "-i", f"marker={m}", "-i", f"count={c}", "--json", "--db", db)
               for m, c in files]  # fmt: skip
    ids = []
    for runner in runners:
        code, out, err = finish(runner, timeout=120)
        assert code == 1, err
        ids.append(json.loads(out)["id"])
    for i, ex_id in enumerate(ids):
        marker, count = files[i]
        marker.write_text("")
        go = tmp_path / f"go{i}"
        argv = [
            sys.executable,
            "-c",
            _AT_ONCE,
            str(go),
            "restart",
            ex_id,
            "--allow",
            "shell",
            "--db",
            str(db),
        ]
        both = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env()) for _ in range(2)]  # fmt: skip
        try:
            for p in both:
                assert p.stdout is not None and p.stdout.readline() == "ready\n"
            go.write_text("")
            results = [finish(p, timeout=60) for p in both]
        finally:
            for p in both:
                if p.poll() is None:
                    p.kill()
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 1], f"round {i}: {results}"
        [loser_err] = [err for code, _, err in results if code == 1]
        assert "restart" in loser_err and "Traceback" not in loser_err, loser_err
        assert count.read_text().splitlines() == ["ran", "ran"], f"round {i}"
        [(state,)] = query(db, "SELECT state FROM executions WHERE id = ?", ex_id)
        assert state == "SUCCESS"


def test_a_command_for_a_dead_runner_exits_3_saying_why(tmp_path: Path) -> None:
    """kill of an execution whose `run` process was SIGKILLed prints one line saying its
    process died and the command stays pending, and exits 3."""
    db = tmp_path / "x.db"
    runner = start("run", _write(tmp_path, "gates.yaml", GATES), "--db", db)
    try:
        [(ex_id,)] = poll("the first pause", lambda: _paused(db, "first"))
    finally:
        runner.kill()
        runner.wait()
    proc = af("kill", ex_id, "--db", db, code=3)
    [line] = proc.stderr.strip().splitlines()
    assert "the process died" in line and "stays pending" in line, line
    out = json.loads(af("kill", ex_id, "--json", "--db", db, code=3).stdout)
    assert out["applied"] is False and out["error_class"] == "CommandNotAnswered"
