"""The web UI: executions, their Gantt, topology, logs and outputs, and flows, in a browser.

Plain ES modules and CSS shipped in the package (no build step, no CDN), talking only to
the HTTP API of :mod:`actorflow.server`. ``app(runtime)`` is the UI with the API, to serve
(``actorflow server`` does) or to mount in a host's app (``Mount("/ui", app(rt))``);
``routes(runtime)`` gives the same routes to add to a host's own router.

A face: may import ``actorflow.server`` and the rooms it may import.
"""

from __future__ import annotations

from actorflow.web._app import STATIC, app, routes

__all__ = ["STATIC", "app", "routes"]
