"""A batch of the SQLite writer: ops that commit in one transaction, and their commit."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from actorflow.storage._rows import DeleteExecution, DeleteTaskRuns, Op, RejectedOp
from actorflow.storage._store import Commit

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
