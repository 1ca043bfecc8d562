"""Durations and ids from the Python API: NaN, infinite, negative or huge durations and
over-long ids are refused where they enter, and the timer survives a NaN due time anyway."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from actorflow import FlowError
from actorflow.runtime import (
    MAX_DURATION,
    FakeClock,
    Flow,
    Log,
    Pause,
    Retry,
    Runtime,
    Sleep,
    State,
)
from actorflow.runtime._clock import Timers

pytestmark = pytest.mark.anyio

NAN, INF = float("nan"), float("inf")
BAD = [NAN, INF, -INF, -1.0, MAX_DURATION * 2]


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize(
    "make",
    [
        lambda v: Log(id="t", message="hi", timeout=v),
        lambda v: Sleep(id="t", duration=v),
        lambda v: Pause(id="t", delay=v),
        lambda v: Pause(id="t", timeout=v),
        lambda v: Retry.constant(v, max_attempts=2),
        lambda v: Retry.constant(1, max_duration=v),
        lambda v: Retry.random(0, v, max_attempts=2),
        lambda v: Retry.exponential(1, max_interval=v, max_attempts=2),
    ],
    ids=[
        "timeout",
        "sleep",
        "pause-delay",
        "pause-timeout",
        "interval",
        "max_duration",
        "max_interval",
        "exp-max_interval",
    ],
)
def test_bad_durations_are_refused_in_the_python_api(
    make: Callable[[float], Any], value: float
) -> None:
    """A NaN, infinite, negative or over-100-years duration raises a FlowError naming it."""
    with pytest.raises(FlowError, match=r"must be a finite number of seconds"):
        make(value)


@pytest.mark.parametrize("factor", [NAN, INF, 1e7])
def test_bad_retry_factor_is_refused(factor: float) -> None:
    """An exponential factor that is not finite (or absurd) is refused."""
    with pytest.raises(FlowError, match=r"retry\.factor"):
        Retry.exponential(1, max_interval=5, factor=factor, max_attempts=3)


def test_good_durations_are_kept() -> None:
    """Zero, ints and the maximum itself are fine; a template string is checked later."""
    assert Log(id="t", message="hi", timeout=0).timeout == 0
    assert Pause(id="p", delay=MAX_DURATION).delay == MAX_DURATION
    assert Sleep(id="s", duration="{{ inputs.n }}").duration == "{{ inputs.n }}"


def test_exponential_delay_never_overflows() -> None:
    """After thousands of attempts the delay stays capped (no OverflowError)."""
    r = Retry(kind="exponential", interval=1, factor=2, max_duration=MAX_DURATION)
    assert r.delay(5000) == MAX_DURATION
    capped = Retry.exponential(1, max_interval=30, max_attempts=None, max_duration=100)
    assert capped.delay(5000) == 30


def test_over_long_task_id_is_refused() -> None:
    """A task id longer than 100 characters is refused with its length."""
    Log(id="t" * 100, message="hi")
    with pytest.raises(FlowError, match="100,000 characters; at most 100"):
        Log(id="t" * 100_000, message="hi")


async def test_timers_survive_a_nan_due_time() -> None:
    """A timer due at NaN fires at once and the timers scheduled around it still fire."""
    clock = FakeClock()
    timers = Timers(clock)
    fired: list[str] = []
    start = clock.now()
    async with anyio.create_task_group() as tg:
        tg.start_soon(timers.run)
        timers.call_at(start + 1, lambda: fired.append("one"))
        timers.call_at(NAN, lambda: fired.append("nan"))
        timers.call_at(start + 2, lambda: fired.append("two"))
        await anyio.wait_all_tasks_blocked()
        assert fired == ["nan"]
        clock.advance(1)
        await anyio.wait_all_tasks_blocked()
        assert fired == ["nan", "one"]
        clock.advance(1)
        await anyio.wait_all_tasks_blocked()
        assert fired == ["nan", "one", "two"]
        assert timers.pending() == 0
        tg.cancel_scope.cancel()


async def test_rendered_nan_sleep_fails_its_task_only(rt: Runtime) -> None:
    """A Sleep whose template renders to NaN fails that task run with a clear error."""
    flow = Flow(id="nan-sleep", tasks=[Sleep(id="s", duration="{{ 'nan' }}")])
    ex = await rt.run(flow)
    assert ex.state is State.FAILED
    assert "duration must be a finite number of seconds" in (ex.task_run("s").error or "")
    ok = await rt.run(Flow(id="ok", tasks=[Sleep(id="s", duration="{{ 0 }}")]))
    assert ok.state is State.SUCCESS
