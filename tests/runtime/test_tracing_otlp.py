"""Traces as a real OTLP backend receives them, over gRPC and over HTTP: the tree, names,
kinds, attributes, status and durations of normal, retried and crashed-then-recovered
executions; exporters configured by the SDK's environment; a bounded flush at exit."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import _support.cli as cli
import actorflow as af
from _support import otlp
from _support.otlp import Receiver, by_name, parent
from actorflow.runtime import Runtime, State
from actorflow.runtime._core._persist import decode_execution
from actorflow.runtime._tracing import flush_providers

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("otlp_worker.py")
sys.path.insert(0, str(WORKER.parent))
from otlp_worker import FLOW as CRASHY  # noqa: E402

PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(params=PROTOCOLS)
def rcv(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A receiver, and the SDK's environment pointing at it (flushes never cut short)."""
    for receiver in otlp.receiver(request.param):
        for key, value in otlp.otlp_env(receiver).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("ACTORFLOW_OTEL_FLUSH_TIMEOUT", "30")
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        monkeypatch.delenv("OTEL_METRICS_EXPORTER", raising=False)
        yield receiver


@af.task
async def work(ctx: af.TaskContext, fail_first: bool = False, always: bool = False) -> dict:
    ctx.metric.counter("items", 1)
    if always or (fail_first and ctx.attempt == 1):
        raise ConnectionError(f"flaky {ctx.attempt}")
    return {"n": ctx.attempt}


def _close(span: otlp.Span, seconds: float) -> None:
    assert span.seconds == pytest.approx(seconds, abs=2e-6), span.name


async def test_normal_execution_tree_names_attributes_and_durations(
    rcv: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """execution > Sequential > task > attempt and a ForEach's iterations arrive with readable
    names, INTERNAL kind, actorflow.* attributes, service.* resource attributes from the
    environment, unset status and the records' own durations."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "etl-service")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=data")
    flow = af.Flow(id="etl", namespace="team", tasks=[
        af.Sequential(id="outer", tasks=[work("a")]),
        af.ForEach(id="each", values=["eu", "us"], tasks=[work("d")]),
    ])  # fmt: skip
    async with Runtime.open(":memory:", tracing=True) as rt:
        ex = await rt.run(flow)
    assert ex.state is State.SUCCESS
    spans = rcv.wait_for(lambda s: len(s) >= 9)
    assert sorted(s.name for s in spans) == sorted([
        "execution team.etl", "task outer", "task a", "a attempt 1", "task each",
        "task d[eu]", "task d[us]", "d[eu] attempt 1", "d[us] attempt 1",
    ])  # fmt: skip
    root = by_name(spans, "execution team.etl")
    assert root.parent_id == ""
    assert parent(by_name(spans, "task outer"), spans) == "execution team.etl"
    assert parent(by_name(spans, "task a"), spans) == "task outer"
    assert parent(by_name(spans, "a attempt 1"), spans) == "task a"
    assert parent(by_name(spans, "task d[eu]"), spans) == "task each"
    assert parent(by_name(spans, "d[us] attempt 1"), spans) == "task d[us]"
    assert {s.trace_id for s in spans} == {root.trace_id}
    for s in spans:
        assert s.kind == otlp.KIND_INTERNAL
        assert s.status_code == otlp.STATUS_UNSET
        assert s.scope == "actorflow"
        assert s.resource["service.name"] == "etl-service"
        assert s.resource["deployment.environment"] == "test"
        assert s.resource["team"] == "data"
        assert s.attributes["actorflow.execution.id"] == ex.id
        assert s.attributes["actorflow.flow.id"] == "etl"
        assert s.attributes["actorflow.state"] == "SUCCESS"
    assert root.attributes["actorflow.flow.namespace"] == "team"
    eu = by_name(spans, "task d[eu]")
    assert eu.attributes["actorflow.task_run.value"] == "eu"
    tr_a = ex.task_run("a")
    a, attempt = by_name(spans, "task a"), by_name(spans, "a attempt 1")
    assert a.attributes["actorflow.task_run.id"] == tr_a.id
    assert attempt.attributes["actorflow.task.id"] == "a"
    assert attempt.attributes["actorflow.attempt.number"] == 1
    assert [e.name for e in a.events] == [h.state.value for h in tr_a.history]
    assert [e.name for e in root.events] == [h.state.value for h in ex.history]
    _close(root, ex.duration)
    _close(a, tr_a.duration)
    att = tr_a.attempts[0]
    assert att.duration is not None
    assert attempt.start == pytest.approx(att.start * 1e9, abs=2e3)
    assert attempt.start >= a.start and attempt.end <= a.end


async def test_failed_and_retried_execution(rcv: Receiver) -> None:
    """A retried task has one span per attempt, the failed one with error status, error.type
    and an exception event; a task failing for good fails its task-run and execution spans."""
    retry = af.Retry.constant(0, max_attempts=2)
    flow = af.Flow(id="flaky", tasks=[
        work("r", fail_first=True, retry=retry),
        work("bad", always=True, retry=retry),
    ])  # fmt: skip
    async with Runtime.open(":memory:", tracing=True) as rt:
        ex = await rt.run(flow)
    assert ex.state is State.FAILED
    spans = rcv.wait_for(lambda s: any(x.name.startswith("execution") for x in s))
    first, second = by_name(spans, "r attempt 1"), by_name(spans, "r attempt 2")
    assert parent(first, spans) == parent(second, spans) == "task r"
    assert first.status_code == otlp.STATUS_ERROR
    assert first.status_message == "flaky 1"
    assert first.attributes["error.type"] == "ConnectionError"
    assert first.attributes["actorflow.state"] == "FAILED"
    exc = next(e for e in first.events if e.name == "exception")
    assert exc.attributes["exception.type"] == "ConnectionError"
    assert exc.attributes["exception.message"] == "flaky 1"
    assert "ConnectionError: flaky 1" in exc.attributes["exception.stacktrace"]
    assert second.status_code == otlp.STATUS_UNSET
    r = by_name(spans, "task r")
    assert r.status_code == otlp.STATUS_UNSET
    assert "RETRYING" in [e.name for e in r.events]
    _close(r, ex.task_run("r").duration)
    bad, root = by_name(spans, "task bad"), by_name(spans, "execution default.flaky")
    for span in (bad, root, by_name(spans, "bad attempt 2")):
        assert span.status_code == otlp.STATUS_ERROR
        assert span.attributes["actorflow.state"] == "FAILED"
    assert bad.attributes["error.type"] == "ConnectionError"
    assert bad.status_message == "ConnectionError: flaky 2"
    assert root.attributes["error.type"] == "FAILED"


def _stored_traceparent(db: Path, execution_id: str) -> str:
    """The execution span's context kept in the stored snapshot."""
    with sqlite3.connect(db) as conn:
        (data,) = conn.execute(
            "SELECT data FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
    tp = decode_execution(data).traceparent
    assert tp is not None
    return tp


async def test_crashed_and_recovered_execution(rcv: Receiver, tmp_path: Path) -> None:
    """After a SIGKILL mid-attempt, the runtime that recovers the execution continues its trace
    under the stored span: a recovered execution span, task runs under it, the interrupted
    attempt as a failed span marked interrupted, the next attempt nested with its attributes."""
    db = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(WORKER.parents[1]), "OTEL_BSP_SCHEDULE_DELAY": "10"}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(db)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert proc.stdout is not None
        # Two lines in either order: the attempt may start before submit returns.
        lines = {proc.stdout.readline().strip() for _ in range(2)}
        assert "hanging" in lines, proc.stderr.read() if proc.stderr else ""
        (execution_id,) = (ln.split()[1] for ln in lines if ln.startswith("execution "))
        # What the dead process exported before it died: task a, ended.
        before = rcv.wait_for(lambda s: {"task a", "a attempt 1"} <= {x.name for x in s})
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not any(s.name.startswith("execution") for s in before)
    stored = _stored_traceparent(db, execution_id)
    _, trace_id, first_span_id, _ = stored.split("-")
    task_a = by_name(before, "task a")
    assert (task_a.trace_id, task_a.parent_id) == (trace_id, first_span_id)
    rcv.clear()

    async with Runtime.open(db, flows=[CRASHY], tracing=True) as rt:
        ex = await rt.wait(execution_id)
    assert ex.state is State.SUCCESS
    spans = rcv.wait_for(lambda s: any(x.name.startswith("execution") for x in s))
    assert sorted(s.name for s in spans) == sorted([
        "execution tests.crashy", "task b", "b attempt 1", "b attempt 2", "task c",
        "c attempt 1",
    ])  # fmt: skip
    root = by_name(spans, "execution tests.crashy")
    assert {s.trace_id for s in spans} == {trace_id}
    assert root.parent_id == first_span_id
    assert root.attributes["actorflow.recovered"] is True
    assert root.attributes["actorflow.state"] == "SUCCESS"
    assert "recovered" in [e.name for e in root.events]
    _close(root, ex.duration)
    tr_b = ex.task_run("b")
    b = by_name(spans, "task b")
    assert parent(b, spans) == "execution tests.crashy"
    _close(b, tr_b.duration)
    interrupted, retried = by_name(spans, "b attempt 1"), by_name(spans, "b attempt 2")
    assert parent(interrupted, spans) == parent(retried, spans) == "task b"
    assert interrupted.status_code == otlp.STATUS_ERROR
    assert interrupted.status_message == "interrupted"
    assert interrupted.attributes["actorflow.interrupted"] is True
    assert interrupted.attributes["error.type"] == "interrupted"
    assert interrupted.start == pytest.approx(tr_b.attempts[0].start * 1e9, abs=2e3)
    assert interrupted.end <= retried.start
    for span in (interrupted, retried):
        assert span.attributes["actorflow.execution.id"] == execution_id
        assert span.attributes["actorflow.flow.id"] == "crashy"
        assert span.attributes["actorflow.task.id"] == "b"
        assert span.attributes["actorflow.task_run.id"] == tr_b.id
    assert retried.attributes["actorflow.attempt.number"] == 2
    assert retried.status_code == otlp.STATUS_UNSET
    assert parent(by_name(spans, "task c"), spans) == "execution tests.crashy"


async def test_otlp_headers_and_metrics_exporter_none(
    rcv: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_HEADERS reach the collector; OTEL_METRICS_EXPORTER=none exports no
    metrics while traces still go."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-token=s3cret")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    async with Runtime.open(":memory:", tracing=True) as rt:
        await rt.run(af.Flow(id="h", tasks=[work("a")]))
    rcv.wait_for(lambda s: any(x.name == "execution default.h" for x in s))
    assert all(h.get("x-token") == "s3cret" for h in rcv.headers)
    assert rcv.metric_requests == 0


async def test_metrics_follow_the_protocol_too(rcv: Receiver) -> None:
    """Metrics go to the same collector over the same protocol as traces."""
    async with Runtime.open(":memory:", tracing=True) as rt:
        await rt.run(af.Flow(id="m", tasks=[work("a")]))
    rcv.wait_for(lambda s: bool(s))
    assert rcv.metric_requests >= 1


async def test_console_exporter_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """OTEL_TRACES_EXPORTER=console with tracing=True prints spans instead of exporting them."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("ACTORFLOW_OTEL_FLUSH_TIMEOUT", "30")
    async with Runtime.open(":memory:", tracing=True) as rt:
        await rt.run(af.Flow(id="c", tasks=[work("a")]))
    out = capsys.readouterr().out
    assert '"name": "a attempt 1"' in out
    assert '"service.name": "actorflow"' in out


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "jaeger", r"OTEL_TRACES_EXPORTER='jaeger'.*'jaeger'"),
        ("OTEL_METRICS_EXPORTER", "prometheus", r"OTEL_METRICS_EXPORTER='prometheus'"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", r"OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"),
        ("ACTORFLOW_OTEL_FLUSH_TIMEOUT", "soon", r"ACTORFLOW_OTEL_FLUSH_TIMEOUT='soon'"),
    ],
)
async def test_bad_exporter_settings_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    """An exporter setting actorflow cannot honour is refused naming the variable and value."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=message):
        async with Runtime.open(":memory:", tracing=True):
            pass


class _Stuck(SpanExporter):
    """An exporter whose collector never answers (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.called = threading.Event()

    def export(self, spans: Any) -> SpanExportResult:
        self.called.set()
        self.release.wait()
        return SpanExportResult.SUCCESS


async def test_flush_is_cut_short_when_the_exporter_hangs() -> None:
    """A flush whose exporter never returns gives up after its timeout and reports it."""
    stuck = _Stuck()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(stuck))
    provider.get_tracer("t").start_span("s").end()
    try:
        assert await flush_providers([provider], 0.05) is False
    finally:
        stuck.release.set()
    assert stuck.called.is_set()
    assert await flush_providers([TracerProvider(shutdown_on_exit=False)], 10) is True


def test_cli_exits_despite_a_collector_that_never_answers(tmp_path: Path) -> None:
    """`actorflow run` with an OTLP endpoint that accepts connections and never answers (the
    exporter would wait 60 s) exits once its bounded flush is over."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections queue, nothing is ever read or answered
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        proc = cli.af("run", cli.EXAMPLES / "hello.yaml", "--db", tmp_path / "c.db", "--json",
                      OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="60",
                      ACTORFLOW_OTEL_FLUSH_TIMEOUT="0.2")  # fmt: skip
    assert '"state": "SUCCESS"' in proc.stdout
