"""Deployed flows: stored by revision, loaded by every runtime that opens the database."""

from __future__ import annotations

from pathlib import Path

import pytest

import actorflow as af
from actorflow.runtime import Runtime

pytestmark = pytest.mark.anyio

SOURCE = "id: greet\nnamespace: team\ntasks:\n  - id: hi\n    type: log\n    message: {msg}\n"


async def test_a_deployed_flow_is_loaded_by_the_next_runtime(tmp_path: Path) -> None:
    """A runtime that opens the database later knows the deployed flows at their stored
    revisions and runs them; a changed source is the next revision, an unchanged one is not."""
    db = tmp_path / "d.db"
    async with Runtime.open(db) as rt:
        flow, new = await rt.deploy(SOURCE.format(msg="one"))
        assert (flow.revision, new) == (1, True)
        assert (await rt.deploy(SOURCE.format(msg="one")))[1] is False
        flow, new = await rt.deploy(SOURCE.format(msg="two"))
        assert (flow.revision, new) == (2, True)
    async with Runtime.open(db) as other:
        loaded = other.flow("team", "greet")
        assert loaded is not None and loaded.revision == 2
        old = other.flow("team", "greet", 1)
        assert old is None  # only the latest revision is registered at open
        done = await other.run(loaded)
        assert done.state is af.State.SUCCESS and done.flow_revision == 2


async def test_a_bad_source_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    """deploy() of an invalid source raises FlowValidationError and stores nothing."""
    async with Runtime.open(tmp_path / "d.db") as rt:
        with pytest.raises(af.FlowValidationError):
            await rt.deploy("id: x\ntasks: []\n")
        assert await rt.store.flows() == []
