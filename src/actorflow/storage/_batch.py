"""A batch of the SQLite writer: ops that commit in one transaction, and their commit."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from actorflow._errors import StorageUnavailable
from actorflow.storage._rows import DeleteExecution, DeleteTaskRuns, Op, RejectedOp
from actorflow.storage._store import COMMITTED, Commit, FencedCallback, RejectedCallback

_log = logging.getLogger("actorflow.storage")

_DELETES = frozenset({DeleteTaskRuns, DeleteExecution})


class _Latest:
    """A place in a batch for the newest item of a key; built into ops when written."""

    __slots__ = ("build", "item", "key", "pos")

    def __init__(
        self, key: Hashable, build: Callable[[Any], Sequence[Op]], item: Any, pos: int
    ) -> None:
        self.key = key
        self.build = build
        self.item = item
        self.pos = pos


class Batch:
    """Ops that will commit in one transaction, and the commit their writers await."""

    __slots__ = ("barrier", "commit", "latest", "ops")

    def __init__(self, notify: Callable[[], None]) -> None:
        self.ops: list[Op | _Latest] = []
        self.latest: dict[Hashable, _Latest] = {}
        self.barrier = 0  # ops before the last delete: a key written later takes a new place
        self.commit = Commit(notify)

    def add(self, ops: Sequence[Op]) -> None:
        mine = self.ops
        for op in ops:
            if type(op) in _DELETES:
                self.barrier = len(mine) + 1
            mine.append(op)

    def add_latest(self, key: Hashable, build: Callable[[Any], Sequence[Op]], item: Any) -> None:
        slot = self.latest.get(key)
        if slot is not None and slot.pos >= self.barrier:
            slot.item = item
            return
        slot = self.latest[key] = _Latest(key, build, item, len(self.ops))
        self.ops.append(slot)

    def materialize(self) -> tuple[list[Op], list[RejectedOp]]:
        """The batch's ops, each latest item built now (encoded once per batch), and the
        items whose builder raised: those are left out, the rest is written."""
        out: list[Op] = []
        failed: list[RejectedOp] = []
        for op in self.ops:
            if type(op) is _Latest:
                try:
                    out.extend(op.build(op.item))
                except Exception as exc:  # one unencodable snapshot must not stop the rest
                    failed.append(build_failure(op.key, exc))
            else:
                out.append(op)  # type: ignore[arg-type]
        return out, failed


def build_failure(key: Hashable, exc: Exception) -> RejectedOp:
    """The rejection of a ``write_latest`` item whose builder raised."""
    return RejectedOp(None, "", repr(key), f"{type(exc).__name__}: {exc}")


class BatchQueue:
    """The front of a group-commit writer (SQLite's and PostgreSQL's): ops join the newest
    queued batch until it holds ``batch_max``; the store's writer commits batches in order."""

    batch_max: int
    linger: float
    _queue: deque[Batch]
    _failed: BaseException | None
    _refusal: str | None
    on_rejected: RejectedCallback | None
    on_fenced: FencedCallback | None

    def _lingers(self) -> bool:
        """Whether the writer may wait for more ops before it takes the next batch: one batch
        queued, nobody waiting for it, the store neither refusing nor failed."""
        queue = self._queue
        return (
            self.linger > 0
            and len(queue) == 1
            and not queue[0].commit.wanted
            and self._refusal is None
            and self._failed is None
        )

    def _name(self) -> str:  # pragma: no cover - each store's own
        """What log lines call this store (a path, a redacted URL)."""
        raise NotImplementedError

    def _unavailable(self) -> StorageUnavailable:  # pragma: no cover - each store's own
        raise NotImplementedError

    def _last_commit(self) -> Commit | None:  # pragma: no cover - each store's own
        raise NotImplementedError

    def _wake_writer(self) -> None:  # pragma: no cover - each store's own
        raise NotImplementedError

    def write(self, ops: Iterable[Op]) -> Commit:
        """Queue ``ops`` (they commit together); await the result for durability."""
        if self._refusal is not None or self._failed is not None:
            raise self._unavailable()
        ops = ops if isinstance(ops, list | tuple) else list(ops)
        if not ops:
            return self._last_commit() or COMMITTED
        batch = self._open_batch(len(ops))
        batch.add(ops)
        return batch.commit

    def write_latest(
        self, key: Hashable, build: Callable[[Any], Sequence[Op]], item: Any
    ) -> Commit:
        """Queue ``build(item)`` in place of what ``key`` queued before (see :class:`Store`)."""
        if self._refusal is not None or self._failed is not None:
            raise self._unavailable()
        batch = self._open_batch(1)
        batch.add_latest(key, build, item)
        return batch.commit

    def _open_batch(self, size: int) -> Batch:
        """The batch new ops join: the last queued one, or a new one when it is full."""
        queue = self._queue
        if queue:
            batch = queue[-1]
            if not batch.ops or len(batch.ops) + size <= self.batch_max:
                return batch
        batch = Batch(self._wake_writer)
        queue.append(batch)
        self._wake_writer()
        return batch

    def _tell_fenced(self, fenced: list[tuple[str, str]]) -> None:
        """Writes of executions whose lease another worker took were refused: say which."""
        if not fenced:
            return
        if self.on_fenced is None:
            for ex_id, why in fenced:
                _log.warning("%s: writes of execution %s refused: %s", self._name(), ex_id, why)
            return
        try:
            self.on_fenced(tuple(fenced))
        except Exception:  # the callback's bug must not stop the writer
            _log.exception("%s: on_fenced failed", self._name())

    def _report(self, rejected: tuple[RejectedOp, ...]) -> None:
        """Tell the runtime (or the log) which rows were left out, before the commit wakes
        anyone: whoever awaits it then sees its execution failed, not succeeded."""
        if self.on_rejected is None:
            for r in rejected:
                _log.warning(
                    "%s: a row of execution %s was not stored (%s %s): %s",
                    self._name(), r.execution_id, r.table, r.key, r.error,
                )  # fmt: skip
            return
        try:
            self.on_rejected(rejected)
        except Exception:  # the callback's bug must not stop the writer
            _log.exception("%s: on_rejected failed", self._name())
