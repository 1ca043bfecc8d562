"""`actorflow run` of a flow with subflows: only the files it needs are read, a hostile or
broken neighbour never stops the run with a traceback."""

from __future__ import annotations

from pathlib import Path

from _support.cli import af, af_json

MAIN = """
id: main
tasks:
  - id: call
    type: subflow
    flow_id: child
"""
CHILD = "id: child\ntasks:\n  - {id: hi, type: log, message: hello from child}\n"


def _hostile_neighbours(d: Path) -> None:
    laughs = "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 10)}]\n" for i in range(12)
    )
    (d / "laughs.yaml").write_text("id: laughs\n" + laughs + "tasks: *l11\n")
    (d / "recursive.yaml").write_text("id: recursive\ntasks: &x [*x]\n")
    (d / "broken.yaml").write_text("id: broken\ntasks: [unclosed\n")
    (d / "huge.yaml").write_text("id: huge\n" + "#" * (20 << 20) + "\n")


def test_run_ignores_neighbours_it_does_not_need(tmp_path: Path) -> None:
    """The subflow runs; hostile files beside it are neither parsed nor reported."""
    (tmp_path / "main.yaml").write_text(MAIN)
    (tmp_path / "child.yaml").write_text(CHILD)
    _hostile_neighbours(tmp_path)
    db = tmp_path / "x.db"
    proc = af("run", tmp_path / "main.yaml", "--db", db)
    assert "Traceback" not in proc.stderr
    assert "warning" not in proc.stderr
    rows = af_json("executions", "--db", db)
    assert sorted((r["flow_id"], r["state"]) for r in rows) == [
        ("child", "SUCCESS"),
        ("main", "SUCCESS"),
    ]


def test_a_broken_subflow_file_is_a_warning_and_a_failed_task(tmp_path: Path) -> None:
    """The needed file does not load: a warning names it, the subflow task run fails."""
    (tmp_path / "main.yaml").write_text(MAIN)
    (tmp_path / "child.yaml").write_text("id: child\ntasks: [{id: x}]\n")
    _hostile_neighbours(tmp_path)
    proc = af("run", tmp_path / "main.yaml", "--db", tmp_path / "x.db", code=1)
    assert "Traceback" not in proc.stderr
    assert "warning: skipped a subflow candidate" in proc.stderr
    assert "child.yaml" in proc.stderr
    assert "subflow default.child is not registered" in proc.stdout + proc.stderr
