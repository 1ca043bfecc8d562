"""Small things a user hits: --version, validate DIR, pipes, purge --dry-run, JSON dates, the
README's Python snippet as a script, public names in failure messages, no leftover temp dirs."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import actorflow
from _support.cli import ACTORFLOW, EXAMPLES, ROOT, af, af_json, env


def test_version_is_the_package_version() -> None:
    """`actorflow --version` and actorflow.__version__ say the installed version."""
    out = af("--version").stdout.strip()
    assert out == f"actorflow {actorflow.__version__}" and actorflow.__version__[0].isdigit()


def test_validate_a_directory_checks_every_flow_under_it(tmp_path: Path) -> None:
    """validate DIR validates each flow file below DIR (exit 2 if one is invalid)."""
    results = af_json("validate", EXAMPLES)
    assert {Path(r["file"]).name for r in results} >= {"hello.yaml", "approval.yaml"}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.yaml").write_text("id: bad\n")
    proc = af("validate", tmp_path, code=2)
    assert "bad.yaml" in proc.stderr and "missing required key 'tasks'" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no flow files" in af("validate", empty, code=2).stderr


def test_a_closed_pipe_is_no_traceback() -> None:
    """`validate --json | head -1` ends quietly: no BrokenPipeError traceback."""
    cmd = " ".join([*map(str, ACTORFLOW), "validate", str(EXAMPLES), "--json", "|", "head", "-1"])
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True,
                          text=True, env=env(), timeout=60)  # fmt: skip
    assert proc.stdout.strip() == "[" and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0


def test_purge_dry_run_deletes_nothing(tmp_path: Path) -> None:
    """purge --dry-run lists what it would delete; the executions are still there after."""
    db = tmp_path / "p.db"
    run = af_json("run", EXAMPLES / "hello.yaml", "--db", db, "-i", "name=x")
    would = af_json("purge", "--older-than", "0s", "--dry-run", "--db", db)
    assert would == {"would_delete": [run["id"]]}
    assert [e["id"] for e in af_json("executions", "--db", db)] == [run["id"]]
    assert af_json("purge", "--older-than", "0s", "--db", db) == {"deleted": [run["id"]]}


def test_json_dates_have_their_iso_form_beside_them(tmp_path: Path) -> None:
    """Every epoch date in JSON output has a `<key>_iso` ISO-8601 UTC twin."""
    db = tmp_path / "j.db"
    run = af_json("run", EXAMPLES / "hello.yaml", "--db", db, "-i", "name=x")
    shown = af_json("show", run["id"], "--db", db)
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert len(shown["history_iso"]) == len(shown["history"])
    attempt = shown["task_runs"][0]["attempts"][0]
    for iso, epoch in ((shown["history_iso"][0], shown["history"][0][1]),
                       (attempt["start_iso"], attempt["start"])):  # fmt: skip
        assert re.fullmatch(pattern, iso)
        parsed = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
        assert abs(parsed.timestamp() - epoch) < 0.001


def test_the_readme_python_snippets_run_as_scripts(tmp_path: Path) -> None:
    """Each Python example of the README, saved as a file and run, succeeds (the first prints
    a SUCCESS; the testing example's asserts hold)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for i, code in enumerate(blocks):
        script = tmp_path / f"snippet{i}.py"
        script.write_text(code)
        proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, f"snippet {i}:\n{code}\n{proc.stderr}"
        if i == 0:
            assert proc.stdout.startswith("SUCCESS")


def test_failures_name_public_classes(tmp_path: Path) -> None:
    """A failed task's error and log line name actorflow's public classes, not private
    modules."""
    flow = tmp_path / "f.yaml"
    flow.write_text("id: f\ntasks:\n  - id: boom\n    type: fail\n    message: nope\n")
    run = af_json("run", flow, "--db", tmp_path / "f.db", code=1)
    logs = af("logs", run["id"], "--db", tmp_path / "f.db").stdout
    assert "actorflow.runtime.TaskFailure" in logs and "._tasks" not in logs
    flow.write_text("id: g\ntasks:\n  - id: t\n    type: log\n    message: '{{ nope.x }}'\n")
    run = af_json("run", flow, "--db", tmp_path / "f.db", code=1)
    logs = af("logs", run["id"], "--db", tmp_path / "f.db").stdout
    assert "actorflow.TemplateError" in logs and "._errors" not in logs + json.dumps(run)


@pytest.mark.anyio
async def test_an_in_memory_runtime_leaves_no_temporary_folder() -> None:
    """Opening and closing ':memory:' runtimes leaves no actorflow-files-* folder behind."""
    before = set(Path(tempfile.gettempdir()).glob("actorflow-files-*"))
    for _ in range(3):
        async with actorflow.Runtime.open(":memory:") as rt:
            await rt.run(actorflow.Flow(id="x", tasks=[actorflow.Log(id="l", message="m")]))
    assert set(Path(tempfile.gettempdir()).glob("actorflow-files-*")) <= before


def test_read_commands_write_nothing(tmp_path: Path) -> None:
    """executions, show, timeline, logs and flows leave the database's bytes as they were
    and register no owner."""
    import hashlib
    import sqlite3

    db = tmp_path / "r.db"
    run = af_json("run", EXAMPLES / "hello.yaml", "--db", db, "-i", "name=x")
    af("flow", "deploy", EXAMPLES / "hello.yaml", "--db", db)

    def state() -> tuple[str, list[str]]:
        digest = hashlib.sha256()
        for f in sorted(tmp_path.glob("r.db*")):
            if f.is_file():
                digest.update(f.name.encode() + f.read_bytes())
        names = sorted(p.name for p in tmp_path.iterdir())
        return digest.hexdigest(), names

    before = state()
    for cmd in (["executions"], ["show", run["id"]], ["timeline", run["id"]],
                ["logs", run["id"]], ["flows"], ["flow", "show", "examples.hello"]):  # fmt: skip
        af(*cmd, "--db", db)
    assert state() == before
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM owners").fetchone() == (0,)
    finally:
        conn.close()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_bad_shutdown_timeout_is_a_usage_error(tmp_path: Path, value: str) -> None:
    """--shutdown-timeout refuses negative, NaN, infinite and non-numbers with exit 2, no
    traceback."""
    proc = af("run", EXAMPLES / "hello.yaml", "--db", tmp_path / "x.db",
              f"--shutdown-timeout={value}", code=2)  # fmt: skip
    assert "--shutdown-timeout" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.db").exists()
