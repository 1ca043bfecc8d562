"""The web UI's API calls with 100,000 executions stored (issue 18): p50/p99 of the list's
first page, a deep page by cursor, filters, one execution of 1,000 task runs and its links.

Rows are inserted straight through the store (the same rows the engine writes), then each
call goes through the whole ASGI app (routing, handler, JSON) with an in-process client.
Targets: p99 < 200 ms for the list calls, < 500 ms for the 1,000-task-run execution.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import anyio
import httpx

import actorflow as af
from actorflow.runtime import Attempt, Execution, State, StateEntry, TaskRun
from actorflow.runtime._core._persist import execution_rows, task_run_rows
from actorflow.web import app
from benchmarks._common import row, tmpdb

STATES = [State.SUCCESS] * 17 + [State.FAILED, State.WARNING, State.KILLED]
T0 = 1_700_000_000.0


def _executions(n: int) -> list[Execution]:
    out = []
    for i in range(n):
        start = T0 + i * 0.5
        state = STATES[i % len(STATES)]
        out.append(Execution(
            id=f"ex{i:08d}", namespace=f"ns{i % 10}", flow_id=f"flow{i % 100}", flow_revision=1,
            state=state, labels={"team": f"t{i % 7}"},
            history=(StateEntry(State.CREATED, start), StateEntry(State.RUNNING, start + 0.01),
                     StateEntry(state, start + 0.2)),
        ))  # fmt: skip
    return out


def _big(task_runs: int) -> tuple[Execution, list[TaskRun]]:
    start = T0 - 10_000
    ex = Execution(
        id="big", namespace="bench", flow_id="big", flow_revision=1, state=State.SUCCESS,
        history=(StateEntry(State.CREATED, start), StateEntry(State.SUCCESS, start + 100)),
    )  # fmt: skip
    trs = []
    for i in range(task_runs):
        t = start + i * 0.05
        trs.append(TaskRun(
            id=f"tr{i:05d}", execution_id="big", task_id=f"t{i}", state=State.SUCCESS,
            history=(StateEntry(State.CREATED, t), StateEntry(State.RUNNING, t + 0.001),
                     StateEntry(State.SUCCESS, t + 0.04)),
            attempts=(Attempt(number=1, state=State.SUCCESS, start=t + 0.001, end=t + 0.04),),
            outputs={"value": i, "text": f"output of task {i}"},
        ))  # fmt: skip
    return ex, trs


def _pcts(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def _measure(executions: int, task_runs: int, repeats: int) -> list[dict[str, Any]]:
    path = tmpdb()
    rows: list[dict[str, Any]] = []
    async with af.Runtime.open(path) as rt:
        batch: list[Any] = []
        for ex in _executions(executions):
            batch += execution_rows((ex, None, 0, None))
            if len(batch) >= 5_000:
                rt.store.write(batch)
                batch = []
        big, trs = _big(task_runs)
        batch += execution_rows((big, None, 0, None))
        for tr in trs:
            batch += task_run_rows(tr)
        rt.store.write(batch)
        await rt.store.flush()
        transport = httpx.ASGITransport(app=app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
            deep = (await c.get("/api/v1/executions",
                                params={"limit": 1, "offset": executions // 2})).json()  # fmt: skip
            from actorflow.server._live import encode_cursor

            mid = await rt.get(deep["results"][0]["id"])
            calls: list[tuple[str, str, dict[str, Any], float]] = [
                ("list first page", "/api/v1/executions", {"limit": 25}, 200),
                ("list deep page (cursor)", "/api/v1/executions",
                 {"limit": 25, "cursor": encode_cursor(mid)}, 200),
                ("filter namespace+flow", "/api/v1/executions",
                 {"limit": 25, "namespace": "ns3", "flowId": "flow13"}, 200),
                ("filter state FAILED", "/api/v1/executions", {"limit": 25, "state": "FAILED"},
                 200),
                ("filter namespace+state", "/api/v1/executions",
                 {"limit": 25, "namespace": "ns4", "state": "KILLED"}, 200),
                (f"execution of {task_runs} task runs", "/api/v1/executions/big", {}, 500),
                (f"links of the execution of {task_runs} task runs",
                 "/api/v1/executions/big/links", {}, 500),
            ]  # fmt: skip
            for name, url, params, target in calls:
                r = await c.get(url, params=params)
                assert r.status_code == 200, r.text
                samples = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    r = await c.get(url, params=params)
                    samples.append(time.perf_counter() - start)
                assert r.status_code == 200
                p50, p99 = _pcts(samples)
                label = f"{name}, {executions:,} stored"
                rows.append(row("web", f"{label} p50", p50, None, "ms", higher_is_better=False))
                rows.append(row("web", f"{label} p99", p99, float(target), "ms",
                                higher_is_better=False, target_ms=target))  # fmt: skip
        rows += await _pages(rt, executions, task_runs, max(3, repeats // 10))
    return rows


CHROMIUM = "/usr/bin/chromium"


async def _pages(
    rt: af.Runtime, executions: int, task_runs: int, repeats: int
) -> list[dict[str, Any]]:
    """Pages in Debian's chromium (when installed): from navigation until the list's rows,
    or the big execution's 1,000 Gantt bars, are drawn."""
    import os
    import socket

    import uvicorn

    try:
        from playwright.async_api import async_playwright
    except ImportError:
        return []
    if not os.path.exists(CHROMIUM):
        return []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app(rt), log_level="warning", lifespan="off"))
    out: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])  # fmt: skip
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            pages = [
                ("page: executions list", "/#/executions", "tbody tr", 25),
                (f"page: execution of {task_runs} task runs (Gantt)", "/#/executions/big",
                 ".gantt-bar", task_runs),
            ]  # fmt: skip
            for name, path, selector, count in pages:
                samples = []
                for _ in range(repeats + 1):
                    await page.goto("about:blank")
                    start = time.perf_counter()
                    await page.goto(url + path)
                    await page.wait_for_function(
                        f"document.querySelectorAll({selector!r}).length >= {count}",
                        timeout=60_000,
                    )
                    samples.append(time.perf_counter() - start)
                p50, p99 = _pcts(samples[1:])  # the first load warms the browser's caches
                label = f"{name}, {executions:,} stored"
                out.append(row("web", f"{label} p50", p50, None, "ms", higher_is_better=False))
                out.append(row("web", f"{label} max", p99, None, "ms", higher_is_better=False))
            await browser.close()
        server.should_exit = True
        server.force_exit = True
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for ``python -m benchmarks``; ``quick`` stores 10,000 executions, not 100,000."""
    if quick:
        return anyio.run(_measure, 10_000, 1_000, 20)
    return anyio.run(_measure, 100_000, 1_000, 100)


if __name__ == "__main__":
    from benchmarks.__main__ import print_table

    print_table(run())
