"""Templates: what one render may cost (output, operations, time, nesting) is bounded, the
task's timeout covers rendering, and the sandbox still refuses internals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from actorflow import TemplateError
from actorflow.runtime import (
    Flow,
    Log,
    Return,
    Runtime,
    State,
    TemplateLimits,
    set_template_limits,
)
from actorflow.runtime._template import check_template, render

pytestmark = pytest.mark.anyio

# Each would take seconds to minutes, or gigabytes, without the limits.
HOSTILE = {
    "lipsum": "{{ lipsum(10**6) }}",
    "power": "{{ 10**(10**8) }}",
    "product": "{{ (2**60000) * (2**60000) }}",
    "center": "{{ 'x'|center(10**9) }}",
    "repeat_str": "{{ 'x' * 10**9 }}",
    "repeat_list": "{{ [1] * 10**9 }}",
    "percent_width": "{{ '%999999999d' % 1 }}",
    "percent_star": "{{ '%*d' % (999999999, 1) }}",
    "format_filter": "{{ '%999999999s'|format('x') }}",
    "str_format_width": "{{ '{:>999999999}'.format(1) }}",
    "str_format_nested": "{{ '{:>{w}}'.format(1, w=10**9) }}",
    "str_format_repeat": "{{ '{0}{0}{0}{0}'.format('x' * 400000) }}",
    "ljust": "{{ 'x'.ljust(10**9) }}",
    "zfill": "{{ 'x'.zfill(10**9) }}",
    "expandtabs": "{{ 'a\tb'.expandtabs(10**9) }}",
    "to_bytes": "{{ (1).to_bytes(10**9, 'big') }}",
    "indent": "{{ 'x'|indent(10**9, true) }}",
    "replace": "{{ ('x' * 100000)|replace('', 'y' * 1000) }}",
    "join": "{{ range(100000)|join('y' * 1000) }}",
    "wordwrap": "{{ ('x' * 1000)|wordwrap(1, wrapstring='y' * 10**4) }}",
    "batch": "{{ range(10)|batch(10**9, 'x')|list }}",
    "slice": "{{ range(10)|slice(10**9)|list }}",
    "tojson_indent": "{{ {'a': 1}|tojson(indent=10**9) }}",
    "concat_doubling": "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "plus_doubling": "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "nested_loops": "{% for a in range(100000) %}{% for b in range(100000) %}"
    "{% endfor %}{% endfor %}",
    "literal_in_loop": "{% for x in range(100000) %}" + "y" * 1000 + "{% endfor %}",
    "captured_block": "{% set x %}{% for i in range(100000) %}"
    + "y" * 100
    + "{% endfor %}{% endset %}{{ x|length }}",
    "exponential_macro": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}"
    "{% endmacro %}{{ f(60) }}",
    "recursive_macro": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "recursive_loop": "{% for x in [1] recursive %}{{ loop([x, x]) }}{% endfor %}",
    "parentheses": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "long_sum": "{{ 1" + "+1" * 5000 + " }}",
    "nested_ifs": "{% if 1 %}" * 200 + "{% endif %}" * 200,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_template_is_refused_with_a_template_error(name: str) -> None:
    """A template that would cost too much fails with a TemplateError naming the field."""
    with pytest.raises(TemplateError) as info:
        render(HOSTILE[name], {}, where="task 't' field 'message'")
    message = str(info.value)
    assert message.startswith("task 't' field 'message': cannot render ")
    assert "(template limit" in message or "nested too deeply" in message


def test_hostile_templates_stay_within_memory_and_cpu_bounds() -> None:
    """Every hostile template is refused in a child limited to 600 MB and 60 CPU-seconds."""
    code = textwrap.dedent(
        """
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (600 << 20, 600 << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
        from actorflow import TemplateError
        from actorflow.runtime._template import render
        out = {}
        for name, text in json.loads(sys.stdin.read()).items():
            try:
                render(text, {}, where="f")
                out[name] = "rendered"
            except TemplateError:
                out[name] = "refused"
        print(json.dumps(out))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(HOSTILE),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == dict.fromkeys(HOSTILE, "refused")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ 'x'|center(9) }}", "    x    "),
        ("{{ 'ab' * 3 }}", "ababab"),
        ("{{ [1, 2] * 2 }}", [1, 2, 1, 2]),
        ("{{ 2 ** 10 }}", 1024),
        ("{{ 'a%sb' % 'x' }}", "axb"),
        ("{{ '%05d'|format(42) }}", "00042"),
        ("{{ '{:>5}'.format(1) }}", "    1"),
        ("{{ '{0}-{0}'.format_map({'0': 'z'}) if false else 'ok' }}", "ok"),
        ("{{ [[1], [2]]|sum(start=[]) }}", [1, 2]),
        ("{{ range(5)|sum }}", 10),
        ("{{ 'a' ~ 1 ~ none }}", "a1None"),
        (
            "{% for i in range(3) %}{{ loop.index }}{{ '' if loop.last else ',' }}{% endfor %}",
            "1,2,3",
        ),
        (
            "{% for x in [[1, [2]]] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}"
            "{{ x }}{% endif %}{% endfor %}",
            "12",
        ),
        ("{{ lipsum(2, false, 5, 10)|wordcount > 5 }}", True),
        ("{{ 'x' * 1000000 }}", "x" * 1_000_000),
        ("{{ ' '.join(['a', 'b']) }}", "a b"),
        ("{{ 'a-b'.replace('-', '+') }}", "a+b"),
        ("{{ inputs.xs|join(',') }}", "1,2"),
        ("{{ 'x'|indent(2, true) }}", "  x"),
    ],
)
def test_ordinary_templates_render_as_before(text: str, expected: Any) -> None:
    """The limits leave everyday templates alone (same values, same types)."""
    assert render(text, {"inputs": {"xs": [1, 2]}}) == expected


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__dict__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ ''.format.__self__.__class__ }}",
        "{{ '{0.__class__}'.format('') }}",
        "{{ (1).__class__.__subclasses__() }}",
        "{{ inputs.xs.append(3) }}",
    ],
)
def test_sandbox_still_refuses_internals(text: str) -> None:
    """Classic sandbox escapes still fail with a TemplateError."""
    with pytest.raises(TemplateError, match=r"unsafe|not safely callable|undefined"):
        render(text, {"inputs": {"xs": [1, 2]}}, where="f")


@pytest.fixture
def limits() -> Iterator[None]:
    previous = set_template_limits(TemplateLimits())
    yield
    set_template_limits(previous)


def test_limits_are_configurable(limits: None) -> None:
    """set_template_limits changes the bounds of every later render."""
    set_template_limits(TemplateLimits(max_output=10, max_ops=100))
    assert render("{{ 'x' * 10 }}", {}) == "x" * 10
    with pytest.raises(TemplateError, match="max_output"):
        render("{{ 'x' * 11 }}", {}, where="f")
    with pytest.raises(TemplateError, match="max_output"):
        render("{% for i in range(11) %}x{% endfor %}", {}, where="f")
    with pytest.raises(TemplateError, match="max_ops"):
        render("{% for i in range(1000) %}{% endfor %}", {}, where="f")
    with pytest.raises(ValueError, match="max_output"):
        TemplateLimits(max_output=0)


def test_one_budget_covers_every_field_of_a_value(limits: None) -> None:
    """Rendering a mapping shares one budget: many small fields cannot add up unbounded."""
    set_template_limits(TemplateLimits(max_output=100))
    value = {f"k{i}": "{{ 'x' * 30 }}" for i in range(3)}
    assert render(value, {}) == {f"k{i}": "x" * 30 for i in range(3)}
    value["k3"] = "{{ 'x' * 30 }}"
    with pytest.raises(TemplateError, match=r"^w\.k3: .*max_output"):
        render(value, {}, where="w")


def test_check_template_reports_syntax_and_nesting() -> None:
    """The loader's syntax check: simple templates pass, errors and deep nesting are named."""
    assert check_template("hello {{ inputs.name | upper }} {{ outputs.a.value[0] }}") is None
    assert check_template("{% for x in y %}{{ x }}{% endfor %}") is None
    assert check_template("{{ 1 + }}") is not None
    assert "nested too deeply" in (check_template("{{ " + "(" * 5000 + " }}") or "")


async def test_timeout_covers_rendering(rt: Runtime, limits: None) -> None:
    """A task whose template would render past its timeout fails by that timeout."""
    set_template_limits(TemplateLimits(max_seconds=3600, max_ops=10**12))
    slow = "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(80) }}"
    flow = Flow(id="slow-template", tasks=[Log(id="log", message=slow, timeout=0.2)])
    ex = await rt.run(flow)
    assert ex.state is State.FAILED
    assert "Timeout after 0.2s" in (ex.task_run("log").error or "")


async def test_runtime_keeps_running_other_executions(rt: Runtime) -> None:
    """A refused template fails its own task run; the next execution runs normally."""
    bad = Flow(id="bad", tasks=[Return(id="r", value="{{ 'x'|center(10**9) }}")])
    ex = await rt.run(bad)
    assert ex.state is State.FAILED
    assert "field 'value'" in (ex.task_run("r").error or "")
    assert "max_output" in (ex.task_run("r").error or "")
    good = Flow(id="good", tasks=[Return(id="r", value="{{ 6 * 7 }}")])
    ex = await rt.run(good)
    assert ex.state is State.SUCCESS
    assert ex.task_run("r").outputs == {"value": 42}


async def test_render_in_a_worker_thread_is_bounded_too() -> None:
    """A render outside the event loop (a sync task's thread) has the same limits."""
    with pytest.raises(TemplateError, match="max_output"):
        await anyio.to_thread.run_sync(lambda: render("{{ 'x' * 10**9 }}", {}, where="f"))
