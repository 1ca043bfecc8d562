"""Kernel messages: the system lane carries every :class:`SystemMessage`."""

from __future__ import annotations

from typing import Any

import msgspec


class SystemMessage(msgspec.Struct, frozen=True, tag=True):
    """Base of messages that overtake ordinary ones and are never refused for lack of room."""


class Stop(SystemMessage, frozen=True, tag=True):
    """Stop after the current message (handled by the kernel, never seen by ``receive``)."""


class Kill(SystemMessage, frozen=True, tag=True):
    """Kill the work in progress; delivered to ``receive`` (the default stops the actor)."""

    reason: str = ""


class Pause(SystemMessage, frozen=True, tag=True):
    """Pause; delivered to ``receive``."""


class Resume(SystemMessage, frozen=True, tag=True):
    """Resume; delivered to ``receive``."""


class Terminated(SystemMessage, frozen=True, tag=True):
    """Sent to the parent when a linked child stops: ``error`` is None for a normal stop.

    ``exc`` is the exception itself (these messages never leave the process).
    """

    ref: Any
    name: str
    error: str | None = None
    exc: Any = None


class WhichChildren(msgspec.Struct, frozen=True, tag=True):
    """Ask a supervisor for ``[(child id, ref), ...]``."""


class GetChild(msgspec.Struct, frozen=True, tag=True):
    """Ask a supervisor for the current ref of child ``id`` (None if not running)."""

    id: str
