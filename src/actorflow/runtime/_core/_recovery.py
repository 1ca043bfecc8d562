"""What a runtime does besides running: claim queued work and the executions of dead or
stalled workers (leases with a fencing token, see ``storage._store``), heartbeat its
ownership and renew its leases, and consume the commands other processes post for its
executions.

Commands (kill, pause, resume from another process) are rows of the store's ``commands``
table. Each is consumed once: the process that owns the execution applies it if its target
still holds (see ``_commands``), stores the effect, then marks the row ``applied`` or
``rejected`` with its answer; a runtime only ever reads pending ones, so nothing is replayed
after a restart of the process or of the execution. The answer carries the class name of the
error that refused it, which the sender raises again: a call from another process fails as
the same call made in the owner's process would (``InputError``, ``IllegalOperation``,
``ExecutionNotFound``), with the same message.

Delivery: the sender rings the owner's doorbell (``_notify``) once the command is stored, and
the owner rings back once it answered, so a round trip on one host takes milliseconds; the
owner's poll every ``DOORBELL_POLL`` seconds (``COMMAND_POLL`` when it has no doorbell) and
the sender's every ``ANSWER_POLL`` seconds stay as the fallback when a ring cannot be
delivered.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import anyio.lowlevel
import msgspec

from actorflow._errors import (
    ActorflowError,
    AskTimeout,
    CommandNotAnswered,
    DeadActorError,
    ExecutionCorrupt,
    ExecutionNotFound,
    IllegalOperation,
    InputError,
    StorageUnavailable,
    TemplateError,
    UnstorableValue,
)
from actorflow.runtime._core._commands import KINDS, target_of
from actorflow.runtime._core._messages import Command, CommandTarget, Recover
from actorflow.runtime._core._notify import channel_of, open_bell, open_doorbell, owner_address
from actorflow.runtime._core._persist import decode_execution, decode_tree, quarantine_op
from actorflow.runtime._states import TERMINAL, State
from actorflow.storage import CommandRow, ExecutionRow, Store

if TYPE_CHECKING:
    from actorflow.runtime._core._engine import Engine
    from actorflow.runtime._flow import Flow
    from actorflow.runtime._records import Execution

TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)
COMMAND_POLL = 0.2  # how often an owner without a doorbell looks for commands
# With a doorbell, every sender on this host rings: the poll only serves those that cannot
# (another network namespace) and costs an idle owner a fifth as much (0.1% of a core).
DOORBELL_POLL = 1.0
ANSWER_POLL = 0.02  # how often a sender looks for its answer
COMMAND_TIMEOUT = 10.0  # how long a sender waits for an answer by default
_APPLY_TIMEOUT = 30.0
HEARTBEAT = 2.0  # at most; a worker beats at least three times per lease_ttl
STALE_AFTER = 15.0  # the default lease_ttl
CLAIM_POLL = 0.05  # how often a worker with free slots looks for queued work
_RECOVER_CHUNK = 1000
RING_WAIT = 0.1  # how long a sender that rang waits to be rung back before it reads again
APPLIED, REJECTED = "applied", "rejected"
# Errors a command's answer can name; the sender raises the same class with the same message.
# Anything else the owner met reads as IllegalOperation (its message still says what).
ANSWER_ERRORS: dict[str, type[ActorflowError]] = {
    c.__name__: c
    for c in (
        InputError, IllegalOperation, ExecutionNotFound, TemplateError, UnstorableValue,
        StorageUnavailable,
    )
}  # fmt: skip

_log = logging.getLogger("actorflow.runtime")


class Recovery:
    """Recovery and background work of :class:`~actorflow.runtime.Runtime`."""

    engine: Engine
    store: Store
    # While recover() spawns what it claimed, commands wait: an execution it claimed but has
    # not started yet would be answered "not running here".
    _recovering: bool = False
    # Claimed executions recovery could not start here, and why (a command's answer).
    _unrunnable: dict[str, str]
    _consuming: anyio.Event | None = None
    read_only: bool = False
    _commands_lock: anyio.Lock | None = None

    def _flow_for(self, ex: Execution) -> Flow:  # pragma: no cover - the Runtime's
        raise NotImplementedError

    async def recover(self) -> list[str]:
        """Claim every execution no live lease holds (queued, or of a dead or stalled
        worker) whose flow this runtime can load, and resume them; returns their ids."""
        store = self.store
        self._recovering = True
        try:
            for owner in await _dead_local_owners(store):
                await store.release_leases(owner)  # a crashed process: no need to wait
                await store.release_owner(owner)
            resumed: list[str] = []
            rows = await self._claim(_RECOVER_CHUNK)
            with _collector_paused(len(rows) >= _RECOVER_CHUNK):
                while rows:
                    resumed += await self._resume_claimed(rows)
                    rows = await self._claim(_RECOVER_CHUNK)
                # Let the new actors take their first steps (rebuild, re-arm) inside the
                # pause.
                for _ in range(4):
                    await anyio.lowlevel.checkpoint()
        finally:
            self._recovering = False
        return resumed

    async def claim_work(self) -> list[str]:
        """Claim as many queued (or expired) executions as this worker has free slots, and
        start them; returns their ids (the claim loop calls it every ``CLAIM_POLL`` s)."""
        free = self.engine.free_slots()
        if free <= 0 or self._recovering:
            return []
        return await self._resume_claimed(await self._claim(free))

    async def _claim(self, limit: int) -> list[ExecutionRow]:
        """Claim up to ``limit`` executions whose flow loads here; mark those whose flow does
        not as waiting (with why), for a worker that has it."""
        store = self.store
        engine = self.engine
        # A few more candidates than wanted: some may wait for another worker's flow.
        rows = await store.claimable(limit + 32)
        wanted: list[str] = []
        waiting: list[tuple[str, str]] = []
        for row in rows:
            if len(wanted) >= limit:
                break
            if row.id in engine.live or row.id in engine.admission.parked:
                continue  # ours already (a lease that lapsed while we ran it is renewed)
            why = self._cannot_load(row)
            if why is None:
                wanted.append(row.id)
            else:
                waiting.append((row.id, why))
                self._unrunnable[row.id] = why
        if not wanted and not waiting:
            return []
        taken = await store.claim_queued(engine.owner, wanted, engine.lease_ttl, waiting)
        for row in taken:
            store.fences[row.id] = row.epoch
            engine.fenced_out.discard(row.id)
            self._unrunnable.pop(row.id, None)
        return taken

    def _cannot_load(self, row: ExecutionRow) -> str | None:
        """Why this worker cannot run an execution (its flow does not load here), or None."""
        try:
            self._flow_for(decode_execution(row.data))
        except IllegalOperation as exc:
            return f"no worker has loaded its flow yet ({exc})"
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # claimed, then quarantined by _resume_claimed with the reason
        return None

    async def _resume_claimed(self, rows: list[ExecutionRow]) -> list[str]:
        store = self.store
        resumed: list[str] = []
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            runs_of = await store.task_runs_of([r.id for r in chunk])
            corrupt: list[tuple[str, str]] = []
            for row in chunk:
                try:
                    tree = decode_tree(row, runs_of[row.id])
                except ExecutionCorrupt as exc:
                    corrupt.append((row.id, str(exc)))
                    continue
                ex = msgspec.structs.replace(tree, task_runs=())
                runs = list(tree.task_runs)
                try:
                    flow = self._flow_for(ex)
                except IllegalOperation as exc:
                    self._unrunnable[ex.id] = str(exc)
                    await store.release_leases(self.engine.owner, [ex.id])
                    continue
                if ex.state in (State.CREATED, State.QUEUED):  # not started: wait for a slot
                    self.engine.start_execution(flow, ex, runs, "recover", Recover())
                else:
                    self.engine.spawn_execution(flow, ex, runs, "recover", Recover())
                resumed.append(ex.id)
            for execution_id, reason in corrupt:
                await self.quarantine(execution_id, reason)
        return resumed

    async def quarantine(self, execution_id: str, reason: str) -> None:
        """Set an execution whose stored rows do not decode aside (its bytes stay, it is
        listed by ``quarantined()`` and never recovered or claimed) and log why; the others
        run on. A read-only runtime only logs."""
        _log.error("execution %s is quarantined: %s", execution_id, reason)
        self._unrunnable[execution_id] = reason
        if self.read_only:
            return
        try:
            await self.store.write((quarantine_op(execution_id, reason, self.engine.clock.now()),))
        except Exception:  # storage trouble: the next start meets the row again
            _log.warning("could not quarantine execution %s", execution_id, exc_info=True)

    async def _housekeeping(self) -> None:
        """Heartbeat the ownership, consume commands from other processes: at once when a
        sender rings the doorbell, and at every poll in any case."""
        with open_doorbell(channel_of(self.store), self.engine.owner) as bell:
            async with anyio.create_task_group() as tg:
                if bell is not None:
                    tg.start_soon(bell.serve, self._rung)
                await self._poll(has_doorbell=bell is not None)

    async def _rung(self) -> None:
        while self._recovering:  # its commands wait for it (see apply_commands)
            await anyio.sleep(0.005)
        await self.apply_commands()

    async def _poll(self, *, has_doorbell: bool) -> None:
        """Heartbeat, and consume commands every ``DOORBELL_POLL`` seconds, or
        ``COMMAND_POLL`` without a doorbell."""
        engine = self.engine
        beat = min(HEARTBEAT, engine.lease_ttl / 3)
        next_beat = 0.0
        # A store that notifies (PostgreSQL) wakes the loop when a command is posted; it
        # still looks at each heartbeat. Others (and stores of other authors, without the
        # hook) are polled every COMMAND_POLL.
        hook = getattr(self.store, "command_wakeup", None)
        wakeup = hook() if hook is not None else None
        while True:
            if wakeup is None:
                await anyio.sleep(min(DOORBELL_POLL if has_doorbell else COMMAND_POLL, beat))
            else:
                await wakeup.wait(min(beat, max(COMMAND_POLL, next_beat - time.monotonic())))
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + beat
                    if engine.worker:
                        await self.renew()
                    else:
                        await self.store.heartbeat(engine.owner)
                await self.apply_commands()
            except Exception:
                # Storage trouble: callers hear of it through their own writes; the loop
                # keeps heartbeating so the ownership is not lost to a passing failure.
                _log.debug("housekeeping failed", exc_info=True)

    async def renew(self) -> None:
        """Extend this worker's leases; stop what runs here under a lease it lost (another
        worker claimed it while this one was stalled), before it even writes."""
        engine = self.engine
        held = set(await self.store.renew_leases(engine.owner, engine.lease_ttl))
        missing = [i for i in engine.live if i not in held and i not in engine.fenced_out]
        lost: list[tuple[str, str]] = []
        for ex_id in missing:
            row = await self.store.get_execution(ex_id)
            if row is None:
                continue  # not stored yet: a submission whose first commit is on its way
            if row.owner != engine.owner or row.epoch != self.store.fences.get(ex_id, row.epoch):
                lost.append((ex_id, f"claimed by {row.owner} (epoch {row.epoch})"))
        if lost:
            engine.fenced(lost)

    async def _claim_loop(self) -> None:
        """Take queued work while this worker has free slots; ask for the flow-concurrency
        slots other processes freed."""
        ticks = 0
        while True:
            await anyio.sleep(CLAIM_POLL)
            ticks += 1
            if ticks % 4 == 0:
                self.engine.wake_queued()
            try:
                await self.claim_work()
            except Exception:
                _log.debug("claim failed", exc_info=True)

    async def apply_commands(self) -> int:
        """Consume the pending commands of the executions this runtime owns (on every ring
        of its doorbell, and every ``DOORBELL_POLL`` seconds, or ``COMMAND_POLL`` without a
        doorbell); returns how many."""
        if self._recovering:
            return 0
        lock = self._commands_lock
        if lock is None:
            lock = self._commands_lock = anyio.Lock()
        async with lock:  # one consumer at a time: a command is applied once
            return await self._apply_pending()

    async def _apply_pending(self) -> int:
        done = 0
        for cmd in await self.store.pending_commands(self.engine.owner):
            # Shielded: a command whose effect is applied gets its answer even when the
            # runtime is closing, and close waits for it before giving up the ownership.
            self._consuming = event = anyio.Event()
            try:
                with anyio.CancelScope(shield=True):
                    status, answer, error = await self._apply(cmd)
                    if status == APPLIED:
                        await self.store.flush()  # the effect is stored before the answer
                    await self.store.answer_command(cmd.id, status, answer, error)
            finally:
                self._consuming = None
                event.set()
            done += 1
        return done

    async def _apply(self, cmd: CommandRow) -> tuple[str, str, str | None]:
        """Apply one command here: (APPLIED, what was done, None) or (REJECTED, why not,
        the class name of the error an in-process call would raise)."""
        ex_id = cmd.execution_id
        illegal = IllegalOperation.__name__
        if cmd.kind not in KINDS:
            return REJECTED, f"unknown command {cmd.kind!r}; expected one of {KINDS}", illegal
        try:
            target = msgspec.json.decode(cmd.target, type=CommandTarget)
            inputs = decode_any_json(cmd.payload) or {}
            if not isinstance(inputs, dict):
                raise TypeError(f"inputs must be an object, not {type(inputs).__name__}")
            message = Command(cmd.kind, target, inputs)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:
            why = f"{cmd.kind} command {cmd.id} for {ex_id} cannot be read: {exc}"
            return REJECTED, why, illegal
        ref = self.engine.live.get(ex_id) or self.engine.unpark(ex_id)
        if ref is not None and ref.is_alive:
            try:
                result = await ref.ask(message, timeout=_APPLY_TIMEOUT)
            except AskTimeout:
                why = f"execution {ex_id} did not take the {cmd.kind} within {_APPLY_TIMEOUT:g}s"
                return REJECTED, why, illegal
            except DeadActorError:
                pass  # it ended meanwhile: say so below
            else:
                if isinstance(result, Exception):
                    return REJECTED, str(result), error_kind(result)
                return APPLIED, str(result), None
        return (REJECTED, *await self._not_here(ex_id))

    async def _not_here(self, ex_id: str) -> tuple[str, str]:
        """Why an execution this runtime owns in the store has no live actor here, and the
        error class that says it."""
        illegal = IllegalOperation.__name__
        await self.store.flush()  # an end still being stored is an end
        ended = self.engine._ended.get(ex_id)
        if ended is not None:
            return f"execution {ex_id} is already {ended.state.value}", illegal
        if ex_id in self._unrunnable:
            why = f"execution {ex_id} cannot run in this process: {self._unrunnable[ex_id]}"
            return why, illegal
        row = await self.store.get_execution(ex_id)
        if row is None:
            return f"no execution with id {ex_id!r}", ExecutionNotFound.__name__
        if row.state in TERMINAL_NAMES:
            return f"execution {ex_id} is already {row.state}", illegal
        why = f"execution {ex_id} ({row.state}) is not running in the process that owns it"
        return why, illegal

    # -- the sender's side -------------------------------------------------------------
    async def send_command(
        self,
        ex: Execution,
        kind: str,
        inputs: Mapping[str, Any] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> str:
        """Post a command for ``ex`` (a full tree as stored), owned by another process, and
        wait for the owner's answer; returns it when applied.

        Raises:
            InputError: the owner found the resume inputs invalid (the field is named).
            IllegalOperation: the owner (or the store) refused it; the message says why.
            ExecutionNotFound: the execution was purged meanwhile.
            CommandNotAnswered: no answer within ``timeout`` s, or nobody can answer (its
                owner is gone); the command stays pending for whoever takes the execution.
        """
        store = self.store
        target = target_of(ex, kind)
        payload = msgspec.json.encode(dict(inputs or {}))
        channel = channel_of(store)
        with open_bell(channel) as bell:
            cid = await store.post_command(ex.id, kind, payload, msgspec.json.encode(target))
            deadline = time.monotonic() + timeout
            rang = False  # rang the owner and not rung back yet
            while True:
                cmd = await store.get_command(cid)
                if cmd is None:
                    raise ExecutionNotFound(f"no execution with id {ex.id!r} (purged meanwhile)")
                if cmd.status == APPLIED:
                    return cmd.answer or ""
                if cmd.status == REJECTED:
                    raise_answer(cmd, f"{kind} of {ex.id} was rejected")
                row = await store.get_execution(ex.id)
                if row is None:
                    why = f"no execution with id {ex.id!r}"
                    if await store.answer_command(cid, REJECTED, why, "ExecutionNotFound"):
                        raise ExecutionNotFound(why)
                    continue  # answered meanwhile: read it
                if not rang and bell is not None and channel is not None and row.owner:
                    # Before the liveness checks: a live owner starts on it while we look.
                    rang = bell.ring(owner_address(channel, row.owner))
                gone = await _owner_gone(store, row.owner)
                if gone is not None and row.state in TERMINAL_NAMES:
                    # Its owner ended it and left before seeing the command: nobody else will
                    # answer. (A live owner answers itself; it may be the one that ended it.)
                    why = f"execution {ex.id} is already {row.state}"
                    if await store.answer_command(cid, REJECTED, why, "IllegalOperation"):
                        raise IllegalOperation(why)
                    continue
                if gone is not None:
                    raise CommandNotAnswered(
                        f"{kind} of execution {ex.id} ({row.state}) is stored as command {cid},"
                        f" but {gone}; it stays pending and is applied (or refused, if the"
                        " execution moved on) when a runtime takes the execution over",
                        cid,
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommandNotAnswered(
                        f"{kind} of execution {ex.id} ({row.state}) is stored as command {cid},"
                        f" but its owner {row.owner} did not answer within {timeout:g}s; it"
                        " stays pending",
                        cid,
                    )
                if rang and bell is not None:
                    # Rung back: the owner's round is over; still pending means it ran before
                    # it could take this one (recovering): ring again.
                    rang = not await bell.wait(min(RING_WAIT, left))
                else:
                    await anyio.sleep(min(ANSWER_POLL, left))


def error_kind(exc: BaseException) -> str:
    """The name a command's answer stores for ``exc``: its nearest class a sender raises."""
    for cls in type(exc).__mro__:
        if cls.__name__ in ANSWER_ERRORS and ANSWER_ERRORS[cls.__name__] is cls:
            return cls.__name__
    return IllegalOperation.__name__


def raise_answer(cmd: CommandRow, default: str) -> NoReturn:
    """Raise the error a rejected command's answer names, with its message."""
    cls = ANSWER_ERRORS.get(cmd.error or "", IllegalOperation)
    raise cls(cmd.answer or default)


@contextlib.contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """Pause the cycle collector while thousands of actors come back at once.

    Everything they allocate is alive, so its passes find nothing to free, yet a full pass
    walks every object: recovering 10,000 executions spent two thirds of its time there. The
    host's own setting is restored afterwards (a disabled collector stays disabled).
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def decode_any_json(payload: bytes) -> Any:
    """JSON payload of a command."""
    return msgspec.json.decode(payload) if payload else None


async def _owner_gone(store: Store, owner: str | None) -> str | None:
    """Why ``owner`` will never answer a command (None if it is alive)."""
    if owner is None:
        return "no process owns it"
    beats = dict(await store.owners())
    if owner not in beats:
        return f"its owner {owner} has stopped"
    if owner in await _dead_local_owners(store, [owner]):
        return f"its owner {owner} is gone (the process died)"
    clock = getattr(store, "clock", time.time)
    if beats[owner] < clock() - STALE_AFTER:
        return f"its owner {owner} has not heartbeat for {clock() - beats[owner]:.0f}s"
    return None


async def _dead_local_owners(store: Store, names: list[str] | None = None) -> list[str]:
    """Owners registered from this host whose process is gone (crashed)."""
    if names is None:
        owners_fn = getattr(store, "owners", None)
        if owners_fn is None:
            return []
        names = [o[0] if isinstance(o, tuple) else o for o in await owners_fn()]
    host = os.uname().nodename
    dead: list[str] = []
    for name in names:
        parts = str(name).split(":")
        if len(parts) >= 2 and parts[0] == host and parts[1].isdigit():
            pid = int(parts[1])
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                dead.append(name)
            except PermissionError:
                pass
    return dead
