"""A missing browser fails the browser tests under CI and skips them elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _run_pages(ci: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": ci, "ACTORFLOW_CHROMIUM": "/nonexistent/chromium"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "kill",
         str(HERE / "test_pages.py")],
        capture_output=True, text=True, env=env, cwd=HERE.parents[1], timeout=120,
    )  # fmt: skip


def test_with_ci_true_a_missing_chromium_fails() -> None:
    """Under CI=true the browser tests fail, naming the missing chromium, instead of skipping."""
    proc = _run_pages("true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "/nonexistent/chromium is missing" in proc.stdout


def test_elsewhere_a_missing_chromium_skips() -> None:
    """Without CI the browser tests are skipped with the reason, and the run passes."""
    proc = _run_pages("")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SKIPPED [1]" in proc.stdout and "/nonexistent/chromium is missing" in proc.stdout
