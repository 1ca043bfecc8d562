"""Deployed flows in the store: revisions grow only when the source changes."""

from __future__ import annotations

import pytest

from actorflow.storage import Store

pytestmark = pytest.mark.anyio


async def test_revisions_grow_with_new_sources_only(store: Store) -> None:
    """The same source twice is one revision; a changed one is the next; a higher revision
    asked for is kept; the latest of each flow is listed."""
    assert await store.deploy_flow("ns", "f", "v1") == (1, True)
    assert await store.deploy_flow("ns", "f", "v1") == (1, False)
    assert await store.deploy_flow("ns", "f", "v2") == (2, True)
    assert await store.deploy_flow("ns", "f", "v3", revision=7) == (7, True)
    assert await store.deploy_flow("ns", "f", "v4", revision=3) == (8, True)
    assert await store.deploy_flow("other", "g", "x") == (1, True)
    latest = await store.flows()
    assert [(r.namespace, r.id, r.revision, r.source) for r in latest] == [
        ("ns", "f", 8, "v4"), ("other", "g", 1, "x")]  # fmt: skip
    assert [r.id for r in await store.flows("other")] == ["g"]
    old = await store.flow_revision("ns", "f", 2)
    assert old is not None and old.source == "v2"
    newest = await store.flow_revision("ns", "f")
    assert newest is not None and newest.revision == 8
    assert await store.flow_revision("ns", "missing") is None
