"""The ``actorflow`` command: run and validate flow files, read and control executions.

Every command opens the embedded SQLite database (``--db``, else ``$ACTORFLOW_DB``, else
``actorflow.db`` in the current directory). Several processes can share it: a kill, pause or
resume given here reaches the process that runs the execution through the database.
Exit codes: 0 success, 1 failed execution or command, 2 invalid flow, inputs or usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from rich.console import Console
from rich.text import Text

from actorflow._errors import (
    ActorflowError,
    CommandNotAnswered,
    ExecutionNotFound,
    FlowValidationError,
    IllegalOperation,
    InputError,
)
from actorflow.cli._display import (
    Progress,
    execution_header,
    execution_tree,
    executions_table,
    fmt_time,
    state_text,
    timeline,
    timeline_rows,
    to_json,
)
from actorflow.runtime import (
    Execution,
    ExecutionHandle,
    Flow,
    Flowable,
    Observer,
    ObserverGroup,
    Runtime,
    State,
    Subflow,
    Task,
    live_workers,
    tracing_observer,
    validate_inputs,
)
from actorflow.storage import is_postgres_url


def cli_observer(progress: Observer | None, exporter: str | None) -> Observer | None:
    """``progress`` and, when asked (``--trace``) or when ``OTEL_EXPORTER_OTLP_*`` is set,
    tracing (console spans on stderr, so they never mix with ``--json``); tracing first, as
    it gives the trace context."""
    tracer = tracing_observer(exporter, console=sys.stderr)
    if tracer is None:
        return progress
    return tracer if progress is None else ObserverGroup(tracer, progress)


_CHILD_FLAG = "--_detached-child"
_CONTROL_WAIT = 10.0
# Exit codes of kill/pause/resume by what refused the command (0: applied).
_CONTROL_CODES: dict[type[Exception], int] = {
    IllegalOperation: 1, ExecutionNotFound: 1, InputError: 2, CommandNotAnswered: 3,
}  # fmt: skip
_CONTROL_EPILOG = """\
The command reaches the process that runs the execution, wherever it is on this host (a
doorbell wakes it at once; the database is the fallback), and waits for its answer. Its
refusal is printed as one line, exactly as that process would say it.

exit codes: 0 applied; 1 refused (the execution's state forbids it, e.g. it already ended,
or no such execution); 2 invalid resume input (the field is named); 3 no answer (its process
died, is stopped, or did not answer within --wait seconds; the command stays pending and is
applied, or refused, by the runtime that takes the execution over)."""
_RESTART_EPILOG = (
    "It runs in this process, which follows it to its end, whichever process ran it before."
    " Refused (one line, exit 1) as in-process: an execution still running or not in a state"
    " that allows it, one another restart took first, or an unknown id."
)


class _Version(argparse.Action):
    """``--version``: the installed version, looked up only when asked."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        import actorflow

        print(f"actorflow {actorflow.__version__}")
        parser.exit()


class CliError(Exception):
    """A failure to report on stderr with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _db(args: argparse.Namespace) -> str:
    return str(args.db or os.environ.get("ACTORFLOW_DB") or "actorflow.db")


def _allow(args: argparse.Namespace) -> list[str]:
    """``--allow shell --allow x`` or ``--allow shell,x``: the gated task types to run."""
    return [n.strip() for v in args.allow or () for n in v.split(",") if n.strip()]


def _inputs(pairs: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--input expects key=value, got {pair!r}", 2)
        out[key] = value
    return out


def _console(err: bool = False) -> Console:
    console = Console(stderr=err, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        # Piped output is read by people and scripts alike: never crop it to 80 columns.
        console.width = max(console.width, 160)
    return console


def _error(message: str) -> None:
    _console(err=True).print(Text.assemble(("error: ", "red"), message))


def _problems(exc: FlowValidationError, console: Console) -> None:
    console.print(f"[red]{len(exc.problems)} problem(s)[/red] in flow:", highlight=False)
    for p in exc.problems:
        console.print(f"  {p}", markup=False, highlight=False)


def _has_subflows(tasks: Sequence[Task]) -> bool:
    for t in tasks:
        if isinstance(t, Subflow):
            return True
        if isinstance(t, Flowable) and _has_subflows(t.children()):
            return True
    return False


def _flows_for(flow: Flow, path: str, dirs: Sequence[str]) -> list[Flow]:
    """The flow and, when it calls subflows, those it calls, from ``--flow-dir`` (else the
    flow's directory): only the files that may hold them are parsed; a broken one is
    reported as a warning, and the run goes on (its subflow task fails if it is needed)."""
    if not _has_subflows(flow.top_level()):
        return [flow]
    from actorflow.flows import load_subflows

    found, failures = load_subflows(flow, list(dirs) or [str(Path(path).parent)])
    err = _console(err=True)
    for exc in failures:
        first = exc.problems[0] if exc.problems else None
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        err.print(
            Text.assemble(("warning: ", "yellow"), f"skipped a subflow candidate: {first}{more}")
        )
    return [flow, *found]


# -- running ---------------------------------------------------------------------------------
async def _follow(
    rt: Runtime, handle: ExecutionHandle, console: Console, as_json: bool, quiet: bool
) -> int:
    ex = await handle.wait()
    await rt.store.flush()
    ex = await rt.get(ex.id)
    if as_json:
        print(to_json(ex))
    elif not quiet:
        console.print(execution_header(ex))
        if ex.error:
            console.print(Text(f"  {ex.error}", style="red"))
    return 0 if ex.state in (State.SUCCESS, State.WARNING) else 1


class _Interrupts:
    """SIGINT (Ctrl-C) and SIGTERM while a command runs a runtime: the first ends the command
    and closes the runtime gracefully (running attempts get up to its ``shutdown_timeout``
    to finish), the second interrupts them at once; the exit code is 128 + the first signal
    (130 for Ctrl-C)."""

    def __init__(self) -> None:
        self.body = anyio.CancelScope()  # the command's own work, cancelled by the first one
        self.rt: Runtime | None = None
        self.first: int | None = None

    async def watch(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if self.first is None:
                    self.first = int(signum)
                    grace = self.rt.shutdown_timeout if self.rt is not None else 0.0
                    _note(
                        f"stopping: running tasks get up to {grace:g}s to finish "
                        "(Ctrl-C again to interrupt them now)"
                    )
                    self.body.cancel()
                elif self.rt is not None:
                    _note("interrupting running tasks; the next start resumes them")
                    self.rt.interrupt()

    @property
    def code(self) -> int:
        return 128 + (self.first or signal.SIGINT)


@contextlib.asynccontextmanager
async def _interruptible() -> AsyncIterator[_Interrupts]:
    """Signals handled as :class:`_Interrupts` says, for as long as the block runs (the
    runtime's close included, so a second Ctrl-C reaches it)."""
    stop = _Interrupts()
    async with anyio.create_task_group() as tg:
        await tg.start(stop.watch)
        try:
            yield stop
        finally:
            tg.cancel_scope.cancel()


def _note(text: str) -> None:
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


async def cmd_run(args: argparse.Namespace) -> int:
    from actorflow.flows import load_flow

    console = _console()
    try:
        flow = load_flow(args.flow)
    except FlowValidationError as exc:
        _problems(exc, _console(err=True))
        return 2
    inputs = _inputs(args.input)
    # Inputs are checked before anything starts: a bad value creates nothing. Undeclared
    # ones are ignored, as Kestra does, with a warning (a typo is seen).
    declared = {i.name for i in flow.inputs}
    for name in sorted(set(inputs) - declared):
        _console(err=True).print(
            Text.assemble(
                ("warning: ", "yellow"), f"input {name!r} is not declared by the flow; ignored"
            )
        )
        del inputs[name]
    validate_inputs(flow.inputs, inputs, where=f"flow {flow.namespace}.{flow.id}")
    if args.detach:
        return _detach(args)
    child = getattr(args, "detached_child", False)
    quiet = child or args.json
    progress = None if quiet else Progress(console)
    flows = _flows_for(flow, args.flow, args.flow_dir or ())
    if args.no_wait or (not child and await live_workers(_db(args))):
        return await _submit_to_workers(args, flow, inputs, flows, console)
    observer = cli_observer(progress, args.trace)
    async with _interruptible() as stop, Runtime.open(
        _db(args), flows=flows, observer=observer, recover=False, allow_types=_allow(args),
        shutdown_timeout=args.shutdown_timeout,
    ) as rt:  # fmt: skip
        stop.rt = rt
        with stop.body:
            handle = await rt.submit(flow, inputs)
            if child:
                print(handle.id, flush=True)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
            return await _follow(rt, handle, console, args.json, quiet)
    return stop.code  # a signal ended the command; the runtime closed (or was interrupted)


async def _submit_to_workers(
    args: argparse.Namespace, flow: Any, inputs: dict[str, Any], flows: Any, console: Console
) -> int:
    """Queue the execution for the workers of the database (a server, or any worker
    runtime); with ``--no-wait`` print its id and return, else follow it to its end."""
    async with Runtime.open(_db(args), flows=flows, worker=False, allow_types=_allow(args)) as rt:
        handle = await rt.submit(flow, inputs)
        if args.no_wait:
            print(json.dumps({"id": handle.id}) if args.json else handle.id)
            return 0
        if not args.json:
            console.print(f"queued {handle.id}: a worker on {_db(args)} runs it")
        return await _follow(rt, handle, console, args.json, args.json)


def _detach(args: argparse.Namespace) -> int:
    """Run the flow in a background process; print its execution id once stored."""
    argv = [sys.executable, "-m", "actorflow.cli._cli", "run", args.flow, "--db", _db(args)]
    for pair in args.input or ():
        argv += ["--input", pair]
    for d in args.flow_dir or ():
        argv += ["--flow-dir", d]
    for name in _allow(args):
        argv += ["--allow", name]
    if args.trace == "otlp":  # console output would go to the child's closed stderr
        argv += ["--trace", "otlp"]
    argv.append(_CHILD_FLAG)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline().strip()
    if not line:
        err = proc.stderr.read()
        code = proc.wait()
        sys.stderr.write(err)
        return code or 1
    if args.json:
        print(json.dumps({"id": line, "pid": proc.pid}))
    else:
        print(line)
    return 0


async def cmd_validate(args: argparse.Namespace) -> int:
    from actorflow.flows import load_flow

    results: list[dict[str, Any]] = []
    code = 0
    err = _console(err=True)
    paths: list[str] = []
    for given in args.flows:
        if Path(given).is_dir():  # every flow file under it
            found = sorted(
                str(p) for p in Path(given).rglob("*")
                if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
            )  # fmt: skip
            if not found:
                raise CliError(f"{given}: no flow files (*.yaml, *.yml, *.json) under it", 2)
            paths.extend(found)
        else:
            paths.append(given)
    for path in paths:
        try:
            flow = load_flow(path)
            results.append({"file": path, "valid": True, "id": flow.id, "problems": []})
            if not args.json:
                _console().print(f"[green]✔[/green] {path}: flow {flow.namespace}.{flow.id}")
        except FlowValidationError as exc:
            code = 2
            results.append(
                {
                    "file": path,
                    "valid": False,
                    "problems": [
                        {"message": p.message, "file": p.file, "line": p.line, "field": p.field}
                        for p in exc.problems
                    ],
                }
            )
            if not args.json:
                _problems(exc, err)
    if args.json:
        print(json.dumps(results, indent=2))
    return code


async def cmd_schema(args: argparse.Namespace) -> int:
    from actorflow.flows import flow_schema

    print(json.dumps(flow_schema(), indent=2))
    return 0


# -- reading ---------------------------------------------------------------------------------
def _open(args: argparse.Namespace, *, read_only: bool = False) -> Any:
    if not is_postgres_url(_db(args)) and not Path(_db(args)).exists():
        raise CliError(f"no database at {_db(args)} (use --db or ACTORFLOW_DB)")
    return Runtime.open(_db(args), recover=False, read_only=read_only)


def _read(args: argparse.Namespace) -> Any:
    """A runtime for a read command: opens the database read-only, writes nothing."""
    return _open(args, read_only=True)


async def _get(rt: Runtime, execution_id: str) -> Execution:
    try:
        return await rt.get(execution_id)
    except ExecutionNotFound:
        raise CliError(f"no execution with id {execution_id!r}") from None


async def cmd_executions(args: argparse.Namespace) -> int:
    states = [s.strip().upper() for v in args.state or () for s in v.split(",") if s.strip()]
    bad = [s for s in states if s not in State.__members__]
    if bad:
        raise CliError(f"unknown state(s) {bad}; use {', '.join(State.__members__)}", 2)
    async with _read(args) as rt:
        rows = await rt.executions(
            flow=args.flow, namespace=args.namespace, state=states or None, limit=args.limit
        )
        waiting = await _waiting(rt, [ex.id for ex in rows if not ex.state.terminal])
    if args.json:
        listed = json.loads(to_json(rows))
        for item in listed:
            item["waiting"] = waiting.get(item["id"])
        print(json.dumps(listed, indent=2))
    else:
        console = _console()
        console.print(executions_table(rows))
        for ex_id, why in waiting.items():
            console.print(Text(f"{ex_id} waits: {why}", style="yellow"))
    return 0


async def _waiting(rt: Runtime, ids: list[str]) -> dict[str, str]:
    """Why each of these executions waits for a worker (only those that do)."""
    out: dict[str, str] = {}
    for ex_id in ids:
        row = await rt.store.get_execution(ex_id)
        if row is not None and row.waiting:
            out[ex_id] = row.waiting
    return out


async def cmd_show(args: argparse.Namespace) -> int:
    async with _read(args) as rt:
        ex = await _get(rt, args.id)
        why = (await _waiting(rt, [ex.id])).get(ex.id)
    if args.json:
        shown = json.loads(to_json(ex))
        shown["waiting"] = why
        print(json.dumps(shown, indent=2))
    else:
        console = _console()
        console.print(execution_tree(ex))
        if why:
            console.print(Text(f"waits: {why}", style="yellow"))
    return 0


async def cmd_timeline(args: argparse.Namespace) -> int:
    async with _read(args) as rt:
        ex = await _get(rt, args.id)
    if args.json:
        print(json.dumps({"id": ex.id, "state": ex.state.value, "rows": timeline_rows(ex)}))
        return 0
    console = _console()
    console.print(execution_header(ex))
    width = args.width or (console.width if console.is_terminal else 100)
    console.print(timeline(ex, width), end="")
    return 0


async def cmd_logs(args: argparse.Namespace) -> int:
    async with _read(args) as rt:
        ex = await _get(rt, args.id)
        names = {tr.id: (tr.task_id, tr.value) for tr in ex.task_runs}
        rows = await rt.logs(ex.id)
    if args.task:
        rows = [
            r for r in rows if r.task_run_id and names.get(r.task_run_id, ("",))[0] == args.task
        ]
    if args.json:
        out = []
        for r in rows:
            task_id, value = names.get(r.task_run_id or "", (None, None))
            out.append(
                {"ts": r.ts, "level": r.level, "message": r.message, "task_id": task_id,
                 "value": value, "task_run_id": r.task_run_id}
            )  # fmt: skip
        print(json.dumps(out, indent=2))
        return 0
    console = _console()
    styles = {"ERROR": "red", "CRITICAL": "bold red", "WARNING": "yellow", "DEBUG": "dim"}
    for r in rows:
        task_id, value = names.get(r.task_run_id or "", ("-", None))
        who = f"{task_id}[{value}]" if value is not None else task_id
        console.print(
            f"[dim]{fmt_time(r.ts)}[/dim] [{styles.get(r.level, 'cyan')}]{r.level:<7}[/] "
            f"[bold]{who}[/bold] ",
            end="",
        )
        console.print(r.message, markup=False, highlight=False)
    return 0


# -- control ---------------------------------------------------------------------------------
def _where_paused(ex: Execution) -> str:
    paused = [tr.task_id for tr in ex.task_runs if tr.state is State.PAUSED]
    return f" (waiting at {', '.join(repr(t) for t in paused)})" if paused else ""


async def cmd_control(args: argparse.Namespace) -> int:
    kind = args.command
    async with _open(args) as rt:
        before = await _get(rt, args.id)
        began = time.monotonic()
        error: str | None = None
        code = 0
        try:
            # Another process's execution: the owner's answer, or why there is none; its
            # refusal is the error an in-process call raises (same class, same message).
            if kind == "kill":
                await rt.kill(before.id, timeout=args.wait)
            elif kind == "pause":
                await rt.pause(before.id, timeout=args.wait)
            else:
                await rt.resume(before.id, _inputs(args.input), timeout=args.wait)
        except (IllegalOperation, InputError, ExecutionNotFound, CommandNotAnswered) as exc:
            error, error_class = " ".join(str(exc).split()), type(exc).__name__
            code = _CONTROL_CODES[type(exc)]
        ex = await rt.get(before.id) if error is None else before
        if error is None and kind == "kill" and not ex.state.terminal:
            # Applied: KILLING until its running task runs are cancelled; show the end.
            left = max(args.wait - (time.monotonic() - began), 0.5)
            with contextlib.suppress(TimeoutError):
                ex = await rt.wait(before.id, timeout=left)
        if error is not None:
            with contextlib.suppress(ActorflowError):
                ex = await rt.get(before.id)
    if args.json:
        out: dict[str, Any] = {"id": ex.id, "command": kind, "applied": error is None}
        out["state"] = ex.state
        if error is not None:
            out["error"] = error
            out["error_class"] = error_class
        print(json.dumps(out))
    elif error is None:
        _console().print(
            Text(f"{kind}: applied; execution {ex.id} is now "), state_text(ex.state),
            _where_paused(ex), sep="",
        )  # fmt: skip
    else:
        _error(f"{kind}: {error}")
    return code


async def cmd_restart(args: argparse.Namespace) -> int:
    console = _console()
    progress = None if args.json else Progress(console)
    observer = cli_observer(progress, args.trace)
    async with _interruptible() as stop, Runtime.open(
        _db(args), observer=observer, recover=False, allow_types=_allow(args),
        shutdown_timeout=args.shutdown_timeout,
    ) as rt:  # fmt: skip
        stop.rt = rt
        with stop.body:
            await _get(rt, args.id)
            try:
                if args.command == "restart":
                    handle = await rt.restart(args.id)
                else:
                    handle = await rt.replay(args.id, task_id=args.from_task)
            except IllegalOperation as exc:
                raise CliError(str(exc)) from None
            return await _follow(rt, handle, console, args.json, False)
    return stop.code


async def cmd_purge(args: argparse.Namespace) -> int:
    from actorflow.flows import parse_duration

    try:
        older = parse_duration(args.older_than)
    except ValueError as exc:
        raise CliError(f"--older-than: {exc}", 2) from None
    async with _open(args) as rt:
        deleted = await rt.purge(older_than=older, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"would_delete" if args.dry_run else "deleted": deleted}))
    elif args.dry_run:
        _console().print(f"would purge {len(deleted)} execution(s) older than {args.older_than}")
    else:
        _console().print(f"purged {len(deleted)} execution(s) older than {args.older_than}")
    return 0


async def cmd_flow_deploy(args: argparse.Namespace) -> int:
    from actorflow.flows import load_flow

    paths: list[Path] = []
    for given in args.paths:
        p = Path(given)
        if p.is_dir():
            paths.extend(sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json")))
        else:
            paths.append(p)
    flows = [load_flow(p) for p in paths]  # every file valid before anything is stored
    out: list[dict[str, Any]] = []
    async with Runtime.open(_db(args), recover=False) as rt:
        for flow in flows:
            assert flow.source is not None
            deployed, new = await rt.deploy(flow.source)
            out.append({"namespace": deployed.namespace, "id": deployed.id,
                        "revision": deployed.revision, "new": new,
                        "file": flow.source_path})  # fmt: skip
    if args.json:
        print(json.dumps(out))
    else:
        console = _console()
        for d in out:
            what = "deployed" if d["new"] else "unchanged"
            console.print(f"{what} {d['namespace']}.{d['id']} revision {d['revision']}")
    return 0


async def cmd_flows(args: argparse.Namespace) -> int:
    async with _read(args) as rt:
        rows = await rt.store.flows(args.namespace)
    if args.json:
        print(json.dumps([{"namespace": r.namespace, "id": r.id, "revision": r.revision,
                           "created": r.created} for r in rows]))  # fmt: skip
        return 0
    from rich.table import Table

    table = Table("namespace", "id", "revision", "deployed")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created))
        table.add_row(r.namespace, r.id, str(r.revision), when)
    _console().print(table)
    return 0


async def cmd_flow_show(args: argparse.Namespace) -> int:
    namespace, _, flow_id = args.id.rpartition(".")
    async with _read(args) as rt:
        if namespace:
            row = await rt.store.flow_revision(namespace, flow_id, args.revision)
        else:
            matches = [r for r in await rt.store.flows() if r.id == flow_id]
            if len(matches) > 1:
                names = ", ".join(f"{r.namespace}.{r.id}" for r in matches)
                raise CliError(f"flow id {flow_id!r} is deployed in several namespaces: {names}")
            row = matches[0] if matches else None
            if row is not None and args.revision is not None:
                row = await rt.store.flow_revision(row.namespace, flow_id, args.revision)
    if row is None:
        raise CliError(f"no deployed flow {args.id!r}" + (
            f" revision {args.revision}" if args.revision is not None else ""))  # fmt: skip
    if args.json:
        print(json.dumps({"namespace": row.namespace, "id": row.id, "revision": row.revision,
                          "created": row.created, "source": row.source}))  # fmt: skip
    else:
        print(row.source, end="" if row.source.endswith("\n") else "\n")
    return 0


async def cmd_server(args: argparse.Namespace) -> int:
    try:
        from actorflow.server import load_flow_dir, serve
    except ImportError as exc:
        raise CliError(
            f"actorflow server needs the server extra ({exc.name} is missing): "
            "pip install 'actorflow[server]'"
        ) from None
    flows: list[Flow] = []
    for d in args.flows or ():
        try:
            found, failed = load_flow_dir(d)
        except FileNotFoundError as exc:
            raise CliError(str(exc), 2) from None
        for failure in failed:
            _problems(failure, _console(err=True))
        flows.extend(found)
    db = _db(args)
    # Bound before the line is printed: a client that read it can connect at once (--port 0
    # picks a free port, shown in the line).
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    sock.listen(1024)
    port = sock.getsockname()[1]
    print(f"actorflow server on http://{args.host}:{port} ({len(flows)} flow(s), db {db})",
          file=sys.stderr, flush=True)  # fmt: skip
    observer = cli_observer(None, args.trace)
    await serve(db, flows=flows, host=args.host, port=port, sock=sock, observer=observer,
                handle_signals=True, allow_types=_allow(args),
                shutdown_timeout=args.shutdown_timeout)  # fmt: skip
    return 0


# -- argument parsing ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        help="SQLite file or postgresql:// URL (default: $ACTORFLOW_DB or actorflow.db);"
        " with PostgreSQL, files go to $ACTORFLOW_FILES",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument(
        "--trace",
        choices=("console", "otlp"),
        help="OpenTelemetry spans of what runs here, to stderr or over OTLP "
        "(default: OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set)",
    )
    parser = argparse.ArgumentParser(
        prog="actorflow", description="Run workflow files and inspect their executions."
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    def allow(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--allow",
            action="append",
            metavar="TYPE",
            help="run tasks of this gated type, e.g. shell (off by default: it runs commands "
            "on this machine); repeat or separate with commas",
        )

    def _seconds(text: str) -> float:
        # A clear usage error (exit 2) instead of the runtime's ValueError traceback.
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not value >= 0 or value == float("inf"):  # NaN and inf too
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number >= 0")
        return value

    def shutdown(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--shutdown-timeout",
            type=_seconds,
            default=10.0,
            metavar="SECONDS",
            help="on Ctrl-C or SIGTERM, how long running tasks get to finish (default 10; a second "
            "Ctrl-C interrupts them at once)",
        )

    p = add("run", "run a flow file and show its progress")
    p.add_argument("flow", help="flow file (YAML or JSON)")
    p.add_argument("--input", "-i", action="append", metavar="K=V", help="an input value")
    p.add_argument("--detach", action="store_true", help="run in the background, print the id")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="only queue it for the database's workers (a server) and print the id; without"
        " it, run goes through the queue and follows whenever a live worker owns the database",
    )
    p.add_argument("--flow-dir", action="append", metavar="DIR", help="flows for subflows")
    p.add_argument(_CHILD_FLAG, dest="detached_child", action="store_true", help=argparse.SUPPRESS)
    allow(p)
    shutdown(p)
    p.set_defaults(func=cmd_run)
    p = add("validate", "check flow files; every problem with file, line and field")
    p.add_argument("flows", nargs="+", metavar="FLOW|DIR")
    p.set_defaults(func=cmd_validate)
    p = add("schema", "print the JSON Schema of flow files")
    p.set_defaults(func=cmd_schema)
    p = add("executions", "list executions, newest first")
    p.add_argument("--flow", help="flow id")
    p.add_argument("--namespace", help="namespace")
    p.add_argument("--state", action="append", help="state(s), e.g. FAILED or RUNNING,PAUSED")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_executions)
    for name, text in (
        ("show", "the tree of task runs: states, attempts, durations, outputs, metrics"),
        ("timeline", "a Gantt chart of task runs and attempts"),
        ("logs", "log lines of an execution"),
    ):
        p = add(name, text)
        p.add_argument("id", help="execution id")
        if name == "logs":
            p.add_argument("--task", help="only this task id")
        if name == "timeline":
            p.add_argument("--width", type=int, help="chart width in columns")
        p.set_defaults(func={"show": cmd_show, "timeline": cmd_timeline, "logs": cmd_logs}[name])
    for name, text in (
        ("pause", "pause a running execution"),
        ("resume", "resume a paused execution"),
        ("kill", "kill an execution"),
    ):
        p = add(name, text)
        p.epilog = _CONTROL_EPILOG
        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.add_argument("id", help="execution id")
        if name == "resume":
            p.add_argument("--input", "-i", action="append", metavar="K=V",
                           help="an input of the Pause task it waits at (repeatable)")  # fmt: skip
        p.add_argument("--wait", type=float, default=_CONTROL_WAIT, metavar="SECONDS",
                       help="how long to wait for the owner's answer (%(default)s)")  # fmt: skip
        p.set_defaults(func=cmd_control)
    p = add("restart", "run the failed task runs of an execution again (same id)")
    p.epilog = _RESTART_EPILOG
    p.add_argument("id", help="execution id")
    p.add_argument("--input", "-i", action="append", metavar="K=V", help=argparse.SUPPRESS)
    allow(p)
    shutdown(p)
    p.set_defaults(func=cmd_restart, from_task=None)
    p = add("replay", "a new execution that runs again from a task")
    p.epilog = _RESTART_EPILOG
    p.add_argument("id", help="execution id")
    p.add_argument("--from", dest="from_task", metavar="TASK", help="task id to run again from")
    allow(p)
    shutdown(p)
    p.set_defaults(func=cmd_restart)
    p = add("flows", "deployed flows (latest revisions)")
    p.add_argument("--namespace", help="only this namespace")
    p.set_defaults(func=cmd_flows)
    p = add("flow", "deploy or show flows stored in the database")
    flow_sub = p.add_subparsers(dest="flow_command", required=True, metavar="ACTION")
    q = flow_sub.add_parser("deploy", help="store flow files (or every file of a directory)",
                            parents=[common])  # fmt: skip
    q.add_argument("paths", nargs="+", metavar="FILE|DIR")
    q.set_defaults(func=cmd_flow_deploy)
    q = flow_sub.add_parser("show", help="the source of a deployed flow", parents=[common])
    q.add_argument("id", help="flow id, or namespace.id")
    q.add_argument("--revision", type=int, help="a revision (default: the latest)")
    q.set_defaults(func=cmd_flow_show)
    p = add("server", "a long-running worker serving the HTTP API (the server extra)")
    p.add_argument("--flows", action="append", metavar="DIR", help="flows to deploy (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    allow(p)
    shutdown(p)
    p.set_defaults(func=cmd_server)
    p = add("purge", "delete ended executions older than a duration")
    p.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, PT1H")
    p.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    p.set_defaults(func=cmd_purge)
    return parser


# Commands that only read the database: they never import the flow language.
_READS = frozenset({cmd_executions, cmd_show, cmd_timeline, cmd_logs, cmd_flows, cmd_flow_show})


def _unwrap(exc: BaseException) -> BaseException:
    # Errors raised inside ``Runtime.open`` come out of its task group wrapped in a group.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actorflow`` command."""
    args = build_parser().parse_args(argv)
    if args.func not in _READS:
        # Installs the loader of stored flow sources: anything that may run or control an
        # execution of a flow file needs it; reads never parse a flow.
        import actorflow.flows  # noqa: F401
    try:
        code: int = anyio.run(args.func, args)
    except BaseException as raised:
        exc = _unwrap(raised)
        if isinstance(exc, CliError):
            _error(str(exc))
            return exc.code
        if isinstance(exc, FlowValidationError):
            _problems(exc, _console(err=True))
            return 2
        if isinstance(exc, InputError):
            _error(str(exc))
            return 2
        if isinstance(exc, ActorflowError):
            _error(str(exc))
            return 1
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if isinstance(exc, BrokenPipeError):
            return _broken_pipe()
        raise
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _broken_pipe()
    return code


def _broken_pipe() -> int:
    # The reader (`| head`) went away: the normal end of a pipe, not an error to report.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
