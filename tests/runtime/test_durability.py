"""What callers are told when storage fails under a running runtime."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import actorflow as af
from actorflow import RuntimeClosedError, StorageUnavailable
from actorflow.runtime import Runtime

pytestmark = pytest.mark.anyio


async def test_an_end_that_could_not_be_stored_is_not_reported_as_done(tmp_path: Path) -> None:
    """When the write of an execution fails, run/wait raise StorageUnavailable instead of
    returning a terminal state that is not durable, and no new work is accepted."""
    flow = af.Flow(id="f", tasks=[af.Log(id="a", message="a"), af.Log(id="b", message="b")])
    async with Runtime.open(tmp_path / "full.db") as rt:
        assert (await rt.run(flow)).state is af.State.SUCCESS
        rt.store.fail_next = OSError("disk full")  # type: ignore[attr-defined]
        with anyio.fail_after(10), pytest.raises(StorageUnavailable, match="disk full"):
            await rt.run(flow)
        with pytest.raises(RuntimeClosedError, match="disk full"):
            await rt.submit(flow)
