"""One-shot futures that work on any anyio backend, with asyncio's bare future as fast path.

Thousands of waiters are common (commits, ``wait``), so on asyncio they stay the loop's own
``Future`` (one object each). Other backends (trio) get :class:`AnyioFuture`: the same few
methods over an ``anyio.Event``. Both are set only from the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

import anyio

T = TypeVar("T")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None on another backend (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class AnyioFuture(Generic[T]):
    """A one-shot result over an ``anyio.Event``, for backends without asyncio futures.

    As with an asyncio future, a waiter cancelled before the result came marks it cancelled
    (``done()`` true, later results ignored): whoever would set it sees nobody waits.
    """

    __slots__ = ("_cancelled", "_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._cancelled = False

    def done(self) -> bool:
        return self._cancelled or self._event.is_set()

    def cancelled(self) -> bool:
        return self._cancelled

    def set_result(self, value: T) -> None:
        if self.done():
            raise RuntimeError("future already done")
        self._value = value
        self._event.set()

    def set_exception(self, exception: BaseException) -> None:
        if self.done():
            raise RuntimeError("future already done")
        self._error = exception
        self._event.set()

    def exception(self) -> BaseException | None:
        if self._cancelled:
            raise anyio.get_cancelled_exc_class()()
        return self._error

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        value: T = self._value
        return value

    async def _wait(self) -> T:
        try:
            await self._event.wait()
        except BaseException:
            if not self._event.is_set():
                self._cancelled = True
            raise
        return self.result()

    def __await__(self) -> Generator[Any, None, T]:
        return self._wait().__await__()


def new_future(loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[Any]:
    """A future on the running backend: the asyncio loop's own (``loop`` if given), else an
    :class:`AnyioFuture` (typed as asyncio's: the methods used are the same)."""
    if loop is None:
        loop = running_loop()
    if loop is not None:
        return loop.create_future()
    future: Any = AnyioFuture()
    return future  # type: ignore[no-any-return]


def call_soon(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on the event loop soon, after what is ready now (from its thread)."""
    loop = running_loop()
    if loop is not None:
        loop.call_soon(fn, *args)
        return
    import trio

    trio.lowlevel.current_trio_token().run_sync_soon(fn, *args)


def threadsafe_caller() -> Callable[..., object]:
    """A function that runs ``fn(*args)`` on this event loop, called from any thread."""
    loop = running_loop()
    if loop is not None:
        return loop.call_soon_threadsafe
    import trio

    return trio.lowlevel.current_trio_token().run_sync_soon


__all__ = ["AnyioFuture", "call_soon", "new_future", "running_loop", "threadsafe_caller"]
