"""The transition tables and the Mistral view."""

from __future__ import annotations

import itertools

import pytest

from actorflow import InvalidTransition
from actorflow.runtime import (
    EXECUTION_TRANSITIONS,
    MISTRAL_VIEW,
    TASK_RUN_TRANSITIONS,
    MistralState,
    State,
)
from actorflow.runtime._states import TERMINAL, check_transition, worst


def test_every_state_has_a_row_and_a_mistral_name() -> None:
    """Both tables cover every state and every state has a Mistral name."""
    assert set(EXECUTION_TRANSITIONS) == set(State)
    assert set(TASK_RUN_TRANSITIONS) == set(State)
    assert set(MISTRAL_VIEW) == set(State)


def test_illegal_transition_names_both_states() -> None:
    """An illegal change raises InvalidTransition naming the entity and both states."""
    with pytest.raises(
        InvalidTransition, match=r"execution e1: illegal transition SUCCESS -> RUNNING"
    ):
        check_transition("execution", "e1", State.SUCCESS, State.RUNNING)


def test_kestra_paths_are_legal() -> None:
    """The paths Kestra's executor takes are all in the tables."""
    for path in (
        [State.CREATED, State.RUNNING, State.PAUSED, State.RESTARTED, State.RUNNING, State.SUCCESS],
        [State.CREATED, State.QUEUED, State.RUNNING, State.KILLING, State.KILLED, State.RESTARTED],
        [State.CREATED, State.RUNNING, State.FAILED, State.RESTARTED, State.RUNNING, State.WARNING],
    ):
        for a, b in itertools.pairwise(path):
            check_transition("execution", "e", a, b)
    for path in (
        [State.CREATED, State.RUNNING, State.RETRYING, State.RUNNING, State.FAILED, State.RESTARTED,
         State.RUNNING, State.SUCCESS],
        [State.CREATED, State.RUNNING, State.PAUSED, State.RUNNING, State.SUCCESS],
        [State.CREATED, State.SKIPPED],
    ):  # fmt: skip
        for a, b in itertools.pairwise(path):
            check_transition("task run", "t", a, b)


def test_terminal_states_do_not_move_except_by_restart() -> None:
    """From a terminal state the only exit is RESTARTED (never for SUCCESS executions)."""
    for s in TERMINAL:
        assert EXECUTION_TRANSITIONS[s] <= {State.RESTARTED}
        assert TASK_RUN_TRANSITIONS[s] <= {State.RESTARTED}
    assert not EXECUTION_TRANSITIONS[State.SUCCESS]


def test_mistral_view() -> None:
    """Mistral names: RETRYING reads RUNNING_DELAYED, FAILED reads ERROR, KILLED CANCELLED."""
    assert State.RETRYING.mistral is MistralState.RUNNING_DELAYED
    assert State.FAILED.mistral is MistralState.ERROR
    assert State.KILLED.mistral is MistralState.CANCELLED
    assert State.CREATED.mistral is MistralState.IDLE
    assert State.QUEUED.mistral is MistralState.WAITING


def test_worst_child_wins() -> None:
    """KILLED > CANCELLED > FAILED > WARNING > SUCCESS; SKIPPED counts as SUCCESS."""
    assert worst([State.SUCCESS, State.WARNING, State.SKIPPED]) is State.WARNING
    assert worst([State.WARNING, State.FAILED]) is State.FAILED
    assert worst([State.FAILED, State.KILLED, State.WARNING]) is State.KILLED
    assert worst([]) is State.SUCCESS
