"""Internal file storage: URIs, atomic writes, traversal refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from actorflow import StorageError, StoredFileNotFound
from actorflow.storage import FileStorage

pytestmark = pytest.mark.anyio


async def test_put_get_list_delete(tmp_path: Path) -> None:
    """A stored file reads back by URI, is listed under its execution, and is deleted with it."""
    fs = FileStorage(tmp_path)
    uri = await fs.put("ns", "flow", "ex1", "task", "tr1", "out.txt", b"hello")
    assert uri == "actorflow://ns/flow/ex1/task/tr1/out.txt"
    assert await fs.get(uri) == b"hello"
    assert await fs.list("actorflow://ns/flow/ex1") == [uri]
    await fs.put("ns", "flow", "ex1", "task", "tr1", "out.txt", b"again")
    assert await fs.get(uri) == b"again"
    assert not list(tmp_path.rglob(".tmp-*"))
    await fs.delete_execution("ns", "flow", "ex1")
    assert not await fs.exists(uri)
    with pytest.raises(StoredFileNotFound, match="ex1"):
        await fs.get(uri)


@pytest.mark.parametrize(
    "uri",
    ["actorflow://ns/../../etc/passwd", "actorflow:///etc/passwd", "file:///etc/passwd",
     "actorflow://ns/./x"],
)  # fmt: skip
async def test_traversal_is_refused(tmp_path: Path, uri: str) -> None:
    """URIs that would leave the storage root are refused."""
    with pytest.raises(StorageError):
        await FileStorage(tmp_path).get(uri)


async def test_bad_names_are_refused(tmp_path: Path) -> None:
    """A file name with a slash or '..' is refused before anything is written."""
    with pytest.raises(StorageError, match="file name"):
        await FileStorage(tmp_path).put("ns", "f", "e", "t", "r", "../x", b"")
    assert not any(tmp_path.iterdir())
