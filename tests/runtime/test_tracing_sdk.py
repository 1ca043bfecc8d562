"""Tracing's shortcuts into the OpenTelemetry SDK: what they rely on, and that they change
nothing a processor, a sampler or an id generator sees."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext

import actorflow as af
from actorflow.runtime import Runtime, State
from actorflow.runtime._tracing import _SPAN_KEY, _span_context, inner_processors

pytestmark = pytest.mark.anyio


@af.task
async def step(ctx: af.TaskContext, fail_first: bool = False) -> None:
    if fail_first and ctx.attempt == 1:
        raise ConnectionError("flaky")


def test_the_sdk_still_lists_a_providers_processors_where_tracing_reads_them() -> None:
    """The private SynchronousMultiSpanProcessor._span_processors tracing reads is still the
    tuple of the provider's processors, in the order added, replaced when one is added (if this
    fails, the SDK changed it: on_start would then be called for every processor, slower)."""
    provider = TracerProvider()
    first = SimpleSpanProcessor(InMemorySpanExporter())
    second = BatchSpanProcessor(InMemorySpanExporter())
    multi = provider.get_tracer("t").span_processor  # type: ignore[attr-defined]
    assert inner_processors(multi) == ()
    provider.add_span_processor(first)
    seen = inner_processors(multi)
    assert seen == (first,)
    provider.add_span_processor(second)
    again: Any = inner_processors(multi)
    assert again == (first, second) and again is not seen
    assert inner_processors(object()) is None
    provider.shutdown()


def test_a_one_entry_context_holds_the_current_span() -> None:
    """The current-span key is found, and a context made of it alone is one the API reads."""
    assert _SPAN_KEY is not None
    span = NonRecordingSpan(SpanContext(5, 6, False))
    ctx = _span_context(span)
    assert trace.get_current_span(ctx) is span
    assert dict(trace.set_span_in_context(span, Context())) == dict(ctx)


class _Starts(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class _NoisySimple(SimpleSpanProcessor):
    """An SDK processor subclass that does something in on_start."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        super().__init__(exporter)
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)


async def test_a_processor_added_while_running_hears_later_starts_and_ends() -> None:
    """With only the SDK's batch processor on_start is skipped; a processor the host adds
    afterwards gets on_start and on_end of every span that starts after, task runs and
    attempts included, and the batch processor still gets every span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    late = _Starts()
    async with Runtime.open(":memory:", tracing=provider) as rt:
        first = await rt.run(af.Flow(id="before", tasks=[step("a")]))
        provider.add_span_processor(late)
        retry = af.Retry.constant(0, max_attempts=2)
        flaky = step.with_options(retry=retry)("b", fail_first=True)
        second = await rt.run(af.Flow(id="after", tasks=[flaky]))
    provider.force_flush()
    assert first.state is State.SUCCESS and second.state is State.SUCCESS
    names = ["execution default.after", "task b", "b attempt 1", "b attempt 2"]
    assert late.started == names
    assert sorted(s.name for s in late.ended) == sorted(names)
    exported = sorted(s.name for s in exporter.get_finished_spans())
    assert exported == sorted(["execution default.before", "task a", "a attempt 1", *names])
    provider.shutdown()


async def test_a_subclass_of_an_sdk_processor_with_its_own_on_start_gets_it() -> None:
    """A subclass of SimpleSpanProcessor that overrides on_start hears every span start."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    noisy = _NoisySimple(exporter)
    provider.add_span_processor(noisy)
    async with Runtime.open(":memory:", tracing=provider) as rt:
        await rt.run(af.Flow(id="n", tasks=[step("a"), step("b")]))
    assert noisy.started == [
        "execution default.n",
        "task a",
        "a attempt 1",
        "task b",
        "b attempt 1",
    ]
    assert len(exporter.get_finished_spans()) == 5
    provider.shutdown()


class _Counting(IdGenerator):
    """Span ids 1, 2, 3...; a fixed trace id."""

    def __init__(self) -> None:
        self.next = 0

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        return 0xABC


async def test_span_ids_come_from_the_providers_id_generator() -> None:
    """A provider's own id generator makes every span id and the trace id; the default one
    gives distinct valid ids."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=_Counting())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Runtime.open(":memory:", tracing=provider) as rt:
        await rt.run(af.Flow(id="ids", tasks=[step("a"), step("b")]))
    spans = exporter.get_finished_spans()
    assert sorted(s.context.span_id for s in spans if s.context) == [1, 2, 3, 4, 5]
    assert {s.context.trace_id for s in spans if s.context} == {0xABC}

    exporter = InMemorySpanExporter()
    default = TracerProvider()
    default.add_span_processor(SimpleSpanProcessor(exporter))
    async with Runtime.open(":memory:", tracing=default) as rt:
        await rt.run(af.Flow(id="ids", tasks=[step(f"t{i}") for i in range(20)]))
    ids = [s.context.span_id for s in exporter.get_finished_spans() if s.context]
    assert len(ids) == 41 and len(set(ids)) == 41 and all(0 < i < 2**64 for i in ids)
    provider.shutdown()
    default.shutdown()


async def test_a_ratio_sampler_keeps_whole_executions_or_nothing() -> None:
    """Under a parent-based ratio sampler each execution is recorded whole (execution, task
    runs and attempts) or not at all, as the sampler decides on its trace id."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Runtime.open(":memory:", tracing=provider) as rt:
        runs = [await rt.run(af.Flow(id="r", tasks=[step("a"), step("b")])) for _ in range(40)]
    by_execution: dict[str, list[ReadableSpan]] = {}
    for s in exporter.get_finished_spans():
        by_execution.setdefault(str((s.attributes or {})["actorflow.execution.id"]), []).append(s)
    assert 0 < len(by_execution) < len(runs)  # 40 executions at 0.5: both kinds, surely
    for spans in by_execution.values():
        assert len(spans) == 5 and len({s.context.trace_id for s in spans if s.context}) == 1
    provider.shutdown()
