"""OpenTelemetry: executions, task runs and attempts as spans; task metrics as instruments.

Span names and attributes (the ``actorflow.*`` namespace):

=====================  ==========================================================
span                   ``execution <namespace>.<flow>``, ``task <task id>``, ``attempt <n>``
actorflow.execution.id  execution id (on every span)
actorflow.flow.id / actorflow.flow.namespace / actorflow.flow.revision
actorflow.task.id       task id (task-run and attempt spans)
actorflow.task_run.id   task-run id
actorflow.task_run.value  loop value (ForEach), when there is one
actorflow.attempt.number  attempt number (attempt spans)
actorflow.state         final state, set when the span ends
=====================  ==========================================================

Every state change is a span event named after the state, at the time of the change. Span
start and end times are the state-history dates, so a span's duration equals the duration
stored for its execution or task run (``kind="duration"`` metrics, recorded by
:class:`DurationRecorder`, a span processor, or by the observer when the tracer provider is
not the SDK's). The execution span's context is kept in the execution snapshot
(``traceparent``), so a resumed or recovered execution continues the same trace.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from actorflow._errors import StorageError
from actorflow.runtime._engine import Observer
from actorflow.runtime._records import Execution, TaskRun
from actorflow.runtime._states import State
from actorflow.storage import MetricRow, UpsertMetric

if TYPE_CHECKING:
    from actorflow.runtime._context import TaskContext
    from actorflow.runtime._engine import Engine
    from actorflow.runtime._execution import ExecutionScope

_PROPAGATOR = TraceContextTextMapPropagator()
_ERROR_STATES = frozenset({State.FAILED, State.KILLED, State.CANCELLED})
DURATION_METRIC = "actorflow.duration"


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def traceparent_of(span: Span) -> str | None:
    """A W3C traceparent for ``span`` (None if it is not valid)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """An OTel context whose parent is ``traceparent``."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


class DurationRecorder(SpanProcessor):
    """Stores every finished actorflow span's duration as a ``duration`` metric."""

    def __init__(self, sink: Callable[[MetricRow], None]) -> None:
        self.sink = sink

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        execution_id = attrs.get("actorflow.execution.id")
        if execution_id is None or span.start_time is None or span.end_time is None:
            return
        if "actorflow.attempt.number" in attrs:
            return  # attempts keep their own start/end on the attempt record
        task_run_id = str(attrs.get("actorflow.task_run.id", ""))
        self.sink(
            MetricRow(
                execution_id=str(execution_id),
                task_run_id=task_run_id,
                name=DURATION_METRIC,
                kind="duration",
                tags={"span": span.name},
                value=(span.end_time - span.start_time) / 1e9,
            )
        )


@dataclass(frozen=True)
class Tracing:
    """Explicit providers for :meth:`Runtime.open` (``tracing=Tracing(...)``)."""

    tracer_provider: Any = None
    meter_provider: Any = None


class TracingObserver(Observer):
    """Builds the span tree from the engine's state changes."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("actorflow", tracer_provider=tracer_provider)
        self.meter = metrics.get_meter("actorflow", meter_provider=meter_provider)
        self._provider: Any = tracer_provider or trace.get_tracer_provider()
        self._exec: dict[str, tuple[Span, str | None, dict[str, Any]]] = {}
        self._runs: dict[str, Span] = {}
        self._counters: dict[str, Any] = {}
        self._histograms: dict[str, Any] = {}
        self._engine: Engine | None = None
        sdk = self._provider if isinstance(self._provider, TracerProvider) else None
        # Durations come from a span processor when the provider is the SDK's; otherwise the
        # observer records them itself (same start and end dates).
        self._own_durations = sdk is None
        if sdk is not None:
            sdk.add_span_processor(DurationRecorder(self._store_metric))

    def bind(self, engine: Engine) -> None:
        """Called by the engine: storage for duration metrics."""
        self._engine = engine

    def _store_metric(self, row: MetricRow) -> None:
        engine = self._engine
        if engine is None or not engine.accepting:
            return  # a provider outlives runtimes: spans of a closed one are not stored
        with contextlib.suppress(StorageError):
            engine.store.write((UpsertMetric(row),))

    # -- executions ---------------------------------------------------------------------
    def current_traceparent(self) -> str | None:
        span = trace.get_current_span()
        return traceparent_of(span) if span.get_span_context().is_valid else None

    def execution_traceparent(self, ex: Execution) -> str | None:
        """The execution span's own context, to keep in the snapshot."""
        entry = self._exec.get(ex.id)
        return entry[1] if entry is not None else ex.traceparent

    def execution_changed(self, ex: Execution) -> None:
        entry = self._exec.get(ex.id)
        if entry is None:
            attrs: dict[str, Any] = {
                "actorflow.execution.id": ex.id,
                "actorflow.flow.id": ex.flow_id,
                "actorflow.flow.namespace": ex.namespace,
                "actorflow.flow.revision": ex.flow_revision,
            }
            start = ex.history[0].date if len(ex.history) == 1 else ex.history[-1].date
            span = self.tracer.start_span(
                f"execution {ex.namespace}.{ex.flow_id}",
                context=context_of(ex.traceparent),
                attributes=attrs,
                start_time=_ns(start),
            )
            entry = (span, traceparent_of(span), attrs)
            self._exec[ex.id] = entry
            if span.is_recording():
                for e in ex.history if len(ex.history) == 1 else ex.history[-1:]:
                    span.add_event(e.state.value, timestamp=_ns(e.date))
        else:
            span = entry[0]
            if span.is_recording():
                span.add_event(ex.state.value, timestamp=_ns(ex.history[-1].date))
        if ex.state.terminal:
            span = entry[0]
            if span.is_recording():
                span.set_attribute("actorflow.state", ex.state.value)
                if ex.state in _ERROR_STATES:
                    span.set_status(Status(StatusCode.ERROR, ex.error or ex.state.value))
            span.end(end_time=_ns(ex.history[-1].date))
            self._exec.pop(ex.id, None)
            if self._own_durations:
                self._store_metric(MetricRow(ex.id, "", DURATION_METRIC, "duration",
                                             {"span": "execution"}, ex.duration))  # fmt: skip

    # -- task runs ------------------------------------------------------------------------
    def task_run_changed(self, tr: TaskRun, ex: Execution | None) -> None:
        span = self._runs.get(tr.id)
        if span is None:
            parent: Span | None = None
            if tr.parent_task_run_id is not None:
                parent = self._runs.get(tr.parent_task_run_id)
            entry = self._exec.get(tr.execution_id)
            if parent is None and entry is not None:
                parent = entry[0]
            ctx = trace.set_span_in_context(parent) if parent is not None else None
            attrs: dict[str, Any] = {
                "actorflow.execution.id": tr.execution_id,
                "actorflow.task.id": tr.task_id,
                "actorflow.task_run.id": tr.id,
            }
            if entry is not None:
                attrs.update({k: v for k, v in entry[2].items() if k.startswith("actorflow.flow")})
            if tr.value is not None:
                attrs["actorflow.task_run.value"] = tr.value
            span = self.tracer.start_span(
                f"task {tr.task_id}",
                context=ctx,
                attributes=attrs,
                start_time=_ns(tr.history[0].date),
            )
            self._runs[tr.id] = span
            if span.is_recording():
                for e in tr.history:
                    span.add_event(e.state.value, timestamp=_ns(e.date))
        elif span.is_recording():
            span.add_event(tr.state.value, timestamp=_ns(tr.history[-1].date))
        if tr.state.terminal:
            if span.is_recording():
                span.set_attribute("actorflow.state", tr.state.value)
                if tr.state in _ERROR_STATES:
                    span.set_status(Status(StatusCode.ERROR, tr.error or tr.state.value))
            span.end(end_time=_ns(tr.history[-1].date))
            del self._runs[tr.id]
            if self._own_durations:
                tags = {"span": f"task {tr.task_id}"}
                row = MetricRow(
                    tr.execution_id, tr.id, DURATION_METRIC, "duration", tags, tr.duration
                )
                self._store_metric(row)

    # -- attempts ---------------------------------------------------------------------------
    def attempt_started(self, scope: ExecutionScope, tr: TaskRun, number: int) -> Any:
        parent = self._runs.get(tr.id)
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(
            f"attempt {number}",
            context=ctx,
            attributes={
                "actorflow.execution.id": tr.execution_id,
                "actorflow.task.id": tr.task_id,
                "actorflow.task_run.id": tr.id,
                "actorflow.attempt.number": number,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    def attempt_ended(self, token: Any, state: State, error: BaseException | None) -> None:
        span, ctx_token = token
        otel_context.detach(ctx_token)
        if span.is_recording():
            span.set_attribute("actorflow.state", state.value)
            if error is not None:
                span.record_exception(error)
            if state in _ERROR_STATES:
                span.set_status(Status(StatusCode.ERROR, str(error) if error else state.value))
        span.end()

    # -- metrics and logs -----------------------------------------------------------------------
    def metric(self, ctx: TaskContext, kind: str, name: str, value: float,
               tags: dict[str, str]) -> None:  # fmt: skip
        attrs = {**tags, "actorflow.flow.id": ctx.flow_id, "actorflow.task.id": ctx.task_id}
        if kind == "counter":
            inst = self._counters.get(name) or self._counters.setdefault(
                name, self.meter.create_counter(name)
            )
            inst.add(value, attributes=attrs)
        else:
            hist = self._histograms.get(name) or self._histograms.setdefault(
                name, self.meter.create_histogram(name, unit="s")
            )
            hist.record(value, attributes=attrs)

    def log_ids(self) -> tuple[str | None, str | None]:
        sc = trace.get_current_span().get_span_context()
        if not sc.is_valid:
            return None, None
        return format(sc.trace_id, "032x"), format(sc.span_id, "016x")


def _sdk_provider(exporter: str | None) -> TracerProvider:
    provider = TracerProvider()
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp" or any(
        k in os.environ
        for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise RuntimeError(
                "OTLP export needs the optional extra: pip install 'actorflow[otlp]'"
            ) from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def make_observer(tracing: Any) -> TracingObserver:
    """An observer for ``Runtime.open(tracing=...)``.

    ``True``: the host's global providers if it configured SDK ones, else an SDK provider of
    our own (exporting through OTLP when ``OTEL_EXPORTER_OTLP_*`` is set). ``"console"`` /
    ``"otlp"``: our own provider with that exporter. A ``TracerProvider`` or a
    :class:`Tracing`: exactly those providers.
    """
    if isinstance(tracing, Tracing):
        return TracingObserver(tracing.tracer_provider, tracing.meter_provider)
    if isinstance(tracing, TracerProvider):
        return TracingObserver(tracing)
    if tracing is True and isinstance(trace.get_tracer_provider(), TracerProvider):
        return TracingObserver()
    if tracing in (True, "console", "otlp"):
        return TracingObserver(_sdk_provider(tracing if isinstance(tracing, str) else None))
    raise ValueError(
        f"tracing must be True, 'console', 'otlp', a TracerProvider or Tracing; got {tracing!r}"
    )
