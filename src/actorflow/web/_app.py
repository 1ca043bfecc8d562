"""The UI's routes: its page and assets next to the API they call."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from actorflow.runtime import Runtime
from actorflow.server import api_routes, openapi_route

#: The UI's files (package data: index.html, ES modules, CSS).
STATIC = Path(__file__).with_name("static")


async def _index(request: Request) -> Response:
    # The page links everything relatively, so it works under any mount prefix; no-cache so
    # an upgraded server is not met by a stale page.
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def routes(runtime: Runtime) -> list[BaseRoute]:
    """The API's routes (with its OpenAPI document) and the UI's page at ``/``."""
    api = api_routes(runtime)
    return [
        *api,
        openapi_route(api),
        Route("/", _index, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def app(runtime: Runtime) -> Starlette:
    """The UI and the API as one ASGI app (mount it whole: its page calls ``api/v1/...``
    relative to where it is served)."""
    return Starlette(routes=routes(runtime))


__all__ = ["STATIC", "app", "routes"]
