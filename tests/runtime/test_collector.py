"""The cycle collector while a runtime is open: frozen after start-up, higher thresholds while
many actors live, the host's settings back on close (and left alone when asked or when the
host turned the collector off)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import actorflow as af
from actorflow.runtime._core import _collector
from actorflow.runtime._core._collector import FEW, HIGH, MANY

pytestmark = pytest.mark.anyio
HOST = (1234, 11, 12)


@pytest.fixture(autouse=True)
def host_settings() -> Iterator[None]:
    """Each test starts from HOST thresholds, nothing frozen; the real settings come back."""
    saved, enabled = gc.get_threshold(), gc.isenabled()
    gc.unfreeze()
    gc.set_threshold(*HOST)
    yield
    gc.unfreeze()
    gc.set_threshold(*saved)
    if enabled:
        gc.enable()


def open_rt(tmp_path: Path, **kw: object) -> af.Runtime:
    return af.Runtime.open(":memory:", files=tmp_path / "files", **kw)  # type: ignore[return-value]


async def test_host_settings_come_back_when_the_runtime_closes(tmp_path: Path) -> None:
    """While open, start-up objects are frozen; on close the host's thresholds are back and
    nothing stays frozen."""
    async with open_rt(tmp_path):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == HOST  # few actors: the host's thresholds
    assert gc.get_threshold() == HOST
    assert gc.get_freeze_count() == 0


async def test_thresholds_rise_while_many_actors_live_and_come_back_after(tmp_path: Path) -> None:
    """MANY live actors raise the thresholds; once FEW or fewer remain they are the host's."""
    n = MANY + 200
    started = 0
    gate, all_in = anyio.Event(), anyio.Event()

    @af.task
    async def wait_gate(ctx: af.TaskContext) -> None:
        nonlocal started
        started += 1
        if started == n:
            all_in.set()
        await gate.wait()

    flow = af.Flow(id="fan", tasks=[af.Parallel(id="all", tasks=[wait_gate(f"t{i}") for i in range(n)])])  # fmt: skip
    async with open_rt(tmp_path) as rt:
        (tuning,) = _collector._open
        handle = await rt.submit(flow)
        await all_in.wait()
        tuning.update()
        assert gc.get_threshold() == tuple(max(h, v) for h, v in zip(HOST, HIGH, strict=True))
        gate.set()
        assert (await handle.wait()).state is af.State.SUCCESS
        assert len(rt.engine.system) <= FEW
        tuning.update()
        assert gc.get_threshold() == HOST
    assert gc.get_threshold() == HOST


async def test_two_runtimes_restore_once_the_last_one_closes(tmp_path: Path) -> None:
    """Overlapping runtimes share one hold: the host's settings return after the last close."""
    async with open_rt(tmp_path):
        inner = open_rt(tmp_path / "b")
        async with inner:
            assert len(_collector._open) == 2
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == HOST


async def test_tune_gc_false_leaves_the_collector_alone(tmp_path: Path) -> None:
    """tune_gc=False: nothing frozen, thresholds untouched."""
    async with open_rt(tmp_path, tune_gc=False):
        assert not _collector._open
        assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == HOST


async def test_a_disabled_collector_or_a_host_freeze_is_respected(tmp_path: Path) -> None:
    """A host that disabled the collector keeps it so; a host's own freeze is not undone."""
    gc.disable()
    async with open_rt(tmp_path):
        assert gc.get_freeze_count() == 0 and not gc.isenabled()
    assert gc.get_threshold() == HOST and not gc.isenabled()
    gc.enable()
    gc.freeze()
    async with open_rt(tmp_path):
        assert not _collector._froze  # the host's freeze, not ours
    assert gc.get_freeze_count() > 0  # still frozen: not undone on close
