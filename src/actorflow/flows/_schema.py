"""JSON Schema of flow files for editors, generated from the same structs the loader checks."""

from __future__ import annotations

from typing import Any

import msgspec

from actorflow.flows._loader import FlowSpec
from actorflow.flows._registry import (
    REGISTRY,
    ChildTask,
    Duration,
    DurationOrTemplate,
    Registry,
    Spec,
    TaskSpec,
)

_REF = "#/$defs/{name}"


def _hook(tp: Any) -> dict[str, Any]:
    if tp is ChildTask:
        return {"$ref": _REF.format(name="Task")}
    if tp is Duration:
        return {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
            "description": "seconds, ISO-8601 (PT1M30S) or 5s/2m/1h",
        }
    if tp is DurationOrTemplate:
        return {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
            "description": "seconds, ISO-8601 (PT1M30S), 5s/2m/1h, or a {{ template }}",
        }
    raise NotImplementedError(f"no JSON Schema for {tp!r}")


def _subclasses(cls: type[Spec]) -> list[type[Spec]]:
    out: list[type[Spec]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def flow_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a flow file, with every registered task type."""
    reg = registry or REGISTRY
    reg.load_entry_points()
    names: dict[type[TaskSpec], list[str]] = {}
    for task_type in reg:
        names.setdefault(task_type.spec, []).extend((task_type.name, *task_type.aliases))
    specs = list(names)
    (root, *_), defs = msgspec.json.schema_components(
        [FlowSpec, *specs], schema_hook=_hook, ref_template=_REF
    )
    classes = {c.__name__: c for c in _subclasses(Spec)}
    for def_name, schema in defs.items():
        cls = classes.get(def_name)
        props = schema.get("properties")
        if cls is None or props is None:
            continue
        by_name = {f.name: f.encode_name for f in msgspec.structs.fields(cls)}
        extra: dict[str, Any] = {}
        for key in list(props):
            camel = _camel(key)
            if camel != key:
                extra[camel] = props[key]
        for alias, target in cls.aliases.items():
            extra[alias] = props[by_name[target]]
        for key, value in extra.items():
            props.setdefault(key, value)
        if cls in names:
            props["type"] = {"enum": sorted(names[cls])}
    defs["Task"] = {
        "oneOf": [{"$ref": _REF.format(name=s.__name__)} for s in specs],
        "description": "a task: 'type' selects its keys",
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "actorflow flow",
        **root,
        "$defs": defs,
    }


__all__ = ["flow_schema"]
