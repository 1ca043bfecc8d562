"""Every flow of ``examples/`` runs through the ``actorflow`` command with the expected result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _support.cli import EXAMPLES, af, af_json, finish, poll, query, start


def _runs(tree: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for tr in tree["task_runs"]:
        out.setdefault(tr["task_id"], []).append(tr)
    return out


def check_hello(tree: dict[str, Any], db: Path) -> None:
    assert tree["state"] == "SUCCESS"
    assert _runs(tree)["greeting"][0]["outputs"] == {"value": "Hello, world"}


def check_kestra_style(tree: dict[str, Any], db: Path) -> None:
    assert tree["state"] == "SUCCESS"
    runs = _runs(tree)
    assert runs["upper"][0]["outputs"] == {"value": "RICK ASTLEY"}
    assert "long-name" in runs and "short-name" not in runs
    assert runs["never"][0]["state"] == "SUCCESS"


def check_retries_and_errors(tree: dict[str, Any], db: Path) -> None:
    assert tree["state"] == "WARNING"
    runs = _runs(tree)
    assert [a["state"] for a in runs["flaky"][0]["attempts"]] == ["FAILED", "FAILED", "SUCCESS"]
    assert runs["optional"][0]["state"] == "WARNING"
    assert runs["breaks"][0]["state"] == "FAILED" and len(runs["breaks"][0]["attempts"]) == 1
    assert runs["report"][0]["state"] == "SUCCESS"
    assert runs["guarded"][0]["state"] == "WARNING"
    assert runs["cleanup"][0]["state"] == "SUCCESS"


def check_loops_and_dag(tree: dict[str, Any], db: Path) -> None:
    assert tree["state"] == "SUCCESS"
    runs = _runs(tree)
    regions = {tr["value"]: tr["outputs"]["values"] for tr in runs["region"]}
    assert regions == {v: {"region": v, "upper": v.upper()} for v in ("eu", "us", "asia")}
    assert "quick" in runs and "careful" not in runs
    assert runs["transform"][0]["outputs"] == {"value": 42}
    load_start = runs["load"][0]["history"][0][1]
    assert all(runs[t][0]["history"][-1][1] <= load_start for t in ("transform", "audit"))


def check_approval(tree: dict[str, Any], db: Path) -> None:
    assert tree["state"] == "SUCCESS"
    runs = _runs(tree)
    given = {"approved": True, "comment": "ship it"}
    assert runs["approve"][0]["outputs"] == {**given, "onResume": given}
    child = runs["run-hello"][0]["child_execution_id"]
    hello = af_json("show", child, "--db", db)
    assert hello["state"] == "SUCCESS" and hello["parent_execution_id"] == tree["id"]
    assert _runs(hello)["greeting"][0]["outputs"] == {"value": "Hello, approver (ship it)"}


CHECKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "hello": check_hello,
    "kestra_style": check_kestra_style,
    "retries_and_errors": check_retries_and_errors,
    "loops_and_dag": check_loops_and_dag,
    "approval": check_approval,
}
FLOWS = sorted(EXAMPLES.glob("*.yaml"))


def test_every_example_is_checked() -> None:
    """At least five example flows, and each one has a check below."""
    assert len(FLOWS) >= 5
    assert {p.stem for p in FLOWS} == set(CHECKS)


@pytest.mark.parametrize("flow", FLOWS, ids=[p.stem for p in FLOWS])
def test_example_runs(flow: Path, tmp_path: Path) -> None:
    """The example runs to its expected outcome; the approval one is resumed from a second
    process through the database."""
    db = tmp_path / "x.db"
    if flow.stem == "approval":
        runner = start("run", flow, "--db", db)
        try:
            [(ex_id,)] = poll(
                "the execution to pause",
                lambda: query(db, "SELECT id FROM executions WHERE state = 'PAUSED'"),
            )
            proc = af(
                "resume", ex_id, "--input", "approved=true", "--input", "comment=ship it",
                "--db", db,
            )  # fmt: skip
            assert "resume: applied; execution" in proc.stdout
            code, out, err = finish(runner)
        finally:
            if runner.poll() is None:
                runner.kill()
        assert code == 0, out + err
        assert "⏸ approve PAUSED" in out and "examples.hello > greet" in out
    else:
        # The retries example has a shell task (allowing it changes nothing for the rest).
        af("run", flow, "--allow", "shell", "--db", db)
    [ex] = [e for e in af_json("executions", "--db", db) if e["parent_execution_id"] is None]
    CHECKS[flow.stem](af_json("show", ex["id"], "--db", db), db)
