"""Internal storage for task files, addressed by ``actorflow://`` URIs.

Layout: ``<root>/<namespace>/<flow>/<execution>/<task>/<task run>/<name>``. Writes go to a
temporary file in the same directory, are fsynced, then renamed: a reader never sees half a
file, and a crash leaves either the old content or the new.

Nothing under the root is trusted to be what the layout says: every path is opened one
component at a time relative to a directory fd, with ``O_NOFOLLOW``, so a symlink planted
anywhere below the root is refused (:class:`FileAccessDenied`) and never read or written
through. Only regular files are read. The root itself is the operator's choice and may be a
link. Large files stream in chunks (:meth:`FileStorage.put_stream`,
:meth:`FileStorage.open_read`), each chunk's blocking I/O on a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread

from actorflow._errors import FileAccessDenied, StorageError, StoredFileNotFound

SCHEME = "actorflow://"
CHUNK_SIZE = 1 << 20  # 1 MiB: few thread hops per file, small enough to never matter in memory
_TMP_PREFIX = ".tmp-"  # in-progress writes; never listed, never a valid name

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a planted FIFO must not hang the open; it is then refused as not a regular file.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What open() reports for a symlink under O_NOFOLLOW: ELOOP on Linux, EMLINK on FreeBSD,
# ENOTDIR when O_DIRECTORY is checked first.
_LINK_ERRNOS = frozenset({errno.ELOOP, errno.EMLINK, errno.ENOTDIR})


class Readable(Protocol):
    """A binary file-like object: ``read(size)`` returns at most ``size`` bytes, ``b""`` at end."""

    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class FileScope:
    """The stored files a reader (a task run) may read.

    Allowed: files of ``namespace`` (only of ``execution_id`` when it is given), plus the
    files of the ``parent`` execution, given as ``(namespace, execution id)``. This follows
    Kestra, whose file functions admit the current execution's files, the parent (triggering)
    execution's files, and another namespace only by an explicit grant. Namespaces are
    compared exactly: ``team_a.sub`` does not read ``team_a`` nor the reverse, since anyone
    who can name a namespace could otherwise reach its "parent" by choosing the name.
    """

    namespace: str
    execution_id: str | None = None
    parent: tuple[str, str] | None = None

    def allows(self, uri: str) -> bool:
        """Whether ``uri`` is inside this scope (the URI must be well formed)."""
        return self._allows(_parts(uri))

    def _allows(self, parts: Sequence[str]) -> bool:
        if len(parts) < 3:  # a namespace or flow prefix is no file of any execution
            return False
        namespace, execution = parts[0], parts[2]
        if namespace == self.namespace and self.execution_id in (None, execution):
            return True
        return self.parent == (namespace, execution)

    def _check(self, parts: Sequence[str], uri: str) -> None:
        if not self._allows(parts):
            where = f"namespace {self.namespace!r}"
            if self.execution_id is not None:
                where += f", execution {self.execution_id!r}"
            if self.parent is not None:
                where += f" (or parent execution {self.parent[1]!r} of {self.parent[0]!r})"
            raise FileAccessDenied(f"{uri} is outside the files a reader in {where} may read")


def _safe(part: str, what: str) -> str:
    if (
        not part
        or part in (".", "..")
        or any(c in part for c in "/\\\x00")
        or part.startswith(_TMP_PREFIX)
    ):
        raise StorageError(f"invalid {what} {part!r} for internal storage")
    return part


def _parts(uri: str) -> list[str]:
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
    return parts


class FileReader:
    """An open stored file; iterate it for chunks, each read on a worker thread."""

    def __init__(self, fd: int, size: int, chunk_size: int) -> None:
        self._fd = fd
        self.size = size  # at open; a rename by a later writer does not change what this reads
        self.chunk_size = chunk_size

    async def read(self, size: int | None = None) -> bytes:
        """Up to ``size`` bytes (``chunk_size`` by default); ``b""`` at the end."""
        return await anyio.to_thread.run_sync(os.read, self._fd, size or self.chunk_size)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk


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
        """The local path of a URI; refuses anything that could leave the root.

        For display and tests: opening it directly would follow symlinks.
        """
        return self.root.joinpath(*_parts(uri))

    # -- writes ----------------------------------------------------------------------
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
        writer = _Writer(self.root, _parts(uri), uri)
        await anyio.to_thread.run_sync(writer.write_all, data)
        return uri

    async def put_stream(
        self,
        namespace: str,
        flow_id: str,
        execution_id: str,
        task_id: str,
        task_run_id: str,
        name: str,
        chunks: AsyncIterable[bytes] | Readable,
        *,
        chunk_size: int = CHUNK_SIZE,
    ) -> str:
        """Store the bytes of ``chunks`` atomically, ``chunk_size`` at a time; returns its URI.

        ``chunks`` is an async iterable of bytes or a binary file-like object (read on a worker
        thread). If it raises, or the call is cancelled, nothing is stored and an earlier file
        under the same URI stays whole.
        """
        uri = self.uri(namespace, flow_id, execution_id, task_id, task_run_id, name)
        writer = _Writer(self.root, _parts(uri), uri)
        try:
            await anyio.to_thread.run_sync(writer.open)
            if isinstance(chunks, AsyncIterable):
                await _write_async(writer, chunks, chunk_size)
            else:
                source = chunks
                while await anyio.to_thread.run_sync(writer.copy_from, source, chunk_size):
                    pass
            await anyio.to_thread.run_sync(writer.commit)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(writer.abort)
            raise
        return uri

    # -- reads -----------------------------------------------------------------------
    async def get(self, uri: str, *, scope: FileScope | None = None) -> bytes:
        """Content of a stored file, whole: for small files (use :meth:`open_read` otherwise).

        Without ``scope`` any file may be read: for the runtime and its operator only; a task
        reads with the scope of its task run.
        """

        def read() -> bytes:
            fd, _ = self._open_file(uri, scope)
            with os.fdopen(fd, "rb") as f:
                return f.read()

        return await anyio.to_thread.run_sync(read)

    @contextlib.asynccontextmanager
    async def open_read(
        self, uri: str, *, scope: FileScope | None = None, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[FileReader]:
        """Open a stored file for streaming: ``async with fs.open_read(uri) as f: async for ...``.

        Missing files, scope and symlink refusals raise on entry, before any chunk.
        """
        fd, size = await anyio.to_thread.run_sync(self._open_file, uri, scope)
        try:
            yield FileReader(fd, size, chunk_size)
        finally:
            os.close(fd)

    async def exists(self, uri: str, *, scope: FileScope | None = None) -> bool:
        """Whether a regular file is stored at ``uri``; a symlink there is refused."""

        def check() -> bool:
            try:
                fd, _ = self._open_file(uri, scope)
            except StoredFileNotFound:
                return False
            os.close(fd)
            return True

        return await anyio.to_thread.run_sync(check)

    async def list(self, prefix_uri: str) -> list[str]:
        """URIs of every file under a prefix (``actorflow://ns/flow/execution`` for example).

        Symlinks are neither listed nor descended into.
        """
        prefix = [] if prefix_uri == SCHEME else _parts(prefix_uri)

        def walk() -> list[str]:
            try:
                top = _open_dirs(self.root, prefix, prefix_uri, create=False)
            except (FileNotFoundError, NotADirectoryError):
                return []
            found: list[str] = []
            try:
                for dirpath, _, names, dir_fd in os.fwalk(".", dir_fd=top):
                    rel = [*prefix, *Path(dirpath).parts]  # "./a/b" -> a, b
                    for name in names:
                        if not name.startswith(_TMP_PREFIX) and _is_regular(dir_fd, name):
                            found.append(SCHEME + "/".join([*rel, name]))
            finally:
                os.close(top)
            return sorted(found)

        return await anyio.to_thread.run_sync(walk)

    async def delete_execution(self, namespace: str, flow_id: str, execution_id: str) -> None:
        """Delete every file of an execution (a symlink in its place is removed, not followed)."""
        flow_dir = [_safe(namespace, "namespace"), _safe(flow_id, "flow id")]
        name = _safe(execution_id, "execution id")
        where = SCHEME + "/".join([*flow_dir, name])

        def delete() -> None:
            try:
                fd = _open_dirs(self.root, flow_dir, where, create=False)
            except (OSError, FileAccessDenied):
                return  # nothing of ours to delete, and nothing reachable outside the root
            try:
                if _is_link(fd, name):
                    os.unlink(name, dir_fd=fd)
                else:
                    shutil.rmtree(name, ignore_errors=True, dir_fd=fd)
            finally:
                os.close(fd)

        await anyio.to_thread.run_sync(delete)

    def _open_file(self, uri: str, scope: FileScope | None) -> tuple[int, int]:
        """A read-only fd of the regular file at ``uri`` and its size, links refused."""
        parts = _parts(uri)
        if scope is not None:
            scope._check(parts, uri)
        try:
            dir_fd = _open_dirs(self.root, parts[:-1], uri, create=False)
        except (FileNotFoundError, NotADirectoryError):
            raise StoredFileNotFound(f"no stored file at {uri}") from None
        try:
            fd = _open_at(dir_fd, parts[-1], _READ_FLAGS, uri)
        except (FileNotFoundError, NotADirectoryError):
            raise StoredFileNotFound(f"no stored file at {uri}") from None
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a directory, FIFO or device is no stored file
            os.close(fd)
            raise StoredFileNotFound(f"no stored file at {uri}")
        os.set_blocking(fd, True)
        return fd, st.st_size


class _Writer:
    """One atomic write: a temp file beside the target, fsynced, renamed, directory synced.

    State lives on the object so an abort after a cancelled step still finds what to clean.
    """

    def __init__(self, root: Path, parts: Sequence[str], uri: str) -> None:
        self._root = root
        self._parts = parts
        self._uri = uri
        self._dir_fd: int | None = None
        self._fd: int | None = None
        self._tmp: str | None = None

    def open(self) -> None:
        self._dir_fd = _open_dirs(self._root, self._parts[:-1], self._uri, create=True)
        if _is_link(self._dir_fd, self._parts[-1]):
            # The rename would replace the link, not write through it; a planted link is
            # still tampering, worth a clear refusal rather than a silent fix.
            raise _link_refused(self._uri, self._parts[-1])
        self._tmp = _TMP_PREFIX + secrets.token_hex(8)
        self._fd = os.open(self._tmp, _TMP_FLAGS, 0o600, dir_fd=self._dir_fd)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def copy_from(self, source: Readable, size: int) -> bool:
        """Copy one chunk of ``source``; False at its end."""
        data = source.read(size)
        if not data:
            return False
        self.write(data)
        return True

    def commit(self) -> None:
        assert self._fd is not None and self._dir_fd is not None and self._tmp is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        os.replace(self._tmp, self._parts[-1], src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._tmp = None
        # The rename itself must survive a crash: sync the directory entry too.
        os.fsync(self._dir_fd)
        os.close(self._dir_fd)
        self._dir_fd = None

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._dir_fd is not None:
            if self._tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._tmp, dir_fd=self._dir_fd)
                self._tmp = None
            os.close(self._dir_fd)
            self._dir_fd = None

    def write_all(self, data: bytes) -> None:
        try:
            self.open()
            self.write(data)
            self.commit()
        except BaseException:
            self.abort()
            raise


async def _write_async(writer: _Writer, chunks: AsyncIterable[bytes], chunk_size: int) -> None:
    # Small chunks are gathered so each thread hop writes about chunk_size bytes.
    buffer = bytearray()
    async for chunk in chunks:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"chunks must be bytes, got {type(chunk).__name__}")
        if not buffer and len(chunk) >= chunk_size:
            await anyio.to_thread.run_sync(writer.write, chunk)
            continue
        buffer += chunk
        if len(buffer) >= chunk_size:
            # Not shielded but safe to reuse after: a cancelled run_sync waits for its thread.
            await anyio.to_thread.run_sync(writer.write, buffer)
            buffer.clear()
    if buffer:
        await anyio.to_thread.run_sync(writer.write, buffer)


def _open_dirs(root: Path, parts: Sequence[str], uri: str, *, create: bool) -> int:
    """An fd of ``root/parts``, each component opened without following links."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                child = _open_at(fd, part, _DIR_FLAGS, uri)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # a concurrent writer made it
                    os.mkdir(part, dir_fd=fd)
                    os.fsync(fd)  # the new directory must survive a crash with its file
                # A link raced in after mkdir is refused here like any other.
                child = _open_at(fd, part, _DIR_FLAGS, uri)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_at(dir_fd: int, name: str, flags: int, uri: str) -> int:
    try:
        return os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS and _is_link(dir_fd, name):
            raise _link_refused(uri, name) from None
        raise


def _link_refused(uri: str, name: str) -> FileAccessDenied:
    return FileAccessDenied(
        f"refusing {uri}: {name!r} in internal storage is a symbolic link, never followed"
    )


def _lstat_mode(dir_fd: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return None


def _is_link(dir_fd: int, name: str) -> bool:
    mode = _lstat_mode(dir_fd, name)
    return mode is not None and stat.S_ISLNK(mode)


def _is_regular(dir_fd: int, name: str) -> bool:
    mode = _lstat_mode(dir_fd, name)
    return mode is not None and stat.S_ISREG(mode)
