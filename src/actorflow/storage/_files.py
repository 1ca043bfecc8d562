"""Internal storage for task files, addressed by ``actorflow://`` URIs.

Layout: ``<root>/<namespace>/<flow>/<execution>/<task>/<task run>/<name>``. Writes go to a
temporary file in the same directory, are fsynced, then renamed: a reader never sees half a
file, and a crash leaves either the old content or the new.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import anyio.to_thread

from actorflow._errors import StorageError, StoredFileNotFound

SCHEME = "actorflow://"
_TMP_PREFIX = ".tmp-"  # in-progress writes; never listed, never a valid name


def _safe(part: str, what: str) -> str:
    if (
        not part
        or part in (".", "..")
        or any(c in part for c in "/\\\x00")
        or part.startswith(_TMP_PREFIX)
    ):
        raise StorageError(f"invalid {what} {part!r} for internal storage")
    return part


class FileStorage:
    """Files of task runs in a local directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def uri(self, namespace: str, flow_id: str, execution_id: str, task_id: str,
            task_run_id: str, name: str) -> str:  # fmt: skip
        """The URI a file of a task run gets."""
        parts = [
            _safe(namespace, "namespace"), _safe(flow_id, "flow id"),
            _safe(execution_id, "execution id"), _safe(task_id, "task id"),
            _safe(task_run_id, "task run id"), _safe(name, "file name"),
        ]  # fmt: skip
        return SCHEME + "/".join(parts)

    def path(self, uri: str) -> Path:
        """The local path of a URI; refuses anything that could leave the root."""
        if not uri.startswith(SCHEME):
            raise StorageError(f"not an {SCHEME} URI: {uri!r}")
        parts = uri[len(SCHEME) :].split("/")
        if parts[-1] == "" and len(parts) > 1:
            parts.pop()  # a trailing slash names a prefix
        for part in parts:
            if part in ("", ".", "..") or "\\" in part or "\x00" in part:
                raise StorageError(
                    f"invalid internal storage URI {uri!r}: empty, '.', '..' or backslash"
                    " parts are refused (path traversal)"
                )
        return self.root.joinpath(*parts)

    async def put(
        self,
        namespace: str,
        flow_id: str,
        execution_id: str,
        task_id: str,
        task_run_id: str,
        name: str,
        data: bytes,
    ) -> str:
        """Store ``data`` atomically; returns its URI."""
        uri = self.uri(namespace, flow_id, execution_id, task_id, task_run_id, name)
        await anyio.to_thread.run_sync(_atomic_write, self.path(uri), data)
        return uri

    async def get(self, uri: str) -> bytes:
        """Content of a stored file."""
        path = self.path(uri)
        try:
            return await anyio.to_thread.run_sync(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StoredFileNotFound(f"no stored file at {uri}") from None

    async def exists(self, uri: str) -> bool:
        """Whether a file is stored at ``uri``."""
        return await anyio.to_thread.run_sync(self.path(uri).is_file)

    async def list(self, prefix_uri: str) -> list[str]:
        """URIs of every file under a prefix (``actorflow://ns/flow/execution`` for example)."""
        base = self.root if prefix_uri == SCHEME else self.path(prefix_uri)

        def walk() -> list[str]:
            if not base.exists():
                return []
            return sorted(
                SCHEME + p.relative_to(self.root).as_posix()
                for p in base.rglob("*")
                if p.is_file() and not p.name.startswith(_TMP_PREFIX)
            )

        return await anyio.to_thread.run_sync(walk)

    async def delete_execution(self, namespace: str, flow_id: str, execution_id: str) -> None:
        """Delete every file of an execution."""
        base = self.root / _safe(namespace, "namespace") / _safe(flow_id, "flow id")
        target = base / _safe(execution_id, "execution id")
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(target, ignore_errors=True))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself must survive a crash: sync the directory entry too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
