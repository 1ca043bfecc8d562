"""OpenTelemetry: span trees, attributes, events, caller context, durations, metrics, OTLP."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import actorflow as af
from actorflow.runtime import Runtime, State
from actorflow.runtime._tracing import DURATION_METRIC, Tracing

pytestmark = pytest.mark.anyio


@pytest.fixture
def otel() -> Iterator[
    tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]
]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    yield provider, exporter, meters, reader
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def parent_name(span: ReadableSpan, spans: Any) -> str | None:
    ids = {s.context.span_id: s.name for s in spans}
    return ids.get(span.parent.span_id) if span.parent else None


@af.task
async def work(ctx: af.TaskContext, fail_first: bool = False) -> dict[str, int]:
    ctx.metric.counter("items", 2, kind="x")
    ctx.metric.timer("step", 0.5)
    ctx.log.info("working")
    if fail_first and ctx.attempt == 1:
        raise ConnectionError("flaky")
    return {"n": ctx.attempt}


async def test_span_tree_of_flowables_retries_and_subflows(otel: Any, tmp_path: Path) -> None:
    """Execution > task runs (flowable nesting) > attempts; retries add attempt spans;
    a subflow is its own execution span; the caller's span is the parent."""
    provider, exporter, meters, _ = otel
    child = af.Flow(id="child", tasks=[work("inner")])
    flow = af.Flow(
        id="traced",
        tasks=[
            af.Sequential(id="seq", tasks=[work("a")]),
            af.Parallel(id="par", tasks=[work("b"), work("c", fail_first=True,
                                                          retry=af.Retry.constant(0, max_attempts=2))]),
            af.ForEach(id="each", values=[1, 2], tasks=[work("d")]),
            af.Subflow(id="sub", flow_id="child"),
        ],
    )  # fmt: skip
    tracer = provider.get_tracer("host")
    async with Runtime.open(tmp_path / "t.db", flows=[child],
                            tracing=Tracing(provider, meters)) as rt:  # fmt: skip
        with tracer.start_as_current_span("http request") as caller:
            ex = await rt.run(flow)
    assert ex.state is State.SUCCESS
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    root = by_name(spans)["execution default.traced"]
    assert root.parent is not None and root.parent.span_id == caller.get_span_context().span_id
    assert root.context.trace_id == caller.get_span_context().trace_id
    assert root.attributes["actorflow.state"] == "SUCCESS"
    assert [e.name for e in root.events][:2] == ["CREATED", "RUNNING"]
    assert parent_name(by_name(spans)["task a"], spans) == "task seq"
    assert parent_name(by_name(spans)["task seq"], spans) == "execution default.traced"
    d_spans = [s for s in spans if s.name == "task d"]
    assert len(d_spans) == 2 and {s.attributes["actorflow.task_run.value"] for s in d_spans} == {
        "1",
        "2",
    }
    assert all(parent_name(s, spans) == "task each" for s in d_spans)
    c_attempts = [
        s
        for s in spans
        if s.name.startswith("attempt") and s.attributes["actorflow.task.id"] == "c"
    ]
    assert sorted(s.attributes["actorflow.attempt.number"] for s in c_attempts) == [1, 2]
    failed = next(s for s in c_attempts if s.attributes["actorflow.attempt.number"] == 1)
    assert failed.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in failed.events)
    assert all(parent_name(s, spans) == "task c" for s in c_attempts)
    sub_exec = by_name(spans)["execution default.child"]
    assert (
        parent_name(sub_exec, spans) == "execution default.traced"
        or sub_exec.context.trace_id == root.context.trace_id
    )
    assert "task inner" in names


async def test_durations_stored_equal_span_durations(otel: Any, tmp_path: Path) -> None:
    """The duration metric of each task run and execution equals its span's duration."""
    provider, exporter, meters, _ = otel
    flow = af.Flow(id="dur", tasks=[work("a"), work("b")])
    async with Runtime.open(tmp_path / "d.db", tracing=Tracing(provider, meters)) as rt:
        ex = await rt.run(flow)
        stored = await rt.metrics(execution_id=ex.id, name=DURATION_METRIC)
    spans = by_name(exporter.get_finished_spans())
    by_run = {m.task_run_id: m.value for m in stored}
    for task_id in ("a", "b"):
        tr = ex.task_run(task_id)
        span = spans[f"task {task_id}"]
        assert by_run[tr.id] == pytest.approx((span.end_time - span.start_time) / 1e9)
        assert by_run[tr.id] == pytest.approx(tr.duration, abs=1e-6)
    root = spans["execution default.dur"]
    assert by_run[""] == pytest.approx((root.end_time - root.start_time) / 1e9)


async def test_metrics_go_to_otel_instruments_and_logs_carry_ids(otel: Any, tmp_path: Path) -> None:
    """Counters reach an OTel Counter, timers a Histogram; logs carry trace and span ids."""
    provider, exporter, meters, reader = otel
    async with Runtime.open(tmp_path / "m.db", tracing=Tracing(provider, meters)) as rt:
        ex = await rt.run(af.Flow(id="m", tasks=[work("a")]))
        logs = await rt.logs(ex.id)
    data = reader.get_metrics_data()
    points = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert points["items"].data.data_points[0].value == 2
    assert points["items"].data.data_points[0].attributes["kind"] == "x"
    assert points["step"].data.data_points[0].sum == 0.5
    attempt = next(s for s in exporter.get_finished_spans() if s.name == "attempt 1")
    line = next(lg for lg in logs if lg.message == "working")
    assert line.trace_id == format(attempt.context.trace_id, "032x")
    assert line.span_id == format(attempt.context.span_id, "016x")


async def test_recovered_execution_continues_the_trace(otel: Any, tmp_path: Path) -> None:
    """An execution resumed by a new runtime on the same database stays in the same trace."""
    provider, exporter, meters, _ = otel
    flow = af.Flow(id="resumable", tasks=[work("a"), af.Pause(id="wait"), work("b")])
    db = tmp_path / "r.db"
    async with Runtime.open(db, flows=[flow], tracing=Tracing(provider, meters)) as rt:
        handle = await rt.submit(flow)
        await rt.wait_for(handle.id, State.PAUSED)
    first_trace = next(
        s for s in exporter.get_finished_spans() if s.name == "task a"
    ).context.trace_id
    async with Runtime.open(db, flows=[flow], tracing=Tracing(provider, meters)) as rt:
        await rt.resume(handle.id)
        ex = await rt.wait(handle.id)
    assert ex.state is State.SUCCESS
    b = next(s for s in exporter.get_finished_spans() if s.name == "task b")
    assert b.context.trace_id == first_trace


async def test_sampling_off_records_nothing(tmp_path: Path) -> None:
    """With an always-off sampler no span is recorded and the execution still runs."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Runtime.open(":memory:", tracing=provider) as rt:
        ex = await rt.run(af.Flow(id="quiet", tasks=[work("a")]))
    assert ex.state is State.SUCCESS
    assert exporter.get_finished_spans() == ()


class _Receiver(http.server.BaseHTTPRequestHandler):
    got: list[tuple[str, int]] = []
    event = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.got.append((self.path, len(body)))
        _Receiver.event.set()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_otlp_export_to_a_local_receiver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, spans are exported over OTLP/HTTP."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        async with Runtime.open(":memory:", tracing="otlp") as rt:
            await rt.run(af.Flow(id="exported", tasks=[work("a")]))
            provider = rt.engine.observer._provider  # type: ignore[attr-defined]
            provider.force_flush()
        assert _Receiver.event.wait(10), "no OTLP request arrived"
        assert _Receiver.got[0][0] == "/v1/traces" and _Receiver.got[0][1] > 0
        provider.shutdown()
    finally:
        server.shutdown()
