"""Retry policies with Kestra's counting: ``max_attempts`` counts every attempt, the first too."""

from __future__ import annotations

import random as _random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from actorflow._errors import FlowError
from actorflow.runtime._clock import MAX_DURATION


class NonRetryableError(Exception):
    """Raise (or subclass) in a task to fail its task run without any further attempt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """When and how often a failed task run gets another attempt.

    Attributes:
        kind: ``constant`` (every ``interval``), ``exponential`` (``interval * factor**(n-1)``,
            capped at ``max_interval``) or ``random`` (uniform in ``[min_interval, max_interval)``).
        max_attempts: total attempts including the first; None = no limit by count.
        max_duration: no attempt starts at or after first start + this (seconds).
        warning_on_retry: a success that needed retries ends WARNING (from the third attempt,
            as in Kestra).
        retry_on: retry only these exception types (empty = all).
        abort_on: never retry these exception types (checked first).
        new_execution: Kestra's ``behavior: CREATE_NEW_EXECUTION``: the failed task run is
            not retried in place; its execution ends RETRIED and a new execution of the flow
            (``original_execution_id`` the first one's, ``attempt_number`` + 1) starts after
            the delay. ``max_attempts`` counts executions, ``max_duration`` runs from the
            first one's start.
    """

    kind: Literal["constant", "exponential", "random"] = "constant"
    interval: float = 0.0
    max_interval: float | None = None
    min_interval: float = 0.0
    factor: float = 2.0
    max_attempts: int | None = None
    max_duration: float | None = None
    warning_on_retry: bool = False
    retry_on: Sequence[type[BaseException]] = field(default=())
    abort_on: Sequence[type[BaseException]] = field(default=())
    new_execution: bool = False

    def __post_init__(self) -> None:
        for name in ("interval", "max_interval", "min_interval", "max_duration"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and 0 <= value <= MAX_DURATION
            ):
                raise FlowError(
                    f"retry.{name} must be a finite number of seconds between 0 and "
                    f"{MAX_DURATION:.0f} (100 years), got {value!r}"
                )
        if not (isinstance(self.factor, int | float) and 0 <= self.factor <= 1e6):
            raise FlowError(f"retry.factor must be a finite number <= 1e6, got {self.factor!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise FlowError(f"retry.max_attempts must be >= 1, got {self.max_attempts}")
        if self.interval < 0 or self.min_interval < 0:
            raise FlowError("retry intervals must not be negative")
        if self.max_attempts is None and self.max_duration is None:
            raise FlowError("retry needs max_attempts or max_duration, else it never stops")
        if self.kind == "random" and (
            self.max_interval is None or self.max_interval < self.min_interval
        ):
            raise FlowError("random retry needs max_interval >= min_interval")
        if self.kind == "exponential" and self.factor < 1:
            raise FlowError(f"retry.factor must be >= 1, got {self.factor}")

    @classmethod
    def constant(cls, interval: float, **kw: Any) -> Retry:
        """Retry every ``interval`` seconds."""
        return cls(kind="constant", interval=interval, **kw)

    @classmethod
    def exponential(
        cls, interval: float, *, max_interval: float, factor: float = 2.0, **kw: Any
    ) -> Retry:
        """Retry after ``interval * factor**(n-1)`` seconds, capped at ``max_interval``."""
        return cls(
            kind="exponential", interval=interval, max_interval=max_interval, factor=factor, **kw
        )

    @classmethod
    def random(cls, min_interval: float, max_interval: float, **kw: Any) -> Retry:
        """Retry after a uniform random delay in ``[min_interval, max_interval)``."""
        return cls(kind="random", min_interval=min_interval, max_interval=max_interval, **kw)

    def delay(self, attempts_done: int, rng: _random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts_done``-th attempt failed."""
        if self.kind == "constant":
            return self.interval
        if self.kind == "exponential":
            try:
                d = self.interval * self.factor ** (attempts_done - 1)
            except OverflowError:  # after ~1000 attempts: the cap applies anyway
                d = MAX_DURATION
            return min(d, MAX_DURATION if self.max_interval is None else self.max_interval)
        assert self.max_interval is not None
        return float((rng or _random).uniform(self.min_interval, self.max_interval))

    def retryable(self, error: BaseException) -> bool:
        """Whether this error may be retried at all."""
        if isinstance(error, NonRetryableError):
            return False
        if self.abort_on and isinstance(error, tuple(self.abort_on)):
            return False
        return not self.retry_on or isinstance(error, tuple(self.retry_on))

    def next_execution(self, *, attempt_number: int, first_start: float, now: float) -> float:
        """When the next execution of a ``new_execution`` retry starts; -1 when retrying is
        over (Kestra's ``ExecutionService.nextRetryDate``)."""
        if self.max_attempts is not None and attempt_number >= self.max_attempts:
            return -1.0
        due = now + self.delay(attempt_number)
        if self.max_duration is not None and due > first_start + self.max_duration:
            return -1.0
        return due

    def next_start(
        self, *, attempts_done: int, first_start: float, last_end: float, error: BaseException
    ) -> float | None:
        """When the next attempt is due, or None when retrying is over."""
        if not self.retryable(error):
            return None
        if self.max_attempts is not None and attempts_done >= self.max_attempts:
            return None
        due = last_end + self.delay(attempts_done)
        if self.max_duration is not None and due >= first_start + self.max_duration:
            return None
        return due
