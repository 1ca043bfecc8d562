"""The ``shell`` task: commands run through the supervisor process (``_shell_sup``), with a
minimal environment, output capped and batched into log rows, and no process left behind."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anyio

from actorflow.flows._shell_sup import HEADER, MARKER, processes_with
from actorflow.runtime import Runnable, TaskFailure

if TYPE_CHECKING:
    from actorflow.runtime import TaskContext

_SCRIPT = str(Path(__file__).with_name("_shell_sup.py"))
_KILL_GRACE = 2.0
_DRAIN = 1.0  # after the shell exited, for output still in the pipes
_READ = 1 << 16
OUTPUT_CAP = 1 << 20
LOG_LINES = 10_000
LOG_BYTES = 1 << 20
LINE_BYTES = 64 << 10
#: Variables of the runtime's own environment a command sees (besides its task's ``env``).
PASSED_ENV = ("PATH", "HOME", "LANG")
TASK_RUN_VAR = "ACTORFLOW_TASK_RUN_ID"


class ShellError(TaskFailure):
    """A command could not be started, or its supervisor went away."""


# -- the supervisor, one per process ----------------------------------------------------------
class _Supervisor:
    """The runtime's side of the supervisor process: a control socket, written under a lock."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.owner = os.getpid()
        self.sock = ours
        self.lock = threading.Lock()
        self.ids = 0
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _SCRIPT, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of the terminal is the runtime's to handle
            )
        finally:
            theirs.close()

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> int:
        """Send one frame (``fds`` attached); returns the id it was given."""
        with self.lock:
            if "id" not in message:
                self.ids += 1
                message = {**message, "id": self.ids}
            body = json.dumps(message).encode()
            frame = HEADER.pack(len(body)) + body
            sent = socket.send_fds(self.sock, [frame], fds or [])
            if sent < len(frame):
                self.sock.sendall(frame[sent:])
            return int(message["id"])

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def stop(self) -> None:
        """At exit: close the socket (the supervisor kills what is left and ends), reap it."""
        if self.owner != os.getpid():
            return
        self.sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2.0)


_supervisor: _Supervisor | None = None
_supervisor_lock = threading.Lock()


def _send(message: dict[str, Any], fds: list[int] | None = None) -> int:
    global _supervisor
    with _supervisor_lock:
        sup = _supervisor
        if sup is None or not sup.alive():
            # First shell task of this process, or a fork of it, or the last one died.
            sup = _supervisor = _Supervisor()
            atexit.register(sup.stop)
    try:
        return sup.send(message, fds)
    except OSError as exc:
        raise ShellError(f"the shell supervisor process is gone: {exc}") from exc


def kill_leftovers(task_run_id: str) -> list[int]:
    """SIGKILL processes of an earlier attempt of this task run (e.g. of a runtime that died
    with its supervisor), found by the ``ACTORFLOW_TASK_RUN_ID`` of their environment."""
    pids = processes_with(TASK_RUN_VAR, task_run_id)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


class _Child:
    """One running command: the read ends of its stdout, stderr and status pipes."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None) -> None:
        self.marker = env[MARKER]
        pipes = [os.pipe() for _ in range(3)]
        self.stdout, self.stderr, self.status = (r for r, _ in pipes)
        writes = [w for _, w in pipes]
        try:
            message = {"op": "spawn", "argv": argv, "env": env, "cwd": cwd, "marker": self.marker}
            self.id = _send(message, writes)
        except BaseException:
            for r, _ in pipes:
                os.close(r)
            raise
        finally:
            for w in writes:
                os.close(w)
        for fd in (self.stdout, self.stderr, self.status):
            os.set_blocking(fd, False)
        self.pid: int | None = None
        self.code: int | None = None
        self._status = b""

    async def wait(self) -> int:
        """The exit code once the command and what it left behind are gone."""
        while True:
            line, sep, rest = self._status.partition(b"\n")
            if not sep:
                data = await _read(self.status)
                if not data:
                    raise ShellError("the shell supervisor process went away while it ran")
                self._status += data
                continue
            self._status = rest
            kind, _, value = line.decode(errors="replace").partition(" ")
            if kind == "pid":
                self.pid = int(value)
            elif kind == "exit":
                self.code = int(value)
                return self.code
            elif kind == "error":
                raise ShellError(f"cannot start the command: {value}")

    def kill(self, grace: float) -> None:
        """SIGTERM the command's process group, SIGKILL it after ``grace`` seconds."""
        with contextlib.suppress(ShellError):
            _send({"op": "kill", "id": self.id, "grace": grace})

    def close(self) -> None:
        for fd in (self.stdout, self.stderr, self.status):
            with contextlib.suppress(OSError):
                os.close(fd)


async def _read(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, _READ)
        except BlockingIOError:
            await anyio.wait_readable(fd)


# -- output: captured, logged in batches, capped ------------------------------------------------
class _Output:
    """What a task's stdout and stderr leave: the first ``OUTPUT_CAP`` bytes of each for the
    outputs, and log rows (the lines read together in one row) up to the task's caps.

    Time is linear in the output and memory bounded by the caps: a partial line longer than
    the line cap is cut, and what follows it up to its newline only counted.
    """

    def __init__(self, ctx: TaskContext, lines: int, size: int, line_bytes: int) -> None:
        self.ctx = ctx
        self.max_lines = lines
        self.max_bytes = size
        self.line_bytes = line_bytes
        self.lines = 0
        self.bytes = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0

    def full(self) -> bool:
        return self.lines >= self.max_lines or self.bytes >= self.max_bytes

    def store(self, level: str, lines: list[bytes]) -> None:
        """Log ``lines`` (already cut) as one row, within the caps; count the rest."""
        keep: list[bytes] = []
        for line in lines:
            if self.full():
                self.dropped_lines += 1
                self.dropped_bytes += len(line)
                continue
            keep.append(line)
            self.lines += 1
            self.bytes += len(line) + 1
        if keep:
            self.ctx.log.log(level, b"\n".join(keep).decode(errors="replace"))

    def finish(self) -> None:
        if self.dropped_lines:
            self.ctx.log.warning(
                f"... {self.dropped_lines} more lines ({self.dropped_bytes} bytes) not stored:"
                f" over the task's log limit ({self.max_lines} lines, {self.max_bytes} bytes)"
            )


async def _pump(fd: int, capture: bytearray, out: _Output, level: str) -> None:
    buf = bytearray()  # the line being read, at most line_bytes
    skipping = False  # the line being read was cut at line_bytes: drop up to its newline
    open_line = False  # over the caps: the last chunk did not end a line
    while True:
        data = await _read(fd)
        if not data:
            break
        if len(capture) < OUTPUT_CAP:
            capture += data[: OUTPUT_CAP - len(capture)]
        if out.full():
            # Over the caps: lines are only counted, never split (millions stay cheap).
            out.dropped_lines += data.count(b"\n")
            out.dropped_bytes += len(data) + len(buf)
            buf.clear()
            skipping = False
            open_line = not data.endswith(b"\n")
            continue
        lines: list[bytes] = []
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            piece = data[pos:] if nl < 0 else data[pos:nl]
            if skipping:
                out.dropped_bytes += len(piece)
            elif len(buf) + len(piece) > out.line_bytes:
                room = out.line_bytes - len(buf)
                buf += piece[:room]
                out.dropped_bytes += len(piece) - room
                lines.append(bytes(buf) + b" [line cut]")
                buf.clear()
                skipping = True
            else:
                buf += piece
            if nl < 0:
                break
            if skipping:
                skipping = False
            else:
                lines.append(bytes(buf))
                buf.clear()
            pos = nl + 1
        if lines:
            out.store(level, lines)
    if buf:
        out.store(level, [bytes(buf)])
    elif open_line:
        out.dropped_lines += 1


# -- the task --------------------------------------------------------------------------------
def child_env(task_env: Mapping[str, str], tmp: str) -> dict[str, str]:
    """What a command's environment starts from: ``PASSED_ENV`` of the runtime's (when set),
    a fresh temporary directory, then the task's own ``env``."""
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env.setdefault("HOME", tmp)
    env["TMPDIR"] = tmp
    env.update(task_env)
    return env


@dataclass(frozen=True, kw_only=True)
class ShellCommands(Runnable):
    """Runs ``commands`` as one script with ``interpreter``; outputs exit code, stdout, stderr.

    Off unless the runtime allows ``"shell"`` (``Runtime.open(allow_types={"shell"})``,
    ``actorflow run --allow shell``). The command sees only PATH, HOME and LANG of the
    runtime's environment, TMPDIR (a directory of its own, removed afterwards), and the
    task's ``env``. A non-zero exit fails the task. Nothing it starts outlives the task run
    (see ``_shell_sup``): on kill or timeout its process group gets SIGTERM, then SIGKILL
    after a grace period; when the shell ends, what it left running is killed.
    Logged output is capped at ``log_lines`` lines and ``log_bytes`` bytes per task run
    (a last line tells how much was left out), each line at ``line_bytes``.
    """

    requires_allow: ClassVar[str | None] = "shell"

    commands: tuple[str, ...]
    interpreter: tuple[str, ...] = ("/bin/sh", "-c")
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    fail_fast: bool = True
    log_lines: int = LOG_LINES
    log_bytes: int = LOG_BYTES
    line_bytes: int = LINE_BYTES

    async def run(self, ctx: TaskContext) -> Any:
        lines = [str(ctx.render(c, field=f"commands[{i}]")) for i, c in enumerate(self.commands)]
        script = "\n".join((["set -e"] if self.fail_fast else []) + lines)
        task_env = {str(k): str(v) for k, v in ctx.render(dict(self.env), field="env").items()}
        if ctx.attempt > 1:
            await anyio.to_thread.run_sync(kill_leftovers, ctx.task_run_id)
        tmp = tempfile.mkdtemp(prefix="actorflow-shell-")
        try:
            env = child_env(task_env, tmp)
            env[TASK_RUN_VAR] = ctx.task_run_id
            env[MARKER] = f"{ctx.task_run_id}.{ctx.attempt}.{os.urandom(4).hex()}"
            child = _Child([*self.interpreter, script], env, self.working_dir)
            try:
                code, stdout, stderr = await self._follow(ctx, child)
            finally:
                child.close()
        finally:
            try:
                os.rmdir(tmp)  # the usual case: left empty
            except OSError:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))
        if code != 0:
            tail = stderr.strip().splitlines()[-3:]
            detail = f": {' | '.join(tail)}" if tail else ""
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise TaskFailure(f"command {how}{detail}")
        return {"exit_code": code, "stdout": stdout, "stderr": stderr}

    async def _follow(self, ctx: TaskContext, child: _Child) -> tuple[int, str, str]:
        out, err = bytearray(), bytearray()
        logged = _Output(ctx, self.log_lines, self.log_bytes, self.line_bytes)
        failure: ShellError | None = None
        code = -1
        try:
            async with anyio.create_task_group() as tg:
                pumps_done = anyio.Event()

                async def pumps() -> None:
                    async with anyio.create_task_group() as inner:
                        inner.start_soon(_pump, child.stdout, out, logged, "INFO")
                        inner.start_soon(_pump, child.stderr, err, logged, "WARNING")
                    pumps_done.set()

                tg.start_soon(pumps)
                try:
                    code = await child.wait()
                except ShellError as exc:
                    failure = exc  # raised below, not wrapped in the task group's group
                    tg.cancel_scope.cancel()
                else:
                    # The supervisor killed what the shell left before it reported the exit,
                    # so the pipes close; only a process that escaped it can hold them open.
                    with anyio.move_on_after(_DRAIN):
                        await pumps_done.wait()
                    tg.cancel_scope.cancel()
        except BaseException:
            with anyio.CancelScope(shield=True):
                child.kill(_KILL_GRACE)
                with anyio.move_on_after(_KILL_GRACE + 2.0), contextlib.suppress(ShellError):
                    await child.wait()
            raise
        finally:
            logged.finish()
        if failure is not None:
            raise failure
        return code, out.decode(errors="replace"), err.decode(errors="replace")
