"""The HTTP JSON API over a :class:`~actorflow.runtime.Runtime` (Starlette).

Paths follow Kestra's (``/api/v1/executions/{namespace}/{flowId}`` to submit, ``.../kill`` and
so on) so users of its API find their way. Errors are JSON ``{"error": kind, "message": ...}``
with the status a client can act on: 404 unknown execution or flow, 409 an operation the
execution's state forbids, 422 invalid inputs or flow source (with the problems), 503 storage
unavailable or the runtime closed, 504 a kill, pause or resume the process owning the
execution did not answer (``commandId`` names the command, which stays pending). A refusal
from the owning process is the error it raised (a bad resume input is 422 there as here).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from actorflow._errors import (
    ActorflowError,
    CommandNotAnswered,
    ExecutionNotFound,
    FlowError,
    FlowValidationError,
    IllegalOperation,
    InputError,
    InvalidTransition,
    RuntimeClosedError,
    StorageUnavailable,
    StoredFileNotFound,
)
from actorflow.flows import load_flow_text
from actorflow.runtime import (
    Execution,
    Flow,
    Runtime,
    State,
    Webhook,
    render,
    trigger_enabled,
    trigger_switch_key,
)
from actorflow.server._live import (
    CursorError,
    LiveFeeds,
    decode_cursor,
    flow_graph,
    input_json,
    page_after,
    trigger_json,
)

Handler = Callable[[Request], Awaitable[Response]]

#: Largest request body accepted (flow sources, inputs); files go through multipart.
MAX_BODY = 16 << 20
#: Executions an execution's links read at most: linked executions' states, and the
#: flow's executions started since it (where its replays are).
LINKS_SCAN = 1000


class ApiError(Exception):
    """A request the API refuses, with its HTTP status."""

    def __init__(self, status: int, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.extra = extra


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat().replace("+00:00", "Z")


def execution_json(ex: Execution, *, tree: bool = True) -> dict[str, Any]:
    """An execution as the API shows it: the stored record (epoch seconds) plus ISO-8601 dates
    and its duration; task runs only for a ``tree``."""
    data: dict[str, Any] = msgspec.to_builtins(ex)
    data.pop("flow_source", None)
    data.pop("type", None)
    if not tree:
        data.pop("task_runs", None)
    data["start_date"] = _iso(ex.start_date)
    data["end_date"] = _iso(ex.end_date)
    data["duration"] = ex.duration
    return data


def flow_json(flow: Flow, *, source: bool = False) -> dict[str, Any]:
    """A registered flow: its ids, inputs and triggers (and source when asked)."""
    data: dict[str, Any] = {
        "namespace": flow.namespace,
        "id": flow.id,
        "revision": flow.revision,
        "description": flow.description,
        "labels": dict(flow.labels),
        "inputs": [input_json(i) for i in flow.inputs],
        "tasks": [t.id for t in flow.tasks],
        "triggers": [trigger_json(t) for t in flow.triggers],
    }
    if source:
        data["source"] = flow.source
        data["graph"] = flow_graph(flow)
    return data


async def _json_body(request: Request) -> Any:
    body = await _body(request)
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"request body is not JSON: {exc}") from exc


async def _body(request: Request) -> bytes:
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_BODY:
        raise ApiError(413, "too_large", f"request body of {size} bytes exceeds {MAX_BODY}")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > MAX_BODY:
            raise ApiError(413, "too_large", f"request body exceeds {MAX_BODY} bytes")
    return bytes(chunks)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", f"{what} must be a JSON object")
    return value


def _int_param(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "bad_request", f"query parameter {name}={raw!r} is not an integer"
        ) from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"query parameter {name} must be in {low}..{high}")
    return value


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, "bad_request", f"query parameter {name}={raw!r} is neither epoch seconds nor ISO"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        return JSONResponse(
            {"error": exc.kind, "message": str(exc), **exc.extra}, status_code=exc.status
        )
    if isinstance(exc, FlowValidationError):
        problems = [msgspec.to_builtins(p) for p in exc.problems]
        return JSONResponse(
            {"error": "invalid_flow", "message": str(exc), "problems": problems}, status_code=422
        )
    if isinstance(exc, CommandNotAnswered):
        return JSONResponse(
            {"error": "not_answered", "message": str(exc), "commandId": exc.command_id},
            status_code=504,
        )
    status, kind = 500, "internal"
    if isinstance(exc, ExecutionNotFound | StoredFileNotFound):
        status, kind = 404, "not_found"
    elif isinstance(exc, InputError):
        status, kind = 422, "invalid_input"
    elif isinstance(exc, IllegalOperation | InvalidTransition):
        status, kind = 409, "conflict"
    elif isinstance(exc, StorageUnavailable | RuntimeClosedError):
        status, kind = 503, "unavailable"
    elif isinstance(exc, FlowError):
        status, kind = 422, "invalid_flow"
    elif isinstance(exc, ActorflowError):
        status, kind = 400, "bad_request"
    message = str(exc) if isinstance(exc, ActorflowError) else f"{type(exc).__name__}: {exc}"
    return JSONResponse({"error": kind, "message": message}, status_code=status)


def _guarded(handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return _error_response(exc)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


class Api:
    """The API's handlers, bound to one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.feeds = LiveFeeds(runtime)

    def _flow(self, namespace: str, flow_id: str, revision: int | None = None) -> Flow:
        flow = self.rt.flow(namespace, flow_id, revision)
        if flow is None:
            raise ApiError(404, "not_found", f"flow {namespace}.{flow_id} is not deployed")
        return flow

    # -- health and flows -------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        """Liveness: 200 while the runtime accepts work, else 503."""
        accepting = self.rt.engine.accepting
        return JSONResponse(
            {"status": "ok" if accepting else "unavailable", "owner": self.rt.engine.owner},
            status_code=200 if accepting else 503,
        )

    async def list_flows(self, request: Request) -> Response:
        """Deployed flows (latest revisions), optionally of one namespace."""
        namespace = request.query_params.get("namespace")
        flows = [f for f in self.rt.flows() if namespace is None or f.namespace == namespace]
        return JSONResponse({"results": [flow_json(f) for f in flows], "total": len(flows)})

    async def get_flow(self, request: Request) -> Response:
        """One flow with its source."""
        p = request.path_params
        revision = request.query_params.get("revision")
        flow = self._flow(p["namespace"], p["flow_id"], int(revision) if revision else None)
        return JSONResponse(flow_json(flow, source=True))

    async def validate_flow(self, request: Request) -> Response:
        """Validate a flow source (YAML or JSON body): 200 with its problems (empty if valid)."""
        source = (await _body(request)).decode("utf-8", errors="replace")
        try:
            flow = load_flow_text(source)
        except FlowValidationError as exc:
            problems = [msgspec.to_builtins(p) for p in exc.problems]
            return JSONResponse({"valid": False, "problems": problems})
        except FlowError as exc:
            return JSONResponse({"valid": False, "problems": [{"message": str(exc)}]})
        return JSONResponse({"valid": True, "problems": [], "flow": flow_json(flow)})

    async def deploy_flow(self, request: Request) -> Response:
        """Deploy a flow source (YAML or JSON body), stored as its next revision: 201 with the
        flow (200 when the latest revision has the same source), 422 with its problems."""
        source = (await _body(request)).decode("utf-8", errors="replace")
        flow, new = await self.rt.deploy(source)
        return JSONResponse(flow_json(flow), status_code=201 if new else 200)

    # -- executions ------------------------------------------------------------------------
    async def submit(self, request: Request) -> Response:
        """Start an execution of a deployed flow with inputs (JSON object, or multipart form
        whose file parts are stored in internal storage and passed as their URIs);
        ``?wait=true`` answers with the finished tree."""
        p = request.path_params
        flow = self._flow(p["namespace"], p["flow_id"])
        labels: dict[str, str] = {}
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            inputs = await self._form_inputs(request, flow)
        else:
            body = _mapping(await _json_body(request), "the request body")
            inputs = _mapping(body.get("inputs", body) if "inputs" in body else body, "inputs")
            if "labels" in body:
                labels = {str(k): str(v) for k, v in _mapping(body["labels"], "labels").items()}
                inputs = {k: v for k, v in inputs.items() if k != "labels"}
        handle = await self.rt.submit(flow, inputs, labels=labels)
        if request.query_params.get("wait") in ("1", "true", "yes"):
            done = await self.rt.wait(handle.id)
            return JSONResponse(execution_json(done))
        return JSONResponse(execution_json(await self.rt.get(handle.id)), status_code=201)

    async def _form_inputs(self, request: Request, flow: Flow) -> dict[str, Any]:
        from starlette.datastructures import UploadFile

        inputs: dict[str, Any] = {}
        async with request.form(max_files=64, max_fields=1000) as form:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    # Stored before the execution exists: under an upload id of its own.
                    uri = await self.rt.engine.files.put(
                        flow.namespace, flow.id, "inputs", name, os.urandom(8).hex(),
                        value.filename or name, data,
                    )  # fmt: skip
                    inputs[name] = uri
                else:
                    inputs[name] = value
        return inputs

    def _list_filters(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        states = q.getlist("state")
        for s in states:
            if s not in State.__members__:
                raise ApiError(400, "bad_request", f"unknown state {s!r}")
        return {
            "flow": q.get("flowId") or q.get("flow_id") or None,
            "namespace": q.get("namespace") or None,
            "state": states or None,
            "since": _float_param(request, "since"),
            "until": _float_param(request, "until"),
        }

    async def list_executions(self, request: Request) -> Response:
        """Stored executions, newest first: filters ``namespace``, ``flowId``, ``state``
        (repeatable), ``since``/``until`` (epoch or ISO-8601), ``limit`` (<= 1000); paging by
        ``cursor`` (the ``next`` of the previous page, as fast at any depth) or ``offset``."""
        filters = self._list_filters(request)
        limit = _int_param(request, "limit", 100, low=1, high=1000)
        raw_cursor = request.query_params.get("cursor")
        if raw_cursor is not None or "offset" not in request.query_params:
            try:
                cursor = decode_cursor(raw_cursor) if raw_cursor else None
            except CursorError as exc:
                raise ApiError(400, "bad_request", str(exc)) from None
            rows, after = await page_after(self.rt, cursor, limit, **filters)
            results = [execution_json(ex, tree=False) for ex in rows]
            return JSONResponse({"results": results, "next": after})
        rows = await self.rt.executions(
            **filters, limit=limit, offset=_int_param(request, "offset", 0, low=0, high=10**9)
        )
        return JSONResponse({"results": [execution_json(ex, tree=False) for ex in rows]})

    async def execution_events(self, request: Request) -> Response:
        """Server-Sent Events: an ``execution`` event (the record, no task runs) each time
        one of the newest ``limit`` executions matching the filters starts or changes state."""
        filters = self._list_filters(request)
        limit = _int_param(request, "limit", 100, low=1, high=1000)
        await self.rt.executions(limit=1, **filters)  # storage errors before streaming
        return _stream(self.feeds.executions(_record_json, limit, **filters))

    async def follow_execution(self, request: Request) -> Response:
        """Server-Sent Events: the execution's full tree as an ``execution`` event now and on
        every change, then ``end`` once it ended."""
        ex_id = request.path_params["id"]
        await self.rt.get(ex_id)  # 404 before any streaming starts
        return _stream(self.feeds.execution(ex_id, execution_json))

    async def get_execution(self, request: Request) -> Response:
        """The full tree of an execution: task runs, attempts, outputs, metrics."""
        return JSONResponse(execution_json(await self.rt.get(request.path_params["id"])))

    async def links(self, request: Request) -> Response:
        """The executions linked to this one, each with its state: the ``parent`` whose
        Subflow task started it, the ``children`` its Subflow task runs started, the
        ``original`` it replays, its ``replays`` (found among the flow's newest
        :data:`LINKS_SCAN` executions started since; ``replaysComplete`` says whether that
        was all of them), and its ``restarts`` (it keeps its id; ``attempt`` counts them, a
        replay's going on from its original's)."""
        ex = await self.rt.get(request.path_params["id"])
        looked: dict[str, dict[str, Any] | None] = {}

        async def brief(ex_id: str) -> dict[str, Any]:
            if ex_id not in looked:
                row = await self.rt.store.get_execution(ex_id) if len(looked) < LINKS_SCAN else None
                looked[ex_id] = None if row is None else {
                    "state": row.state, "namespace": row.namespace, "flowId": row.flow_id,
                }  # fmt: skip
            return {"id": ex_id, "state": None, **(looked[ex_id] or {})}

        parent = None
        if ex.parent_execution_id:
            parent = {**await brief(ex.parent_execution_id), "taskRunId": ex.parent_task_run_id}
        original = await brief(ex.original_execution_id) if ex.original_execution_id else None
        children = [
            {**await brief(tr.child_execution_id), "taskId": tr.task_id, "taskRunId": tr.id,
             "value": tr.value}
            for tr in ex.task_runs if tr.child_execution_id
        ]  # fmt: skip
        later = await self.rt.executions(
            flow=ex.flow_id, namespace=ex.namespace, since=ex.start_date, limit=LINKS_SCAN
        )
        replays = [
            {"id": r.id, "state": r.state.value, "namespace": r.namespace, "flowId": r.flow_id,
             "start_date": _iso(r.start_date)}
            for r in reversed(later) if r.original_execution_id == ex.id
        ]  # fmt: skip
        # A replay from a task run begins RESTARTED: its start, not a restart.
        begun = 2 if ex.original_execution_id and len(ex.history) > 1 else 0
        restarts = [
            {"date": _iso(e.date)} for e in ex.history[begun:] if e.state is State.RESTARTED
        ]
        return JSONResponse({
            "parent": parent, "original": original, "children": children, "replays": replays,
            "replaysComplete": len(later) < LINKS_SCAN, "restarts": restarts,
            "attempt": ex.attempt_number,
        })  # fmt: skip

    async def logs(self, request: Request) -> Response:
        """Log lines of an execution (``taskRunId`` filters); ``follow=true`` streams them as
        Server-Sent Events until the execution ends."""
        ex_id = request.path_params["id"]
        ex = await self.rt.get(ex_id)  # 404 before any streaming starts
        task_run = request.query_params.get("taskRunId")
        if request.query_params.get("follow") not in ("1", "true", "yes"):
            rows = await self.rt.logs(ex_id, task_run)
            return JSONResponse({"results": [_log_json(r) for r in rows]})
        return StreamingResponse(
            self._follow_logs(ex_id, task_run, ex.state.terminal),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    async def _follow_logs(
        self, ex_id: str, task_run: str | None, ended: bool
    ) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            rows = await self.rt.logs(ex_id, task_run)
            for r in rows[sent:]:
                yield b"data: " + json.dumps(_log_json(r)).encode() + b"\n\n"
            sent = len(rows)
            if ended:
                yield b"event: end\ndata: {}\n\n"
                return
            with anyio.move_on_after(0.5):
                await self.rt.wait(ex_id)
            ended = (await self.rt.get(ex_id)).state.terminal

    async def metrics(self, request: Request) -> Response:
        """Stored metrics of an execution (``name`` filters)."""
        ex_id = request.path_params["id"]
        await self.rt.get(ex_id)
        rows = await self.rt.metrics(execution_id=ex_id, name=request.query_params.get("name"))
        return JSONResponse({"results": [msgspec.to_builtins(r) for r in rows]})

    async def file(self, request: Request) -> Response:
        """Download an internal-storage file of an execution (``uri=actorflow://...``)."""
        ex_id = request.path_params["id"]
        ex = await self.rt.get(ex_id)
        uri = request.query_params.get("uri", "")
        parts = uri.removeprefix("actorflow://").split("/")
        ours = len(parts) >= 3 and parts[2] == ex.id
        if not uri.startswith("actorflow://") or not (ours or uri in ex.inputs.values()):
            raise ApiError(404, "not_found", f"{uri!r} is not a file of execution {ex_id}")
        data = await self.rt.read_file(uri)
        name = parts[-1].replace('"', "")
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def kill(self, request: Request) -> Response:
        """Kill a running execution (and its subflows)."""
        await self.rt.kill(request.path_params["id"])
        return await self._state(request, 202)

    async def pause(self, request: Request) -> Response:
        """Pause a running execution: no new task run starts."""
        await self.rt.pause(request.path_params["id"])
        return await self._state(request, 202)

    async def resume(self, request: Request) -> Response:
        """Resume a paused execution with the Pause task's ``onResume`` inputs (JSON object)."""
        inputs = _mapping(await _json_body(request), "resume inputs")
        await self.rt.resume(request.path_params["id"], inputs)
        return await self._state(request, 202)

    async def restart(self, request: Request) -> Response:
        """Restart a FAILED, KILLED or WARNING execution: failed task runs run again."""
        handle = await self.rt.restart(request.path_params["id"])
        return JSONResponse(execution_json(await self.rt.get(handle.id)), status_code=202)

    async def replay(self, request: Request) -> Response:
        """A new execution that runs again from ``taskRunId`` (or ``taskId``), linked to it."""
        body = _mapping(await _json_body(request), "the request body")
        handle = await self.rt.replay(
            request.path_params["id"],
            task_run_id=body.get("taskRunId") or body.get("task_run_id"),
            task_id=body.get("taskId") or body.get("task_id"),
        )
        return JSONResponse(execution_json(await self.rt.get(handle.id)), status_code=201)

    async def webhook(self, request: Request) -> Response:
        """Start the flow whose Webhook trigger has this key, with ``trigger.body``,
        ``trigger.headers`` and ``trigger.parameters``; a wrong key starts nothing (404)."""
        p = request.path_params
        flow = self._flow(p["namespace"], p["flow_id"])
        flow_vars = {"id": flow.id, "namespace": flow.namespace, "revision": flow.revision}
        hook = next(
            (t for t in flow.triggers if isinstance(t, Webhook)
             and str(render(t.key, {"flow": flow_vars})) == p["key"]),
            None,
        )  # fmt: skip
        # Disabled in the flow file, or by the API / a trigger.Toggle task: starts nothing.
        if hook is None or not await trigger_enabled(self.rt.store, flow, hook):
            raise ApiError(
                404, "not_found", f"no webhook of {flow.namespace}.{flow.id} has this key"
            )
        raw = await _body(request)
        try:
            body: Any = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        variables = {
            "type": "Webhook", "id": hook.id, "body": body,
            "headers": {k: v for k, v in request.headers.items()},
            "parameters": {k: request.query_params.getlist(k) for k in request.query_params},
        }  # fmt: skip
        inputs = hook.fire_inputs({"trigger": variables, "flow": flow_vars})
        if inputs is None:
            return JSONResponse({"started": False, "reason": "a condition is false"})
        handle = await self.rt.submit(flow, inputs, trigger=variables)
        return JSONResponse(execution_json(await self.rt.get(handle.id)), status_code=200)

    # -- triggers -----------------------------------------------------------------------------
    async def _trigger_json(self, flow: Flow, trigger: Any) -> dict[str, Any]:
        data = trigger_json(trigger)
        data.update(
            namespace=flow.namespace,
            flowId=flow.id,
            enabled=await trigger_enabled(self.rt.store, flow, trigger),
        )
        return data

    async def list_triggers(self, request: Request) -> Response:
        """Every trigger of the deployed and registered flows (of ``namespace``), with
        whether it is enabled now (the flow file's ``disabled``, unless switched since)."""
        namespace = request.query_params.get("namespace")
        results = [
            await self._trigger_json(flow, t)
            for flow in self.rt.flows()
            if namespace is None or flow.namespace == namespace
            for t in flow.triggers
        ]
        return JSONResponse({"results": results, "total": len(results)})

    async def set_trigger(self, request: Request) -> Response:
        """Enable or disable one trigger (body ``{"enabled": true|false}``): stored in the
        database, so every server on it fires or stops firing it (as trigger.Toggle does)."""
        p = request.path_params
        flow = self._flow(p["namespace"], p["flow_id"])
        trigger = next((t for t in flow.triggers if t.id == p["trigger_id"]), None)
        if trigger is None:
            raise ApiError(
                404,
                "not_found",
                f"flow {flow.namespace}.{flow.id} has no trigger {p['trigger_id']!r}",
            )
        body = _mapping(await _json_body(request), "the body")
        enabled = body.get("enabled")
        if type(enabled) is not bool:
            raise ApiError(
                400, "bad_request", 'the body must be {"enabled": true} or {"enabled": false}'
            )
        key = trigger_switch_key(flow.id, trigger.id)
        await self.rt.store.kv_set(flow.namespace, key, json.dumps(enabled))
        return JSONResponse(await self._trigger_json(flow, trigger))

    async def _state(self, request: Request, status: int) -> Response:
        ex = await self.rt.get(request.path_params["id"])
        return JSONResponse(execution_json(ex, tree=False), status_code=status)

    def routes(self) -> list[BaseRoute]:
        g = _guarded
        ex = "/api/v1/executions/{id}"
        return [
            Route("/api/v1/health", g(self.health), methods=["GET"]),
            Route("/api/v1/flows", g(self.list_flows), methods=["GET"]),
            Route("/api/v1/flows", g(self.deploy_flow), methods=["POST"]),
            Route("/api/v1/flows/validate", g(self.validate_flow), methods=["POST"]),
            Route("/api/v1/flows/{namespace}/{flow_id}", g(self.get_flow), methods=["GET"]),
            Route("/api/v1/triggers", g(self.list_triggers), methods=["GET"]),
            Route(
                "/api/v1/triggers/{namespace}/{flow_id}/{trigger_id}",
                g(self.set_trigger),
                methods=["PUT"],
            ),
            Route("/api/v1/executions", g(self.list_executions), methods=["GET"]),
            Route("/api/v1/executions/events", g(self.execution_events), methods=["GET"]),
            Route(ex, g(self.get_execution), methods=["GET"]),
            Route(ex + "/logs", g(self.logs), methods=["GET"]),
            Route(ex + "/links", g(self.links), methods=["GET"]),
            Route(ex + "/follow", g(self.follow_execution), methods=["GET"]),
            Route(ex + "/metrics", g(self.metrics), methods=["GET"]),
            Route(ex + "/file", g(self.file), methods=["GET"]),
            Route(ex + "/kill", g(self.kill), methods=["POST"]),
            Route(ex + "/pause", g(self.pause), methods=["POST"]),
            Route(ex + "/resume", g(self.resume), methods=["POST"]),
            Route(ex + "/restart", g(self.restart), methods=["POST"]),
            Route(ex + "/replay", g(self.replay), methods=["POST"]),
            Route(
                "/api/v1/executions/webhook/{namespace}/{flow_id}/{key}",
                g(self.webhook),
                methods=["GET", "POST", "PUT"],
            ),
            # After the control routes: POST .../{id}/kill must not read as a flow named kill.
            Route("/api/v1/executions/{namespace}/{flow_id}", g(self.submit), methods=["POST"]),
        ]


def _record_json(ex: Execution) -> dict[str, Any]:
    return execution_json(ex, tree=False)


def _stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    # X-Accel-Buffering: a proxy in front (nginx) must not hold the events back.
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def _log_json(row: Any) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(row)
    data["timestamp"] = _iso(row.ts)
    return data


def api_routes(runtime: Runtime) -> list[BaseRoute]:
    """The API's routes bound to ``runtime`` (to add to a host's Starlette app)."""
    return Api(runtime).routes()


def app(runtime: Runtime, *, extra_routes: Mapping[str, Any] | None = None) -> Starlette:
    """The API as an ASGI app, with its OpenAPI document at ``/api/v1/openapi.json``.

    Mount it in a host app (``Mount("/", app(rt))``) or serve it (``actorflow server``).
    """
    from actorflow.server._openapi import openapi_route

    routes = api_routes(runtime)
    return Starlette(routes=[*routes, openapi_route(routes)])


__all__ = [
    "LINKS_SCAN",
    "MAX_BODY",
    "Api",
    "ApiError",
    "api_routes",
    "app",
    "execution_json",
    "flow_json",
]
