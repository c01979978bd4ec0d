"""Unit tests for celeriac.states: Celery's state names, sets and precedence."""

from __future__ import annotations

import pytest

from celeriac import states
from celeriac.states import (
    FAILURE,
    PENDING,
    RECEIVED,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    precedence,
    state,
)


def test_state_names_are_celerys_strings() -> None:
    assert (PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED) == (
        "PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED")


def test_ready_states_are_exactly_success_failure_revoked() -> None:
    # A Celery client stops waiting on exactly these (CELERY-WIRE.md 6.2).
    assert states.READY_STATES == {SUCCESS, FAILURE, REVOKED}
    assert states.PROPAGATE_STATES == {FAILURE, REVOKED}
    assert states.EXCEPTION_STATES == {RETRY, FAILURE, REVOKED}
    assert not states.READY_STATES & states.UNREADY_STATES


def test_finished_beats_pending() -> None:
    assert state(SUCCESS) > state(PENDING)
    assert state(PENDING) < state(SUCCESS)
    assert state(FAILURE) > state(STARTED)
    assert state(STARTED) > state(RECEIVED) > state(PENDING)
    assert state(REVOKED) > state(STARTED)
    assert not state(PENDING) > state(SUCCESS)


def test_comparison_with_plain_strings() -> None:
    assert state(SUCCESS) > PENDING
    assert state(RETRY) < STARTED
    assert state(SUCCESS) >= SUCCESS and state(SUCCESS) <= SUCCESS
    assert state(SUCCESS) == SUCCESS  # still a str


@pytest.mark.parametrize("custom", ["PROGRESS", "UPLOADING"])
def test_custom_states_are_unready_and_sit_between(custom: str) -> None:
    assert custom not in states.READY_STATES
    assert state(custom) > state(STARTED)
    assert state(custom) > state(PENDING)
    assert state(custom) < state(SUCCESS)
    assert state(custom) < state(FAILURE)
    assert precedence(custom) == precedence("ANOTHER_CUSTOM")


def test_sorting_by_precedence() -> None:
    seen = [PENDING, SUCCESS, STARTED, "PROGRESS", RECEIVED]
    assert sorted(seen, key=state) == [PENDING, RECEIVED, STARTED, "PROGRESS", SUCCESS]
