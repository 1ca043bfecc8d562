"""The ``actorflow`` command through its real entry point, in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _support.cli import (
    EXAMPLES,
    MODULE,
    ROOT,
    af,
    af_json,
    env,
    finish,
    poll,
    query,
    start,
)

LONG = """
id: long
inputs:
  - id: marker
    type: string
tasks:
  - id: nap
    type: shell
    commands:
      - test -f "{{ inputs.marker }}" || sleep 120
  - id: after
    type: sleep
    duration: 0.6
"""

FAILING = """
id: failing
inputs:
  - id: marker
    type: string
tasks:
  - id: first
    type: return
    value: one
  - id: check
    type: shell
    commands:
      - test -f "{{ inputs.marker }}"
  - id: last
    type: log
    message: "after {{ outputs.first.value }}"
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_run_shows_progress_stores_and_show_reads_it(tmp_path: Path) -> None:
    """run prints task runs as they start and finish, without colors when piped; show and
    executions read the stored tree back from the database."""
    db = tmp_path / "x.db"
    out = af("run", EXAMPLES / "hello.yaml", "--input", "name=Ada", "--db", db).stdout
    assert "▶ greet RUNNING" in out and "✔ greet SUCCESS" in out
    assert "SUCCESS" in out.splitlines()[-1]
    assert "\x1b[" not in out
    [ex] = af_json("executions", "--db", db)
    assert ex["flow_id"] == "hello" and ex["state"] == "SUCCESS"
    tree = af_json("show", ex["id"], "--db", db)
    runs = {tr["task_id"]: tr for tr in tree["task_runs"]}
    assert runs["greeting"]["outputs"] == {"value": "Hello, Ada"}
    assert runs["greet"]["attempts"][0]["state"] == "SUCCESS"
    text = af("show", ex["id"], "--db", db).stdout
    assert "greeting  SUCCESS" in text and 'outputs {"value": "Hello, Ada"}' in text


def test_failed_execution_exits_nonzero(tmp_path: Path) -> None:
    """A FAILED execution makes run exit 1, and the error is shown."""
    flow = _write(tmp_path, "f.yaml", "id: f\ntasks:\n  - {id: boom, type: fail, message: kaput}\n")
    proc = af("run", flow, "--db", tmp_path / "x.db", code=1)
    assert "✘ boom FAILED" in proc.stdout and "kaput" in proc.stdout


def test_invalid_flow_and_inputs_exit_2(tmp_path: Path) -> None:
    """Validation problems go to stderr with file and line (exit 2); an undeclared input is
    ignored with a warning (as Kestra ignores it)."""
    golden = ROOT / "tests/flows/golden/05_unknown_keys.yaml"
    proc = af("run", golden.relative_to(ROOT), "--db", tmp_path / "x.db", cwd=ROOT, code=2)
    expected = (golden.with_suffix(".txt")).read_text().splitlines()[1:]
    assert [line.strip() for line in proc.stderr.splitlines()[1:]] == [e.strip() for e in expected]
    proc = af("validate", golden.relative_to(ROOT), "--json", cwd=ROOT, code=2)
    [result] = json.loads(proc.stdout)
    assert result["valid"] is False
    assert {p["line"] for p in result["problems"]} == {2, 6, 8}
    proc = af("run", EXAMPLES / "hello.yaml", "--input", "nope=1", "--db", tmp_path / "x.db")
    assert "input 'nope' is not declared by the flow; ignored" in proc.stderr
    af("validate", *sorted(EXAMPLES.glob("*.yaml")))


def test_default_database_location(tmp_path: Path) -> None:
    """Without --db the database is actorflow.db in the current directory, or $ACTORFLOW_DB."""
    af("run", EXAMPLES / "hello.yaml", cwd=tmp_path)
    assert (tmp_path / "actorflow.db").exists()
    other = tmp_path / "elsewhere.db"
    af("run", EXAMPLES / "hello.yaml", cwd=tmp_path, ACTORFLOW_DB=str(other))
    assert len(af_json("executions", cwd=tmp_path, ACTORFLOW_DB=str(other))) == 1
    assert len(af_json("executions", cwd=tmp_path)) == 1


def test_timeline_logs_and_filters(tmp_path: Path) -> None:
    """timeline draws every task run and attempt; logs filter by task; executions by state."""
    db = tmp_path / "x.db"
    af("run", EXAMPLES / "retries_and_errors.yaml", "--allow", "shell", "--db", db)
    [ex] = af_json("executions", "--db", db, "--state", "WARNING")
    assert af_json("executions", "--db", db, "--state", "FAILED,KILLED") == []
    chart = af("timeline", ex["id"], "--db", db, "--width", "80").stdout
    for task_id in ("flaky", "optional", "guarded", "breaks", "report", "cleanup"):
        assert task_id in chart
    flaky_line = next(line for line in chart.splitlines() if line.startswith("flaky"))
    assert flaky_line.count("█") >= 3
    rows = af_json("timeline", ex["id"], "--db", db)["rows"]
    flaky = next(r for r in rows if r["task_id"] == "flaky")
    assert [a["state"] for a in flaky["attempts"]] == ["FAILED", "FAILED", "SUCCESS"]
    assert all(a["start"] >= flaky["start"] for a in flaky["attempts"])
    logs = af("logs", ex["id"], "--db", db, "--task", "flaky").stdout
    assert [line.split()[-1] for line in logs.splitlines() if "attempt" in line] == ["1", "2", "3"]
    assert "cleanup" not in logs
    lines = af_json("logs", ex["id"], "--db", db, "--task", "report")
    assert [entry["message"] for entry in lines] == ["handling the failure of report"]
    assert lines[0]["level"] == "WARNING"


def test_kill_from_a_second_process(tmp_path: Path) -> None:
    """A kill issued by another process reaches the running one through the database; a
    later restart in a third process is not hit by that old kill."""
    db = tmp_path / "x.db"
    marker = tmp_path / "marker"
    flow = _write(tmp_path, "long.yaml", LONG)
    runner = start("run", flow, "--input", f"marker={marker}", "--allow", "shell", "--db", db)
    try:
        [(ex_id,)] = poll(
            "the sleep task to run",
            lambda: query(db, "SELECT execution_id FROM task_runs WHERE state = 'RUNNING'"),
        )
        proc = af("kill", ex_id, "--db", db)
        assert "is now KILLED" in proc.stdout
        code, out, _ = finish(runner)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert code == 1 and "✘ nap KILLED" in out and "▶ after" not in out
    assert query(db, "SELECT state FROM executions WHERE id = ?", ex_id) == [("KILLED",)]
    # How fast it lands is measured by benchmarks/commands.py, not asserted here.
    marker.write_text("")
    # `after` outlives a few command polls of the restarting process.
    out = af("restart", ex_id, "--allow", "shell", "--db", db).stdout
    assert "✔ nap SUCCESS" in out and "✔ after SUCCESS" in out


def test_restart_and_replay(tmp_path: Path) -> None:
    """restart re-runs the failed task of the same execution; replay makes a linked one."""
    db = tmp_path / "x.db"
    marker = tmp_path / "marker"
    flow = _write(tmp_path, "failing.yaml", FAILING)
    af("run", flow, "--input", f"marker={marker}", "--allow", "shell", "--db", db, code=1)
    [ex] = af_json("executions", "--db", db)
    marker.write_text("now it exists")
    out = af("restart", ex["id"], "--allow", "shell", "--db", db).stdout
    assert "✔ check SUCCESS" in out and "first" not in out.split("check")[0].split("\n", 1)[1]
    tree = af_json("show", ex["id"], "--db", db)
    assert tree["state"] == "SUCCESS"
    assert [a["state"] for a in next(t for t in tree["task_runs"] if t["task_id"] == "check")
            ["attempts"]] == ["FAILED", "SUCCESS"]  # fmt: skip
    af("replay", ex["id"], "--from", "last", "--allow", "shell", "--db", db)
    replays = [e for e in af_json("executions", "--db", db) if e["id"] != ex["id"]]
    assert [e["original_execution_id"] for e in replays] == [ex["id"]]
    assert af("replay", ex["id"], "--from", "nowhere", "--db", db, code=1).stderr


def test_detach_and_purge(tmp_path: Path) -> None:
    """run --detach prints the id at once and the execution finishes in the background;
    purge deletes ended executions older than the given age."""
    db = tmp_path / "x.db"
    ex_id = af("run", EXAMPLES / "hello.yaml", "--detach", "--db", db).stdout.strip()
    poll(
        "the detached execution to succeed",
        lambda: query(db, "SELECT 1 FROM executions WHERE id = ? AND state = 'SUCCESS'", ex_id),
    )
    assert af("purge", "--older-than", "30d", "--db", db).stdout.startswith("purged 0")
    assert af_json("purge", "--older-than", "0s", "--db", db) == {"deleted": [ex_id]}
    assert af_json("executions", "--db", db) == []
    assert "--older-than" in af("purge", "--older-than", "soon", "--db", db, code=2).stderr


def test_errors_are_reported(tmp_path: Path) -> None:
    """Unknown ids and missing databases are clear errors, not tracebacks."""
    db = tmp_path / "x.db"
    proc = af("show", "nope", "--db", db, code=1)
    assert "no database" in proc.stderr and "Traceback" not in proc.stderr
    af("run", EXAMPLES / "hello.yaml", "--db", db)
    proc = af("timeline", "nope", "--db", db, code=1)
    assert "no execution with id 'nope'" in proc.stderr
    proc = af("resume", af_json("executions", "--db", db)[0]["id"], "--db", db, code=1)
    assert "already SUCCESS" in proc.stderr


def test_module_entry_point_and_schema() -> None:
    """``python -m actorflow.cli._cli`` works too; schema prints the JSON Schema."""
    proc = subprocess.run(
        [*MODULE, "schema"], capture_output=True, text=True, env=env(), timeout=60, check=True
    )
    schema = json.loads(proc.stdout)
    assert "Task" in schema["$defs"] and schema["$ref"] == "#/$defs/FlowSpec"
    assert sys.executable  # the module form ran with this interpreter
