"""Subflows of a flow file are found lazily: only the files that may hold a called flow are
parsed, transitively; broken or hostile neighbours that are not needed are never read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actorflow.flows import _loader, load_flow, load_subflows

CALLER = """
id: main
namespace: team
tasks:
  - id: call
    type: subflow
    flow_id: child
"""


def _flow(flow_id: str, calls: str | None = None, namespace: str = "team") -> str:
    task = (
        f"  - {{id: call, type: subflow, flow_id: {calls}}}\n"
        if calls
        else "  - {id: hi, type: log, message: hi}\n"
    )
    return f"id: {flow_id}\nnamespace: {namespace}\ntasks:\n{task}"


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the loader parses."""
    seen: list[str] = []
    real = _loader.load_flow

    def spy(path: object, **kw: object) -> object:
        seen.append(Path(str(path)).name)
        return real(path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_loader, "load_flow", spy)
    return seen


def test_only_the_called_flow_is_parsed(tmp_path: Path, parsed: list[str]) -> None:
    """Broken, hostile and unrelated neighbours are not parsed; the subflow is found."""
    (tmp_path / "main.yaml").write_text(CALLER)
    (tmp_path / "child.yaml").write_text(_flow("child"))
    (tmp_path / "other.yaml").write_text(_flow("other"))
    (tmp_path / "broken.yaml").write_text("id: broken\ntasks: [unclosed\n")
    laughs = "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 10)}]\n" for i in range(12)
    )
    (tmp_path / "laughs.yaml").write_text("id: laughs\n" + laughs + "tasks: *l11\n")
    (tmp_path / "huge.yaml").write_text("id: huge\n" + "#" * (20 << 20) + "\n")
    main = load_flow(tmp_path / "main.yaml")
    parsed.clear()
    found, failures = load_subflows(main, [tmp_path])
    assert [(f.namespace, f.id) for f in found] == [("team", "child")]
    assert failures == []
    assert parsed == ["child.yaml"]


def test_subflows_are_resolved_transitively(tmp_path: Path, parsed: list[str]) -> None:
    """main -> a -> b: both are found, from files named after something else too."""
    (tmp_path / "main.yaml").write_text(CALLER.replace("child", "a"))
    (tmp_path / "first.yaml").write_text(_flow("a", calls="b"))
    (tmp_path / "second.yaml").write_text(_flow("b"))
    (tmp_path / "third.yaml").write_text(_flow("c"))
    found, failures = load_subflows(load_flow(tmp_path / "main.yaml"), [tmp_path])
    assert sorted(f.id for f in found) == ["a", "b"]
    assert failures == []
    assert "third.yaml" not in parsed


def test_namespace_and_file_name_pick_the_candidate(tmp_path: Path, parsed: list[str]) -> None:
    """A flow with the same id in another namespace is not taken for the subflow."""
    (tmp_path / "main.yaml").write_text(CALLER)
    (tmp_path / "child.yaml").write_text(_flow("child", namespace="elsewhere"))
    (tmp_path / "z_child.yaml").write_text(_flow("child"))
    found, _ = load_subflows(load_flow(tmp_path / "main.yaml"), [tmp_path])
    assert [(f.namespace, f.id) for f in found] == [("team", "child")]
    assert "child.yaml" not in parsed


def test_a_file_that_does_not_say_its_id_is_read_last(tmp_path: Path, parsed: list[str]) -> None:
    """A JSON (or flow-style) file is parsed only when no file declares the wanted id."""
    (tmp_path / "main.yaml").write_text(CALLER)
    flow = {
        "id": "child",
        "namespace": "team",
        "tasks": [{"id": "t", "type": "log", "message": "x"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(flow))
    (tmp_path / "b.json").write_text(json.dumps({**flow, "id": "unrelated"}))
    found, failures = load_subflows(load_flow(tmp_path / "main.yaml"), [tmp_path])
    assert [f.id for f in found] == ["child"]
    assert failures == []
    assert "b.json" not in parsed


def test_a_broken_candidate_is_reported(tmp_path: Path) -> None:
    """A file that declares the wanted id but does not load is returned as a failure."""
    (tmp_path / "main.yaml").write_text(CALLER)
    (tmp_path / "child.yaml").write_text("id: child\nnamespace: team\ntasks: [{id: x}]\n")
    found, failures = load_subflows(load_flow(tmp_path / "main.yaml"), [tmp_path])
    assert found == []
    (failure,) = failures
    assert failure.problems[0].file == str(tmp_path / "child.yaml")
