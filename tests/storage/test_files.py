"""Internal file storage: URIs, atomic writes, traversal refusal."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from actorflow import StorageError, StoredFileNotFound
from actorflow.storage import FileStorage

pytestmark = pytest.mark.anyio


async def test_put_get_list_delete(tmp_path: Path) -> None:
    """A stored file reads back by URI, is listed under its prefixes and goes with its execution."""
    fs = FileStorage(tmp_path)
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

    def broken_replace(src: object, dst: object) -> None:
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
async def test_traversal_is_refused(tmp_path: Path, uri: str) -> None:
    """URIs that could leave the storage root are refused with a StorageError naming them."""
    fs = FileStorage(tmp_path / "root")
    with pytest.raises(StorageError, match="URI"):
        await fs.get(uri)
    with pytest.raises(StorageError):
        await fs.exists(uri)


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".", "", "a\\b", ".tmp-x", "nul\x00"])
async def test_bad_names_are_refused(tmp_path: Path, bad: str) -> None:
    """A name part with a separator, '..' or a temp prefix is refused before anything is written."""
    fs = FileStorage(tmp_path)
    with pytest.raises(StorageError, match="file name"):
        await fs.put("ns", "f", "e", "t", "r", bad, b"")
    with pytest.raises(StorageError, match="namespace"):
        await fs.put(bad, "f", "e", "t", "r", "ok", b"")
    with pytest.raises(StorageError, match="execution id"):
        await fs.delete_execution("ns", "f", bad)
    assert not any(tmp_path.iterdir())
