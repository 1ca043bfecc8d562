"""Internal file storage: URIs, atomic writes, traversal, scopes, symlinks, streaming.

The contract runs on every object store through the ``fs`` fixture (a local folder, memory);
symlinks, FIFOs, temp files and bounded memory are the local folder's own tests."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from actorflow import StorageError, StoredFileNotFound
from actorflow._errors import FileAccessDenied
from actorflow.storage import FileScope, FileStorage, MemoryObjects

pytestmark = pytest.mark.anyio

Parts = tuple[str, str, str, str, str, str]  # namespace, flow, execution, task, task run, name


@pytest.fixture(params=["local", "memory"])
def fs(request: pytest.FixtureRequest, tmp_path: Path) -> FileStorage:
    """Internal storage on each object store: a local folder, this process's memory."""
    if request.param == "local":
        return FileStorage(tmp_path / "root")
    return FileStorage(MemoryObjects())


async def test_put_get_list_delete(fs: FileStorage) -> None:
    """A stored file reads back by URI, is listed under its prefixes and goes with its execution."""
    uri = await fs.put("ns", "flow", "ex1", "task", "tr1", "out.txt", b"hello")
    assert uri == "actorflow://ns/flow/ex1/task/tr1/out.txt"
    other = await fs.put("ns", "flow", "ex2", "task", "tr9", "data.bin", b"\x00\x01")
    assert await fs.get(uri) == b"hello" and await fs.get(other) == b"\x00\x01"
    assert await fs.exists(uri)
    assert await fs.list("actorflow://ns/flow/ex1") == [uri]
    assert await fs.list("actorflow://ns/flow/") == [uri, other]
    assert await fs.list("actorflow://") == [uri, other]
    assert await fs.list("actorflow://ns/none") == []
    await fs.put("ns", "flow", "ex1", "task", "tr1", "out.txt", b"again")
    assert await fs.get(uri) == b"again"
    await fs.delete_execution("ns", "flow", "ex1")
    assert not await fs.exists(uri) and await fs.exists(other)
    with pytest.raises(StoredFileNotFound, match=re.escape(uri)):
        await fs.get(uri)
    with pytest.raises(StoredFileNotFound):
        await fs.get("actorflow://ns/flow/ex2")  # a directory is no file


async def test_a_failed_write_keeps_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails before its rename leaves the previous file whole and no temp file."""
    fs = FileStorage(tmp_path)
    uri = await fs.put("ns", "f", "e", "t", "r", "x", b"old")

    def broken_replace(src: object, dst: object, **dir_fds: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        await fs.put("ns", "f", "e", "t", "r", "x", b"new" * 1000)
    monkeypatch.undo()
    assert await fs.get(uri) == b"old"
    assert [p.name for p in fs.path(uri).parent.iterdir()] == ["x"]


@pytest.mark.parametrize(
    "uri",
    ["actorflow://ns/../../etc/passwd", "actorflow:///etc/passwd", "file:///etc/passwd",
     "actorflow://ns/./x", "actorflow://ns//x", "actorflow://ns/..", "actorflow://ns\\..\\x",
     "/etc/passwd", "actorflow://"],
)  # fmt: skip
async def test_traversal_is_refused(fs: FileStorage, uri: str) -> None:
    """URIs that could leave the storage root are refused with a StorageError naming them."""
    with pytest.raises(StorageError, match="URI"):
        await fs.get(uri)
    with pytest.raises(StorageError):
        await fs.exists(uri)


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".", "", "a\\b", ".tmp-x", "nul\x00"])
async def test_bad_names_are_refused(fs: FileStorage, bad: str) -> None:
    """A name part with a separator, '..' or a temp prefix is refused before anything is written."""
    with pytest.raises(StorageError, match="file name"):
        await fs.put("ns", "f", "e", "t", "r", bad, b"")
    with pytest.raises(StorageError, match="namespace"):
        await fs.put(bad, "f", "e", "t", "r", "ok", b"")
    with pytest.raises(StorageError, match="execution id"):
        await fs.delete_execution("ns", "f", bad)
    assert await fs.list("actorflow://") == []


# -- namespace isolation ----------------------------------------------------------------


async def test_a_reader_scoped_to_a_namespace_reads_only_that_namespace(fs: FileStorage) -> None:
    """A team_b scope is refused team_a's file by get, open_read and exists; its own files read."""
    theirs = await fs.put("team_a", "f", "e1", "t", "r", "secret", b"team a only")
    ours = await fs.put("team_b", "f", "e2", "t", "r", "x", b"b")
    earlier = await fs.put("team_b", "g", "e0", "t", "r", "x", b"earlier run")
    scope = FileScope("team_b")
    with pytest.raises(FileAccessDenied, match="outside the files a reader in namespace 'team_b'"):
        await fs.get(theirs, scope=scope)
    with pytest.raises(FileAccessDenied):
        async with fs.open_read(theirs, scope=scope):
            pass
    with pytest.raises(FileAccessDenied):
        await fs.exists(theirs, scope=scope)
    assert await fs.get(ours, scope=scope) == b"b"
    assert await fs.get(earlier, scope=scope) == b"earlier run"
    assert await fs.get(theirs) == b"team a only"  # the runtime's own, unscoped read
    assert scope.allows(ours) and not scope.allows(theirs)


@pytest.mark.parametrize("reader", ["team_a.sub", "team", "team_a2", "TEAM_A"])
async def test_namespaces_are_matched_exactly(fs: FileStorage, reader: str) -> None:
    """Neither a child, a parent by name, a prefix nor another case of a namespace is admitted."""
    uri = await fs.put("team_a", "f", "e", "t", "r", "x", b"a")
    child = await fs.put("team_a.sub", "f", "e", "t", "r", "x", b"a")
    with pytest.raises(FileAccessDenied):
        await fs.get(uri, scope=FileScope(reader))
    with pytest.raises(FileAccessDenied):
        await fs.get(child, scope=FileScope("team_a"))


async def test_an_execution_scope_admits_its_own_and_its_parent_execution(fs: FileStorage) -> None:
    """With an execution id only that execution's files and the parent execution's read."""
    own = await fs.put("ns", "child", "e2", "t", "r", "x", b"own")
    parent = await fs.put("other", "main", "e1", "t", "r", "x", b"parent")
    sibling = await fs.put("ns", "child", "e3", "t", "r", "x", b"sibling")
    scope = FileScope("ns", execution_id="e2", parent=("other", "e1"))
    assert await fs.get(own, scope=scope) == b"own"
    assert await fs.get(parent, scope=scope) == b"parent"
    with pytest.raises(FileAccessDenied, match="execution 'e2'"):
        await fs.get(sibling, scope=scope)
    with pytest.raises(FileAccessDenied):
        await fs.get("actorflow://ns/child", scope=scope)  # a prefix is no file of e2
    assert not FileScope("ns", parent=("other", "e1")).allows("actorflow://other/main/e9/t/r/x")


# -- symlinks -----------------------------------------------------------------------------


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "t" / "r").mkdir(parents=True)
    (outside / "secret").write_bytes(b"not yours")
    (outside / "t" / "r" / "x").write_bytes(b"not yours")
    return outside


def _snapshot(outside: Path) -> dict[str, bytes]:
    return {
        p.relative_to(outside).as_posix(): p.read_bytes() for p in outside.rglob("*") if p.is_file()
    }


async def _assert_refused(fs: FileStorage, uri: str, parts: Parts) -> None:
    for scope in (None, FileScope(parts[0])):
        with pytest.raises(FileAccessDenied, match="symbolic link"):
            await fs.get(uri, scope=scope)
        with pytest.raises(FileAccessDenied, match="symbolic link"):
            async with fs.open_read(uri, scope=scope):
                pass
        with pytest.raises(FileAccessDenied, match="symbolic link"):
            await fs.exists(uri, scope=scope)
    with pytest.raises(FileAccessDenied, match="symbolic link"):
        await fs.put(*parts, b"overwritten")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"overwritten"

    with pytest.raises(FileAccessDenied, match="symbolic link"):
        await fs.put_stream(*parts, chunks())


async def test_a_symlinked_final_file_is_never_followed(tmp_path: Path) -> None:
    """A link planted as the stored file is refused for reads and writes; its target is untouched."""
    outside = _outside(tmp_path)
    fs = FileStorage(tmp_path / "root")
    parts: Parts = ("ns", "f", "e", "t", "r", "x")
    uri = await fs.put(*parts, b"real")
    os.unlink(fs.path(uri))
    os.symlink(outside / "secret", fs.path(uri))
    before = _snapshot(outside)
    await _assert_refused(fs, uri, parts)
    assert await fs.list("actorflow://ns") == []
    assert _snapshot(outside) == before
    assert fs.path(uri).is_symlink()  # not replaced either: refused, not silently repaired


async def test_a_symlinked_directory_component_is_never_followed(tmp_path: Path) -> None:
    """A link planted as the execution directory is refused; nothing outside is read or written."""
    outside = _outside(tmp_path)
    fs = FileStorage(tmp_path / "root")
    parts: Parts = ("ns", "f", "e", "t", "r", "x")
    await fs.put("ns", "f", "keep", "t", "r", "x", b"ours")
    os.symlink(outside, tmp_path / "root" / "ns" / "f" / "e")
    before = _snapshot(outside)
    await _assert_refused(fs, fs.uri(*parts), parts)
    assert await fs.list("actorflow://ns") == ["actorflow://ns/f/keep/t/r/x"]
    with pytest.raises(FileAccessDenied):
        await fs.list("actorflow://ns/f/e")
    await fs.delete_execution("ns", "f", "e")
    assert _snapshot(outside) == before
    assert not (tmp_path / "root" / "ns" / "f" / "e").exists()  # the link went, not its target


async def test_a_symlink_among_the_roots_children_is_never_followed(tmp_path: Path) -> None:
    """A namespace directory that is a link is refused, not listed, and deleting through it is a no-op."""
    outside = tmp_path / "outside"
    (outside / "f" / "e" / "t" / "r").mkdir(parents=True)
    (outside / "f" / "e" / "t" / "r" / "x").write_bytes(b"not yours")
    fs = FileStorage(tmp_path / "root")
    await fs.put("real", "f", "e", "t", "r", "x", b"ours")
    os.symlink(outside, tmp_path / "root" / "ns")
    before = _snapshot(outside)
    parts: Parts = ("ns", "f", "e", "t", "r", "x")
    await _assert_refused(fs, fs.uri(*parts), parts)
    await _assert_refused(fs, fs.uri(*parts[:-1], "new"), (*parts[:-1], "new"))
    assert await fs.list("actorflow://") == ["actorflow://real/f/e/t/r/x"]
    with pytest.raises(FileAccessDenied):
        await fs.list("actorflow://ns")
    await fs.delete_execution("ns", "f", "e")
    assert _snapshot(outside) == before


async def test_a_fifo_is_no_stored_file(tmp_path: Path) -> None:
    """A FIFO planted as a stored file is reported missing at once instead of blocking the read."""
    fs = FileStorage(tmp_path)
    uri = await fs.put("ns", "f", "e", "t", "r", "x", b"")
    os.unlink(fs.path(uri))
    os.mkfifo(fs.path(uri))
    with pytest.raises(StoredFileNotFound):
        await fs.get(uri)
    assert not await fs.exists(uri)
    assert await fs.list("actorflow://ns") == []


# -- streaming ----------------------------------------------------------------------------

MiB = 1 << 20


async def test_64_mib_stream_in_bounded_memory_with_a_responsive_loop(tmp_path: Path) -> None:
    """64 MiB are written and read in 1 MiB chunks with a small memory peak, the loop running between chunks."""
    fs = FileStorage(tmp_path)
    block = os.urandom(MiB)
    written, read = hashlib.sha256(), hashlib.sha256()
    ticks = 0
    seen_writing: list[int] = []
    seen_reading: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(64):
            chunk = i.to_bytes(8, "big") + block[8:]
            written.update(chunk)
            seen_writing.append(ticks)
            yield chunk

    tracemalloc.start()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            uri = await fs.put_stream("ns", "f", "e", "t", "r", "big", chunks())
            async with fs.open_read(uri) as f:
                assert f.size == 64 * MiB
                async for chunk in f:
                    assert len(chunk) <= MiB
                    read.update(chunk)
                    seen_reading.append(ticks)
            tg.cancel_scope.cancel()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read.hexdigest() == written.hexdigest()
    assert len(seen_reading) == 64
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB for a 64 MiB file"
    for seen in (seen_writing, seen_reading):
        assert all(b > a for a, b in itertools.pairwise(seen)), "the loop stalled between chunks"


async def test_small_chunks_and_file_objects_stream_in(fs: FileStorage) -> None:
    """Small async chunks are gathered and a file object is copied; both read back exactly."""

    async def small() -> AsyncIterator[bytes]:
        for i in range(1000):
            yield bytes([i % 256]) * 7

    uri = await fs.put_stream("ns", "f", "e", "t", "r", "a", small(), chunk_size=100)
    assert await fs.get(uri) == b"".join(bytes([i % 256]) * 7 for i in range(1000))
    data = os.urandom(3 * MiB + 5)
    uri = await fs.put_stream("ns", "f", "e", "t", "r", "b", io.BytesIO(data))
    async with fs.open_read(uri, chunk_size=MiB) as f:
        sizes = [len(c) async for c in f]
    assert sizes == [MiB, MiB, MiB, 5]
    assert await fs.get(uri, scope=FileScope("ns", execution_id="e")) == data


async def test_a_failed_or_cancelled_stream_stores_nothing(fs: FileStorage) -> None:
    """A source that raises, or a cancelled put_stream, keeps the old file and leaves no temp file."""
    parts: Parts = ("ns", "f", "e", "t", "r", "x")
    uri = await fs.put(*parts, b"old")

    async def failing() -> AsyncIterator[bytes]:
        yield b"new" * MiB
        raise OSError("source broke")

    with pytest.raises(OSError, match="source broke"):
        await fs.put_stream(*parts, failing())

    entered = anyio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            entered.set()
            yield b"new" * MiB

    async with anyio.create_task_group() as tg:
        tg.start_soon(fs.put_stream, *parts, endless())
        await entered.wait()
        tg.cancel_scope.cancel()
    with pytest.raises(TypeError, match="chunks must be bytes"):

        async def text() -> AsyncIterator[bytes]:
            yield "text"  # type: ignore[misc]

        await fs.put_stream(*parts, text())
    assert await fs.get(uri) == b"old"
    assert await fs.list("actorflow://ns") == [uri]
    if fs.root is not None:  # nor a temp file left beside it
        assert [p.name for p in fs.path(uri).parent.iterdir()] == ["x"]


async def test_an_object_store_without_local_files_has_no_paths() -> None:
    """Asking a memory object store for a local path is refused with a StorageError."""
    fs = FileStorage(MemoryObjects())
    uri = await fs.put("ns", "f", "e", "t", "r", "x", b"a")
    with pytest.raises(StorageError, match="keeps no local files"):
        fs.path(uri)
    assert fs.read_small(uri, 10) == b"a"
