"""The house rules: which room of ``actorflow`` may import which, checked on the source tree.

Every import counts: module level, inside functions, under ``TYPE_CHECKING``, and the string
given to ``importlib.import_module``, so a lazy import cannot hide an arrow that points up.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Bottom up: each room may import the rooms listed for it (and ``actorflow._errors``).
ALLOWED: dict[str, frozenset[str]] = {
    "actors": frozenset(),
    "storage": frozenset(),
    "runtime": frozenset({"actors", "storage"}),
    "flows": frozenset({"runtime", "storage", "actors"}),
    "cli": frozenset({"runtime", "flows", "storage", "actors"}),
    "server": frozenset({"runtime", "flows", "storage", "actors"}),
    "web": frozenset({"runtime", "flows", "storage", "actors"}),
}
#: Faces: the only rooms that may import each other (later: server, web).
FACES = frozenset({"cli", "server", "web"})
#: Rooms whose private modules other rooms may not reach into (their package is the API).
SEALED = frozenset({"actors", "storage", "runtime", "flows"})
#: Runtime modules that make the engine's model: they never import the engine or the facade.
RUNTIME_MODEL = frozenset(
    {"_clock", "_context", "_flow", "_observer", "_records", "_retry", "_states", "_tasks",
     "_template", "_tracing"}
)  # fmt: skip
RUNTIME_ABOVE_MODEL = ("actorflow.runtime._core", "actorflow.runtime._runtime")
#: Known exceptions, each with its reason.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("actorflow.runtime", "actorflow.flows"): (
        "deprecated aliases of names that moved to actorflow.flows, resolved on first access"
    ),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str) -> Iterator[str]:
    """Every module ``path`` (module ``name``) imports, lazily or not."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            yield mod
            for alias in node.names:  # `from actorflow.runtime import _core` names a module
                yield f"{mod}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def source_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the ``actorflow`` modules (or names) it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / "actorflow").rglob("*.py")):
        name = module_name(path, root)
        graph[name] = {m for m in imports_of(path, name) if m.split(".")[0] == "actorflow"}
    return graph


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and not parts[1].startswith("_") else None


def violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Every import in ``graph`` that breaks a house rule, as a readable line."""
    found: list[str] = []
    for mod, targets in sorted(graph.items()):
        src = room(mod)
        for target in sorted(targets):
            dst = room(target)
            if src is None or dst is None:  # the package facade, actorflow._errors
                continue
            if src == dst:
                found.extend(_runtime_rule(mod, target) if src == "runtime" else ())
                continue
            if (mod, ".".join(target.split(".")[:2])) in EXCEPTIONS:
                continue
            if dst in FACES and src not in FACES:
                found.append(f"{mod} imports {target}: only faces import faces")
            elif dst not in ALLOWED.get(src, frozenset()) and src not in FACES:
                found.append(f"{mod} imports {target}: {src} may not import {dst}")
            elif dst in SEALED and target.split(".")[2:3] and target.split(".")[2].startswith("_"):
                found.append(
                    f"{mod} imports {target}: use actorflow.{dst}, not its private modules"
                )
    return found


def _runtime_rule(mod: str, target: str) -> list[str]:
    parts = mod.split(".")
    if len(parts) == 3 and parts[2] in RUNTIME_MODEL and target.startswith(RUNTIME_ABOVE_MODEL):
        return [f"{mod} imports {target}: the runtime's model never imports the engine"]
    return []


def test_the_source_tree_follows_the_house_rules() -> None:
    """No module of actorflow imports a room above its own, a face, or a private module of
    another room; the runtime's model modules never import its engine."""
    graph = source_graph()
    assert "actorflow.runtime._core._engine" in graph and "actorflow.cli._cli" in graph
    assert violations(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"actorflow.storage._sqlite": {"actorflow.runtime"}}, "storage may not import runtime"),
        ({"actorflow.actors._ref": {"actorflow.storage._rows"}}, "actors may not import storage"),
        (
            {"actorflow.runtime._runtime": {"actorflow.flows._loader"}},
            "runtime may not import flows",
        ),
        ({"actorflow.runtime._core._engine": {"actorflow.cli"}}, "only faces import faces"),
        ({"actorflow.flows._loader": {"actorflow.cli._display"}}, "only faces import faces"),
        (
            {"actorflow.flows._loader": {"actorflow.runtime._core._engine"}},
            "not its private modules",
        ),
        (
            {"actorflow.runtime._tasks": {"actorflow.runtime._core._engine"}},
            "never imports the engine",
        ),
        (
            {"actorflow.runtime._context": {"actorflow.runtime._runtime"}},
            "never imports the engine",
        ),
    ],
)
def test_a_violation_is_reported(graph: dict[str, set[str]], expected: str) -> None:
    """An arrow that points the wrong way, in a synthetic graph, is reported with its rule."""
    found = violations(graph)
    assert len(found) == 1 and expected in found[0], found


def test_lazy_and_type_checking_imports_count(tmp_path: Path) -> None:
    """Imports inside functions, under TYPE_CHECKING and through importlib are all seen."""
    pkg = tmp_path / "actorflow" / "storage"
    pkg.mkdir(parents=True)
    (tmp_path / "actorflow" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "_x.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "if TYPE_CHECKING:\n    from actorflow.runtime import Flow\n"
        "def f():\n    from actorflow.flows import load_flow\n"
        "    return importlib.import_module('actorflow.cli')\n"
    )
    found = violations(source_graph(tmp_path))
    assert any("imports actorflow.runtime" in v for v in found), found
    assert any("imports actorflow.flows" in v for v in found), found
    assert any("imports actorflow.cli" in v for v in found), found


def test_allowed_arrows_are_not_reported() -> None:
    """A face may import every room and the flow language its runtime: no false alarms."""
    graph = {
        "actorflow.cli._cli": {"actorflow.runtime", "actorflow.flows", "actorflow.storage"},
        "actorflow.flows._loader": {"actorflow.runtime", "actorflow._errors"},
        "actorflow.runtime._core._engine": {"actorflow.runtime._tasks", "actorflow.storage"},
        "actorflow.runtime": {"actorflow.flows"},
    }
    assert violations(graph) == []


#: What `actorflow` and `actorflow.runtime` exported before the house had rooms.
_OLD_AF = [
    "ActorError",
    "ActorNameTaken",
    "ActorNotFound",
    "ActorflowError",
    "AskTimeout",
    "Concurrency",
    "Dag",
    "DagTask",
    "DatabaseInvalid",
    "DeadActorError",
    "EscalationError",
    "Execution",
    "ExecutionNotFound",
    "Fail",
    "Flow",
    "FlowError",
    "FlowValidationError",
    "ForEach",
    "If",
    "IllegalOperation",
    "Input",
    "InputError",
    "InvalidTransition",
    "Log",
    "MailboxFull",
    "Parallel",
    "Pause",
    "Problem",
    "Retry",
    "Return",
    "Runtime",
    "RuntimeClosedError",
    "SchemaTooNew",
    "Sequential",
    "Sleep",
    "State",
    "StorageError",
    "StorageUnavailable",
    "StoredFileNotFound",
    "Subflow",
    "Switch",
    "TaskContext",
    "TaskRun",
    "TemplateError",
    "load_flow",
    "load_flow_text",
    "task",
    "task_type",
]
_OLD_RUNTIME = [
    "Attempt",
    "Call",
    "Clock",
    "Concurrency",
    "ConcurrencyBehavior",
    "Dag",
    "DagTask",
    "EXECUTION_TRANSITIONS",
    "Execution",
    "ExecutionHandle",
    "Fail",
    "FakeClock",
    "Flow",
    "Flowable",
    "ForEach",
    "HttpRequest",
    "If",
    "Input",
    "Log",
    "MISTRAL_VIEW",
    "Metric",
    "MetricRecorder",
    "MistralState",
    "NonRetryableError",
    "Observer",
    "OutputValues",
    "Parallel",
    "Pause",
    "PauseBehavior",
    "Retry",
    "Return",
    "Runnable",
    "Runtime",
    "Sequential",
    "ShellCommands",
    "Sleep",
    "State",
    "StateEntry",
    "Subflow",
    "Switch",
    "TASK_RUN_TRANSITIONS",
    "Task",
    "TaskContext",
    "TaskFailure",
    "TaskFunction",
    "TaskLogger",
    "TaskRun",
    "TaskStorage",
    "TaskType",
    "Tracing",
    "TracingObserver",
    "flow_schema",
    "load_flow",
    "load_flow_text",
    "load_flows",
    "register_task_type",
    "task",
    "task_type",
]


def test_public_names_stay_where_users_find_them() -> None:
    """Every name `import actorflow` and `actorflow.runtime` offered before still resolves;
    the ones that moved to actorflow.flows say so with a DeprecationWarning."""
    import importlib
    import warnings

    af = importlib.import_module("actorflow")
    runtime = importlib.import_module("actorflow.runtime")
    flows = importlib.import_module("actorflow.flows")
    assert set(_OLD_AF) <= set(af.__all__)
    for name in _OLD_AF:
        assert getattr(af, name) is not None
    for name in _OLD_RUNTIME:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(runtime, name)
        if name in flows.__all__ and name not in runtime.__all__:
            assert value is getattr(flows, name)
            assert any(issubclass(w.category, DeprecationWarning) for w in caught), name
        else:
            assert name in runtime.__all__ and not caught, name
