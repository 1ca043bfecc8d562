"""Retry policies: delays, counting and filters."""

from __future__ import annotations

import pytest

from actorflow import FlowError
from actorflow.runtime import NonRetryableError, Retry


def test_exponential_delay_grows_and_caps() -> None:
    """interval * factor^(n-1), capped at max_interval."""
    r = Retry.exponential(1.0, max_interval=5.0, factor=2.0, max_attempts=10)
    assert [r.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_random_delay_in_range() -> None:
    """Random delays stay within [min, max)."""
    r = Retry.random(0.2, 0.5, max_attempts=3)
    assert all(0.2 <= r.delay(1) < 0.5 for _ in range(100))


def test_max_attempts_counts_the_first() -> None:
    """max_attempts=3 allows a retry after attempts 1 and 2, not after 3."""
    r = Retry.constant(1.0, max_attempts=3)
    err = RuntimeError()
    assert r.next_start(attempts_done=1, first_start=0, last_end=0, error=err) == 1.0
    assert r.next_start(attempts_done=2, first_start=0, last_end=1, error=err) == 2.0
    assert r.next_start(attempts_done=3, first_start=0, last_end=2, error=err) is None


def test_max_duration_stops_late_attempts() -> None:
    """No attempt may start at or after first start + max_duration."""
    r = Retry.constant(2.0, max_duration=6.0)
    err = RuntimeError()
    assert r.next_start(attempts_done=2, first_start=0, last_end=3.5, error=err) == 5.5
    assert r.next_start(attempts_done=3, first_start=0, last_end=4, error=err) is None


def test_filters() -> None:
    """abort_on and NonRetryableError stop retries; retry_on limits them."""
    r = Retry.constant(0, max_attempts=5, retry_on=(OSError,), abort_on=(FileNotFoundError,))
    assert r.retryable(ConnectionError())
    assert not r.retryable(FileNotFoundError())
    assert not r.retryable(ValueError())
    assert not Retry.constant(0, max_attempts=5).retryable(NonRetryableError("no"))


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"interval": -1, "max_attempts": 2}, {}],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    """Zero attempts, negative intervals and endless retries are rejected."""
    with pytest.raises(FlowError):
        Retry(**kwargs)  # type: ignore[arg-type]
