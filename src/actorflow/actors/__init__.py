"""The actor kernel: mailboxes, refs, supervision (backend-neutral on anyio)."""

from __future__ import annotations

from actorflow.actors._actor import Actor, ActorContext
from actorflow.actors._cancel import Interruptible
from actorflow.actors._messages import (
    GetChild,
    Kill,
    Pause,
    Resume,
    Stop,
    SystemMessage,
    Terminated,
    WhichChildren,
)
from actorflow.actors._ref import ActorRef
from actorflow.actors._supervisor import ChildSpec, Restart, Strategy, Supervisor
from actorflow.actors._system import (
    ActorSystem,
    DeadLetter,
    DeadLetters,
    open_actor_system,
    stop_within,
)

__all__ = [
    "Actor",
    "ActorContext",
    "ActorRef",
    "ActorSystem",
    "ChildSpec",
    "DeadLetter",
    "DeadLetters",
    "GetChild",
    "Interruptible",
    "Kill",
    "Pause",
    "Restart",
    "Resume",
    "Stop",
    "Strategy",
    "Supervisor",
    "SystemMessage",
    "Terminated",
    "WhichChildren",
    "open_actor_system",
    "stop_within",
]
