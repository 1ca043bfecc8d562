"""The cycle collector while runtimes are open in this process.

Actors are short-lived and numerous: a fan-out or a burst of executions keeps 100,000 or more
alive, each a dozen objects the collector tracks (tasks, coroutines, futures, lists). With
CPython's default thresholds (700, 10, 10) a collection runs every few task runs, and every
full pass walks every live actor: the collector took 4% of the time at 1,000 concurrent
executions, 23% at 100,000, and stalled the loop up to a second per full pass.

So, while at least one runtime is open (and only if the host has the collector enabled):

* after start-up, what exists is frozen (``gc.freeze``): the interpreter's and the host's
  long-lived objects are not walked again by full passes;
* while many actors live (MANY or more actors and parked executions), thresholds go up to
  HIGH; back to the host's once FEW or fewer remain. The count is looked at when a collection
  starts (``gc.callbacks``): a burst that never yields to the loop is seen too;
* when the last runtime closes, the host's thresholds come back and what was frozen is
  unfrozen (so garbage made while it was frozen can be collected).

``Runtime.open(tune_gc=False)`` leaves the collector alone. If the host had already frozen
objects itself, nothing is frozen or unfrozen here.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

HIGH = (50_000, 20, 50)  # a young pass per 50,000 net allocations, a full one per 50M
MANY = 200
FEW = 100

_host: tuple[int, int, int] | None = None  # the host's thresholds, while any runtime is open
_froze = False
_open: list[Tuning] = []


class Tuning:
    """One open runtime's hold on the collector (see the module docstring)."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count
        self.many = False

    def __enter__(self) -> Tuning:
        global _host, _froze
        if not _open:
            if not gc.isenabled() or gc.get_threshold()[0] == 0:
                _host = None  # the host turned the collector off: hands off
            else:
                _host = gc.get_threshold()
                if gc.get_freeze_count() == 0:
                    # No collection first: it would cost a full pass of the host's heap on
                    # every open; garbage frozen now is collected once unfrozen at close.
                    gc.freeze()
                    _froze = True
                gc.callbacks.append(_on_collect)
        _open.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        global _host, _froze
        _open.remove(self)
        if _open:
            _apply()
            return
        if _host is not None:
            gc.callbacks.remove(_on_collect)
            gc.set_threshold(*_host)
            _host = None
        if _froze:
            gc.unfreeze()
            _froze = False

    def update(self) -> None:
        """Look at how many actors live; switch the thresholds when it crosses a mark."""
        n = self._count()
        many = n >= MANY if not self.many else n > FEW
        if many != self.many:
            self.many = many
            _apply()


def _on_collect(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        for tuning in _open:
            tuning.update()


def _apply() -> None:
    if _host is None:
        return
    if any(t.many for t in _open):
        gc.set_threshold(*(max(h, v) for h, v in zip(_host, HIGH, strict=True)))
    else:
        gc.set_threshold(*_host)


__all__ = ["FEW", "HIGH", "MANY", "Tuning"]
