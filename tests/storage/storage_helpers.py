"""Row builders and a fake clock shared by the storage tests."""

from __future__ import annotations

from typing import Any

from actorflow.storage import ExecutionRow, TaskRunRow

TERMINAL = ("SUCCESS", "FAILED", "WARNING", "KILLED", "CANCELLED", "SKIPPED")


class FakeClock:
    """Stands in for time.time so heartbeats can age without sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ex(i: str, state: str = "RUNNING", created: float = 1.0, **kw: Any) -> ExecutionRow:
    """An execution row with a recognisable snapshot."""
    fields: dict[str, Any] = {"namespace": "ns", "flow_id": "f", "flow_revision": 1,
                              "updated": created, "data": b"snap-" + i.encode()}  # fmt: skip
    return ExecutionRow(id=i, state=state, created=created, **(fields | kw))


def tr(i: str, e: str, state: str = "RUNNING", created: float = 1.0, **kw: Any) -> TaskRunRow:
    """A task-run row."""
    fields: dict[str, Any] = {"task_id": "t-" + i, "updated": created, "data": b"tr-" + i.encode()}
    return TaskRunRow(id=i, execution_id=e, state=state, created=created, **(fields | kw))
