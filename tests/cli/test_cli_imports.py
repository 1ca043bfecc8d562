"""Read-only commands start light: they never import the flow language."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import actorflow as af

_PROBE = """
import sys
from actorflow.cli import main
code = main(sys.argv[1:])
print(sorted(m for m in ("actorflow.flows", "yaml") if m in sys.modules))
sys.exit(code)
"""


def _modules_after(*argv: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True
    )
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "x.db")

    async def one() -> None:
        async with af.Runtime.open(path) as rt:
            await rt.run(af.Flow(id="f", namespace="n", tasks=[af.Log(id="t", message="hi")]))

    anyio.run(one)
    return path


def test_reads_do_not_import_the_flow_language(db: str) -> None:
    """`executions`, `flows` and `--version` load neither actorflow.flows nor PyYAML."""
    assert _modules_after("executions", "--db", db) == "[]"
    assert _modules_after("flows", "--db", db) == "[]"
    out = subprocess.run(
        [sys.executable, "-m", "actorflow.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == f"actorflow {af.__version__}"


def test_commands_that_run_flows_still_load_it(db: str, tmp_path: Path) -> None:
    """`validate` loads the flow language (and with it the loader of stored sources)."""
    flow = tmp_path / "f.yaml"
    flow.write_text("id: f\nnamespace: n\ntasks:\n  - id: t\n    type: log\n    message: hi\n")
    assert _modules_after("validate", str(flow)) == "['actorflow.flows', 'yaml']"
