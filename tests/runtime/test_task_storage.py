"""Files through ctx.storage: a task reads its own namespace's files only, and streams big ones;
on every object store (a local folder, memory), which the runtime reaches only through the
ObjectStore protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import actorflow as af
from actorflow.runtime import FakeClock, Runtime
from actorflow.storage import MemoryObjects, ObjectStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["local", "memory"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore | Path:
    """Where the runtime keeps task files: a folder, or an object store in memory."""
    return tmp_path / "files" if request.param == "local" else MemoryObjects()


@pytest.fixture
async def rt(objects: ObjectStore | Path, clock: FakeClock) -> AsyncIterator[Runtime]:
    """A runtime in memory with a fake clock, its files in ``objects``."""
    async with Runtime.open(":memory:", clock=clock, files=objects) as runtime:
        yield runtime


@af.task
async def write(ctx: af.TaskContext) -> dict[str, str]:
    return {"uri": await ctx.storage.put("secret.txt", "team a only")}


@af.task(retry=None)
async def read(ctx: af.TaskContext, uri: str) -> dict[str, str]:
    return {"text": (await ctx.storage.get(uri)).decode()}


@af.task
async def big(ctx: af.TaskContext) -> dict[str, int]:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"x" * (1 << 20)

    uri = await ctx.storage.put_stream("big.bin", chunks())
    total = 0
    async with ctx.storage.open(uri) as f:
        async for chunk in f:
            total += len(chunk)
    return {"bytes": total}


async def test_a_task_reads_files_of_its_namespace_only(rt: Runtime) -> None:
    """team_a's file reads back in team_a; a task of team_b that reads it fails that attempt
    with FileAccessDenied, and the file is not shown to it."""
    a = await rt.run(af.Flow(id="w", namespace="team_a", tasks=[write("w")]))
    uri = a.task_run("w").outputs["uri"]
    same = await rt.run(af.Flow(id="r", namespace="team_a", tasks=[read("r", uri=uri)]))
    assert same.task_run("r").outputs == {"text": "team a only"}
    other = await rt.run(af.Flow(id="r", namespace="team_b", tasks=[read("r", uri=uri)]))
    assert other.state is af.State.FAILED
    assert "FileAccessDenied" in (other.task_run("r").error or "")
    assert "team a only" not in str(other)


async def test_a_large_file_streams_in_and_out(rt: Runtime) -> None:
    """put_stream stores chunks and open() reads them back chunk by chunk."""
    done = await rt.run(af.Flow(id="big", tasks=[big("b")]))
    assert done.task_run("b").outputs == {"bytes": 8 << 20}


@af.task
async def echo(ctx: af.TaskContext, text: str) -> dict[str, str]:
    return {"text": text}


async def test_a_template_reads_a_stored_file(rt: Runtime) -> None:
    """``read()`` in a template renders a file an earlier task stored, whatever keeps it."""
    flow = af.Flow(id="t", namespace="team_a",
                   tasks=[write("w"), echo("e", text="{{ read(outputs.w.uri) }}")])  # fmt: skip
    done = await rt.run(flow)
    assert done.state is af.State.SUCCESS, done
    assert done.task_run("e").outputs == {"text": "team a only"}
