"""Kestra's own core test flows, run unchanged through actorflow: how many behave as asserted.

Usage::

    python -m benchmarks.kestra_corpus PATH [--json] [--only NAME ...] [--jobs N]

``PATH`` is a checkout of kestra-io/kestra, a bare mirror of it (the flows are extracted with
``git archive`` into a temporary folder), or a folder holding the flow files themselves. Nothing
of Kestra's is kept in this repository: the expectations below are our own summary of what
Kestra's Java tests assert for each flow (state, task-run count, attempts, outputs), written
as data.

The selection is every flow of ``core/src/test/resources/flows/valids/`` whose every
``type: io.kestra...`` is a core type (``io.kestra.plugin.core.*`` or ``io.kestra.core.tasks.*``,
Kestra's own test plugins excluded): 167 flows at Kestra 0.21.

Each flow is put in one of four classes:

* ``ok``: behaves as asserted (every case of the flow);
* ``refused``: refused at load (or its inputs refused at submit);
* ``state``: runs, ends in another state than asserted;
* ``differ``: the state matches, task-run counts, attempts or outputs do not.

Expectations marked ``derived`` have no Java assertion on the run itself (the flow is only
parsed by Kestra's tests, or only run as the child of another): what is expected is what
Kestra's semantics give, and the table says how many there are. ``load`` cases only assert that
the flow loads (webhook and schedule flows whose body needs the trigger's variables).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VALIDS = "core/src/test/resources/flows/valids"
_TYPE = re.compile(r"^\s*-?\s*type:\s*[\"']?(io\.kestra\.[\w.]+)", re.MULTILINE)
_CORE = ("io.kestra.plugin.core.", "io.kestra.core.tasks.")
_TEST_PLUGINS = ("io.kestra.core.tasks.test.", "io.kestra.core.runners.test.")
CASE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Case:
    """One run of a flow and what Kestra's tests assert about it."""

    state: str | None = "SUCCESS"
    runs: int | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    #: task id -> attempts of its (first) task run.
    attempts: Mapping[str, int] = field(default_factory=dict)
    #: task id -> final state of its (first) task run.
    task_states: Mapping[str, str] = field(default_factory=dict)
    #: task id -> {output key: value} ("*prefix" for a prefix match).
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: flow outputs (``outputs:`` of the flow) expected on the execution.
    flow_outputs: Mapping[str, Any] = field(default_factory=dict)
    #: run | pause (until PAUSED, then resume) | restart | kill | second (concurrency: the
    #: second execution while the first runs) | load (loading is all that is asserted)
    mode: str = "run"
    resume: Mapping[str, Any] | None = None
    restarts: int = 0
    #: task runs while PAUSED (pause mode).
    paused_runs: int | None = None
    derived: bool = False
    #: another flow whose execution this one's trigger starts: (namespace, flow id, state).
    listener: tuple[str, str, str] | None = None
    #: key-value entries of the flow's namespace set before the run (key -> JSON value).
    kv: Mapping[str, Any] = field(default_factory=dict)
    #: a flow file run first until PAUSED; the input value "@paused" is its execution id,
    #: and it must end once this case's execution has.
    paused_first: str | None = None
    #: a retry as new executions: the end state of each execution of the chain, in order.
    chain: tuple[str, ...] = ()


C = Case
_RETRIED_TWICE = ("RETRIED", "RETRIED", "FAILED")
INPUTS_TEST: dict[str, Any] = {
    "string": "myString",
    "enum": "ENUM_VALUE",
    "int": "42",
    "float": "42.42",
    "bool": "false",
    "instant": "2019-10-06T18:27:49Z",
    "date": "2019-10-06",
    "time": "18:27:49",
    "duration": "PT5M6S",
    "file": "@file",
    "json": '{"a": "b"}',
    "uri": "https://www.google.com",
    "nested.string": "a string",
    "nested.more.int": "123",
    "nested.bool": "true",
    "validatedString": "A123",
    "validatedInt": "12",
    "validatedDate": "2023-01-02",
    "validatedDateTime": "2023-01-01T00:00:10Z",
    "validatedDuration": "PT15S",
    "validatedFloat": "0.42",
    "validatedTime": "11:27:49",
    "secret": "secret",
    "array": "[1, 2, 3]",
    "yaml": "some: property\nalist:\n- of\n- values",
}


# file name -> cases. Numbers come from the Java tests named in research/kestra.md §10.
EXPECT: dict[str, list[Case]] = {
    "all-flowable.yaml": [C(runs=24, derived=True)],
    "allow-failure.yaml": [
        C(
            "FAILED",
            10,
            {"crash": "1"},
            task_states={"switch": "FAILED", "crash": "FAILED", "global-error": "SUCCESS"},
        )
    ],
    "current-output.yaml": [C(derived=True)],
    "dag.yaml": [C(runs=7)],
    "disable-error.yaml": [C("FAILED", 3)],
    "disable-flowable.yaml": [C(runs=10)],
    "disable-simple.yaml": [C(runs=2)],
    "each-empty.yaml": [C(runs=2)],
    "each-null.yaml": [C("FAILED", 1)],
    "each-object-in-list.yaml": [C(derived=True)],
    "each-object.yaml": [C(runs=8)],
    "each-parallel-Integer.yml": [C()],
    "each-parallel-nested.yaml": [C(runs=11)],
    "each-parallel-pause.yml": [C(runs=7)],
    "each-parallel-subflow-notfound.yml": [C("FAILED", derived=True)],
    "each-parallel.yaml": [C(runs=8)],
    "each-sequential-nested.yaml": [C(runs=23)],
    "each-sequential.yaml": [C("WARNING", 11)],
    "each-switch.yaml": [C(runs=12, outputs={"2-1_switch-letter-a": {}})],
    "empty-variables.yml": [
        C(
            runs=3,
            inputs={
                "emptyKey": '{ "foo": "" }',
                "emptySubObject": '{"json":{"someEmptyObject":{}}}',
            },
        )
    ],
    "errors.yaml": [C("FAILED", 7)],
    "execution.yaml": [C(runs=1)],
    "fail-on-condition.yaml": [
        C("FAILED", 2, {"param": "fail"}, task_states={"fail": "FAILED"}),
        C("SUCCESS", 3, {"param": "success"}, task_states={"fail": "SUCCESS"}),
    ],
    "fail-on-switch.yaml": [C("FAILED", 1, {"param": "fail"}, task_states={"switch": "FAILED"})],
    "failed-first.yaml": [C("FAILED", 1), C("FAILED", mode="restart", restarts=2)],
    "flow-concurrency-cancel-pause.yml": [C("CANCELLED", mode="second")],
    "flow-concurrency-cancel.yml": [C("CANCELLED", mode="second")],
    "flow-concurrency-fail.yml": [C("FAILED", mode="second")],
    "flow-concurrency-queue-pause.yml": [C("SUCCESS", mode="second")],
    "flow-concurrency-queue.yml": [C("SUCCESS", mode="second")],
    "flow-trigger-preconditions-flow-a.yaml": [C(runs=1)],
    "flow-trigger-preconditions-flow-b.yaml": [C(runs=1)],
    "flow-trigger-preconditions-flow-listen.yaml": [C(mode="load")],
    "flow-with-array-outputs.yml": [C(derived=True)],
    "flow-with-outputs-failed.yml": [C("FAILED")],
    "flow-with-outputs.yml": [C(flow_outputs={"key": '{"value":"flow-with-outputs"}'})],
    "flowable-with-parent-fail.yaml": [C("FAILED", derived=True)],
    "for-each-item-failed.yaml": [C("FAILED", 3, {"file": "@items"})],
    "for-each-item-no-wait.yaml": [C("SUCCESS", 4, {"file": "@items"})],
    "for-each-item-outputs-subflow.yaml": [C(runs=1, inputs={"items": "@uri"}, derived=True)],
    "for-each-item-outputs.yaml": [C("SUCCESS", 5, {"file": "@items"})],
    "for-each-item-subflow-failed.yaml": [C("FAILED", 1, {"items": "@uri"}, derived=True)],
    "for-each-item-subflow.yaml": [C("SUCCESS", 1, {"items": "@uri"}, derived=True)],
    "for-each-item.yaml": [C("SUCCESS", 4, {"file": "@items", "batch": 4})],
    "foreach-concurrent-no-limit.yaml": [C(runs=7)],
    "foreach-concurrent-parallel.yaml": [C(runs=10)],
    "foreach-concurrent.yaml": [C(runs=7)],
    "foreach-non-concurrent.yaml": [C(runs=7)],
    "full.yaml": [C(derived=True)],
    "get-log-executionid.yaml": [C(derived=True)],
    "get-log-taskid.yaml": [C(derived=True)],
    "get-log.yaml": [C(derived=True)],
    "if-condition.yaml": [
        C(runs=2, inputs={"param": p}, task_states={"when-true": "SUCCESS"})
        for p in (True, "true", 1)
    ]
    + [
        C(runs=2, inputs={"param": p}, task_states={"when-false": "SUCCESS"})
        for p in (False, "false", 0)
    ],
    "if-in-flowable.yaml": [C(runs=8, inputs={"param": True})],
    "if-without-else.yaml": [
        C(runs=2, inputs={"param": True}, task_states={"when-true": "SUCCESS"}),
        C(runs=1, inputs={"param": False}),
    ],
    "if.yaml": [C(runs=12, inputs={"if1": True, "if2": False, "if3": True})],
    "input-log-secret.yaml": [C(runs=1, inputs={"secret": "password"})],
    "inputs-large.yaml": [C(runs=10, inputs={**INPUTS_TEST, "string": "a" * 11264})],
    "inputs-small-files.yaml": [C(inputs={"f": "@file"}, flow_outputs={"o": "*"})],
    "inputs.yaml": [C(runs=14, inputs=INPUTS_TEST)],
    # KvFunctionTest.get puts my-key = {field: value} first; getKeyNotFound passes
    # errorOnMissing=true with no key: `get` gives "" and `getWithArgs` fails.
    "kv.yaml": [
        C(
            kv={"my-key": {"field": "value"}},
            outputs={"get": {"value": "value"}, "getWithArgs": {"value": "value"}},
        ),
        C(
            "FAILED",
            inputs={"errorOnMissing": "true"},
            outputs={"get": {"value": ""}},
            task_states={"get": "SUCCESS", "getWithArgs": "FAILED"},
        ),
    ],
    "labels-update-task.yml": [
        C(
            inputs={
                "labelsJson": '{"keyFromJson": "valueFromJson"}',
                "labelsMapKey": "keyFromMap",
                "labelsMapValue": "valueFromMap",
                "labelsListKey": "keyFromList",
                "labelsListValue": "valueFromList",
            }
        )
    ],
    "log-to-file.yaml": [C(derived=True)],
    "logs.yaml": [C(runs=5)],
    "minimal-bis.yaml": [C(runs=1), C(runs=1, inputs={"string": "myString"})],
    "minimal.yaml": [C(runs=1)],
    "minimal2.yaml": [C(runs=1)],
    "npe-labels-update-task.yml": [C(derived=True)],
    "output-values.yml": [C(runs=1, outputs={"return": {"output1": "xyz", "output2": "abc"}})],
    "parallel-nested.yaml": [C(runs=11)],
    "parallel.yaml": [C(runs=8)],
    "pause-delay-from-input.yaml": [C(runs=3)],
    "pause-delay.yaml": [C(runs=3)],
    "pause-timeout.yaml": [C("FAILED", 1)],
    "pause.yaml": [C(runs=3, mode="pause", paused_runs=1)],
    "pause_no_tasks.yaml": [C(runs=2, mode="pause", paused_runs=1)],
    "pause_on_resume.yaml": [
        C(
            runs=2,
            mode="pause",
            resume={"asked": "restarted"},
            outputs={"last": {"asked": "restarted"}},
        )
    ],
    "pause_on_resume_optional.yaml": [
        C(runs=2, mode="pause", resume={}, outputs={"last": {"asked": "MISSING"}})
    ],
    "primitive-labels-flow.yml": [
        C(runs=1, inputs={"intLabel": 42, "boolLabel": True, "floatLabel": 3.14})
    ],
    # Kestra's test starts it without the (required) input; "NONE" is what its `??` gives.
    "restart-each.yaml": [
        C(runs=20, inputs={"failed": "NONE"}),
        C("FAILED", inputs={"failed": "FIRST"}),
    ],
    "restart_always_failed.yaml": [
        C("FAILED", 2),
        C("FAILED", 2, mode="restart", restarts=1, attempts={"failStep": 2}),
    ],
    "restart_last_failed.yaml": [
        C("FAILED", 3),
        C("SUCCESS", 4, mode="restart", restarts=1, attempts={"c": 2}),
    ],
    "restart_local_errors.yaml": [
        C("FAILED", 5),
        C("FAILED", 5, mode="restart", restarts=1, attempts={"failStep": 2}),
    ],
    "restart_pause_last_failed.yaml": [C("FAILED"), C("SUCCESS", 5, mode="restart", restarts=1)],
    "restart_with_inputs.yaml": [C(inputs=INPUTS_TEST, derived=True)],
    # ResumeTest.resume: pause.yaml runs until PAUSED, its id is the input executionId;
    # resume-execution ends SUCCESS and the paused execution then ends.
    "resume-execution.yaml": [C(inputs={"executionId": "@paused"}, paused_first="pause.yaml")],
    "retry-expo.yaml": [C("FAILED", 1, attempts={"failed": 3})],
    "retry-fail.yaml": [C("FAILED", 2, attempts={"keepFailingWithRetry": 3})],
    "retry-failed-flow-attempts.yml": [C("FAILED", 1, attempts={"fail": 4})],
    "retry-failed-flow-duration.yml": [C("FAILED", 1, attempts={"fail": 3})],
    "retry-failed-task-attempts.yml": [C("FAILED", 1, attempts={"fail": 4})],
    "retry-failed-task-duration.yml": [C("FAILED", 1, attempts={"fail": 3})],
    "retry-failed.yaml": [C("FAILED", 2, attempts={"failed": 5})],
    "retry-flowable-child.yaml": [C("FAILED", attempts={"child": 3})],
    "retry-flowable-nested-child.yaml": [C("FAILED", attempts={"child": 3})],
    "retry-flowable-parallel.yaml": [C("FAILED")],
    "retry-flowable.yaml": [C("FAILED", attempts={"child": 3})],
    # RetryCaseTest.retryNewExecution*: three executions end RETRIED, RETRIED, FAILED.
    "retry-new-execution-flow-attempts.yml": [C("RETRIED", chain=_RETRIED_TWICE)],
    "retry-new-execution-flow-duration.yml": [C("RETRIED", chain=_RETRIED_TWICE)],
    "retry-new-execution-task-attempts.yml": [C("RETRIED", chain=_RETRIED_TWICE)],
    "retry-new-execution-task-duration.yml": [C("RETRIED", chain=_RETRIED_TWICE)],
    "retry-random.yaml": [C("FAILED", 1, attempts={"failed": 3})],
    "retry-subflow.yaml": [C("FAILED", attempts={"subflow": 3})],
    "retry-success-first-attempt.yaml": [C("SUCCESS", 1, attempts={"not-retry-and-no-warning": 1})],
    "retry-success.yaml": [C("WARNING", 1, attempts={"failed": 4})],
    "return.yaml": [C(runs=3)],
    "schedule-trigger.yaml": [C(mode="load")],
    "secrets.yaml": [C(outputs={"get-secret": {"value": "secretValue"}})],
    "sequential-with-global-errors.yaml": [C("FAILED", 6)],
    "sequential-with-local-errors.yaml": [C("FAILED", 6)],
    "sequential.yaml": [C(runs=11)],
    "sla-execution-condition.yaml": [
        C("SUCCESS"),
        C("CANCELLED", inputs={"string": "CANCEL"}),
        C("SUCCESS", inputs={"string": "LABEL"}),
    ],
    "sla-max-duration-fail.yaml": [C("FAILED")],
    "sla-max-duration-ok.yaml": [C("SUCCESS")],
    "sleep-task-flow.yaml": [C()],
    "sleep.yml": [C("KILLED", 1, mode="kill")],
    "state.yaml": [C(runs=5, inputs={"state": "corpus-state"})],
    "subflow-child.yaml": [C(derived=True)],
    "subflow-grand-child.yaml": [C(derived=True)],
    "subflow-parent.yaml": [C()],
    "switch-impossible.yaml": [C("FAILED", inputs={"string": "impossible"})],
    "switch.yaml": [
        C(
            inputs={"string": "FIRST"},
            outputs={"parent-seq": {"value": "FIRST", "defaults": False}},
        ),
        C(outputs={"parent-seq": {"value": "SECOND"}}, inputs={"string": "SECOND"}),
        C("FAILED", 4, {"string": "THIRD"}, outputs={"parent-seq": {"value": "THIRD"}}),
        C(
            inputs={"string": "DEFAULT"},
            outputs={"parent-seq": {"value": "DEFAULT", "defaults": True}},
        ),
    ],
    # TaskWithAllowFailureTest.executableTask_Flow: WARNING, 2 task runs (4 is the
    # ForEachItem case's count).
    "task-allow-failure-executable-flow.yml": [C("WARNING", 2)],
    "task-allow-failure-executable-foreachitem.yml": [C("WARNING", inputs={"file": "@items"})],
    "task-allow-failure-flowable.yml": [C("WARNING", 3)],
    "task-allow-failure-runnable.yml": [C("WARNING", 2, attempts={"fail": 3})],
    "task-allow-warning-executable-flow.yml": [C("SUCCESS")],
    "task-allow-warning-executable-foreachitem.yml": [C("SUCCESS", inputs={"file": "@items"})],
    "task-allow-warning-flowable.yml": [C("SUCCESS", 3)],
    "task-allow-warning-runnable.yml": [C("SUCCESS", 2, attempts={"fail": 3})],
    "task-flow-dynamic.yaml": [
        C(inputs={"namespace": "io.kestra.tests", "flowId": "switch"}, derived=True)
    ],
    "task-flow-inherited-labels.yaml": [C(runs=1, inputs={"string": "OK"})],
    "task-flow.yaml": [C(runs=1, inputs={"string": "OK"})],
    "task-runif.yml": [
        C(
            "FAILED",
            4,
            task_states={
                "executed": "SUCCESS",
                "notexecuted": "SKIPPED",
                "willfailedtheflow": "FAILED",
            },
        )
    ],
    "trigger-flow-listener-invalid.yaml": [C(mode="load")],
    "trigger-flow-listener-namespace-condition.yaml": [C(mode="load")],
    "trigger-flow-listener-no-inputs.yaml": [C(mode="load")],
    "trigger-flow-listener-with-pause.yaml": [C(mode="load")],
    "trigger-flow-listener.yaml": [C(mode="load")],
    "trigger-flow-with-pause.yaml": [C()],
    "trigger-flow.yaml": [
        C(listener=("io.kestra.tests.trigger", "trigger-flow-listener", "SUCCESS"))
    ],
    "trigger-multiplecondition-failed.yaml": [C(mode="load")],
    "trigger-multiplecondition-flow-a.yaml": [C()],
    "trigger-multiplecondition-flow-b.yaml": [C()],
    "trigger-multiplecondition-flow-c.yaml": [C("FAILED", 1)],
    "trigger-multiplecondition-flow-d.yaml": [C()],
    "trigger-multiplecondition-listener.yaml": [C(mode="load")],
    "trigger-toggle.yaml": [C(derived=True)],
    "variables-invalid.yaml": [C("FAILED", 2, task_states={"parent-seq": "FAILED"})],
    "variables.yaml": [
        C(
            runs=3,
            outputs={
                "variable": {"value": "1 > 2 > 3"},
                "global": {"value": "string 1 true 2"},
            },
        )
    ],
    "waitfor-max-duration.yaml": [C("FAILED", derived=True)],
    "waitfor-max-iterations.yaml": [C("FAILED", derived=True)],
    "waitfor-multiple-tasks-failed.yaml": [C("FAILED", derived=True)],
    "waitfor-multiple-tasks.yaml": [C(derived=True)],
    "waitfor-no-success.yaml": [C(derived=True)],
    "waitfor.yaml": [C(derived=True)],
    "webhook-dynamic-key.yaml": [C(mode="load")],
    "webhook-secret-key.yaml": [C(mode="load")],
    "webhook-with-condition.yaml": [C(mode="load")],
    "webhook.yaml": [C(mode="load")],
    "working-directory-cache.yml": [C(derived=True)],
    "working-directory-each.yaml": [C(runs=8)],
    "working-directory-inputs.yml": [C(derived=True)],
    "working-directory-outputs.yml": [C(derived=True)],
    "working-directory-taskrun-nested.yml": [C(runs=6)],
    "working-directory-taskrun.yml": [C(derived=True)],
    "working-directory.yaml": [
        C("SUCCESS", 4, {"failed": "false"}),
        C("FAILED", 3, {"failed": "true"}),
    ],
}
# Kestra's `secret()` in OSS reads SECRET_<NAME> (base64) from the environment.
SECRETS = {"MY_SECRET": '{"secretKey": "secretValue"}', "NEW_LINE": "very\nlong\npassword"}


# What Kestra's test build puts in the environment for `{{ envs.* }}`.
ENVS = {"KESTRA_TEST1": "true", "KESTRA_TEST2": "Pass by env"}

# Kestra's test configuration (core/src/test/resources/application-test.yml,
# kestra.variables.globals): `{{ globals.* }}`, through $ACTORFLOW_GLOBALS.
GLOBALS = {"string": "string", "int": 1, "bool": True, "nested": {"int": 2}}


def is_core(text: str) -> bool:
    """Whether every task/trigger type of a flow file is one of Kestra's core types."""
    types = _TYPE.findall(text)
    return all(t.startswith(_CORE) and not t.startswith(_TEST_PLUGINS) for t in types)


def flow_files(path: Path, work: Path) -> Path:
    """The folder holding Kestra's valids flows: in a checkout, or extracted from a mirror."""
    if (path / VALIDS).is_dir():
        return path / VALIDS
    if any(path.glob("*.y*ml")):
        return path
    out = work / "valids"
    archive = subprocess.run(
        ["git", "-C", str(path), "archive", "HEAD", VALIDS],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "x", "-C", str(work)], input=archive.stdout, check=True)
    (work / VALIDS).rename(out)
    return out


@dataclass
class Result:
    """How one flow behaved."""

    file: str
    klass: str
    reasons: list[str]
    derived: bool = False
    seconds: float = 0.0


def _prepare_inputs(inputs: Mapping[str, Any], work: Path) -> dict[str, Any]:
    """``@file``/``@items`` stand for files the Java tests upload: small ones of ours."""
    out: dict[str, Any] = {}
    for k, v in inputs.items():
        if v == "@file":
            p = work / "input.txt"
            p.write_text("hello from the corpus\n")
            out[k] = str(p)
        elif v == "@items":
            p = work / "items.txt"
            p.write_text("".join(f"item-{i}\n" for i in range(10)))
            out[k] = str(p)
        else:
            out[k] = v
    return out


def _check(case: Case, ex: Any) -> tuple[str, list[str]]:
    """Compare an ended execution with the case: ``ok``, ``state`` or ``differ``."""
    state = ex.state.value
    if case.state is not None and state != case.state:
        why = f"state {state}, Kestra {case.state}"
        if ex.error:
            why += f" ({str(ex.error)[:200]})"
        else:
            failed = [tr for tr in ex.task_runs if tr.state.value == "FAILED" and tr.error]
            if failed:
                why += f" ({failed[0].task_id}: {str(failed[0].error)[:200]})"
        return "state", [why]
    problems: list[str] = []
    runs = ex.task_runs
    if case.runs is not None and len(runs) != case.runs:
        problems.append(f"{len(runs)} task runs, Kestra {case.runs}")
    by_id: dict[str, Any] = {}
    for tr in runs:
        by_id.setdefault(tr.task_id, tr)
    for task_id, n in case.attempts.items():
        tr = by_id.get(task_id)
        count = len(tr.attempts) if tr is not None else 0
        if count != n:
            problems.append(f"{task_id}: {count} attempts, Kestra {n}")
    for task_id, want in case.task_states.items():
        tr = by_id.get(task_id)
        name = tr.state.value if tr is not None else "no task run"
        if name != want:
            problems.append(f"{task_id}: {name}, Kestra {want}")
    for task_id, expected in case.outputs.items():
        tr = by_id.get(task_id)
        if tr is None:
            problems.append(f"{task_id}: no task run")
            continue
        outs = tr.outputs or {}
        values = outs.get("values", outs) if isinstance(outs, dict) else {}
        for k, v in expected.items():
            value = outs.get(k, values.get(k) if isinstance(values, dict) else None)
            if value != v:
                problems.append(f"outputs.{task_id}.{k} = {value!r}, Kestra {v!r}")
    flow_outputs = ex.outputs or {}
    for k, v in case.flow_outputs.items():
        out = flow_outputs.get(k)
        if v == "*" and out:
            continue
        if out != v:
            problems.append(f"flow output {k} = {out!r}, Kestra {v!r}")
    return ("differ", problems) if problems else ("ok", [])


async def _run_case(
    rt: Any, flow: Any, case: Case, work: Path, flows: Mapping[str, Any]
) -> tuple[str, list[str]]:
    from actorflow._errors import ActorflowError
    from actorflow.runtime import State

    inputs = _prepare_inputs(case.inputs, work)
    for k, v in case.inputs.items():
        if v == "@uri":  # what ForEachItem hands a child: a stored file's URI
            inputs[k] = await rt.engine.files.put(
                flow.namespace, flow.id, "corpus", "inputs", k, "items.txt", b"a\nb\n"
            )
    for key, value in case.kv.items():
        await rt.engine.store.kv_set(flow.namespace, key, json.dumps(value))
    paused = None
    if case.paused_first is not None:
        paused = await rt.submit(flows[case.paused_first], {})
        snap = await rt.wait_for(paused.id, State.PAUSED, timeout=CASE_TIMEOUT)
        if snap.state is not State.PAUSED:
            return "state", [f"{case.paused_first} {snap.state.value}, Kestra PAUSED"]
        inputs = {k: paused.id if v == "@paused" else v for k, v in inputs.items()}
    try:
        handle = await rt.submit(flow, inputs)
    except ActorflowError as exc:
        return "refused", [f"refused at submit: {str(exc)[:300]}"]
    if case.mode == "pause":
        snap = await rt.wait_for(handle.id, State.PAUSED, timeout=CASE_TIMEOUT)
        if snap.state is not State.PAUSED:
            return "state", [f"state {snap.state.value} before resume, Kestra PAUSED"]
        if case.paused_runs is not None and len(snap.task_runs) != case.paused_runs:
            return "differ", [f"{len(snap.task_runs)} task runs while paused, Kestra 1"]
        try:
            await rt.resume(handle.id, _prepare_inputs(case.resume or {}, work))
        except ActorflowError as exc:
            return "state", [f"resume refused: {str(exc)[:300]}"]
    elif case.mode == "kill":
        await rt.wait_for(handle.id, State.RUNNING, timeout=CASE_TIMEOUT)
        await rt.kill(handle.id)
    elif case.mode == "second":
        await rt.wait_for(handle.id, State.RUNNING, State.PAUSED, timeout=CASE_TIMEOUT)
        second = await rt.submit(flow, inputs)
        await rt.wait(handle.id, timeout=CASE_TIMEOUT)
        return _check(case, await rt.wait(second.id, timeout=CASE_TIMEOUT))
    ex = await rt.wait(handle.id, timeout=CASE_TIMEOUT)
    for _ in range(case.restarts):
        if not ex.state.terminal or ex.state in (State.SUCCESS,):
            break
        again = await rt.restart(ex.id)
        ex = await rt.wait(again.id, timeout=CASE_TIMEOUT)
    if case.listener is not None:
        ns, fid, want = case.listener
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = [e for e in await rt.executions() if e.flow_id == fid and e.namespace == ns]
            if found and all(e.state.terminal for e in found):
                got = found[0].state.value
                if got != want:
                    return "state", [f"listener {fid} {got}, Kestra {want}"]
                break
            await asyncio.sleep(0.05)
        else:
            return "state", [f"listener {fid} never ran"]
    if case.chain:
        deadline = time.monotonic() + CASE_TIMEOUT
        while time.monotonic() < deadline:
            chain = sorted(
                (e for e in await rt.executions() if (e.original_execution_id or e.id) == ex.id),
                key=lambda e: e.attempt_number,
            )
            if chain and chain[-1].state.terminal and chain[-1].state is not State.RETRIED:
                break
            await asyncio.sleep(0.1)
        states = tuple(e.state.value for e in chain)
        if states != case.chain:
            return "state", [f"executions {', '.join(states)}, Kestra {', '.join(case.chain)}"]
    if paused is not None:
        other = await rt.wait(paused.id, timeout=CASE_TIMEOUT)
        if not other.state.terminal:
            return "state", [f"{case.paused_first} {other.state.value} after the resume"]
    return _check(case, ex)


async def _one(name: str, flows: dict[str, Any], problems: dict[str, str], work: Path) -> Result:
    from actorflow.runtime import Runtime, Scheduler

    start = time.monotonic()
    cases = EXPECT.get(name, [Case(derived=True)])
    derived = all(c.derived for c in cases)
    if name in problems:
        return Result(name, "refused", [problems[name]], derived)
    flow = flows[name]
    worst, reasons = "ok", list[str]()
    order = ["ok", "differ", "state", "refused"]
    for i, case in enumerate(cases):
        if case.mode == "load":
            continue
        case_dir = work / f"{name}-{i}"
        case_dir.mkdir(parents=True, exist_ok=True)
        try:
            async with contextlib.AsyncExitStack() as stack:
                rt = await stack.enter_async_context(
                    Runtime.open(
                        ":memory:",
                        flows=list(flows.values()),
                        files=case_dir / "files",
                        shutdown_timeout=2,
                    )
                )
                if case.listener is not None:
                    # Flow triggers fire from a scheduler, as in Kestra's runner (and
                    # `actorflow server`).
                    await stack.enter_async_context(Scheduler(rt))
                klass, why = await asyncio.wait_for(
                    _run_case(rt, flow, case, case_dir, flows), CASE_TIMEOUT + 5
                )
        except TimeoutError:
            klass, why = "state", ["did not end within the case timeout"]
        except Exception as exc:  # a crash of the run is a finding, not a crash of the script
            klass, why = "state", [f"{type(exc).__name__}: {str(exc)[:300]}"]
        label = f"case {i + 1}" + (f" {dict(case.inputs)}" if case.inputs else "")
        reasons.extend(f"{label}: {w}" for w in why)
        if order.index(klass) > order.index(worst):
            worst = klass
    return Result(name, worst, reasons, derived, time.monotonic() - start)


def _load_all(folder: Path) -> tuple[list[str], dict[str, Any], dict[str, str]]:
    from actorflow._errors import FlowValidationError
    from actorflow.flows import load_flow

    names: list[str] = []
    flows: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix not in (".yaml", ".yml") or not is_core(p.read_text()):
            continue
        names.append(p.name)
        try:
            flows[p.name] = load_flow(p)
        except FlowValidationError as exc:
            first = exc.problems[0]
            where = f"{Path(first.file or p.name).name}:{first.line} {first.field or ''}".strip()
            more = f" (+{len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            problems[p.name] = f"refused at load: {where}: {first.message}{more}"
    return names, flows, problems


async def measure(folder: Path, only: Sequence[str], jobs: int, work: Path) -> list[Result]:
    """Run every selected flow (``jobs`` at a time); one result per flow file."""
    names, flows, problems = _load_all(folder)
    if only:
        names = [n for n in names if any(o in n for o in only)]
    sem = asyncio.Semaphore(jobs)

    async def guarded(name: str) -> Result:
        async with sem:
            return await _one(name, flows, problems, work)

    return list(await asyncio.gather(*(guarded(n) for n in names)))


LABELS = {
    "ok": "behave as asserted",
    "refused": "refused at load",
    "state": "end in another state",
    "differ": "differ in task runs / outputs",
}


def report(results: list[Result]) -> str:
    """The table and the reasons, as text."""
    counts = Counter(r.klass for r in results)
    derived = sum(1 for r in results if r.derived)
    lines = [f"Kestra core flows: {len(results)} ({derived} with derived expectations)", ""]
    lines.append("| class | flows |")
    lines.append("|---|---|")
    for k in ("ok", "refused", "state", "differ"):
        lines.append(f"| {LABELS[k]} | {counts.get(k, 0)} |")
    lines.append("")
    for k in ("refused", "state", "differ"):
        chosen = [r for r in results if r.klass == k]
        if not chosen:
            continue
        lines.append(f"## {LABELS[k]} ({len(chosen)})")
        for r in chosen:
            lines.append(f"- {r.file}{' (derived)' if r.derived else ''}: " + "; ".join(r.reasons))
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", type=Path, help="Kestra checkout, bare mirror or flows folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--only", nargs="*", default=[], help="only flow files containing these")
    parser.add_argument("--jobs", type=int, default=8, help="flows run at the same time")
    args = parser.parse_args(argv)
    for name, value in SECRETS.items():
        os.environ.setdefault(f"SECRET_{name}", base64.b64encode(value.encode()).decode())
    for name, value in ENVS.items():
        os.environ.setdefault(name, value)
    with tempfile.TemporaryDirectory(prefix="kestra-corpus-") as tmp:
        work = Path(tmp)
        globals_file = work / "globals.json"
        globals_file.write_text(json.dumps(GLOBALS))
        os.environ.setdefault("ACTORFLOW_GLOBALS", str(globals_file))
        folder = flow_files(args.path, work)
        results = asyncio.run(measure(folder, args.only, args.jobs, work))
    results.sort(key=lambda r: r.file)
    if args.json:
        counts = Counter(r.klass for r in results)
        print(
            json.dumps(
                {
                    "counts": {k: counts.get(k, 0) for k in LABELS},
                    "flows": [r.__dict__ for r in results],
                },
                indent=2,
            )
        )
    else:
        print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
