"""Pebble read by the Jinja sandbox: the translation of Pebble-only syntax, Pebble's printing,
Kestra's filters/tests/functions, and the sandbox's guarantees kept for all of them."""

from __future__ import annotations

from typing import Any

import pytest

from actorflow._errors import TemplateError
from actorflow.runtime import TemplateLimits, check_template, render, set_template_limits
from actorflow.runtime._pebble import java_format, translate

V: dict[str, Any] = {
    "inputs": {"a": None, "n": 2, "s": "value 2", "t": "{{ inputs.n }}"},
    "outputs": {"vals": {"values": {"who": "me"}}, "list": [1, 2]},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ inputs.missing ?? 'x' }}", "x"),
        ("{{ inputs.a ?? 'null-too' }}", "null-too"),
        ("{{ outputs.no.such.path[0] ?? 1 }}", 1),
        ("{{ inputs.n ?? undefined_is_never_read }}", 2),
        ("{{ inputs.missing ?? inputs.other ?? 'third' }}", "third"),
        ("{{ (inputs.a ?? 'N') == 'N' ? 'yes' : undefined_is_never_read }}", "yes"),
        ("{{ inputs.n > 1 ? inputs.n > 5 ? 'big' : 'mid' : 'small' }}", "mid"),
        ("{{ [inputs.n == 2 ? 'a' : 'b', 'c'] | join('') }}", "ac"),
        ("{{ {'k': inputs.n == 2 ? 1 : 0} | toJson }}", '{"k":1}'),
        ("{{ inputs.s equals 'value 2' }}", True),
        ("{{ inputs.s contains 'lue' }}", True),
        ("{{ outputs.list contains 3 }}", False),
        ("{{ 'a ? b : c' }}", "a ? b : c"),
        ("{% if inputs.a ?? true %}on{% endif %}", "on"),
        ("{% set x = inputs.missing ?? 'd' %}{{ x }}", "d"),
        ("{{ outputs.vals.values.who }}", "me"),
    ],
)
def test_pebble_syntax(text: str, expected: Any) -> None:
    """Pebble-only operators mean what they mean in Pebble (lazy where Pebble is lazy)."""
    assert check_template(text) is None
    assert render(text, V) == expected


def test_text_without_pebble_syntax_is_untouched() -> None:
    """The translation costs nothing and changes nothing without Pebble-only syntax."""
    text = "{{ a.b | upper }} and {% for x in y %}{{ x }}{% endfor %}"
    assert translate(text) is text


def test_values_print_as_pebble_prints_them() -> None:
    """true/false, null as nothing, JSON for collections (a single expression keeps its type)."""
    variables = {"t": True, "f": False, "n": None, "m": {"a": [1, None]}}
    assert render("{{ t }} {{ f }} [{{ n }}] {{ m }}", variables) == 'true false [] {"a":[1,null]}'
    assert render("{{ t }}", variables) is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ '2024-03-05T06:07:08.009Z' | date('yyyy-MM-dd HH:mm:ss.SSS') }}",
         "2024-03-05 06:07:08.009"),
        ("{{ 0 | date('d/M/yy h a') }}", "1/1/70 12 AM"),
        ("{{ '2024-03-05T00:00:00Z' | date('iso_date') }}", "2024-03-05"),
        ("{{ '2024-03-05T10:00:00Z' | date('HH:mm', timeZone='Europe/Paris') }}", "11:00"),
        ("{{ '2024-03-05' | dateAdd(-1, 'DAYS') }}", "2024-03-04T00:00:00Z"),
        ("{{ '1970-01-02T00:00:00Z' | timestamp }}", 86400),
        # ``}}`` inside makes it text, not a single expression: printed.
        ("{{ {'a': {'b': [1, 2]}} | jq('.a.b[1]') | first }}", "2"),
        ("{{ '{\"a\": [{\"k\": 1}, {\"k\": 2}]}' | jq('.a[] | .k') }}", [1, 2]),
        ("{{ {'b': 1, 'a': 2} | jq('keys') | first }}", ["a", "b"]),
        ("{{ 'Héllo, Wörld!' | slugify }}", "hello-world"),
        ("{{ {'x': 1, 'y': 2} | keys }}", ["x", "y"]),
        ("{{ {'x': 1, 'y': 2} | values }}", [1, 2]),
        ("{{ json('[1, 2]') | length }}", 2),
        ("{{ fromJson('{\"a\": {\"b\": 3}}').a.b }}", "3"),
        ("{{ 'a,b' | split(',') }}", ["a", "b"]),
        ("{{ 'abcdefgh' | abbreviate(6) }}", "abc..."),
        ("{{ 'hi' | base64encode | base64decode }}", "hi"),
        ("{{ '' | default('d') }} {{ none | default('n') }}", "d n"),
        ("{{ '[1]' is json }} {{ 'no' is json }} {{ null is null }} {{ '' is empty }}",
         "true false true true"),
        ("{{ 'a: [1, 2]' | yaml }}", {"a": [1, 2]}),
        ("{{ render(inputs.t) }}", 2),
    ],
)  # fmt: skip
def test_kestra_filters_tests_functions(text: str, expected: Any) -> None:
    """Kestra's core filters, tests and functions give what its documentation shows."""
    assert render(text, V) == expected


def test_secret_reads_base64_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """secret('name') reads SECRET_NAME, base64 (Kestra OSS); a missing one names the variable."""
    monkeypatch.setenv("SECRET_DB_PASSWORD", "aHVudGVyMg==")
    assert render("{{ secret('db_password') }}", {}) == "hunter2"
    with pytest.raises(TemplateError, match="SECRET_NOPE"):
        render("{{ secret('nope') }}", {})


def test_java_date_patterns() -> None:
    """Java DateTimeFormatter patterns become strftime formats (quoted text kept)."""
    assert java_format("yyyy-MM-dd'T'HH:mm") == "%Y-%m-%dT%H:%M"
    assert java_format("EEEE d MMMM") == "%A %-d %B"


def test_unsupported_jq_is_a_clear_error() -> None:
    """Outside the minimal jq, the error says so instead of guessing."""
    with pytest.raises(TemplateError, match="minimal jq"):
        render("{{ {'a': 1} | jq('map(.+1)') }}", {})


@pytest.mark.parametrize(
    "text",
    [
        "{{ af_soft(inputs)._env }}",
        "{{ af_soft(inputs)._v }}",
        "{{ (inputs.missing ?? inputs).__class__ }}",
        "{{ (inputs ?? 1).items.__globals__ }}",
    ],
)
def test_sandbox_holds_for_the_translation(text: str) -> None:
    """What ``??`` is built from gives no way to internals: the sandbox still refuses."""
    with pytest.raises(TemplateError):
        render(text, V)


def test_filters_count_against_the_output_budget() -> None:
    """A Kestra filter's result counts against max_output before it is kept."""
    previous = set_template_limits(TemplateLimits(max_output=10_000))
    try:
        with pytest.raises(TemplateError, match="max_output"):
            render("{{ range(5000) | list | toJson }}", {})
        with pytest.raises(TemplateError, match="max_output"):
            render("{{ range(20000) | list | jq('.[]') | length }}", {})
    finally:
        set_template_limits(previous)
