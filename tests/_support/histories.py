"""Stored histories against the transition tables: shared by the crash and multi-host tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from actorflow.runtime import EXECUTION_TRANSITIONS, TASK_RUN_TRANSITIONS, State


def check_stored_histories(rows: Iterable[tuple[str, str | None, str]]) -> int:
    """Assert that ``(execution_id, task_run_id, state)`` rows of ``state_history``, in their
    stored order, start at CREATED and follow the transition tables; returns how many
    histories were checked."""
    seqs: dict[tuple[str, str | None], list[str]] = {}
    for ex_id, tr_id, state in rows:
        seqs.setdefault((ex_id, tr_id), []).append(state)
    for (ex_id, tr_id), seq in seqs.items():
        table = EXECUTION_TRANSITIONS if tr_id is None else TASK_RUN_TRANSITIONS
        assert seq[0] == "CREATED", (ex_id, tr_id, seq)
        for a, b in itertools.pairwise(seq):
            assert State(b) in table[State(a)], f"{ex_id}/{tr_id}: {a} -> {b} in {seq}"
    return len(seqs)
