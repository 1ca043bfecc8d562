"""Loading flow files: hostile YAML (aliases, nesting, size) is refused within memory and CPU
bounds, and ordinary YAML features (anchors, merge keys, tags) keep working."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actorflow import FlowValidationError
from actorflow.flows import LoadLimits, load_flow, load_flow_text
from actorflow.runtime import Return

GOLDEN = Path(__file__).parent / "golden"

# Run in a child limited in memory and CPU time: without the limits each of these took
# gigabytes or minutes (or never ended).
_CHILD = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (700 << 20, 700 << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (40, 40))
    from actorflow.cli import main
    sys.exit(main(["validate", *sys.argv[1:]]))
    """
)


def _hostile_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Hostile files too big to keep in the repository, with what their error must say."""
    files: dict[str, tuple[str, str]] = {
        # Ten levels of ten: 10**10 values from 600 bytes.
        "laughs": (
            "id: lol\n"
            + "".join(
                f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 10)}]\n"
                for i in range(10)
            )
            + "tasks: [{id: t, type: return, value: *l9}]\n",
            "load limit max_nodes",
        ),
        "recursive": ("id: r\ntasks: &x [*x]\n", "recursive alias"),
        "flow_nesting": (
            "id: n\ntasks: [{id: t, type: return, value: " + "[" * 100_000 + "]" * 100_000
            + "}]\n",
            "nest",
        ),
        "block_nesting": (
            "id: n\nx:\n" + "".join("  " * (i + 1) + "k:\n" for i in range(3000)),
            "load limit max_depth",
        ),
        "huge": (
            "id: big\ntasks:\n  - id: t\n    type: log\n    message: " + "x" * (17 << 20) + "\n",
            "load limit max_bytes",
        ),
        "template_parens": (
            'id: p\ntasks: [{id: t, type: log, message: "{{ ' + "(" * 100_000 + " }}\"}]\n",
            "nested too deeply",
        ),
    }  # fmt: skip
    out: dict[str, tuple[Path, str]] = {}
    for name, (text, expected) in files.items():
        path = tmp / f"{name}.yaml"
        path.write_text(text)
        out[name] = (path, expected)
    return out


def test_hostile_files_are_refused_within_memory_and_cpu_bounds(tmp_path: Path) -> None:
    """Each hostile file gets a clear error (exit 2, no traceback) from ``actorflow validate``
    in a child limited to 700 MB of address space and 40 CPU-seconds for all of them."""
    cases = _hostile_files(tmp_path)
    for name in ("23_billion_laughs", "24_recursive_alias", "26_deep_nesting",
                 "27_deep_alias_nesting", "28_template_nesting"):  # fmt: skip
        cases[name] = (GOLDEN / f"{name}.yaml", "")
    paths = [str(path) for path, _ in cases.values()]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *paths], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    reports = proc.stderr.split(" problem(s) in flow:")[1:]
    assert len(reports) == len(cases), proc.stderr[-3000:]
    for (path, expected), report in zip(cases.values(), reports, strict=True):
        assert f"{path}:" in report, report[-500:]
        assert expected in report, report[-500:]


def test_a_large_ordinary_flow_loads_within_memory_and_cpu_bounds(tmp_path: Path) -> None:
    """10,000 tasks load in a child limited to 500 MB and 60 CPU-seconds."""
    path = tmp_path / "big.yaml"
    lines = ["id: big", "tasks:"]
    lines += [f"  - {{id: t{i}, type: log, message: 'hi {{{{ inputs.x }}}} {i}'}}"
              for i in range(10_000)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    code = _CHILD.replace("700 << 20", "500 << 20").replace("(40, 40)", "(60, 60)")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_limits_are_configurable() -> None:
    """LoadLimits given to the loader replace the defaults."""
    text = "id: f\ntasks: [{id: t, type: return, value: [[[1]]]}]\n"
    assert load_flow_text(text).task("t") == Return(id="t", value=[[[1]]], null_text=True)
    with pytest.raises(FlowValidationError, match="more than 4 levels deep"):
        load_flow_text(text, limits=LoadLimits(max_depth=4))
    with pytest.raises(FlowValidationError, match="more than 10 values"):
        load_flow_text(text, limits=LoadLimits(max_nodes=10))
    with pytest.raises(FlowValidationError, match="more than 20 "):
        load_flow_text(text, limits=LoadLimits(max_bytes=20))


def test_file_size_is_checked_before_reading(tmp_path: Path) -> None:
    """A file over max_bytes is refused from its size, naming the file."""
    path = tmp_path / "f.yaml"
    path.write_text("id: f\ntasks: [{id: t, type: log, message: hi}]\n" + "#" * 100)
    with pytest.raises(FlowValidationError) as info:
        load_flow(path, limits=LoadLimits(max_bytes=100))
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert "bytes, more than 100 (load limit max_bytes)" in problem.message


def test_anchors_aliases_and_merge_keys_still_work() -> None:
    """Anchors, aliases and merge keys (<<, also a list of mappings) behave as with PyYAML."""
    flow = load_flow_text(
        "id: anchors\n"
        "tasks:\n"
        "  - &t {id: a, type: log, message: &m base, allowFailure: true}\n"
        "  - <<: *t\n"
        "    id: b\n"
        "  - <<: [{message: first}, *t]\n"
        "    id: c\n"
        "  - {id: d, type: log, message: *m}\n"
    )
    a, b, c, d = (flow.task(i) for i in "abcd")
    assert (a.message, a.allow_failure) == ("base", True)  # type: ignore[attr-defined]
    assert (b.message, b.allow_failure) == ("base", True)  # type: ignore[attr-defined]
    assert (c.message, c.allow_failure) == ("first", True)  # type: ignore[attr-defined]
    assert d.message == "base"  # type: ignore[attr-defined]


def test_merged_keys_point_at_their_anchor() -> None:
    """A bad key brought in by a merge is reported at the line where it is written."""
    text = "id: m\nbase: &b {type: log, message: hi, bogus: 1}\ntasks:\n  - <<: *b\n    id: a\n"
    with pytest.raises(FlowValidationError) as info:
        load_flow_text(text, path="m.yaml")
    problems = [(p.line, p.field) for p in info.value.problems]
    assert (2, "tasks[0].bogus") in problems


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: a\nx: &a 1\ny: &a 2\ntasks: []\n", "duplicate anchor 'a'"),
        ("id: a\ntasks: *nope\n", "undefined alias 'nope'"),
        ("id: a\ntasks: []\n---\nid: b\n", "expected a single document"),
        ("id: a\nx: !custom [1]\ntasks: []\n", "could not determine a constructor"),
        (
            "id: a\nx: !!python/object:os.system {}\ntasks: []\n",
            "could not determine a constructor",
        ),
        ("id: a\n? [1]\n: 2\ntasks: []\n", "unhashable key"),
        ("id: a\nx: {<<: 1}\ntasks: []\n", "mapping or list of mappings for merging"),
    ],
)
def test_yaml_errors_are_clear(text: str, message: str) -> None:
    """Malformed YAML constructs give an 'invalid YAML' problem with a line."""
    with pytest.raises(FlowValidationError) as info:
        load_flow_text(text, path="y.yaml")
    (problem,) = info.value.problems
    assert message in problem.message
    assert problem.message.startswith("invalid YAML")
    assert problem.line is not None


def test_yaml_tags_and_scalars_are_constructed_as_before() -> None:
    """Sets, ordered maps, timestamps, booleans and numbers come out as PyYAML makes them."""
    text = textwrap.dedent(
        """
        id: tags
        tasks:
          - id: t
            type: return
            value:
              set: !!set {a: null}
              omap: !!omap [{x: 1}, {y: 2}]
              when: 2024-01-02
              flags: [yes, no, true, ~, 0x1F, 1_000, .5, "01"]
        """
    )
    value = load_flow_text(text).task("t").value  # type: ignore[attr-defined]
    assert value["set"] == {"a"}
    assert value["omap"] == [("x", 1), ("y", 2)]
    assert str(value["when"]) == "2024-01-02"
    assert value["flags"] == [True, False, True, None, 31, 1000, 0.5, "01"]


def test_empty_file_is_a_clear_problem() -> None:
    """An empty file is refused as not being a mapping."""
    with pytest.raises(FlowValidationError, match="must be a mapping with id and tasks, got null"):
        load_flow_text("", path="e.yaml")
