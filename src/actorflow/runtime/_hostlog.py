"""Task log lines and runtime events forwarded to the host's stdlib :mod:`logging`.

Logger names a host can filter on (namespaces may hold dots; the hierarchy follows them):

- ``actorflow.task.<namespace>.<flow>.<task>``: every task log line (``ctx.log``, the shell
  and http task lines, an attempt's error), at its own level;
- ``actorflow.runtime.execution.<namespace>.<flow>``: each new state of an execution (INFO;
  WARNING for WARNING and KILLED, ERROR for FAILED);
- ``actorflow.runtime.task_run.<namespace>.<flow>.<task>``: each new state of a task run
  (DEBUG; WARNING for RETRYING, WARNING and KILLED, ERROR for FAILED).

Every record carries the ids below as ``extra`` attributes (see :data:`EXTRA_FIELDS`). The
stored logs do not depend on any of this. A record is built only when its logger is enabled
for its level (``isEnabledFor``, cached by :mod:`logging`), so nobody listening costs a dict
look-up and that check. The ``actorflow.task`` and ``actorflow.runtime.*`` event loggers carry
a ``NullHandler``: without any logging configured, Python's last-resort handler does not print
task lines on stderr (they are stored; a host that configures logging sees them).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from actorflow.runtime._states import State

if TYPE_CHECKING:
    from actorflow.runtime._records import Execution, TaskRun

TASK_LOGGER = "actorflow.task"
EXECUTION_LOGGER = "actorflow.runtime.execution"
TASK_RUN_LOGGER = "actorflow.runtime.task_run"

#: The ``extra`` attributes on every forwarded record (None where it does not apply).
EXTRA_FIELDS = (
    "actorflow_namespace",
    "actorflow_flow_id",
    "actorflow_execution_id",
    "actorflow_task_id",
    "actorflow_task_run_id",
    "actorflow_attempt",
    "actorflow_state",
    "actorflow_trace_id",
    "actorflow_span_id",
)

LEVEL_NUMBERS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

_DEBUG, _INFO, _WARNING, _ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR
_FAILED, _KILLED, _WARNED, _RETRYING = State.FAILED, State.KILLED, State.WARNING, State.RETRYING


# Loggers live as long as the process in logging's own registry; this cache only saves
# building the name again. It is bounded: a host with endless generated flow ids keeps
# logging's registry growing as it would for its own loggers, not this dict.
_cache: dict[tuple[str, ...], logging.Logger] = {}
_CACHE_MAX = 4096

for _name in (TASK_LOGGER, EXECUTION_LOGGER, TASK_RUN_LOGGER):
    logging.getLogger(_name).addHandler(logging.NullHandler())


def _logger(key: tuple[str, ...]) -> logging.Logger:
    found = _cache.get(key)
    if found is None:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        found = _cache[key] = logging.getLogger(".".join(key))
    return found


_registry = logging.Logger.manager.loggerDict
# What each task run's state changes ask ``isEnabledFor``: its own logger if logging has it,
# else its nearest ancestor that exists (a logger nobody made has its ancestors' level), so a
# flow of a thousand tasks run once makes no thousand loggers nobody listens to (about 15 µs
# each). Emptied whenever logging's registry grows: the new logger may be one of these.
_event_cache: dict[tuple[str, ...], logging.Logger] = {}
_registry_size = [len(_registry)]


def _event_logger(key: tuple[str, ...]) -> logging.Logger:
    if len(_registry) != _registry_size[0]:
        _event_cache.clear()
        _registry_size[0] = len(_registry)
    found = _event_cache.get(key)
    if found is not None:
        return found
    if len(_event_cache) >= _CACHE_MAX:
        _event_cache.clear()
    name = ".".join(key)
    while True:
        known = _registry.get(name)
        if isinstance(known, logging.Logger):
            found = known
            break
        name, dot, _ = name.rpartition(".")
        if not dot:
            found = logging.getLogger()
            break
    if found.disabled:
        found = _logger(key)  # a disabled ancestor says nothing of a new logger: make it
    _event_cache[key] = found
    return found


# Identity checks, not a dict keyed by State: an enum member's hash is a Python-level call,
# and these run on every state change of every task run.
def _execution_level(state: State) -> int:
    if state is _FAILED:
        return _ERROR
    return _WARNING if state is _KILLED or state is _WARNED else _INFO


def _task_run_level(state: State) -> int:
    if state is _FAILED:
        return _ERROR
    if state is _RETRYING or state is _KILLED or state is _WARNED:
        return _WARNING
    return _DEBUG


def task_logger(namespace: str, flow_id: str, task_id: str) -> logging.Logger:
    """The logger of a task's log lines: ``actorflow.task.<namespace>.<flow>.<task>``."""
    return _logger((TASK_LOGGER, namespace, flow_id, task_id))


def _extra(
    namespace: str,
    flow_id: str,
    execution_id: str,
    task_id: str | None = None,
    task_run_id: str | None = None,
    attempt: int | None = None,
    state: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
) -> dict[str, Any]:
    return {
        "actorflow_namespace": namespace,
        "actorflow_flow_id": flow_id,
        "actorflow_execution_id": execution_id,
        "actorflow_task_id": task_id,
        "actorflow_task_run_id": task_run_id,
        "actorflow_attempt": attempt,
        "actorflow_state": state,
        "actorflow_trace_id": trace_id,
        "actorflow_span_id": span_id,
    }


def task_line(
    logger: logging.Logger,
    levelno: int,
    message: str,
    *,
    namespace: str,
    flow_id: str,
    execution_id: str,
    task_id: str,
    task_run_id: str,
    attempt: int,
    ids: tuple[str | None, str | None],
) -> None:
    """Forward one task log line (the caller checked ``logger.isEnabledFor(levelno)``)."""
    extra = _extra(
        namespace, flow_id, execution_id, task_id, task_run_id, attempt, None, ids[0], ids[1]
    )
    logger.log(levelno, "[%s] %s", execution_id, message, extra=extra)


def _span_ids(traceparent: str | None) -> tuple[str | None, str | None]:
    parts = traceparent.split("-") if traceparent else ()
    return (parts[1], parts[2]) if len(parts) == 4 else (None, None)


def execution_event(ex: Execution) -> None:
    """Forward an execution's new state to ``actorflow.runtime.execution.<ns>.<flow>``."""
    levelno = _execution_level(ex.state)
    logger = _cache.get((EXECUTION_LOGGER, ex.namespace, ex.flow_id)) or _logger(
        (EXECUTION_LOGGER, ex.namespace, ex.flow_id)
    )
    if not logger.isEnabledFor(levelno):
        return
    text = f": {ex.error}" if ex.error and ex.state is State.FAILED else ""
    trace_id, span_id = _span_ids(ex.traceparent)
    extra = _extra(
        ex.namespace, ex.flow_id, ex.id, state=ex.state.value, trace_id=trace_id, span_id=span_id
    )
    logger.log(levelno, "execution %s %s%s", ex.id, ex.state.value, text, extra=extra)


def task_run_event(ex: Execution, tr: TaskRun) -> None:
    """Forward a task run's new state to ``actorflow.runtime.task_run.<ns>.<flow>.<task>``."""
    levelno = _task_run_level(tr.state)
    key = (TASK_RUN_LOGGER, ex.namespace, ex.flow_id, tr.task_id)
    logger = _event_logger(key)
    if not logger.isEnabledFor(levelno):
        return
    logger = _logger(key)  # someone listens: the record comes from the task's own logger
    text = f": {tr.error}" if tr.error and tr.state is State.FAILED else ""
    extra = _extra(
        ex.namespace,
        ex.flow_id,
        ex.id,
        tr.task_id,
        tr.id,
        len(tr.attempts) or None,
        tr.state.value,
    )
    logger.log(
        levelno, "task run %s (%s) %s%s", tr.id, tr.task_id, tr.state.value, text, extra=extra
    )


__all__ = [
    "EXECUTION_LOGGER",
    "EXTRA_FIELDS",
    "LEVEL_NUMBERS",
    "TASK_LOGGER",
    "TASK_RUN_LOGGER",
    "execution_event",
    "task_line",
    "task_logger",
    "task_run_event",
]
