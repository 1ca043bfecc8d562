"""``actorflow server`` and its HTTP JSON API (Starlette; the ``server`` extra).

``app(runtime)`` is the API as an ASGI app, to serve or to mount in a host's own app;
``serve(db, flows=...)`` runs a runtime with the API until stopped. The API is the only thing
the web UI talks to.

A face: may import ``actorflow.runtime``, ``actorflow.flows``, ``actorflow.storage`` and the
other faces.
"""

from __future__ import annotations

from actorflow.server._api import Api, ApiError, api_routes, app, execution_json, flow_json
from actorflow.server._openapi import document, openapi_route
from actorflow.server._serve import load_flow_dir, serve

__all__ = [
    "Api",
    "ApiError",
    "api_routes",
    "app",
    "document",
    "execution_json",
    "flow_json",
    "load_flow_dir",
    "openapi_route",
    "serve",
]
