"""Internal storage for task files, addressed by ``actorflow://`` URIs.

Two layers. :class:`FileStorage`, what the runtime and tasks use, names files (the layout
``<namespace>/<flow>/<execution>/<task>/<task run>/<name>``), checks every URI and a
reader's :class:`FileScope`, and keeps the bytes in an :class:`ObjectStore`: a small async
protocol (put, get, open, exists, delete, list by URI) that nothing else reaches past.
:class:`LocalDirectory`, the one used by default, keeps them in a folder (for a cluster of
hosts, a shared mount every worker reaches); :class:`MemoryObjects` keeps them in memory.
An S3-compatible object store is the next implementation; nothing above the protocol changes
for it.

:class:`LocalDirectory` writes to a temporary file in the same directory, fsynced, then
renamed: a reader never sees half a file, and a crash leaves either the old content or the
new. Nothing under its root is trusted to be what the layout says: every path is opened one
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
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import anyio.lowlevel
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


class FileReader(Protocol):
    """An open stored file: iterate it for chunks (``async for chunk in reader``)."""

    size: int  # at open; a later write of the same URI does not change what this reads
    chunk_size: int

    async def read(self, size: int | None = None) -> bytes:
        """Up to ``size`` bytes (``chunk_size`` by default); ``b""`` at the end."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class ObjectStore(Protocol):
    """Where the internal storage keeps file contents, by ``actorflow://`` URI.

    :class:`FileStorage` validates every URI (well formed, inside the reader's scope) before
    it reaches an object store, which only keeps bytes. A write is atomic: a reader sees the
    old content or the new, whole; a failed or cancelled write stores nothing. A URI that
    names no stored file (a missing one, or a prefix) raises :class:`StoredFileNotFound`.
    """

    async def put(self, uri: str, data: bytes) -> None:
        """Store ``data`` at ``uri``, replacing what was there."""
        ...

    async def put_stream(
        self, uri: str, chunks: AsyncIterable[bytes] | Readable, chunk_size: int
    ) -> None:
        """Store the bytes of ``chunks`` (async iterable or binary file-like) at ``uri``."""
        ...

    async def get(self, uri: str) -> bytes:
        """The whole content at ``uri``."""
        ...

    def open(self, uri: str, chunk_size: int) -> AbstractAsyncContextManager[FileReader]:
        """The content at ``uri`` for streaming; refusals raise on entry."""
        ...

    async def exists(self, uri: str) -> bool:
        """Whether a file is stored at ``uri``."""
        ...

    async def delete(self, prefix_uri: str) -> None:
        """Delete the file at ``prefix_uri``, or every file under it; nothing there is fine."""
        ...

    async def list(self, prefix_uri: str) -> list[str]:
        """URIs of every file under a prefix, sorted (``actorflow://`` lists everything)."""
        ...

    def read_blocking(self, uri: str, limit: int) -> bytes:
        """At most ``limit`` bytes of ``uri``, blocking: for callers that cannot await (a
        template's ``read()``), on small files."""
        ...


class FileStorage:
    """Files of task runs: names, scopes and streaming over an :class:`ObjectStore`.

    ``objects`` is an object store, or a folder for a :class:`LocalDirectory`.
    """

    def __init__(self, objects: ObjectStore | str | os.PathLike[str]) -> None:
        if isinstance(objects, str | os.PathLike):
            objects = LocalDirectory(objects)
        self.objects: ObjectStore = objects

    @property
    def root(self) -> Path | None:
        """The folder of a :class:`LocalDirectory` (None for another object store)."""
        return self.objects.root if isinstance(self.objects, LocalDirectory) else None

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
        """The local path of a URI in a :class:`LocalDirectory`; refuses anything that could
        leave the root, and object stores that keep no local files.

        For display and tests: opening it directly would follow symlinks.
        """
        if not isinstance(self.objects, LocalDirectory):
            raise StorageError(f"{uri}: {type(self.objects).__name__} keeps no local files")
        return self.objects.path(uri)

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
        await self.objects.put(uri, data)
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
        await self.objects.put_stream(uri, chunks, chunk_size)
        return uri

    # -- reads -----------------------------------------------------------------------
    async def get(self, uri: str, *, scope: FileScope | None = None) -> bytes:
        """Content of a stored file, whole: for small files (use :meth:`open_read` otherwise).

        Without ``scope`` any file may be read: for the runtime and its operator only; a task
        reads with the scope of its task run.
        """
        _checked(uri, scope)
        return await self.objects.get(uri)

    def open_read(
        self, uri: str, *, scope: FileScope | None = None, chunk_size: int = CHUNK_SIZE
    ) -> AbstractAsyncContextManager[FileReader]:
        """Open a stored file for streaming: ``async with fs.open_read(uri) as f: async for ...``.

        Missing files, scope and symlink refusals raise on entry, before any chunk.
        """
        return self._open_checked(uri, scope, chunk_size)

    @contextlib.asynccontextmanager
    async def _open_checked(
        self, uri: str, scope: FileScope | None, chunk_size: int
    ) -> AsyncIterator[FileReader]:
        _checked(uri, scope)
        async with self.objects.open(uri, chunk_size) as reader:
            yield reader

    def read_small(self, uri: str, limit: int, *, scope: FileScope | None = None) -> bytes:
        """At most ``limit`` bytes of a stored file, blocking (a template's ``read()``)."""
        _checked(uri, scope)
        return self.objects.read_blocking(uri, limit)

    async def exists(self, uri: str, *, scope: FileScope | None = None) -> bool:
        """Whether a regular file is stored at ``uri``; a symlink there is refused."""
        _checked(uri, scope)
        return await self.objects.exists(uri)

    async def list(self, prefix_uri: str) -> list[str]:
        """URIs of every file under a prefix (``actorflow://ns/flow/execution`` for example).

        Symlinks are neither listed nor descended into.
        """
        if prefix_uri != SCHEME:
            _parts(prefix_uri)
        return await self.objects.list(prefix_uri)

    async def delete_execution(self, namespace: str, flow_id: str, execution_id: str) -> None:
        """Delete every file of an execution (a symlink in its place is removed, not followed)."""
        parts = [
            _safe(namespace, "namespace"), _safe(flow_id, "flow id"),
            _safe(execution_id, "execution id"),
        ]  # fmt: skip
        await self.objects.delete(SCHEME + "/".join(parts))


def _checked(uri: str, scope: FileScope | None) -> None:
    parts = _parts(uri)
    if scope is not None:
        scope._check(parts, uri)


class _FdReader:
    """An open local file; each chunk is read on a worker thread."""

    def __init__(self, fd: int, size: int, chunk_size: int) -> None:
        self._fd = fd
        self.size = size
        self.chunk_size = chunk_size

    async def read(self, size: int | None = None) -> bytes:
        return await anyio.to_thread.run_sync(os.read, self._fd, size or self.chunk_size)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk


class LocalDirectory:
    """An :class:`ObjectStore` in a local folder (a shared mount for several hosts)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, uri: str) -> Path:
        """The local path of a URI; refuses anything that could leave the root."""
        return self.root.joinpath(*_parts(uri))

    async def put(self, uri: str, data: bytes) -> None:
        writer = _Writer(self.root, _parts(uri), uri)
        await anyio.to_thread.run_sync(writer.write_all, data)

    async def put_stream(
        self, uri: str, chunks: AsyncIterable[bytes] | Readable, chunk_size: int
    ) -> None:
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

    async def get(self, uri: str) -> bytes:
        return await anyio.to_thread.run_sync(self.read_blocking, uri, -1)

    def read_blocking(self, uri: str, limit: int) -> bytes:
        fd, _ = self._open_file(uri)
        with os.fdopen(fd, "rb") as f:
            return f.read(limit)

    @contextlib.asynccontextmanager
    async def open(self, uri: str, chunk_size: int) -> AsyncIterator[FileReader]:
        fd, size = await anyio.to_thread.run_sync(self._open_file, uri)
        try:
            yield _FdReader(fd, size, chunk_size)
        finally:
            os.close(fd)

    async def exists(self, uri: str) -> bool:
        def check() -> bool:
            try:
                fd, _ = self._open_file(uri)
            except StoredFileNotFound:
                return False
            os.close(fd)
            return True

        return await anyio.to_thread.run_sync(check)

    async def list(self, prefix_uri: str) -> list[str]:
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

    async def delete(self, prefix_uri: str) -> None:
        parts = _parts(prefix_uri)

        def delete() -> None:
            try:
                fd = _open_dirs(self.root, parts[:-1], prefix_uri, create=False)
            except (OSError, FileAccessDenied):
                return  # nothing of ours to delete, and nothing reachable outside the root
            name = parts[-1]
            try:
                mode = _lstat_mode(fd, name)
                if mode is None:
                    return
                if stat.S_ISDIR(mode):
                    shutil.rmtree(name, ignore_errors=True, dir_fd=fd)
                else:  # a file, or a link in its place: removed, never followed
                    os.unlink(name, dir_fd=fd)
            finally:
                os.close(fd)

        await anyio.to_thread.run_sync(delete)

    def _open_file(self, uri: str) -> tuple[int, int]:
        """A read-only fd of the regular file at ``uri`` and its size, links refused."""
        parts = _parts(uri)
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


class _BytesReader:
    def __init__(self, data: bytes, chunk_size: int) -> None:
        self._view = memoryview(data)
        self.size = len(data)
        self.chunk_size = chunk_size

    async def read(self, size: int | None = None) -> bytes:
        await anyio.lowlevel.checkpoint()
        n = size or self.chunk_size
        chunk, self._view = self._view[:n], self._view[n:]
        return bytes(chunk)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk


class MemoryObjects:
    """An :class:`ObjectStore` in this process's memory: nothing outlives it (tests, and a
    reference for the protocol's semantics)."""

    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}

    async def put(self, uri: str, data: bytes) -> None:
        _parts(uri)
        await anyio.lowlevel.checkpoint()
        self._files[uri] = bytes(data)

    async def put_stream(
        self, uri: str, chunks: AsyncIterable[bytes] | Readable, chunk_size: int
    ) -> None:
        _parts(uri)
        buffer = bytearray()
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise TypeError(f"chunks must be bytes, got {type(chunk).__name__}")
                buffer += chunk
                # A source that never waits must still be cancellable (a killed task run).
                await anyio.lowlevel.checkpoint()
        else:
            while data := await anyio.to_thread.run_sync(chunks.read, chunk_size):
                buffer += data
        self._files[uri] = bytes(buffer)  # only once whole: a failed stream stores nothing

    async def get(self, uri: str) -> bytes:
        await anyio.lowlevel.checkpoint()
        return self.read_blocking(uri, -1)

    def read_blocking(self, uri: str, limit: int) -> bytes:
        _parts(uri)
        try:
            data = self._files[uri]
        except KeyError:
            raise StoredFileNotFound(f"no stored file at {uri}") from None
        return data if limit < 0 else data[:limit]

    @contextlib.asynccontextmanager
    async def open(self, uri: str, chunk_size: int) -> AsyncIterator[FileReader]:
        yield _BytesReader(await self.get(uri), chunk_size)

    async def exists(self, uri: str) -> bool:
        _parts(uri)
        await anyio.lowlevel.checkpoint()
        return uri in self._files

    async def delete(self, prefix_uri: str) -> None:
        _parts(prefix_uri)
        await anyio.lowlevel.checkpoint()
        under = prefix_uri.rstrip("/") + "/"
        for uri in [u for u in self._files if u == prefix_uri or u.startswith(under)]:
            del self._files[uri]

    async def list(self, prefix_uri: str) -> list[str]:
        await anyio.lowlevel.checkpoint()
        if prefix_uri == SCHEME:
            return sorted(self._files)
        under = SCHEME + "/".join(_parts(prefix_uri)) + "/"
        return sorted(u for u in self._files if u.startswith(under))


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
