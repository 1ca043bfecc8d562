"""The one error tree of actorflow.

Every error the package raises on purpose derives from :class:`ActorflowError`::

    ActorflowError
    ├── ActorError                 actor kernel (actorflow.actors)
    │   ├── ActorNotFound          no live actor under that name
    │   ├── DeadActorError         the target stopped before (or while) handling the message
    │   ├── AskTimeout             no reply within the ask timeout (also a TimeoutError)
    │   ├── MailboxFull            tell_nowait on a full ordinary lane
    │   ├── ActorNameTaken         spawn under a name already in use
    │   └── EscalationError        a supervisor exceeded its restart intensity
    ├── StorageError               persistence (actorflow.storage)
    │   ├── DatabaseInvalid        not an actorflow database (SQLite file or PostgreSQL), or corrupt
    │   ├── SchemaTooNew           the database was written by a newer actorflow
    │   ├── StorageUnavailable     a write failed (read-only, disk full...); no work is accepted
    │   ├── ExecutionCorrupt       a stored execution that cannot be decoded (it is quarantined)
    │   ├── StoredFileNotFound     an actorflow:// URI that has no file
    │   └── FileAccessDenied       a file outside the reader's scope, or reached through a symlink
    ├── FlowError                  flow definitions
    │   └── FlowValidationError    every problem at once, each with file, line and field
    │       └── TaskNotAllowed     a task of a type this runtime does not allow (``shell``)
    ├── TemplateError              an expression failed to render (names task and field)
    ├── InputError                 execution or resume inputs do not match the declared ones
    ├── OutputError                a task output passed by reference (``step.output()``) or
    │                              read as a type (``execution.output(step)``) is missing or
    │                              does not fit the declared type (also a TypeError)
    ├── UnstorableValue            a value the store cannot keep (also a ValueError): names
    │                              where it is (``outputs.x.y``, ``metric 'n'``) and why
    ├── InvalidTransition          a state change not in the transition table
    ├── ExecutionNotFound          no execution with that id
    ├── IllegalOperation           an operation that the execution's state forbids
    ├── CommandNotAnswered         a command for another process's execution got no answer
    └── RuntimeClosedError         the runtime is closed or has stopped accepting work
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ActorflowError(Exception):
    """Root of every error actorflow raises on purpose."""


class ActorError(ActorflowError):
    """Actor kernel errors."""


class ActorNotFound(ActorError):
    """No live actor is registered under that name."""


class DeadActorError(ActorError):
    """The target actor is stopped or stopped before replying."""


class AskTimeout(ActorError, TimeoutError):
    """An ask got no reply within its timeout."""


class MailboxFull(ActorError):
    """``tell_nowait`` found the ordinary lane full."""


class ActorNameTaken(ActorError):
    """An actor is already registered under that name."""


class EscalationError(ActorError):
    """A supervisor exceeded its restart intensity and gave up."""


class StorageError(ActorflowError):
    """Persistence errors."""


class DatabaseInvalid(StorageError):
    """The file (or PostgreSQL database) is not an actorflow database, or it is corrupt."""


class SchemaTooNew(StorageError):
    """The database schema is newer than this version of actorflow understands."""


class StorageUnavailable(StorageError):
    """A write failed; the runtime stops accepting work rather than lose it."""


class ExecutionCorrupt(StorageError):
    """A stored execution (or one of its task runs) cannot be decoded; it is quarantined."""


class StoredFileNotFound(StorageError):
    """An ``actorflow://`` URI that points at no stored file."""


class FileAccessDenied(StorageError):
    """A stored file outside the reader's namespace or execution, or a path through a symlink."""


class FlowError(ActorflowError):
    """Flow definition errors."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem: where it is and what is wrong."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        parts = [p for p in (where, self.field) if p]
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class FlowValidationError(FlowError):
    """A flow failed validation; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in flow:\n{lines}")


class TaskNotAllowed(FlowValidationError):
    """A flow has tasks of a type the runtime was not opened to allow (``allow_types``)."""


class TemplateError(ActorflowError):
    """An expression failed to render."""


class InputError(ActorflowError):
    """Inputs do not match what the flow or pause task declares."""


class OutputError(ActorflowError, TypeError):
    """A task output passed by reference or read as a type is missing or does not fit."""


class UnstorableValue(ActorflowError, ValueError):
    """A value the store cannot keep exactly: refused where it enters (see ``runtime._values``)."""


class InvalidTransition(ActorflowError):
    """A state change that the transition table does not allow."""

    def __init__(self, kind: str, entity_id: str, current: str, target: str) -> None:
        self.kind = kind
        self.entity_id = entity_id
        self.current = current
        self.target = target
        super().__init__(f"{kind} {entity_id}: illegal transition {current} -> {target}")


class ExecutionNotFound(ActorflowError):
    """No execution with that id exists."""


class IllegalOperation(ActorflowError):
    """The operation is not allowed in the execution's current state."""


class CommandNotAnswered(ActorflowError):
    """A kill, pause or resume for an execution of another process was stored, but no
    process answered it (in time, or its owner is gone); it stays pending."""

    def __init__(self, message: str, command_id: int) -> None:
        super().__init__(message)
        self.command_id = command_id


class RuntimeClosedError(ActorflowError):
    """The runtime is closed or has stopped accepting work."""


# Tracebacks and task-failure log lines name classes by ``__module__``: show where users
# import them from, not this private module.
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, ActorflowError):
        _cls.__module__ = "actorflow"
del _cls
