"""States of executions, task runs and attempts, and the one transition table for each.

Kestra has no explicit table (``withState`` accepts anything); ours writes down the transitions
Kestra's executor actually makes (research notes, section 1.4) and refuses every other one.
Two deliberate simplifications: a retried task run goes ``RUNNING -> RETRYING -> RUNNING``
(Kestra shows ``FAILED -> RETRYING -> CREATED``), and an execution whose task run waits for a
retry stays ``RUNNING``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from actorflow._errors import InvalidTransition


class MistralState(enum.StrEnum):
    """Mistral's state names, shown as a view of :class:`State`."""

    IDLE = "IDLE"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    RUNNING_DELAYED = "RUNNING_DELAYED"
    PAUSED = "PAUSED"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


class State(enum.StrEnum):
    """State of an execution, a task run or an attempt."""

    CREATED = "CREATED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    RETRYING = "RETRYING"
    SUCCESS = "SUCCESS"
    WARNING = "WARNING"
    FAILED = "FAILED"
    KILLING = "KILLING"
    KILLED = "KILLED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"
    RESTARTED = "RESTARTED"
    #: An execution that failed and is retried as a new one (Kestra's CREATE_NEW_EXECUTION).
    RETRIED = "RETRIED"

    # Plain attributes set on each member below, not properties: read on every state change.
    terminal: bool
    """True for states that end a run (until a restart)."""
    failed: bool
    """True for terminal states that stop a sequence (FAILED, KILLED, CANCELLED)."""

    @property
    def mistral(self) -> MistralState:
        """The Mistral name of this state (see ``MISTRAL_VIEW``)."""
        return MISTRAL_VIEW[self]


TERMINAL = frozenset(
    {
        State.SUCCESS,
        State.WARNING,
        State.FAILED,
        State.KILLED,
        State.CANCELLED,
        State.SKIPPED,
        State.RETRIED,
    }
)
_FAILING = frozenset({State.FAILED, State.KILLED, State.CANCELLED, State.RETRIED})
for _member in State:
    _member.terminal = _member in TERMINAL
    _member.failed = _member in _FAILING

#: How each state reads in Mistral's vocabulary. WARNING and SKIPPED are completed without
#: error there; KILLING is still running until the kill lands; KILLED is Mistral's CANCELLED.
MISTRAL_VIEW: Mapping[State, MistralState] = {
    State.CREATED: MistralState.IDLE,
    State.QUEUED: MistralState.WAITING,
    State.RUNNING: MistralState.RUNNING,
    State.PAUSED: MistralState.PAUSED,
    State.RETRYING: MistralState.RUNNING_DELAYED,
    State.SUCCESS: MistralState.SUCCESS,
    State.WARNING: MistralState.SUCCESS,
    State.FAILED: MistralState.ERROR,
    State.KILLING: MistralState.RUNNING,
    State.KILLED: MistralState.CANCELLED,
    State.CANCELLED: MistralState.CANCELLED,
    State.SKIPPED: MistralState.SUCCESS,
    State.RESTARTED: MistralState.RUNNING,
    State.RETRIED: MistralState.ERROR,
}

# Severity for "worst child wins"; SKIPPED counts as SUCCESS as in Kestra's guessFinalState.
SEVERITY: Mapping[State, int] = {
    State.SUCCESS: 0,
    State.SKIPPED: 0,
    State.WARNING: 1,
    State.FAILED: 2,
    State.CANCELLED: 3,
    State.KILLED: 4,
}

S = State
EXECUTION_TRANSITIONS: Mapping[State, frozenset[State]] = {
    S.CREATED: frozenset({S.RUNNING, S.QUEUED, S.CANCELLED, S.FAILED, S.KILLING, S.KILLED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.KILLING, S.KILLED}),
    S.RUNNING: frozenset(
        {S.PAUSED, S.SUCCESS, S.WARNING, S.FAILED, S.KILLING, S.CANCELLED, S.KILLED, S.RETRIED}
    ),
    S.PAUSED: frozenset({S.RESTARTED, S.RUNNING, S.KILLING, S.FAILED, S.CANCELLED, S.WARNING}),
    S.RESTARTED: frozenset({S.RUNNING, S.KILLING, S.PAUSED}),
    # FAILED / CANCELLED: killed by an SLA whose behavior says so.
    S.KILLING: frozenset({S.KILLED, S.FAILED, S.CANCELLED}),
    S.SUCCESS: frozenset(),
    S.WARNING: frozenset({S.RESTARTED}),
    S.FAILED: frozenset({S.RESTARTED}),
    S.KILLED: frozenset({S.RESTARTED}),
    S.CANCELLED: frozenset(),
    S.SKIPPED: frozenset(),
    S.RETRYING: frozenset(),
    S.RETRIED: frozenset(),
}

_TASK_RUN_FINISHED = frozenset({S.SUCCESS, S.WARNING, S.FAILED, S.KILLED, S.CANCELLED})
TASK_RUN_TRANSITIONS: Mapping[State, frozenset[State]] = {
    S.CREATED: frozenset({S.RUNNING, S.SKIPPED, S.KILLED, S.FAILED, S.CANCELLED}),
    S.RUNNING: _TASK_RUN_FINISHED | {S.PAUSED, S.RETRYING, S.KILLING},
    S.KILLING: frozenset({S.KILLED}),
    S.PAUSED: frozenset({S.RUNNING, S.KILLED, S.FAILED, S.WARNING, S.CANCELLED, S.SUCCESS}),
    S.RETRYING: frozenset({S.RUNNING, S.KILLED, S.FAILED}),
    S.RESTARTED: frozenset({S.RUNNING, S.KILLED, S.SKIPPED, S.FAILED}),
    # Restart re-opens failed leaves and their (possibly successful) ancestors.
    S.SUCCESS: frozenset({S.RESTARTED}),
    S.WARNING: frozenset({S.RESTARTED}),
    S.FAILED: frozenset({S.RESTARTED}),
    S.KILLED: frozenset({S.RESTARTED}),
    S.CANCELLED: frozenset({S.RESTARTED}),
    S.SKIPPED: frozenset(),
    S.QUEUED: frozenset(),
    S.RETRIED: frozenset(),
}

ATTEMPT_TRANSITIONS: Mapping[State, frozenset[State]] = {
    S.RUNNING: frozenset({S.SUCCESS, S.WARNING, S.FAILED, S.KILLED}),
}

_TABLES: Mapping[str, Mapping[State, frozenset[State]]] = {
    "execution": EXECUTION_TRANSITIONS,
    "task run": TASK_RUN_TRANSITIONS,
    "attempt": ATTEMPT_TRANSITIONS,
}


def check_transition(kind: str, entity_id: str, current: State, target: State) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> target`` is in ``kind``'s table."""
    if target not in _TABLES[kind].get(current, frozenset()):
        raise InvalidTransition(kind, entity_id, current.value, target.value)


def worst(states: Iterable[State]) -> State:
    """The most severe terminal state among ``states`` (SUCCESS when empty)."""
    result = State.SUCCESS
    level = 0
    for s in states:
        sev = SEVERITY.get(s, 0)
        if sev > level:
            result, level = s, sev
    return result
