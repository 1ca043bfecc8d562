"""OpenTelemetry: span trees, attributes, events, caller context, durations, metrics, OTLP."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, Sampler, SamplingResult
from opentelemetry.trace import StatusCode

import _support.cli as cli
import actorflow as af
from actorflow.runtime import Runtime, State
from actorflow.runtime._tracing import DURATION_METRIC, Tracing, TracingObserver

pytestmark = pytest.mark.anyio


@dataclass
class Otel:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    meters: MeterProvider
    reader: InMemoryMetricReader

    @property
    def tracing(self) -> Tracing:
        return Tracing(self.provider, self.meters)

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def one(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r}"
        return found[0]


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    yield Otel(provider, exporter, MeterProvider(metric_readers=[reader]), reader)
    provider.shutdown()


def attr(span: ReadableSpan, key: str) -> Any:
    return (span.attributes or {})[key]


def seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> str | None:
    names = {s.context.span_id: s.name for s in spans if s.context is not None}
    return names.get(span.parent.span_id) if span.parent is not None else None


@af.task
async def work(ctx: af.TaskContext, fail_first: bool = False) -> dict[str, int]:
    ctx.metric.counter("items", 2, kind="x")
    ctx.metric.timer("step", 0.5)
    ctx.log.info("working")
    if fail_first and ctx.attempt == 1:
        raise ConnectionError("flaky")
    return {"n": ctx.attempt}


async def test_sequential_tree_attributes_and_events(otel: Otel) -> None:
    """Execution > Sequential > task > attempt, each with actorflow.* attributes and state events;
    the span the task opens itself nests under its attempt."""
    user_tracer = otel.provider.get_tracer("user")

    @af.task
    async def traced_inside(ctx: af.TaskContext) -> None:
        with user_tracer.start_as_current_span("user work"):
            pass

    flow = af.Flow(id="seq", namespace="team", tasks=[
        af.Sequential(id="outer", tasks=[work("a"), traced_inside("own")]),
    ])  # fmt: skip
    async with Runtime.open(":memory:", tracing=otel.tracing) as rt:
        ex = await rt.run(flow)
    spans = otel.spans()
    root, outer, a = otel.one("execution team.seq"), otel.one("task outer"), otel.one("task a")
    assert root.parent is None
    assert parent_of(outer, spans) == "execution team.seq"
    assert parent_of(a, spans) == "task outer"
    attempts = [s for s in spans if s.name in ("a attempt 1", "own attempt 1")]
    assert {parent_of(s, spans) for s in attempts} == {"task a", "task own"}
    assert parent_of(otel.one("user work"), spans) == "own attempt 1"
    tr = ex.task_run("a")
    assert attr(root, "actorflow.flow.namespace") == "team"
    assert attr(root, "actorflow.flow.revision") == flow.revision
    for span in (root, outer, a, *attempts):
        assert attr(span, "actorflow.execution.id") == ex.id
        assert attr(span, "actorflow.state") == "SUCCESS"
    for span in (root, outer, a):
        assert attr(span, "actorflow.flow.id") == "seq"
    assert attr(a, "actorflow.task.id") == "a" and attr(a, "actorflow.task_run.id") == tr.id
    attempt_a = next(s for s in attempts if attr(s, "actorflow.task.id") == "a")
    assert attr(attempt_a, "actorflow.attempt.number") == 1
    assert attr(attempt_a, "actorflow.task_run.id") == tr.id
    assert [e.name for e in a.events] == [h.state.value for h in tr.history]
    assert [e.name for e in root.events] == [h.state.value for h in ex.history]
    assert all(s.status.status_code is not StatusCode.ERROR for s in spans)


async def test_an_attempt_ending_in_its_first_step_is_stored_once_and_traced_whole(
    otel: Otel,
) -> None:
    """With tracing on, a task that ends without waiting stores one snapshot (RUNNING with its
    end), and its spans still carry every state; one that waits stores RUNNING first."""
    gate = anyio.Event()

    @af.task
    async def instant(ctx: af.TaskContext) -> None:
        return None

    @af.task
    async def waits(ctx: af.TaskContext) -> None:
        await gate.wait()

    flow = af.Flow(id="eager", namespace="team", tasks=[instant("now"), waits("later")])
    saved: dict[str, list[State]] = {}
    async with Runtime.open(":memory:", tracing=otel.tracing) as rt:
        save = rt.engine.save_task_run

        def counting(tr: Any, new: Any = ()) -> Any:
            saved.setdefault(tr.task_id, []).append(tr.state)
            return save(tr, new)

        rt.engine.save_task_run = counting  # type: ignore[method-assign]
        handle = await rt.submit(flow)
        await rt.wait_for(handle.id, State.RUNNING)
        await anyio.wait_all_tasks_blocked()  # "later" waits on the gate
        assert saved["later"] == [State.RUNNING]  # stored before it waited
        gate.set()
        ex = await handle.wait()
    assert ex.state is State.SUCCESS
    assert saved["now"] == [State.SUCCESS]
    assert saved["later"] == [State.RUNNING, State.SUCCESS]
    for task_id in ("now", "later"):
        span = otel.one(f"task {task_id}")
        assert [e.name for e in span.events] == ["CREATED", "RUNNING", "SUCCESS"]
        assert parent_of(otel.one(f"{task_id} attempt 1"), otel.spans()) == f"task {task_id}"


async def test_caller_span_is_the_parent(otel: Otel) -> None:
    """An execution submitted inside the caller's span is its child, in the caller's trace."""
    async with Runtime.open(":memory:", tracing=otel.tracing) as rt:
        with otel.provider.get_tracer("host").start_as_current_span("http request") as caller:
            await rt.run(af.Flow(id="called", tasks=[work("a")]))
    root = otel.one("execution default.called")
    assert root.parent is not None
    assert root.parent.span_id == caller.get_span_context().span_id
    assert all(s.context.trace_id == caller.get_span_context().trace_id for s in otel.spans())


async def test_parallel_and_retried_tasks(otel: Otel) -> None:
    """Parallel branches are children of the Parallel span; a retried task has one attempt span
    per attempt, the failed one with the exception recorded and error status."""
    retry = af.Retry.constant(0, max_attempts=2)
    flow = af.Flow(id="par", tasks=[
        af.Parallel(id="both", tasks=[work("b"), work("c", fail_first=True, retry=retry)]),
    ])  # fmt: skip
    async with Runtime.open(":memory:", tracing=otel.tracing) as rt:
        ex = await rt.run(flow)
    assert ex.state is State.SUCCESS
    spans = otel.spans()
    assert parent_of(otel.one("task b"), spans) == "task both"
    assert parent_of(otel.one("task c"), spans) == "task both"
    c_attempts = sorted(
        (s for s in spans if " attempt " in s.name and attr(s, "actorflow.task.id") == "c"),
        key=lambda s: attr(s, "actorflow.attempt.number"),
    )
    assert [s.name for s in c_attempts] == ["c attempt 1", "c attempt 2"]
    assert all(parent_of(s, spans) == "task c" for s in c_attempts)
    failed, ok = c_attempts
    assert failed.status.status_code is StatusCode.ERROR
    assert attr(failed, "actorflow.state") == "FAILED"
    exc = next(e for e in failed.events if e.name == "exception")
    assert (exc.attributes or {})["exception.type"] == "ConnectionError"
    assert ok.status.status_code is StatusCode.UNSET
    c = otel.one("task c")
    assert "RETRYING" in [e.name for e in c.events]
    assert attr(c, "actorflow.state") == "SUCCESS"


async def test_foreach_and_subflow(otel: Otel) -> None:
    """ForEach iterations are task spans under the ForEach span with their loop value; a
    subflow's execution span is a child of its Subflow task-run span, in the same trace."""
    child = af.Flow(id="child", tasks=[work("inner")])
    flow = af.Flow(id="parent", tasks=[
        af.ForEach(id="each", values=[1, 2], tasks=[work("d")]),
        af.Subflow(id="sub", flow_id="child"),
    ])  # fmt: skip
    async with Runtime.open(":memory:", flows=[child], tracing=otel.tracing) as rt:
        ex = await rt.run(flow)
    assert ex.state is State.SUCCESS
    spans = otel.spans()
    d_spans = [s for s in spans if s.name.startswith("task d")]
    assert sorted(s.name for s in d_spans) == ["task d[1]", "task d[2]"]
    assert sorted(attr(s, "actorflow.task_run.value") for s in d_spans) == ["1", "2"]
    assert all(parent_of(s, spans) == "task each" for s in d_spans)
    sub_exec = otel.one("execution default.child")
    assert parent_of(sub_exec, spans) == "task sub"
    assert parent_of(otel.one("task inner"), spans) == "execution default.child"
    assert attr(otel.one("task inner"), "actorflow.flow.id") == "child"
    assert len({s.context.trace_id for s in spans}) == 1


async def test_failed_and_killed_runs_set_error_status(otel: Otel) -> None:
    """A FAILED task run and execution, and a KILLED one, end their spans with error status."""
    async with Runtime.open(":memory:", tracing=otel.tracing) as rt:
        failed = await rt.run(af.Flow(id="bad", tasks=[af.Fail(id="boom", message="no")]))
        handle = await rt.submit(af.Flow(id="long", tasks=[af.Sleep(id="nap", duration=60)]))
        await rt.wait_for(handle.id, State.RUNNING)
        await anyio.wait_all_tasks_blocked()
        await rt.kill(handle.id)
        killed = await handle.wait()
        spans = otel.spans()  # before close: nothing was left open for close to end
    assert failed.state is State.FAILED and killed.state is State.KILLED
    for name, state in [("task boom", "FAILED"), ("execution default.bad", "FAILED"),
                        ("task nap", "KILLED"), ("execution default.long", "KILLED")]:  # fmt: skip
        span = next(s for s in spans if s.name == name)
        assert attr(span, "actorflow.state") == state
        assert span.status.status_code is StatusCode.ERROR
    nap_attempt = otel.one("nap attempt 1")
    assert parent_of(nap_attempt, spans) == "task nap"
    assert attr(nap_attempt, "actorflow.state") == "KILLED"


async def test_durations_stored_equal_span_durations(otel: Otel, tmp_path: Path) -> None:
    """The duration metric of each task run and of the execution equals its span's duration."""
    flow = af.Flow(id="dur", tasks=[af.Sequential(id="s", tasks=[work("a")]), work("b")])
    async with Runtime.open(tmp_path / "d.db", tracing=otel.tracing) as rt:
        ex = await rt.run(flow)
        stored = await rt.metrics(execution_id=ex.id, name=DURATION_METRIC)
    by_run = {m.task_run_id: m for m in stored}
    assert len(stored) == 4  # execution, s, a, b: attempts are not stored twice
    for task_id in ("s", "a", "b"):
        tr = ex.task_run(task_id)
        span = otel.one(f"task {task_id}")
        assert by_run[tr.id].kind == "duration"
        assert by_run[tr.id].value == pytest.approx(seconds(span), abs=1e-6)
        assert by_run[tr.id].value == pytest.approx(tr.duration, abs=1e-6)
        assert by_run[tr.id].tags == {"span": f"task {task_id}"}
    root = otel.one("execution default.dur")
    assert by_run[""].value == pytest.approx(seconds(root), abs=1e-6)
    assert by_run[""].value == pytest.approx(ex.duration, abs=1e-6)


async def test_sampled_out_spans_still_store_durations() -> None:
    """With an always-off sampler nothing is exported, yet every duration is stored."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Runtime.open(":memory:", tracing=provider) as rt:
        ex = await rt.run(af.Flow(id="quiet", tasks=[work("a")]))
        stored = await rt.metrics(execution_id=ex.id, name=DURATION_METRIC)
    assert ex.state is State.SUCCESS
    assert exporter.get_finished_spans() == ()
    by_run = {m.task_run_id: m.value for m in stored}
    assert by_run[ex.task_run("a").id] == pytest.approx(ex.task_run("a").duration)
    assert by_run[""] == pytest.approx(ex.duration)


async def test_unsampled_caller_means_no_spans_but_durations_and_trace_ids(otel: Otel) -> None:
    """Under the default parent-based sampler, an execution whose caller is not sampled records
    no span; durations are still stored and log lines still carry the caller's trace id."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    async with Runtime.open(":memory:", tracing=otel.tracing) as rt:
        handle = await rt.submit(
            af.Flow(id="unsampled", tasks=[af.Sequential(id="s", tasks=[work("a")])]),
            traceparent=f"00-{trace_id}-b7ad6b7169203331-00",
        )
        ex = await handle.wait()
        stored = await rt.metrics(execution_id=ex.id, name=DURATION_METRIC)
        logs = await rt.logs(ex.id)
    assert ex.state is State.SUCCESS
    assert otel.spans() == ()
    assert {m.task_run_id for m in stored} == {"", ex.task_run("s").id, ex.task_run("a").id}
    assert {lg.trace_id for lg in logs} == {trace_id}


async def test_two_runtimes_on_one_provider_store_their_own_durations(otel: Otel) -> None:
    """Runtimes sharing a tracer provider each store the durations of their own spans only."""
    flow = af.Flow(id="shared", tasks=[work("a")])
    async with (
        Runtime.open(":memory:", tracing=otel.tracing) as one,
        Runtime.open(":memory:", tracing=otel.tracing) as two,
    ):
        ex1, ex2 = await one.run(flow), await two.run(flow)
        rows1 = await one.metrics(name=DURATION_METRIC)
        rows2 = await two.metrics(name=DURATION_METRIC)
    assert {m.execution_id for m in rows1} == {ex1.id}
    assert {m.execution_id for m in rows2} == {ex2.id}
    assert len(rows1) == len(rows2) == 2


async def test_metrics_go_to_otel_instruments_and_logs_carry_ids(otel: Otel) -> None:
    """Counters reach an OTel Counter, timers a Histogram; logs carry the attempt's trace and
    span ids, the failure line of a failed attempt included."""
    async with Runtime.open(":memory:", tracing=otel.tracing) as rt:
        ex = await rt.run(af.Flow(id="m", tasks=[work("a")]))
        logs = await rt.logs(ex.id)
        bad = await rt.run(af.Flow(id="f", tasks=[work("c", fail_first=True)]))
        bad_logs = await rt.logs(bad.id)
    data = otel.reader.get_metrics_data()
    assert data is not None
    points = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    items: Any = points["items"].data
    by_task = {p.attributes["actorflow.task.id"]: p for p in items.data_points}
    assert by_task["a"].value == 2 and by_task["c"].value == 2
    assert by_task["a"].attributes == {"kind": "x", "actorflow.flow.id": "m",
                                       "actorflow.task.id": "a"}  # fmt: skip
    step: Any = points["step"].data
    assert sum(p.sum for p in step.data_points) == 1.0
    attempt = otel.one("a attempt 1")
    line = next(lg for lg in logs if lg.message == "working")
    assert line.trace_id == format(attempt.context.trace_id, "032x")
    assert line.span_id == format(attempt.context.span_id, "016x")
    failed = otel.one("c attempt 1")
    error_line = next(lg for lg in bad_logs if lg.level == "ERROR")
    assert error_line.span_id == format(failed.context.span_id, "016x")


async def test_metric_names_otel_rejects_do_not_break_tasks(otel: Otel) -> None:
    """A metric name that is not a valid OTel instrument name is fixed for OTel, kept in storage."""

    @af.task
    async def odd(ctx: af.TaskContext) -> None:
        ctx.metric.counter("rows read!", 3)
        ctx.metric.timer("2nd pass", 0.25)

    async with Runtime.open(":memory:", tracing=otel.tracing) as rt:
        ex = await rt.run(af.Flow(id="odd", tasks=[odd("o")]))
    assert ex.state is State.SUCCESS
    assert ex.metric("rows read!") == 3
    data = otel.reader.get_metrics_data()
    assert data is not None
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"rows_read_", "m_2nd_pass"} <= names


async def test_recovered_execution_continues_the_trace(otel: Otel, tmp_path: Path) -> None:
    """A runtime closing mid-pause ends the open spans; the runtime resuming the execution from
    the same database continues the same trace under the first execution span."""
    flow = af.Flow(id="resumable", tasks=[work("a"), af.Pause(id="wait"), work("b")])
    db = tmp_path / "r.db"
    async with Runtime.open(db, flows=[flow], tracing=otel.tracing) as rt:
        with otel.provider.get_tracer("host").start_as_current_span("caller"):
            handle = await rt.submit(flow)
        await rt.wait_for(handle.id, State.PAUSED)
    first = otel.one("execution default.resumable")
    assert attr(first, "actorflow.interrupted") is True
    assert attr(otel.one("task wait"), "actorflow.interrupted") is True
    otel.exporter.clear()
    async with Runtime.open(db, flows=[flow], tracing=otel.tracing) as rt:
        await rt.resume(handle.id)
        ex = await rt.wait(handle.id)
        stored = await rt.metrics(execution_id=ex.id, name=DURATION_METRIC)
    assert ex.state is State.SUCCESS
    spans = otel.spans()
    assert {s.context.trace_id for s in spans} == {first.context.trace_id}
    second = otel.one("execution default.resumable")
    assert second.parent is not None and second.parent.span_id == first.context.span_id
    assert parent_of(otel.one("task b"), spans) == "execution default.resumable"
    assert attr(second, "actorflow.state") == "SUCCESS"
    assert {m.task_run_id: m.value for m in stored}[""] == pytest.approx(ex.duration, abs=1e-6)


async def test_restarted_execution_continues_the_trace(otel: Otel) -> None:
    """A restarted execution's new spans are in its first trace, under its first span."""
    runs: list[int] = []

    @af.task
    async def flaky_once(ctx: af.TaskContext) -> None:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            raise RuntimeError("first run fails")

    flow = af.Flow(id="again", tasks=[work("a"), flaky_once("f")])
    async with Runtime.open(":memory:", flows=[flow], tracing=otel.tracing) as rt:
        failed = await rt.run(flow)
        first = otel.one("execution default.again")
        otel.exporter.clear()
        handle = await rt.restart(failed.id)
        ex = await handle.wait()
    assert failed.state is State.FAILED and ex.state is State.SUCCESS
    spans = otel.spans()
    assert {s.context.trace_id for s in spans} == {first.context.trace_id}
    second = otel.one("execution default.again")
    assert second.parent is not None and second.parent.span_id == first.context.span_id
    f = otel.one("task f")
    assert parent_of(f, spans) == "execution default.again"
    assert [e.name for e in f.events][-3:] == ["RESTARTED", "RUNNING", "SUCCESS"]


async def test_host_global_provider_is_used_unless_tracing_false(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a host-configured global tracer provider, a runtime traces into it by default;
    tracing=False turns that off."""
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: otel.provider)
    flow = af.Flow(id="hosted", tasks=[work("a")])
    async with Runtime.open(":memory:") as rt:
        assert isinstance(rt.engine.observer, TracingObserver)
        await rt.run(flow)
    assert otel.one("task a")
    otel.exporter.clear()
    async with Runtime.open(":memory:", tracing=False) as rt:
        assert not isinstance(rt.engine.observer, TracingObserver)
        await rt.run(flow)
    assert otel.spans() == ()


async def test_tracing_off_by_default_without_host_provider() -> None:
    """Without a host provider and without tracing=..., no observer is installed."""
    async with Runtime.open(":memory:") as rt:
        assert not rt.engine.tracing


async def test_bad_tracing_value_is_a_clear_error() -> None:
    """An unknown tracing= value names what is accepted."""
    with pytest.raises(ValueError, match=r"tracing=.*'console'.*got 'jaeger'"):
        async with Runtime.open(":memory:", tracing="jaeger"):
            pass


class _Receiver(http.server.BaseHTTPRequestHandler):
    paths: list[tuple[str, int]] = []
    traces = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Receiver.paths.append((self.path, len(body)))
        if self.path == "/v1/traces":
            _Receiver.traces.set()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _Receiver.paths.clear()
    _Receiver.traces.clear()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


async def test_otlp_export_to_a_local_receiver(
    receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, tracing=True exports spans over OTLP/HTTP (flushed
    when the runtime closes)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)
    async with Runtime.open(":memory:", tracing=True) as rt:
        await rt.run(af.Flow(id="exported", tasks=[work("a")]))
    assert _Receiver.traces.wait(10), "no OTLP trace request arrived"
    sizes = [size for path, size in _Receiver.paths if path == "/v1/traces"]
    assert sizes and sizes[0] > 0
    assert any(path == "/v1/metrics" for path, _ in _Receiver.paths)


def test_cli_exports_over_otlp_when_the_environment_says_so(receiver: str, tmp_path: Path) -> None:
    """`actorflow run` traces into its own provider and exports over OTLP when
    OTEL_EXPORTER_OTLP_ENDPOINT is set; its output is unchanged."""
    proc = cli.af("run", cli.EXAMPLES / "hello.yaml", "--db", tmp_path / "c.db", "--json",
                  OTEL_EXPORTER_OTLP_ENDPOINT=receiver)  # fmt: skip
    assert json.loads(proc.stdout)["state"] == "SUCCESS"
    assert _Receiver.traces.wait(10), "no OTLP trace request arrived"


def test_cli_trace_console_writes_spans_to_stderr(tmp_path: Path) -> None:
    """`actorflow run --trace console` prints spans on stderr; --json stdout stays JSON."""
    proc = cli.af("run", cli.EXAMPLES / "hello.yaml", "--db", tmp_path / "c.db", "--json",
                  "--trace", "console")  # fmt: skip
    assert json.loads(proc.stdout)["state"] == "SUCCESS"
    assert '"name": "execution examples.hello"' in proc.stderr
    assert '"actorflow.task.id": "greet"' in proc.stderr


class _Recorder(SpanProcessor):
    """Keeps what on_start and on_end receive, and sets an attribute at start."""

    def __init__(self) -> None:
        self.started: list[tuple[str, Any, Any]] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        assert span.is_recording() and span.end_time is None
        self.started.append((span.name, span.parent, trace.get_current_span(parent_context)))
        span.set_attribute("added.on_start", span.name)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


async def test_processors_hear_each_span_start_and_end() -> None:
    """A span processor's on_start gets each span as it starts (a live span it may set
    attributes on, with its parent in parent_context), on_end an SDK ReadableSpan once it ends."""
    provider = TracerProvider()
    recorder = _Recorder()
    provider.add_span_processor(recorder)
    async with Runtime.open(":memory:", tracing=provider) as rt:
        ex = await rt.run(af.Flow(id="p", tasks=[work("a")]))
    assert ex.state is State.SUCCESS
    assert [n for n, _, _ in recorder.started] == ["execution default.p", "task a", "a attempt 1"]
    ended = {s.name: s for s in recorder.ended}
    assert set(ended) == {"execution default.p", "task a", "a attempt 1"}
    for name, parent, in_context in recorder.started:
        span = ended[name]
        assert isinstance(span, ReadableSpan)
        assert attr(span, "added.on_start") == name
        assert span.parent == parent
        if parent is not None:
            assert in_context.get_span_context() == parent
    assert ended["task a"].parent == ended["execution default.p"].context
    assert ended["a attempt 1"].parent == ended["task a"].context
    assert ended["task a"].instrumentation_scope is not None
    assert ended["task a"].instrumentation_scope.name == "actorflow"
    assert ended["task a"].resource is provider.resource


async def test_task_code_writes_on_its_attempt_span(otel: Otel) -> None:
    """The task's code can set attributes and add events on the current span (its attempt);
    values OTel does not accept are cleaned as the SDK cleans them."""

    @af.task
    async def annotate(ctx: af.TaskContext) -> None:
        span = trace.get_current_span()
        span.set_attribute("rows", 42)
        span.set_attribute("bad", object())  # type: ignore[arg-type]
        span.add_event("checkpoint", {"step": 1})

    async with Runtime.open(":memory:", tracing=otel.tracing) as rt:
        await rt.run(af.Flow(id="u", tasks=[annotate("x")]))
    span = otel.one("x attempt 1")
    assert attr(span, "rows") == 42
    assert (span.attributes or {}).get("bad") is None  # cleaned as the SDK cleans it
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("checkpoint", {"step": 1})
    ]


class _CountingSampler(Sampler):
    """Drops the executions of flow ``quiet``; counts what it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None) -> SamplingResult:  # fmt: skip
        self.asked.append(name)
        if (attributes or {}).get("actorflow.flow.id") == "quiet":
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {"sampled.by": "counter"})

    def get_description(self) -> str:
        return "counting"


async def test_the_sampler_decides_once_per_execution() -> None:
    """The provider's sampler is asked once per execution, with its span's name and attributes;
    a dropped execution makes no span at all, a kept one is recorded whole with the sampler's
    attributes on its execution span."""
    sampler = _CountingSampler()
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Runtime.open(":memory:", tracing=provider) as rt:
        quiet = await rt.run(af.Flow(id="quiet", tasks=[work("a"), work("b")]))
        loud = await rt.run(af.Flow(id="loud", tasks=[work("a"), work("b")]))
        logs = await rt.logs(quiet.id)
    assert sampler.asked == ["execution default.quiet", "execution default.loud"]
    spans = exporter.get_finished_spans()
    assert {attr(s, "actorflow.execution.id") for s in spans} == {loud.id}
    assert len(spans) == 5
    root = next(s for s in spans if s.name == "execution default.loud")
    assert attr(root, "sampled.by") == "counter"
    assert {lg.trace_id for lg in logs if lg.trace_id} and all(lg.trace_id for lg in logs)


class _OtherTracerProvider(trace.TracerProvider):
    """A provider that is not the SDK's (its tracers wrap the SDK's): spans go through
    start_span."""

    def __init__(self, inner: TracerProvider) -> None:
        self.inner = inner

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        sdk = self.inner.get_tracer(*args, **kwargs)

        class Wrapped(trace.Tracer):
            def start_span(self, *a: Any, **k: Any) -> trace.Span:
                return sdk.start_span(*a, **k)

            def start_as_current_span(self, *a: Any, **k: Any) -> Any:
                return sdk.start_as_current_span(*a, **k)

        return Wrapped()


async def test_a_provider_that_is_not_the_sdks_gets_the_same_tree(otel: Otel) -> None:
    """With a tracer provider that is not the SDK's, spans are made through start_span with the
    same names, tree, events and status."""
    retry = af.Retry.constant(0, max_attempts=2)
    async with Runtime.open(":memory:", tracing=_OtherTracerProvider(otel.provider)) as rt:
        ex = await rt.run(af.Flow(id="api", tasks=[work("c", fail_first=True, retry=retry)]))
    assert ex.state is State.SUCCESS
    spans = otel.spans()
    assert sorted(s.name for s in spans) == [
        "c attempt 1",
        "c attempt 2",
        "execution default.api",
        "task c",
    ]
    assert parent_of(otel.one("c attempt 2"), spans) == "task c"
    failed = otel.one("c attempt 1")
    assert failed.status.status_code is StatusCode.ERROR
    assert attr(failed, "error.type") == "ConnectionError"
    assert [e.name for e in otel.one("task c").events] == [
        h.state.value for h in ex.task_run("c").history
    ]
