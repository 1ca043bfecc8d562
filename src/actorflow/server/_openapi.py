"""The API's OpenAPI 3.1 document, made from its routes so it never drifts from them.

Each handler's docstring gives the summary (first line) and description; path parameters come
from the route's path, query parameters from :data:`QUERY` and bodies from :data:`BODIES`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

_PARAM = re.compile(r"{(\w+)}")

_STR = {"type": "string"}
_INT = {"type": "integer"}
#: Query parameters by handler name.
QUERY: dict[str, dict[str, dict[str, Any]]] = {
    "list_flows": {"namespace": _STR},
    "list_triggers": {"namespace": _STR},
    "get_flow": {"revision": _INT},
    "list_executions": {
        "namespace": _STR, "flowId": _STR,
        "state": {"type": "array", "items": _STR},
        "since": {"type": "string", "description": "epoch seconds or ISO-8601"},
        "until": {"type": "string", "description": "epoch seconds or ISO-8601"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
        "offset": {"type": "integer", "minimum": 0, "default": 0},
        "cursor": {"type": "string", "description": "the previous page's next"},
    },
    "execution_events": {
        "namespace": _STR, "flowId": _STR,
        "state": {"type": "array", "items": _STR},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
    "submit": {"wait": {"type": "boolean"}},
    "logs": {"taskRunId": _STR, "follow": {"type": "boolean"}},
    "metrics": {"name": _STR},
    "file": {"uri": {"type": "string", "description": "actorflow://... of this execution"}},
}  # fmt: skip
_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_SOURCE = {"application/x-yaml": {"schema": {"type": "string"}}, "application/json": {}}
#: Request bodies by handler name.
BODIES: dict[str, dict[str, Any]] = {
    "deploy_flow": _SOURCE,
    "validate_flow": _SOURCE,
    "submit": {
        **_OBJECT,
        "multipart/form-data": {"schema": {"type": "object", "description": "inputs; files"}},
    },
    "resume": _OBJECT,
    "set_trigger": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"enabled": {"type": "boolean"}},
                "required": ["enabled"],
            }
        }
    },
    "replay": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"taskRunId": _STR, "taskId": _STR},
            }
        }
    },
}
_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": _STR, "message": _STR},
                "required": ["error", "message"],
            }
        }
    },
}


def document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI document of ``routes``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("actorflow")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        ver = "0"
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        name = route.endpoint.__name__
        doc = inspect.cleandoc(route.endpoint.__doc__ or name)
        summary, _, description = doc.partition("\n")
        params = [
            {"name": p, "in": "path", "required": True, "schema": _STR}
            for p in _PARAM.findall(route.path)
        ]
        params += [
            {"name": q, "in": "query", "required": False, "schema": schema}
            for q, schema in QUERY.get(name, {}).items()
        ]
        methods = sorted((route.methods or set()) - {"HEAD"})
        for method in methods:
            op: dict[str, Any] = {
                # Unique per operation, as OpenAPI wants: a route with several methods
                # (the webhook) names each.
                "operationId": name if len(methods) == 1 else f"{name}_{method.lower()}",
                "summary": summary.strip(),
                "description": " ".join(description.split()),
                "parameters": params,
                "responses": {
                    "200": {"description": "success", "content": _OBJECT},
                    "4XX": _ERROR,
                    "503": _ERROR,
                },
            }
            if name in ("kill", "pause", "resume"):  # the owning process may not answer
                op["responses"]["504"] = _ERROR
            if name in BODIES:
                op["requestBody"] = {"content": BODIES[name], "required": False}
            paths.setdefault(_PARAM.sub(r"{\1}", route.path), {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "actorflow API", "version": ver},
        "paths": paths,
    }


def openapi_route(routes: Sequence[BaseRoute]) -> Route:
    """``GET /api/v1/openapi.json`` serving the document of ``routes`` (and itself)."""
    cache: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        """The OpenAPI document of this API."""
        if "doc" not in cache:
            cache["doc"] = document([*routes, route])
        return JSONResponse(cache["doc"])

    route = Route("/api/v1/openapi.json", openapi, methods=["GET"])
    return route


__all__ = ["BODIES", "QUERY", "document", "openapi_route"]
