"""OpenTelemetry: executions, task runs and attempts as spans; task metrics as instruments.

Spans (all ``SpanKind.INTERNAL``):

* ``execution <namespace>.<flow>``: a child of the caller's current span when ``submit`` runs
  inside one (else a root); a subflow's execution is a child of its ``Subflow`` task-run span;
* ``task <task id>``: a child of its parent task run (flowable nesting) or of the execution;
* ``attempt <n>``: a child of its task run, and the current span while the task's code runs,
  so spans the task makes itself nest under it.

Attributes (the ``actorflow.*`` namespace):

==============================  ==========================================================
``actorflow.execution.id``      execution id (every span)
``actorflow.flow.id``           flow id (execution and task-run spans)
``actorflow.flow.namespace``    flow namespace (execution spans)
``actorflow.flow.revision``     flow revision (execution spans)
``actorflow.task.id``           task id (task-run and attempt spans)
``actorflow.task_run.id``       task-run id (task-run and attempt spans)
``actorflow.task_run.value``    loop value (ForEach iterations), when there is one
``actorflow.attempt.number``    attempt number, from 1 (attempt spans)
``actorflow.state``             final state, set when the span ends
``actorflow.interrupted``       True on a span ended because its runtime closed
==============================  ==========================================================

Every state change is a span event named after the state, at the time of the change. A failed
attempt records the exception and sets error status; FAILED, KILLED and CANCELLED task runs
and executions set error status too.

Samplers are respected: nothing is built for a span that is not recording, and under the SDK's
default parent-based sampler the task runs and attempts of an execution that is not sampled
share its non-recording span instead of asking the SDK for more.

Execution and task-run spans start and end at their state-history dates, so a span's duration
equals the record's: with tracing on, each ended record is stored with a metric
``actorflow.duration`` of kind ``duration`` (tag ``span`` = the span name) on the task run,
and on the execution with ``task_run_id == ""``, sampled or not, whatever the provider.

The execution span's context is kept in the execution snapshot (``traceparent``). A runtime
that closes ends its open spans (``actorflow.interrupted``); the runtime that resumes the
execution starts a new execution span, a child of that one, covering the execution from its
creation: the trace goes on.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from actorflow.runtime._observer import DURATION_METRIC, AttemptScope, EngineView, Observer
from actorflow.runtime._records import Execution, TaskRun
from actorflow.runtime._states import State

if TYPE_CHECKING:
    from actorflow.runtime._context import TaskContext

__all__ = [
    "DURATION_METRIC",
    "ObserverGroup",
    "Tracing",
    "TracingObserver",
    "make_observer",
    "tracing_observer",
]

_PROPAGATOR = TraceContextTextMapPropagator()
_ERROR_STATES = frozenset({State.FAILED, State.KILLED, State.CANCELLED})
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")
_OTLP_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_KEEP_ENDED = 1024


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _sampled(span: Span) -> bool:
    # Not is_recording(): that is False for an ended span too.
    return span.get_span_context().trace_flags.sampled


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


def instrument_name(name: str) -> str:
    """``name`` made a valid OTel instrument name (the SDK raises on invalid ones)."""
    fixed = _BAD_NAME_CHARS.sub("_", name)
    if not fixed[:1].isalpha():
        fixed = "m_" + fixed
    return fixed[:255]


@dataclass(frozen=True)
class Tracing:
    """Explicit providers for :meth:`Runtime.open` (``tracing=Tracing(...)``).

    ``None`` means the global provider (a no-op one unless the host set it).
    """

    tracer_provider: Any = None
    meter_provider: Any = None


class _Open:
    """An open execution or task-run span, with the attributes its children start from."""

    __slots__ = ("_context", "child_attrs", "execution_id", "recording", "sampled", "span",
                 "traceparent")  # fmt: skip

    def __init__(self, span: Span, execution_id: str, child_attrs: dict[str, Any]) -> None:
        self.span = span
        self.execution_id = execution_id
        self.child_attrs = child_attrs
        self.traceparent: str | None = None
        self.recording = span.is_recording()
        self.sampled = _sampled(span)
        self._context: otel_context.Context | None = None

    @property
    def context(self) -> otel_context.Context:
        """An OTel context with this span current: the parent of its children (made once)."""
        ctx = self._context
        if ctx is None:
            ctx = self._context = trace.set_span_in_context(self.span)
        return ctx


class TracingObserver(Observer):
    """Builds the span tree from the engine's state changes."""

    stores_durations = True

    def __init__(
        self, tracer_provider: Any = None, meter_provider: Any = None, *, owned: bool = False
    ) -> None:
        self.tracer = trace.get_tracer("actorflow", tracer_provider=tracer_provider)
        self.meter = metrics.get_meter("actorflow", meter_provider=meter_provider)
        self.tracer_provider: Any = tracer_provider or trace.get_tracer_provider()
        self.meter_provider: Any = meter_provider
        # Providers this observer made itself: shut down (flushed) when the runtime closes.
        self._owned = owned
        self._exec: dict[str, _Open] = {}
        self._runs: dict[str, _Open] = {}
        # Ended execution spans, for task runs that end after their execution (kill).
        self._ended: dict[str, _Open] = {}
        self._deferred: dict[str, dict[str, TaskRun]] = {}
        self._attempts: dict[int, Span] = {}
        self._instruments: dict[tuple[str, str], Any] = {}
        self._engine: EngineView | None = None
        # Children of a span that is not sampled are not sampled either (the default
        # ParentBased sampler): they share their parent's non-recording span, no SDK call.
        self._prune = False
        if isinstance(self.tracer_provider, TracerProvider):
            sampler = self.tracer_provider.sampler
            self._prune = (
                isinstance(sampler, ParentBased)
                and getattr(sampler, "_local_parent_not_sampled", None) is ALWAYS_OFF
            )

    def bind(self, engine: EngineView) -> None:
        """Called by the engine: the clock for attempt spans, storage for durations."""
        self._engine = engine

    def _start(self, name: str, parent: otel_context.Context | None, attrs: dict[str, Any],
               start: float) -> Span:  # fmt: skip
        return self.tracer.start_span(name, context=parent, attributes=attrs, start_time=_ns(start))

    def _end(self, entry: _Open, state: State, error: str | None, end: float) -> None:
        span = entry.span
        if entry.recording:
            span.set_attribute("actorflow.state", state.value)
            if state in _ERROR_STATES:
                span.set_status(Status(StatusCode.ERROR, error or state.value))
        span.end(end_time=_ns(end))

    # -- executions ---------------------------------------------------------------------
    def current_traceparent(self) -> str | None:
        span = trace.get_current_span()
        return traceparent_of(span) if span.get_span_context().is_valid else None

    def execution_traceparent(self, ex: Execution) -> str | None:
        """The execution span's own context, to keep in the snapshot."""
        entry = self._exec.get(ex.id)
        return entry.traceparent if entry is not None else ex.traceparent

    def execution_changed(self, ex: Execution) -> None:
        entry = self._exec.get(ex.id)
        last = ex.history[-1]
        if entry is None:
            entry = self._open_execution(ex)
        elif entry.span.is_recording():
            entry.span.add_event(last.state.value, timestamp=_ns(last.date))
        if ex.state.terminal:
            del self._exec[ex.id]
            self._ended[ex.id] = entry
            if len(self._ended) > _KEEP_ENDED:
                del self._ended[next(iter(self._ended))]
            self._end(entry, ex.state, ex.error, last.date)

    def _open_execution(self, ex: Execution) -> _Open:
        attrs: dict[str, Any] = {
            "actorflow.execution.id": ex.id,
            "actorflow.flow.id": ex.flow_id,
            "actorflow.flow.namespace": ex.namespace,
            "actorflow.flow.revision": ex.flow_revision,
        }
        # Restarted here: under its previous span (the record in memory still holds the
        # caller's context; only the stored snapshot holds the execution span's).
        previous = self._ended.pop(ex.id, None)
        parent = context_of(previous.traceparent if previous is not None else ex.traceparent)
        caller = self._runs.get(ex.parent_task_run_id or "")
        if caller is not None:
            parent = trace.set_span_in_context(caller.span)  # a subflow's Subflow task run
        span = self._start(f"execution {ex.namespace}.{ex.flow_id}", parent, attrs,
                           ex.history[0].date)  # fmt: skip
        child = {"actorflow.execution.id": ex.id, "actorflow.flow.id": ex.flow_id}
        entry = self._exec[ex.id] = _Open(span, ex.id, child)
        entry.traceparent = traceparent_of(span) or ex.traceparent
        if span.is_recording():
            # A new execution has one state; a resumed one shows where it resumed.
            last = ex.history[-1]
            span.add_event(last.state.value, timestamp=_ns(last.date))
        for tr in self._deferred.pop(ex.id, {}).values():
            self.task_run_changed(tr, None)
        return entry

    # -- task runs ------------------------------------------------------------------------
    def task_run_changed(self, tr: TaskRun, ex: Execution | None) -> None:
        entry = self._runs.get(tr.id)
        last = tr.history[-1]
        if entry is None:
            execution = self._exec.get(tr.execution_id)
            if execution is None and tr.state.terminal:
                execution = self._ended.get(tr.execution_id)  # killed after its execution ended
            if execution is None:
                # Recovered or restarted: task runs change before their execution does; their
                # spans wait for the execution span (they start and end at their own dates).
                self._deferred.setdefault(tr.execution_id, {})[tr.id] = tr
                return
            # Flowable children may be seen before their parent: spans start on first sight.
            parent = self._runs.get(tr.parent_task_run_id or "") or execution
            child = {"actorflow.execution.id": tr.execution_id, "actorflow.task.id": tr.task_id,
                     "actorflow.task_run.id": tr.id}  # fmt: skip
            if self._prune and not parent.sampled:
                span = parent.span
            else:
                attrs = execution.child_attrs.copy()
                attrs.update(child)
                if tr.value is not None:
                    attrs["actorflow.task_run.value"] = tr.value
                span = self._start(f"task {tr.task_id}", parent.context, attrs,
                                   tr.history[0].date)  # fmt: skip
            entry = self._runs[tr.id] = _Open(span, tr.execution_id, child)
            if entry.recording:
                for e in tr.history:
                    span.add_event(e.state, timestamp=int(e.date * 1e9))
        elif entry.recording:
            entry.span.add_event(last.state, timestamp=int(last.date * 1e9))
        if tr.state.terminal:
            del self._runs[tr.id]
            self._end(entry, tr.state, tr.error, last.date)

    # -- attempts ---------------------------------------------------------------------------
    def attempt_started(self, scope: AttemptScope, tr: TaskRun, number: int) -> Any:
        run = self._runs.get(tr.id)
        if run is not None and self._prune and not run.sampled:
            span = run.span
        else:
            ctx = run.context if run is not None else None
            attrs: dict[str, Any] = run.child_attrs.copy() if run is not None else {}
            attrs["actorflow.attempt.number"] = number
            start = tr.attempts[-1].start if tr.attempts else None
            span = self.tracer.start_span(
                f"attempt {number}",
                context=ctx,
                attributes=attrs,
                start_time=_ns(start) if start is not None else None,
            )
            if span.is_recording():
                self._attempts[id(span)] = span
        # Current for the task's code: attach and detach both run in the task-run actor's task.
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    def attempt_ended(self, token: Any, state: State, error: BaseException | None) -> None:
        span, ctx_token = token
        otel_context.detach(ctx_token)
        self._attempts.pop(id(span), None)
        if span.is_recording():
            span.set_attribute("actorflow.state", state.value)
            if error is not None:
                span.record_exception(error)
            if state in _ERROR_STATES:
                span.set_status(Status(StatusCode.ERROR, str(error) if error else state.value))
        engine = self._engine
        span.end(end_time=_ns(engine.clock.now()) if engine is not None else None)

    # -- metrics and logs -----------------------------------------------------------------------
    def metric(self, ctx: TaskContext, kind: str, name: str, value: float,
               tags: dict[str, str]) -> None:  # fmt: skip
        inst: Any = self._instruments.get((kind, name))
        if inst is None:
            if kind == "counter":
                inst = self.meter.create_counter(instrument_name(name))
            else:
                inst = self.meter.create_histogram(instrument_name(name), unit="s")
            self._instruments[(kind, name)] = inst
        attrs: dict[str, Any] = {**tags, "actorflow.flow.id": ctx.flow_id,
                                 "actorflow.task.id": ctx.task_id}  # fmt: skip
        if kind == "counter":
            inst.add(value, attributes=attrs)
        else:
            inst.record(value, attributes=attrs)

    def log_ids(self) -> tuple[str | None, str | None]:
        sc = trace.get_current_span().get_span_context()
        if not sc.is_valid:
            return None, None
        return format(sc.trace_id, "032x"), format(sc.span_id, "016x")

    # -- closing --------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """End the spans still open (their runtime closes), and flush providers we made."""
        now = self._engine.clock.now() if self._engine is not None else None
        end = _ns(now) if now is not None else None
        for span in self._attempts.values():
            span.set_attribute("actorflow.interrupted", True)
            span.end(end_time=end)  # a task cancelled by the closing runtime never ended it
        for entry in (*self._runs.values(), *self._exec.values()):
            if entry.span.is_recording():
                entry.span.set_attribute("actorflow.interrupted", True)
            entry.span.end(end_time=end)
        self._attempts.clear()
        self._runs.clear()
        self._exec.clear()
        self._ended.clear()
        self._deferred.clear()
        if self._owned:
            for provider in (self.tracer_provider, self.meter_provider):
                if provider is not None and hasattr(provider, "shutdown"):
                    # An exporter may wait on the network: not on the event loop.
                    await anyio.to_thread.run_sync(provider.shutdown)


class ObserverGroup(Observer):
    """Several observers as one (the CLI's progress display beside tracing).

    The first one gives the trace context (snapshot, caller, log ids): put tracing first.
    """

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers
        self.stores_durations = any(o.stores_durations for o in observers)

    def bind(self, engine: EngineView) -> None:
        for o in self.observers:
            o.bind(engine)

    def execution_changed(self, ex: Execution) -> None:
        for o in self.observers:
            o.execution_changed(ex)

    def task_run_changed(self, tr: TaskRun, ex: Execution | None) -> None:
        for o in self.observers:
            o.task_run_changed(tr, ex)

    def attempt_started(self, scope: AttemptScope, tr: TaskRun, number: int) -> Any:
        return [o.attempt_started(scope, tr, number) for o in self.observers]

    def attempt_ended(self, token: Any, state: State, error: BaseException | None) -> None:
        for o, t in reversed(list(zip(self.observers, token, strict=True))):
            o.attempt_ended(t, state, error)

    def metric(self, ctx: TaskContext, kind: str, name: str, value: float,
               tags: dict[str, str]) -> None:  # fmt: skip
        for o in self.observers:
            o.metric(ctx, kind, name, value, tags)

    def execution_traceparent(self, ex: Execution) -> str | None:
        return self.observers[0].execution_traceparent(ex)

    def current_traceparent(self) -> str | None:
        return self.observers[0].current_traceparent()

    def log_ids(self) -> tuple[str | None, str | None]:
        return self.observers[0].log_ids()

    async def aclose(self) -> None:
        for o in self.observers:
            await o.aclose()


def tracing_observer(
    exporter: str | None = None, console: IO[str] | None = None
) -> TracingObserver | None:
    """Tracing for a program of its own (the CLI): into the host's provider when one is
    configured, else into providers of our own when ``exporter`` is given (``"otlp"`` or
    ``"console"``) or ``OTEL_EXPORTER_OTLP_*`` is set; None when none applies."""
    import os

    if exporter is None and any(k in os.environ for k in _OTLP_VARS):
        exporter = "otlp"
    if host_configured():
        return TracingObserver()
    if exporter is not None:
        provider, meters = _own_providers(exporter, console=console)
        return TracingObserver(provider, meters, owned=True)
    return None


def _own_providers(
    exporter: str | None, console: IO[str] | None = None
) -> tuple[TracerProvider, Any]:
    """An SDK tracer provider (and meter provider when exporting) for ``exporter``."""
    import os

    provider = TracerProvider()
    meter_provider: Any = None
    if exporter == "console":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )

        out = console or sys.stdout
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=out)))
        reader = PeriodicExportingMetricReader(ConsoleMetricExporter(out=out))
        meter_provider = MeterProvider(metric_readers=[reader])
    elif exporter == "otlp" or any(k in os.environ for k in _OTLP_VARS):
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise ImportError(
                "OTLP export needs the optional extra: pip install 'actorflow[otlp]'"
            ) from exc
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        meter_provider = MeterProvider(
            metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
        )
    return provider, meter_provider


def host_configured() -> bool:
    """Whether the host application set a global tracer provider of its own."""
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


def make_observer(tracing: Any) -> TracingObserver | None:
    """The observer for ``Runtime.open(tracing=...)``; None when tracing stays off.

    ``None`` (the default): the host's global providers if it configured a tracer provider,
    else tracing off. ``True``: the host's providers if configured, else an SDK provider of our
    own (exporting through OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set). ``"console"`` /
    ``"otlp"``: our own providers with that exporter. A ``TracerProvider`` or a
    :class:`Tracing`: exactly those providers. ``False``: off, whatever the host configured.
    """
    if tracing is None or tracing is False:
        return TracingObserver() if tracing is None and host_configured() else None
    if isinstance(tracing, Tracing):
        return TracingObserver(tracing.tracer_provider, tracing.meter_provider)
    if isinstance(tracing, TracerProvider):
        return TracingObserver(tracing)
    if tracing is True and host_configured():
        return TracingObserver()
    if tracing is True or tracing in ("console", "otlp"):
        provider, meters = _own_providers(tracing if isinstance(tracing, str) else None)
        return TracingObserver(provider, meters, owned=True)
    raise ValueError(
        "Runtime.open(tracing=...) must be None, True, False, 'console', 'otlp', a "
        f"TracerProvider or actorflow.runtime.Tracing; got {tracing!r}"
    )
