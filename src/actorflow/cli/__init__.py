"""The ``actorflow`` command and its terminal views (progress, trees, timelines).

A face: it sits above everything else and may import any room (``actorflow.runtime``,
``actorflow.flows``, ``actorflow.storage``, ``actorflow.actors``); nothing imports it but other
faces.
"""

from __future__ import annotations

from actorflow.cli._cli import build_parser, main

__all__ = ["build_parser", "main"]
