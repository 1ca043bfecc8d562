"""The supervisor process of shell tasks: starts their commands, and sees that no process
they start outlives its task run, or the runtime.

Why a process of its own: the runtime cannot set ``PR_SET_PDEATHSIG`` or a new session in a
child it forks (``preexec_fn`` is unsafe in a process with threads), and a SIGKILLed runtime
cleans up nothing. This process is single-threaded, so it can; and it outlives a SIGKILLed
runtime just long enough to kill what the runtime's tasks left running.

* Every command runs in a session and process group of its own, with
  ``PR_SET_PDEATHSIG=SIGKILL`` towards this process (Linux).
* This process is a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): a process that leaves
  its task's process group (``setsid``) and is orphaned is re-parented here, not to init. It
  is attributed to its task by the marker variable ``ACTORFLOW_SHELL`` in its environment
  (``/proc/PID/environ``); one that also cleared its environment cannot be attributed, and is
  killed once no shell task is running any more, or when the runtime is gone.
* When a task's shell exits (or is killed), whatever is left in its process group and every
  orphan attributed to it is SIGKILLed before its exit code is reported.
* When the runtime process is gone (its end of the control socket closes, or the parent pid
  changes), every process started here, and every descendant, is SIGKILLed; then it exits.

Run as a script (``python -I -S _shell_sup.py FD``), it imports only the standard library.
The control socket (file descriptor FD) carries frames from the runtime: a 4-byte big-endian
length and a JSON body, with file descriptors attached (SCM_RIGHTS):

* ``{"op": "spawn", "id": N, "argv": [...], "env": {...}, "cwd": str | null, "marker": str}``
  with the write ends of the task's stdout, stderr and status pipes;
* ``{"op": "kill", "id": N, "grace": seconds}``: SIGTERM the task's process group now, SIGKILL
  it after ``grace``.

On its status pipe each task gets ``pid N`` once started, then ``exit CODE`` (a negative code
is the signal that ended it) or ``error MESSAGE`` if it could not start; then the pipe closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MARKER = "ACTORFLOW_SHELL"
HEADER = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_ROUNDS = 100  # bound on kill-and-reap rounds (each one frees the next generation of orphans)


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


def marker_of(pid: int) -> str | None:
    """The ``ACTORFLOW_SHELL`` value in a process's environment (None: none, or unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    key = MARKER.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(key):
            return item[len(key) :].decode(errors="replace")
    return None


def processes_with(name: str, value: str) -> list[int]:
    """Pids of this user's processes whose environment has ``name=value`` (Linux /proc)."""
    wanted = f"{name}={value}".encode()
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    me = os.getpid()
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


@dataclass
class _Task:
    id: int
    pid: int
    status: int
    marker: str
    kill_at: float | None = None
    killed: bool = False
    # Kept until reaped here: a dropped Popen would let subprocess reap it behind our back.
    proc: subprocess.Popen[bytes] | None = None


class Supervisor:
    """The supervisor's state: tasks by pid and id, the control socket, the wake-up pipe."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.pid = os.getpid()
        self.parent = os.getppid()
        self.tasks: dict[int, _Task] = {}
        self.by_id: dict[int, _Task] = {}
        self.prctl = _prctl()
        if self.prctl is not None:
            self.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # Terminal signals are the runtime's to handle; a SIGTERM ends this process cleanly.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_term)
        self.stopping = False

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    # -- main loop ------------------------------------------------------------------
    def run(self) -> None:
        """Serve until the runtime is gone, then kill every descendant."""
        sel = selectors.DefaultSelector()
        sel.register(self.control, selectors.EVENT_READ, "control")
        sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self.stopping:
                deadlines = [t.kill_at for t in self.tasks.values() if t.kill_at is not None]
                timeout: float | None = None
                if self.tasks:
                    # Polled only while tasks run: a fork of the runtime may hold its socket.
                    timeout = 1.0
                if deadlines:
                    timeout = max(0.0, min(min(deadlines) - time.monotonic(), 1.0))
                for key, _ in sel.select(timeout):
                    if key.data == "control":
                        if not self._message():
                            return
                    else:
                        with contextlib.suppress(OSError):
                            while os.read(self.wake_r, 512):
                                pass
                self._reap()
                self._escalate()
                if os.getppid() != self.parent:
                    return
        finally:
            self._shutdown()

    def _message(self) -> bool:
        try:
            head, fds, _flags, _addr = socket.recv_fds(
                self.control, HEADER.size, 8, getattr(socket, "MSG_CMSG_CLOEXEC", 0)
            )
        except OSError:
            return False
        for fd in fds:
            os.set_inheritable(fd, False)
        if len(head) < HEADER.size:
            for fd in fds:
                os.close(fd)
            return False
        (size,) = HEADER.unpack(head)
        body = b""
        while len(body) < size:
            chunk = self.control.recv(size - len(body))
            if not chunk:
                return False
            body += chunk
        msg: dict[str, Any] = json.loads(body)
        if msg["op"] == "spawn":
            self._spawn(msg, fds)
        elif msg["op"] == "kill":
            for fd in fds:
                os.close(fd)
            self._kill(int(msg["id"]), float(msg["grace"]))
        return True

    # -- spawning -------------------------------------------------------------------
    def _spawn(self, msg: dict[str, Any], fds: list[int]) -> None:
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            return
        out, err, status = fds
        prctl = self.prctl
        me = self.pid

        def in_child() -> None:  # safe here: this process has one thread
            if prctl is not None:
                prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != me:
                os._exit(127)
            for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)  # ignored ones would survive exec

        try:
            # Popen's C fork-exec path (3x faster than os.fork and exec from Python).
            proc = subprocess.Popen(
                [str(a) for a in msg["argv"]],
                env={str(k): str(v) for k, v in msg["env"].items()},
                cwd=msg.get("cwd"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=in_child,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._report(status, f"error {type(exc).__name__}: {exc}", close=True)
            return
        finally:
            os.close(out)
            os.close(err)
        task = _Task(id=int(msg["id"]), pid=proc.pid, status=status, marker=str(msg["marker"]))
        task.proc = proc
        self.tasks[proc.pid] = task
        self.by_id[task.id] = task
        self._report(status, f"pid {proc.pid}")

    @staticmethod
    def _report(fd: int, line: str, *, close: bool = False) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, line.encode() + b"\n")
        if close:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- killing --------------------------------------------------------------------
    def _kill(self, task_id: int, grace: float) -> None:
        task = self.by_id.get(task_id)
        if task is None or task.killed:
            return
        task.killed = True
        if grace <= 0:
            _signal_group(task.pid, signal.SIGKILL)
            return
        _signal_group(task.pid, signal.SIGTERM)
        task.kill_at = time.monotonic() + grace

    def _escalate(self) -> None:
        now = time.monotonic()
        for task in list(self.tasks.values()):
            if task.kill_at is not None and task.kill_at <= now:
                task.kill_at = None
                _signal_group(task.pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                # WNOWAIT: the shell stays a zombie, so its pid (the group id) cannot be
                # reused while what is left in its group is killed.
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            task = self.tasks.pop(pid, None)
            if task is None:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)  # an orphan of some task that ended
                continue
            self.by_id.pop(task.id, None)
            code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            self._clear(task)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            if task.proc is not None:
                task.proc.returncode = code
            self._report(task.status, f"exit {code}", close=True)

    def _clear(self, task: _Task) -> None:
        """SIGKILL what is left of an ended task: its group, and orphans attributed to it."""
        _signal_group(task.pid, signal.SIGKILL)
        for _ in range(_ROUNDS):
            progress = False
            for child in self._children():
                if child == task.pid or child in self.tasks:
                    continue
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(child, os.WNOHANG)[0] == child:
                        progress = True  # had ended: its own orphans come here now
                        continue
                mark = marker_of(child)
                # An orphan nobody can claim is killed once no task may own it any more.
                if mark == task.marker or (mark is None and not self.tasks):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(child, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(child, 0)
                    progress = True
            if not progress:
                return

    def _children(self) -> list[int]:
        try:
            with open(f"/proc/self/task/{self.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            pass
        kids: list[int] = []
        try:
            entries = os.listdir("/proc")
        except OSError:
            return kids
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.pid:
                kids.append(int(entry))
        return kids

    def _shutdown(self) -> None:
        for task in self.tasks.values():
            _signal_group(task.pid, signal.SIGKILL)
        for _ in range(_ROUNDS):
            kids = self._children()
            if not kids:
                break
            for child in kids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
            for child in kids:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child, 0)
        for task in self.tasks.values():
            self._report(task.status, "exit -9", close=True)
        self.tasks.clear()
        while True:  # anything left (non-Linux: no children list) is reaped, not waited for
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def main(argv: list[str]) -> int:
    """Serve the control socket given as a file descriptor number."""
    control = socket.socket(fileno=int(argv[1]))
    control.set_inheritable(False)
    Supervisor(control).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
