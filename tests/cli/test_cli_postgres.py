"""The command line on a PostgreSQL database: --db and ACTORFLOW_DB take its URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from _support.cli import EXAMPLES, af, af_json

pytestmark = pytest.mark.anyio


async def test_run_and_read_commands_take_a_postgres_url(pg_dsn: str, tmp_path: Path) -> None:
    """`run --db postgresql://...` (files in ACTORFLOW_FILES) stores its execution there;
    `executions` finds it through --db and through ACTORFLOW_DB, without a files folder."""
    files = tmp_path / "shared"
    af("run", EXAMPLES / "hello.yaml", "--db", pg_dsn, "--json", ACTORFLOW_FILES=str(files))
    listed = af_json("executions", "--db", pg_dsn)
    assert [(e["flow_id"], e["state"]) for e in listed] == [("hello", "SUCCESS")]
    again = af_json("executions", ACTORFLOW_DB=pg_dsn)
    assert [e["id"] for e in again] == [e["id"] for e in listed]
    refused = af("run", EXAMPLES / "hello.yaml", "--db", pg_dsn, code=None)
    assert refused.returncode != 0 and "ACTORFLOW_FILES" in refused.stderr
