"""Running the real ``actorflow`` entry point in subprocesses, and reading its database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
_SCRIPT = Path(sys.executable).with_name("actorflow")
#: The installed console script when present (the real entry point), else ``python -m``.
ACTORFLOW = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "actorflow.cli._cli"]
MODULE = [sys.executable, "-m", "actorflow.cli._cli"]
TIMEOUT = 60


def env(**extra: str) -> dict[str, str]:
    """The environment of a CLI process: no inherited database, no forced colors."""
    out = {k: v for k, v in os.environ.items() if k not in ("ACTORFLOW_DB", "FORCE_COLOR")}
    out.update(extra)
    return out


def af(
    *args: str | Path, cwd: Path | None = None, code: int | None = 0, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``actorflow ARGS``; check the exit code unless ``code`` is None."""
    proc = subprocess.run(
        [*ACTORFLOW, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env(**extra),
        timeout=TIMEOUT,
    )
    if code is not None:
        assert proc.returncode == code, (
            f"actorflow {' '.join(map(str, args))} exited {proc.returncode}, expected {code}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def af_json(*args: str | Path, **kw: Any) -> Any:
    """Run a read command with ``--json`` and decode its output."""
    return json.loads(af(*args, "--json", **kw).stdout)


def start(*args: str | Path, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``actorflow ARGS`` in the background."""
    return subprocess.Popen(
        [*ACTORFLOW, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env(),
    )


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from the database another process writes (read-only connection)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []  # schema not created yet
    finally:
        conn.close()


def poll(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, str, str]:
    """Wait for a background CLI process; kill it (and fail) if it hangs."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"actorflow did not finish within {timeout}s\n{out}\n{err}")
    return proc.returncode, out, err
