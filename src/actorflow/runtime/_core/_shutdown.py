"""What a closing runtime records of the attempts it interrupted, before it gives up their
leases.

After the closing grace, attempts still running are cancelled. Left at that, the store would
show them RUNNING until another worker resumed their executions and recorded them there. The
closing runtime records them itself, exactly as recovery does (:func:`interrupted_attempt`,
which recovery calls too): the attempt ends FAILED with error ``interrupted`` at the close;
its task run stays RUNNING (no new state, so no history row), so the next owner starts the
next attempt as after a crash, and recovery, finding no open attempt, records nothing twice
and counts no extra attempt. Every record goes in one transaction, committed before the
leases are released; an execution whose record could not be committed (storage failed, time
ran out) keeps its lease, and the next worker recovers it as after a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from actorflow.runtime._core._persist import decode_task_run
from actorflow.runtime._states import State
from actorflow.runtime._tasks import Runnable
from actorflow.storage import Commit

if TYPE_CHECKING:
    from actorflow.runtime._core._engine import Engine
    from actorflow.runtime._flow import Flow
    from actorflow.runtime._records import TaskRun

INTERRUPTED = "interrupted"
#: The share of ``shutdown_timeout`` kept for recording what was interrupted (at most
#: ``RECORD_RESERVE`` seconds); the running attempts get the rest as their grace.
RECORD_SHARE = 0.2
RECORD_RESERVE = 2.0
#: Recording gets at least this long, even after a zero grace (``Runtime.interrupt``).
RECORD_MIN = 0.5
_CHUNK = 1000


def grace_of(timeout: float) -> float:
    """The grace running attempts get out of a closing runtime's ``timeout``."""
    return max(0.0, timeout - min(RECORD_RESERVE, timeout * RECORD_SHARE))


def interrupted_attempt(tr: TaskRun, now: float) -> TaskRun | None:
    """``tr`` with its running attempt ended FAILED ``interrupted`` at ``now``; None when it
    has no attempt in flight (nothing to record)."""
    attempts = tr.attempts
    if tr.state is not State.RUNNING or not attempts or attempts[-1].end is not None:
        return None
    last = msgspec.structs.replace(attempts[-1], state=State.FAILED, end=now, error=INTERRUPTED)
    return msgspec.structs.replace(tr, attempts=(*attempts[:-1], last))


def _recordable(flow: Flow | None, tr: TaskRun) -> bool:
    """Whether recovery would record ``tr``'s open attempt as interrupted: a runnable task's
    (a Pause goes back to PAUSED, a Subflow watches or adopts its child)."""
    if flow is None:
        return False
    try:
        return isinstance(flow.task(tr.task_id), Runnable)
    except KeyError:
        return False


async def record_interrupted(
    engine: Engine, flows: Mapping[str, Flow], execution_ids: Sequence[str]
) -> tuple[Commit | None, int]:
    """Queue the records of the interrupted attempts of ``execution_ids`` (their flows in
    ``flows``) as one transaction; returns its commit (await it for durability; None when
    there is nothing to record) and how many attempts it records.

    Raises whatever the store raises (storage failed): nothing is then known to be recorded.
    """
    store = engine.store
    now = engine.clock.now()
    ops: list[Any] = []
    count = 0
    for start in range(0, len(execution_ids), _CHUNK):
        chunk = execution_ids[start : start + _CHUNK]
        runs_of = await store.task_runs_of(chunk)
        for execution_id in chunk:
            flow = flows.get(execution_id)
            for row in runs_of.get(execution_id, ()):
                if row.state != State.RUNNING.value:
                    continue
                try:
                    tr = decode_task_run(row.data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue  # the next owner quarantines it, as recovery does
                recorded = interrupted_attempt(tr, now) if _recordable(flow, tr) else None
                if recorded is not None:
                    ops += engine._task_run_rows(recorded)
                    count += 1
    return (store.write(ops) if ops else None), count


__all__ = [
    "INTERRUPTED",
    "RECORD_MIN",
    "grace_of",
    "interrupted_attempt",
    "record_interrupted",
]
