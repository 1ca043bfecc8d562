"""OpenTelemetry: executions, task runs and attempts as spans; task metrics as instruments.

Spans (all ``SpanKind.INTERNAL``: the runtime does its work in process, it neither serves a
remote request nor reads a broker, so it stays inside its caller's service in trace views):

* ``execution <namespace>.<flow>``: a child of the caller's current span when ``submit`` runs
  inside one (else a root); a subflow's execution is a child of its ``Subflow`` task-run span;
* ``task <task id>`` (``task <task id>[<value>]`` for a ForEach iteration): a child of its
  parent task run (flowable nesting) or of the execution;
* ``<task id> attempt <n>`` (``<task id>[<value>] attempt <n>``): a child of its task run, and
  the current span while the task's code runs, so spans the task makes itself nest under it.

Attributes (the ``actorflow.*`` namespace, and OpenTelemetry's conventions where one exists):

==============================  ==========================================================
``actorflow.execution.id``      execution id (every span)
``actorflow.flow.id``           flow id (every span)
``actorflow.flow.namespace``    flow namespace (execution spans)
``actorflow.flow.revision``     flow revision (execution spans)
``actorflow.task.id``           task id (task-run and attempt spans)
``actorflow.task_run.id``       task-run id (task-run and attempt spans)
``actorflow.task_run.value``    loop value (ForEach iterations), when there is one
``actorflow.attempt.number``    attempt number, from 1 (attempt spans)
``actorflow.state``             final state, set when the span ends
``actorflow.interrupted``       True on a span ended because its runtime closed or died
``actorflow.recovered``         True on the execution span of a recovered execution
``error.type``                  on spans with error status: the exception's qualified class
                                name, else the final state (``KILLED``, ``interrupted``...)
==============================  ==========================================================

Every state change is a span event named after the state, at the time of the change. A failed
attempt has an ``exception`` event (``exception.type``, ``exception.message``,
``exception.stacktrace``) and error status; FAILED, KILLED and CANCELLED task runs and
executions set error status too.

**How spans are built.** With an SDK tracer provider (``opentelemetry.sdk.trace``), the spans
are not made through ``Tracer.start_span``: that costs about 40 us a span. A light span of our
own (:class:`_LightSpan`, implementing the ``opentelemetry.trace.Span`` API) is started
instead, handed to the provider's span processors' ``on_start`` at once, made current while
the attempt runs (spans the task starts nest under it; ``set_attribute`` and ``add_event`` on
it work), and when it ends an SDK ``ReadableSpan`` is built from it and handed to the
processors' ``on_end``, as the SDK does. When every processor of the provider is the SDK's
``BatchSpanProcessor`` or ``SimpleSpanProcessor`` (whose ``on_start`` does nothing), no
``on_start`` call is made and no context is built for it; a processor added later, or any other
processor (a subclass overriding ``on_start`` included), gets every ``on_start``. Knowing a
provider's processors takes the one private name used, ``SynchronousMultiSpanProcessor.
_span_processors`` (the SDK has no public listing; ``tests/runtime/test_tracing_sdk.py`` fails
if it changes, and anything unexpected there means ``on_start`` is always called). Otherwise
only public names: the SDK tracer's ``span_processor``, ``sampler``, ``resource``,
``id_generator`` and ``instrumentation_info``, and ``ReadableSpan``'s constructor. What differs
from SDK spans: the processors' ``on_start`` receives the light span (the Span API plus the
read-only properties of ``ReadableSpan``), not an SDK ``Span``; the SDK's private
``_on_ending`` hook, its tracer configurator and its own span metrics are not called; span
limits come from the ``OTEL_SPAN_*_LIMIT`` / ``OTEL_ATTRIBUTE_*_LIMIT`` environment (a
provider's ``span_limits=`` is private). Any other provider gets its own spans through
``start_span``.

**Sampling.** The provider's sampler decides once per execution, for its execution span (the
root of the runtime's spans, whether or not it has a caller's or a stored parent): its task
runs and attempts follow that decision, as under the SDK's default parent-based sampler. The
task runs and attempts of an execution that is not sampled share its non-recording span: no
span is built for them, log lines still carry its trace id.

Execution and task-run spans start and end at their state-history dates, so a span's duration
equals the record's: with tracing on, each ended record is stored with a metric
``actorflow.duration`` of kind ``duration`` (tag ``span`` = the span name without its loop
value) on the task run, and on the execution with ``task_run_id == ""``, sampled or not,
whatever the provider.

**Recovery.** The execution span's context is kept in the execution snapshot
(``traceparent``). A runtime that closes ends its open spans (``actorflow.interrupted``); the
runtime that resumes the execution (after a close or a crash) opens, the moment it resumes it,
a new execution span, a child of the stored one, covering the execution from its creation
(``actorflow.recovered``, an event ``recovered`` at the resume), with the spans of its task
runs still in flight under it; an attempt the dead process left running becomes a span that
ends at the resume with error status, ``actorflow.interrupted`` and ``error.type`` =
``interrupted``: the trace goes on.

**Exporters of our own** (``tracing=True`` / ``"otlp"`` / ``"console"``, and the CLI) follow the
SDK's environment: ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (``otlp``, ``console``,
``none``, comma-separated), ``OTEL_EXPORTER_OTLP_PROTOCOL`` (and the per-signal
``..._TRACES_PROTOCOL`` / ``..._METRICS_PROTOCOL``: ``http/protobuf`` or ``grpc``, the latter
with the ``grpc`` extra), endpoints, headers, timeouts and certificates (read by the exporters
themselves), ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (``service.name`` defaults to
``actorflow``). When the runtime closes they are flushed for at most ``flush_timeout``
seconds (``ACTORFLOW_OTEL_FLUSH_TIMEOUT``, default 1): an unreachable collector never holds
the process longer.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    EventBase,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util import types

from actorflow.runtime._observer import DURATION_METRIC, AttemptScope, EngineView, Observer
from actorflow.runtime._records import Execution, StateEntry, TaskRun
from actorflow.runtime._states import TERMINAL, State

if TYPE_CHECKING:
    from actorflow.runtime._clock import Clock
    from actorflow.runtime._context import TaskContext

__all__ = [
    "DURATION_METRIC",
    "ObserverGroup",
    "Tracing",
    "TracingObserver",
    "attempt_span_name",
    "make_observer",
    "task_span_name",
    "tracing_observer",
]

_PROPAGATOR = TraceContextTextMapPropagator()
_ERROR_STATES = frozenset({State.FAILED, State.KILLED, State.CANCELLED})
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")
_OTLP_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_KEEP_ENDED = 1024
_VALUE_IN_NAME = 40  # longer loop values are cut in span names (the attribute keeps it whole)
_INTERNAL = SpanKind.INTERNAL
_STATE_NAMES = {s: s.value for s in State}  # Enum.value is a slow descriptor
_UNSET = Status(StatusCode.UNSET)
_EMPTY_CONTEXT = otel_context.Context()
# The W3C level-2 "random" flag, on SDKs that know it (1.37+); 0 leaves flags unchanged.
_RANDOM_TRACE_ID: int = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
_FLUSH_TIMEOUT_VAR = "ACTORFLOW_OTEL_FLUSH_TIMEOUT"
_DEFAULT_FLUSH_TIMEOUT = 1.0
# The SDK's own processors whose ``on_start`` does nothing: when a provider has only these, no
# span is handed to ``on_start`` (nor a parent context made for it). Any other processor, a
# subclass overriding ``on_start`` included, gets every ``on_start``.
_QUIET_ON_START = frozenset(
    {SpanProcessor.on_start, BatchSpanProcessor.on_start, SimpleSpanProcessor.on_start}
)
_getrandbits = random.getrandbits


def _span_key() -> str | None:
    """The key under which an OTel context holds its current span (None if not a plain one).

    Found through the public API, once: a context with one span current is then made as a
    one-entry ``Context`` instead of a copy and a merge.
    """
    probe = NonRecordingSpan(SpanContext(1, 1, False))
    made = trace.set_span_in_context(probe, otel_context.Context())
    keys = list(made)
    if len(keys) != 1:
        return None
    again = otel_context.Context({keys[0]: probe})
    return keys[0] if trace.get_current_span(again) is probe else None


_SPAN_KEY = _span_key()


def _span_context(span: Span) -> otel_context.Context:
    """An OTel context holding only ``span`` as the current span."""
    if _SPAN_KEY is None:
        return trace.set_span_in_context(span, _EMPTY_CONTEXT)
    return otel_context.Context({_SPAN_KEY: span})


def inner_processors(processor: Any) -> tuple[Any, ...] | None:
    """The processors an SDK provider's processor hands each span to, in order; None when that
    cannot be known (any other kind of processor).

    Reads the private ``SynchronousMultiSpanProcessor._span_processors`` (the SDK has no
    public way to list a provider's processors); ``tests/runtime/test_tracing_sdk.py`` fails
    if the SDK changes it, and anything unexpected here means every processor's ``on_start``
    is called, as without this.
    """
    if type(processor) is not SynchronousMultiSpanProcessor:
        return None
    inner = getattr(processor, "_span_processors", None)
    if not isinstance(inner, tuple) or not all(isinstance(p, SpanProcessor) for p in inner):
        return None
    return inner


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _sampled(span: Span) -> bool:
    # Not is_recording(): that is False for an ended span too.
    return span.get_span_context().trace_flags.sampled


@functools.cache
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("actorflow")
    except Exception:  # pragma: no cover - running from a source tree without metadata
        return "0"


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


def _label(tr: TaskRun) -> str:
    value = tr.value
    if value is None:
        return tr.task_id
    if len(value) > _VALUE_IN_NAME:
        value = value[: _VALUE_IN_NAME - 3] + "..."
    return f"{tr.task_id}[{value}]"


def task_span_name(tr: TaskRun) -> str:
    """``task <task id>``, with ``[<value>]`` for a ForEach iteration."""
    return f"task {_label(tr)}"


def attempt_span_name(tr: TaskRun, number: int) -> str:
    """``<task id> attempt <n>`` (``<task id>[<value>] attempt <n>`` in a ForEach)."""
    return f"{_label(tr)} attempt {number}"


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return f"{module}.{cls.__qualname__}" if module and module != "builtins" else cls.__qualname__


def _exception_event(exc: BaseException, timestamp: int | None) -> Event:
    attrs = {
        "exception.type": _error_type(exc),
        "exception.message": str(exc),
        "exception.stacktrace": "".join(traceback.format_exception(exc)),
    }
    return Event("exception", BoundedAttributes(attributes=attrs), timestamp)


@dataclass(frozen=True)
class Tracing:
    """Explicit providers for :meth:`Runtime.open` (``tracing=Tracing(...)``).

    ``None`` means the global provider (a no-op one unless the host set it).
    """

    tracer_provider: Any = None
    meter_provider: Any = None


# -- light spans -------------------------------------------------------------------------------
class _Factory:
    """Makes the spans of one observer: light spans for an SDK tracer (see the module doc)."""

    __slots__ = ("fast_ids", "idgen", "info", "limits", "max_events", "max_value_len",
                 "on_end", "processor", "quiet", "random_ids", "resource", "sampler", "scope",
                 "seen", "tracer")  # fmt: skip

    def __init__(self, tracer: SdkTracer) -> None:
        self.tracer = tracer
        self.processor = tracer.span_processor
        self.sampler = tracer.sampler
        self.resource = tracer.resource
        self.idgen = tracer.id_generator
        # The SDK's default generator is getrandbits(64) in a loop: called inline instead.
        self.fast_ids = type(self.idgen) is RandomIdGenerator
        self.info = tracer.instrumentation_info
        self.scope = InstrumentationScope("actorflow", _version())
        limits = self.limits = SpanLimits()
        self.max_events = limits.max_events
        self.max_value_len = limits.max_span_attribute_length
        is_random = getattr(self.idgen, "is_trace_id_random", None)
        self.random_ids = bool(is_random()) if callable(is_random) else False
        self.seen: Any = None
        self.quiet = False
        self.on_end: Any = self.processor.on_end
        self.refresh()

    def refresh(self) -> bool:
        """Whether no processor needs ``on_start`` (the provider's processors read anew: the
        host may add one at any time)."""
        inner = inner_processors(self.processor)
        if inner is not self.seen or inner is None:
            self.seen = inner
            self.quiet = inner is not None and all(
                type(p).on_start in _QUIET_ON_START for p in inner
            )
            # One processor: its on_end directly, without the multi-processor's loop.
            self.on_end = inner[0].on_end if inner and len(inner) == 1 else self.processor.on_end
        return self.quiet

    def span_id(self) -> int:
        """A new span id from the provider's generator."""
        if self.fast_ids:
            return _getrandbits(64) or self.span_id()
        return self.idgen.generate_span_id()

    def root(
        self, name: str, parent: otel_context.Context | None, attrs: dict[str, Any], start: int
    ) -> Span:
        """A span the sampler decides on (the root of the runtime's spans)."""
        ctx = parent if parent is not None else _EMPTY_CONTEXT
        found = trace.get_current_span(ctx).get_span_context()
        parent_sc: SpanContext | None = found
        if found.is_valid:
            trace_id = found.trace_id
            random_ids = bool(found.trace_flags & _RANDOM_TRACE_ID)
        else:
            parent_sc = None
            trace_id = self.idgen.generate_trace_id()
            random_ids = self.random_ids
        result = self.sampler.should_sample(ctx, trace_id, name, _INTERNAL, attrs, None)
        decision = result.decision
        sampled = decision is Decision.RECORD_AND_SAMPLE
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        if random_ids:
            flags |= _RANDOM_TRACE_ID
        sc = SpanContext(trace_id, self.span_id(), False, TraceFlags(flags), result.trace_state)
        if decision is Decision.DROP:
            return NonRecordingSpan(sc)
        if result.attributes:
            attrs = {**attrs, **result.attributes}
        span = _LightSpan(self, name, sc, parent_sc, attrs, start)
        if not self.refresh():
            self.processor.on_start(span, ctx)  # type: ignore[arg-type]
        return span

    def child(self, name: str, parent: _Open, attrs: dict[str, Any], start: int) -> Span:
        """A child of one of our spans: recorded if that one is sampled, else that one."""
        psc = parent.sc
        flags = psc.trace_flags
        if not flags & 1:  # not sampled
            return parent.span
        span_id = (_getrandbits(64) or self.span_id()) if self.fast_ids else self.span_id()
        sc = SpanContext(psc.trace_id, span_id, False, flags, psc.trace_state)
        span = _LightSpan(self, name, sc, psc, attrs, start)
        # ``quiet`` implies ``seen`` is the processors' tuple: the check is one identity test.
        quiet = self.quiet and self.processor._span_processors is self.seen
        if not quiet and not self.refresh():
            self.processor.on_start(span, parent.context)  # type: ignore[arg-type]
        return span

    def finish(self, span: _LightSpan) -> None:
        """Hand the ended span to the processors as an SDK ``ReadableSpan``."""
        attrs: Any = span._attrs
        if span._dirty or self.max_value_len is not None:
            # Values set from outside the runtime are cleaned as the SDK cleans them.
            limits = self.limits
            attrs = BoundedAttributes(limits.max_span_attributes, attrs, True,
                                      limits.max_span_attribute_length)  # fmt: skip
        events: Any = span._events
        if self.max_events is not None and len(events) > self.max_events:
            events = BoundedList.from_seq(self.max_events, events)
        if self.seen is not None and self.processor._span_processors is not self.seen:
            self.refresh()
        self.on_end(
            ReadableSpan(
                span._name,
                span._context,
                span._parent,
                self.resource,
                attrs,
                events,
                (),
                _INTERNAL,
                self.info,
                span._status,
                span._start,
                span._end,
                self.scope,
            )
        )


class _LightSpan(Span):
    """A recording span of the runtime's own: the ``opentelemetry.trace.Span`` API and the
    read-only properties of an SDK ``ReadableSpan`` (what a processor's ``on_start`` reads).

    Touched only from the event loop's thread (the task's code included), like the records it
    mirrors; ending builds the ``ReadableSpan`` the processors' ``on_end`` receive.
    """

    __slots__ = ("_attrs", "_context", "_dirty", "_end", "_events", "_factory", "_name",
                 "_parent", "_start", "_status")  # fmt: skip

    def __init__(
        self,
        factory: _Factory,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attrs: dict[str, Any],
        start: int,
    ) -> None:
        self._factory = factory
        self._name = name
        self._context = context
        self._parent = parent
        self._attrs = attrs
        self._start = start
        self._end: int | None = None
        self._events: list[EventBase] = []
        self._status = _UNSET
        self._dirty = False

    # -- the Span API -----------------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end is None:
            self._attrs[key] = value
            self._dirty = True

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end is None:
            self._attrs.update(attributes)
            self._dirty = True

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end is None:
            cleaned = BoundedAttributes(attributes=attributes) if attributes else None
            self._events.append(Event(name, cleaned, timestamp))

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        if self._end is None:
            event = _exception_event(exception, timestamp)
            if attributes:
                event = Event("exception", BoundedAttributes(
                    attributes={**(event.attributes or {}), **attributes}), timestamp)  # fmt: skip
            self._events.append(event)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time if end_time is not None else _now_ns()
        self._factory.finish(self)

    # -- what a processor's on_start may read ---------------------------------------------------
    @property
    def name(self) -> str:
        """The span name."""
        return self._name

    @property
    def context(self) -> SpanContext:
        """The span's context."""
        return self._context

    @property
    def parent(self) -> SpanContext | None:
        """The parent's context (None for a root)."""
        return self._parent

    @property
    def kind(self) -> SpanKind:
        """Always INTERNAL."""
        return _INTERNAL

    @property
    def start_time(self) -> int:
        """Start, ns since the epoch."""
        return self._start

    @property
    def end_time(self) -> int | None:
        """End, ns since the epoch (None while open)."""
        return self._end

    @property
    def attributes(self) -> types.Attributes:
        """The attributes so far."""
        return self._attrs

    @property
    def events(self) -> Sequence[EventBase]:
        """The events so far."""
        return tuple(self._events)

    @property
    def links(self) -> Sequence[trace.Link]:
        """None: the runtime's spans have no links."""
        return ()

    @property
    def status(self) -> Status:
        """The status so far."""
        return self._status

    @property
    def resource(self) -> Resource:
        """The provider's resource."""
        return self._factory.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        """``actorflow`` and its version."""
        return self._factory.scope

    def __repr__(self) -> str:
        return f"_LightSpan(name={self._name!r}, context={self._context})"


def _now_ns() -> int:
    import time

    return time.time_ns()


class _ApiFactory:
    """Spans through ``Tracer.start_span``: for tracer providers that are not the SDK's."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def root(
        self, name: str, parent: otel_context.Context | None, attrs: dict[str, Any], start: int
    ) -> Span:
        ctx = parent if parent is not None else _EMPTY_CONTEXT
        return self.tracer.start_span(name, ctx, _INTERNAL, attrs, start_time=start)

    def child(self, name: str, parent: _Open, attrs: dict[str, Any], start: int) -> Span:
        return self.tracer.start_span(name, parent.context, _INTERNAL, attrs, start_time=start)


def _put(span: Span, key: str, value: types.AnyValue) -> None:
    """Set one of the runtime's own attributes (clean already: no cleaning on a light span)."""
    if type(span) is _LightSpan:
        if span._end is None:
            span._attrs[key] = value
    else:
        span.set_attribute(key, value)


class _StateEvent(tuple[str, int], EventBase):
    """A state change as a span event: a name and a date, no attributes.

    A tuple made by the tuple constructor alone (no ``__init__`` of its own): three of these
    per task run, each about twice cheaper than an object with attributes.
    """

    __slots__ = ()
    __init__ = object.__init__

    @property
    def name(self) -> str:
        return self[0]

    @property
    def timestamp(self) -> int:
        return self[1]

    @property
    def attributes(self) -> types.Attributes:
        return None

    @property
    def dropped_attributes(self) -> int:
        """None dropped."""
        return 0


def _state_events(span: Span, history: Sequence[StateEntry]) -> None:
    """One event per state change, at its date."""
    if type(span) is _LightSpan:
        if span._end is None:
            names = _STATE_NAMES
            span._events.extend([_StateEvent((names[e.state], int(e.date * 1e9))) for e in history])
    else:
        for e in history:
            span.add_event(e.state.value, timestamp=_ns(e.date))


# -- the observer --------------------------------------------------------------------------------
class _Open:
    """An open execution or task-run span, with the attributes its children start from."""

    __slots__ = ("_context", "child_attrs", "error_type", "label", "recording", "sampled", "sc",
                 "span", "traceparent")  # fmt: skip

    def __init__(
        self,
        span: Span,
        child_attrs: dict[str, Any],
        shared: bool = False,
        sampled: bool | None = None,
    ) -> None:
        self.span = span
        self.sc = span.get_span_context()
        self.child_attrs = child_attrs
        self.traceparent: str | None = None
        # A shared span is its parent's (not sampled): only its owner records on it or ends it.
        self.recording = not shared and (sampled or span.is_recording())
        self.sampled = _sampled(span) if sampled is None else sampled
        self.label = ""
        self.error_type: str | None = None
        self._context: otel_context.Context | None = None

    @property
    def context(self) -> otel_context.Context:
        """An OTel context with this span current: the parent of its children (made once)."""
        ctx = self._context
        if ctx is None:
            ctx = self._context = _span_context(self.span)
        return ctx


class TracingObserver(Observer):
    """Builds the span tree from the engine's state changes."""

    stores_durations = True
    sees_running = False  # spans and their state events are made from the ended record

    def __init__(
        self,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        *,
        owned: bool = False,
        flush_timeout: float | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("actorflow", _version(), tracer_provider=tracer_provider)
        self.meter = metrics.get_meter("actorflow", meter_provider=meter_provider)
        self.tracer_provider: Any = tracer_provider or trace.get_tracer_provider()
        self.meter_provider: Any = meter_provider
        # Providers this observer made itself: flushed (bounded) when the runtime closes.
        self._owned = owned
        self.flush_timeout = flush_timeout if flush_timeout is not None else _flush_timeout()
        self._spans: _Factory | _ApiFactory = (
            _Factory(self.tracer) if isinstance(self.tracer, SdkTracer) else
            _ApiFactory(self.tracer)
        )  # fmt: skip
        self._exec: dict[str, _Open] = {}
        self._runs: dict[str, _Open] = {}
        # Ended execution spans, for task runs that end after their execution (kill).
        self._ended: dict[str, _Open] = {}
        self._deferred: dict[str, dict[str, TaskRun]] = {}
        self._attempts: dict[int, Span] = {}
        self._instruments: dict[tuple[str, str], Any] = {}
        self._engine: EngineView | None = None
        self._clock: Clock | None = None

    def bind(self, engine: EngineView) -> None:
        """Called by the engine: the clock for attempt spans, storage for durations."""
        self._engine = engine
        self._clock = engine.clock

    def _now(self) -> int:
        clock = self._clock
        return int(clock.now() * 1e9) if clock is not None else _now_ns()

    @staticmethod
    def _end(entry: _Open, state: State, error: str | None, end: float) -> None:
        span = entry.span
        if entry.recording:
            _put(span, "actorflow.state", _STATE_NAMES[state])
            if state in _ERROR_STATES:
                _put(span, "error.type", entry.error_type or state.value)
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
        if entry is None:
            entry = self._open_execution(ex)
        if ex.state.terminal:
            del self._exec[ex.id]
            self._ended[ex.id] = entry
            if len(self._ended) > _KEEP_ENDED:
                del self._ended[next(iter(self._ended))]
            if entry.recording:
                _state_events(entry.span, ex.history)
            self._end(entry, ex.state, ex.error, ex.history[-1].date)

    def execution_recovered(self, ex: Execution, task_runs: Sequence[TaskRun]) -> None:
        """A runtime resumes ``ex`` after its process closed or died: open its spans now."""
        if ex.id in self._exec:
            return
        now = self._now()
        entry = self._open_execution(ex, recovered=True)
        if entry.recording:
            entry.span.add_event("recovered", timestamp=now)
        by_id = {tr.id: tr for tr in task_runs}
        for tr in task_runs:
            if not tr.state.terminal:
                run = self._open_run(tr, entry, by_id)
                attempt = tr.attempts[-1] if tr.attempts else None
                if (
                    tr.state is State.RUNNING
                    and attempt is not None
                    and attempt.end is None
                    and tr.child_execution_id is None
                ):
                    self._interrupted_attempt(run, tr, attempt.number, _ns(attempt.start), now)

    def _interrupted_attempt(self, run: _Open, tr: TaskRun, number: int, start: int,
                             end: int) -> None:  # fmt: skip
        """The span of an attempt its process died in: it ends now, failed, interrupted."""
        if not run.sampled:
            return
        attrs = run.child_attrs.copy()
        attrs["actorflow.attempt.number"] = number
        span = self._spans.child(attempt_span_name(tr, number), run, attrs, start)
        _put(span, "actorflow.state", State.FAILED.value)
        _put(span, "actorflow.interrupted", True)
        _put(span, "error.type", "interrupted")
        span.set_status(Status(StatusCode.ERROR, "interrupted"))
        span.end(end_time=end)

    def _open_execution(self, ex: Execution, recovered: bool = False) -> _Open:
        attrs: dict[str, Any] = {
            "actorflow.execution.id": ex.id,
            "actorflow.flow.id": ex.flow_id,
            "actorflow.flow.namespace": ex.namespace,
            "actorflow.flow.revision": ex.flow_revision,
        }
        if recovered:
            attrs["actorflow.recovered"] = True
        name = f"execution {ex.namespace}.{ex.flow_id}"
        start = _ns(ex.history[0].date)
        caller = self._runs.get(ex.parent_task_run_id or "")
        if caller is not None:  # a subflow's Subflow task run
            span = self._spans.child(name, caller, attrs, start)
            if span is caller.span:
                span = NonRecordingSpan(span.get_span_context())
        else:
            # Restarted here: under its previous span (the record in memory still holds the
            # caller's context; only the stored snapshot holds the execution span's).
            previous = self._ended.pop(ex.id, None)
            parent = context_of(previous.traceparent if previous is not None else ex.traceparent)
            span = self._spans.root(name, parent, attrs, start)
        child = {"actorflow.execution.id": ex.id, "actorflow.flow.id": ex.flow_id}
        entry = self._exec[ex.id] = _Open(span, child)
        entry.traceparent = traceparent_of(span) or ex.traceparent
        for tr in self._deferred.pop(ex.id, {}).values():
            self.task_run_changed(tr, None)
        return entry

    # -- task runs ------------------------------------------------------------------------
    def _open_run(self, tr: TaskRun, execution: _Open, known: Mapping[str, TaskRun]) -> _Open:
        """The span of ``tr``, its flowable parents' first (they may be seen after it)."""
        entry = self._runs.get(tr.id)
        if entry is not None:
            return entry
        parent = execution
        pid = tr.parent_task_run_id
        if pid is not None:
            found = self._runs.get(pid)
            if found is None and pid in known:
                found = self._open_run(known[pid], execution, known)
            if found is not None:
                parent = found
        if not parent.sampled:
            # Nothing is recorded under it: its children's attributes are never read.
            entry = _Open(parent.span, execution.child_attrs, True, False)
            entry._context = parent.context  # the same span current: the same context
        else:
            child = {**execution.child_attrs, "actorflow.task.id": tr.task_id,
                     "actorflow.task_run.id": tr.id}  # fmt: skip
            attrs = {**child, "actorflow.task_run.value": tr.value} if tr.value is not None else {
                **child}  # fmt: skip
            label = _label(tr)
            span = self._spans.child(f"task {label}", parent, attrs, int(tr.history[0].date * 1e9))
            entry = _Open(span, child, False, True)
            entry.label = label
        self._runs[tr.id] = entry
        return entry

    def task_run_changed(self, tr: TaskRun, ex: Execution | None) -> None:
        entry = self._runs.get(tr.id)
        if entry is None:
            execution = self._exec.get(tr.execution_id)
            if execution is None and tr.state.terminal:
                execution = self._ended.get(tr.execution_id)  # killed after its execution ended
            if execution is None:
                # Restarted: task runs change before their execution does; their spans wait
                # for the execution span (they start and end at their own dates).
                self._deferred.setdefault(tr.execution_id, {})[tr.id] = tr
                return
            entry = self._open_run(tr, execution, {})
        state = tr.state
        if state in TERMINAL:
            del self._runs[tr.id]
            span = entry.span
            end = tr.history[-1].date
            if (
                entry.recording
                and type(span) is _LightSpan
                and span._end is None
                and state not in _ERROR_STATES
            ):
                # The common case inlined: a light span that succeeded.
                names = _STATE_NAMES
                span._events.extend(
                    [_StateEvent((names[e.state], int(e.date * 1e9))) for e in tr.history]
                )
                span._attrs["actorflow.state"] = names[state]
                span._end = int(end * 1e9)
                span._factory.finish(span)
                return
            if entry.recording:
                _state_events(span, tr.history)
            self._end(entry, state, tr.error, end)

    # -- attempts ---------------------------------------------------------------------------
    def attempt_started(self, scope: AttemptScope, tr: TaskRun, number: int) -> Any:
        run = self._runs.get(tr.id)
        if run is None:
            # Not seen yet (a task run recovered by a runtime that was not told): its own
            # execution's spans first, so the attempt still nests with its attributes.
            execution = self._exec.get(tr.execution_id)
            if execution is None:
                execution = self._open_execution(scope.record)
            run = self._open_run(tr, execution, {})
        if run.sampled:
            attrs = {**run.child_attrs, "actorflow.attempt.number": number}
            attempts = tr.attempts
            start = int(attempts[-1].start * 1e9) if attempts else self._now()
            span = self._spans.child(f"{run.label} attempt {number}", run, attrs, start)
            self._attempts[id(span)] = span
            # The task run's context holds only its span: the attempt's holds only the attempt.
            ctx = _span_context(span)
        else:
            span = run.span  # not sampled: its context is the one to make current
            ctx = run.context
        # Current for the task's code: attach and detach both run in the task-run actor's task.
        token = otel_context.attach(ctx)
        return span, token, run

    def attempt_ended(self, token: Any, state: State, error: BaseException | None) -> None:
        span, ctx_token, run = token
        otel_context.detach(ctx_token)
        if self._attempts.pop(id(span), None) is None:
            return  # the task run's own (unsampled) span, or already ended by close
        now = self._now()
        if type(span) is _LightSpan and error is None and state is State.SUCCESS:
            if span._end is None:  # span.end() inlined: the common case
                span._attrs["actorflow.state"] = "SUCCESS"
                span._end = now
                span._factory.finish(span)
            return
        _put(span, "actorflow.state", _STATE_NAMES[state])
        if error is not None:
            kind = _error_type(error)
            run.error_type = kind
            _put(span, "error.type", kind)
            if isinstance(span, _LightSpan):
                span._events.append(_exception_event(error, now))
            else:
                span.record_exception(error, timestamp=now)
        elif state in _ERROR_STATES:
            _put(span, "error.type", state.value)
        if state in _ERROR_STATES:
            span.set_status(Status(StatusCode.ERROR, str(error) if error else state.value))
        span.end(end_time=now)

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
        end = self._now()
        for span in self._attempts.values():
            # A task cancelled by the closing runtime never ended it: it ends as the store
            # records the attempt, FAILED "interrupted" (the next owner makes no second one).
            _put(span, "actorflow.state", State.FAILED.value)
            _put(span, "actorflow.interrupted", True)
            _put(span, "error.type", "interrupted")
            span.set_status(Status(StatusCode.ERROR, "interrupted"))
            span.end(end_time=end)
        for entry in (*self._runs.values(), *self._exec.values()):
            if entry.recording:
                _put(entry.span, "actorflow.interrupted", True)
                entry.span.end(end_time=end)
        self._attempts.clear()
        self._runs.clear()
        self._exec.clear()
        self._ended.clear()
        self._deferred.clear()
        if self._owned:
            await flush_providers((self.tracer_provider, self.meter_provider), self.flush_timeout)


async def flush_providers(providers: Sequence[Any], timeout: float) -> bool:
    """Flush and shut down ``providers`` within ``timeout`` seconds; False if cut short.

    An exporter may wait on the network (an unreachable collector retries for many seconds):
    the work runs in a daemon thread that is left behind when the time is up, so neither the
    loop nor the process's exit waits for it longer.
    """

    def work() -> None:
        ms = max(int(timeout * 1000), 1)
        for provider in providers:
            if provider is None:
                continue
            with contextlib.suppress(Exception):
                if hasattr(provider, "force_flush"):
                    provider.force_flush(ms)
            with contextlib.suppress(Exception):
                if hasattr(provider, "shutdown"):
                    provider.shutdown()

    thread = threading.Thread(target=work, name="actorflow-otel-flush", daemon=True)
    thread.start()
    # The worker thread waits at most ``timeout``, so it never holds the process's exit.
    await anyio.to_thread.run_sync(thread.join, timeout)
    return not thread.is_alive()


def _flush_timeout() -> float:
    raw = os.environ.get(_FLUSH_TIMEOUT_VAR, "").strip()
    if not raw:
        return _DEFAULT_FLUSH_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{_FLUSH_TIMEOUT_VAR}={raw!r}: expected seconds, e.g. 1 or 0.5") from None
    if value < 0:
        raise ValueError(f"{_FLUSH_TIMEOUT_VAR}={raw!r}: must not be negative")
    return value


class ObserverGroup(Observer):
    """Several observers as one (the CLI's progress display beside tracing).

    The first one gives the trace context (snapshot, caller, log ids): put tracing first.
    """

    def __init__(self, *observers: Observer) -> None:
        self.sees_running = any(o.sees_running for o in observers)
        self.observers = observers
        self.stores_durations = any(o.stores_durations for o in observers)

    def bind(self, engine: EngineView) -> None:
        for o in self.observers:
            o.bind(engine)

    def execution_changed(self, ex: Execution) -> None:
        for o in self.observers:
            o.execution_changed(ex)

    def execution_recovered(self, ex: Execution, task_runs: Sequence[TaskRun]) -> None:
        for o in self.observers:
            o.execution_recovered(ex, task_runs)

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


# -- providers of our own ------------------------------------------------------------------------
_EXPORTERS = ("otlp", "console", "none")
_PROTOCOLS = ("http/protobuf", "grpc")


def _exporters(var: str, default: str | None) -> list[str]:
    """The exporter names ``var`` lists (``default`` when unset), checked."""
    raw = os.environ.get(var, "").strip()
    names = [n.strip().lower() for n in raw.split(",") if n.strip()] if raw else []
    if not names:
        return [default] if default else []
    bad = [n for n in names if n not in _EXPORTERS]
    if bad:
        raise ValueError(f"{var}={raw!r}: unknown exporter {bad[0]!r} (actorflow supports "
                         f"{', '.join(_EXPORTERS)})")  # fmt: skip
    return [n for n in names if n != "none"]


def _protocol(signal: str) -> str:
    var = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    raw = os.environ.get(var) or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    protocol = raw.strip().lower() or "http/protobuf"
    if protocol not in _PROTOCOLS:
        name = var if os.environ.get(var) else "OTEL_EXPORTER_OTLP_PROTOCOL"
        raise ValueError(f"{name}={raw!r}: actorflow exports OTLP over {' or '.join(_PROTOCOLS)}")
    return protocol


def _otlp_exporter(signal: str) -> Any:
    """The OTLP exporter of ``signal`` ("TRACES" / "METRICS") for the configured protocol;
    endpoint, headers, timeout, compression and certificates come from the environment."""
    protocol = _protocol(signal)
    try:
        if protocol == "grpc":
            if signal == "TRACES":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcSpans,
                )

                return GrpcSpans()
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetrics,
            )

            return GrpcMetrics()
        if signal == "TRACES":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    except ImportError as exc:
        extra = "grpc" if protocol == "grpc" else "otlp"
        raise ImportError(
            f"OTLP export over {protocol} needs the optional extra: "
            f"pip install 'actorflow[{extra}]'"
        ) from exc


def _resource() -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` / ``OTEL_SERVICE_NAME``; ``service.name`` else actorflow."""
    resource = Resource.create()
    name = str(resource.attributes.get("service.name", ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "actorflow"}))
    return resource


def own_providers(
    exporter: str | None, console: IO[str] | None = None
) -> tuple[TracerProvider, Any]:
    """An SDK tracer provider and a meter provider (None when no metric is exported).

    ``exporter`` ("otlp" / "console") is the traces' and metrics' exporter when given; else
    ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` say (``otlp`` when an OTLP endpoint is
    set and they are not).
    """
    default = exporter
    if default is None and any(os.environ.get(k) for k in _OTLP_VARS):
        default = "otlp"
    span_names = [exporter] if exporter else _exporters("OTEL_TRACES_EXPORTER", default)
    metric_names = _exporters("OTEL_METRICS_EXPORTER", default)
    resource = _resource()
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    out = console or sys.stdout
    for name in span_names:
        span_exporter: SpanExporter = (
            ConsoleSpanExporter(out=out) if name == "console" else _otlp_exporter("TRACES")
        )
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider: Any = None
    if metric_names:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )

        readers = [
            PeriodicExportingMetricReader(
                ConsoleMetricExporter(out=out) if name == "console" else _otlp_exporter("METRICS")
            )
            for name in metric_names
        ]
        meter_provider = MeterProvider(metric_readers=readers, resource=resource,
                                       shutdown_on_exit=False)  # fmt: skip
    return provider, meter_provider


def _configured_by_env() -> bool:
    return any(os.environ.get(k) for k in (*_OTLP_VARS, "OTEL_TRACES_EXPORTER"))


def tracing_observer(
    exporter: str | None = None,
    console: IO[str] | None = None,
    *,
    flush_timeout: float | None = None,
) -> TracingObserver | None:
    """Tracing for a program of its own (the CLI): into the host's provider when one is
    configured, else into providers of our own when ``exporter`` is given (``"otlp"`` or
    ``"console"``) or the environment configures one (``OTEL_TRACES_EXPORTER``,
    ``OTEL_EXPORTER_OTLP_*ENDPOINT``); None when none applies."""
    if host_configured():
        return TracingObserver()
    if exporter is not None or _configured_by_env():
        provider, meters = own_providers(exporter, console=console)
        return TracingObserver(provider, meters, owned=True, flush_timeout=flush_timeout)
    return None


def host_configured() -> bool:
    """Whether the host application set a global tracer provider of its own."""
    return not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


def make_observer(tracing: Any) -> TracingObserver | None:
    """The observer for ``Runtime.open(tracing=...)``; None when tracing stays off.

    ``None`` (the default): the host's global providers if it configured a tracer provider,
    else tracing off. ``True``: the host's providers if configured, else SDK providers of our
    own configured by the SDK's environment (see the module doc). ``"console"`` / ``"otlp"``:
    our own providers with that exporter. A ``TracerProvider`` or a :class:`Tracing`: exactly
    those providers. ``False``: off, whatever the host configured.
    """
    if tracing is None or tracing is False:
        return TracingObserver() if tracing is None and host_configured() else None
    if isinstance(tracing, Tracing):
        return TracingObserver(tracing.tracer_provider, tracing.meter_provider)
    if isinstance(tracing, trace.TracerProvider):  # the SDK's, or any other
        return TracingObserver(tracing)
    if tracing is True and host_configured():
        return TracingObserver()
    if tracing is True or tracing in ("console", "otlp"):
        provider, meters = own_providers(tracing if isinstance(tracing, str) else None)
        return TracingObserver(provider, meters, owned=True)
    raise ValueError(
        "Runtime.open(tracing=...) must be None, True, False, 'console', 'otlp', a "
        f"TracerProvider or actorflow.runtime.Tracing; got {tracing!r}"
    )
