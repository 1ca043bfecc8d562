"""The web UI in a real Chromium: live list, Gantt, actions, resume form, downloads, run form."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.webflows import GATE, INPUT_TYPES
from _support.webserver import Served, shot

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the conftest's browser fixture says why
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("playwright is not installed", allow_module_level=True)


def api(served: Served, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(method, served.url + "/api/v1/" + path, timeout=30, **kw)
    assert r.status_code < 300, r.text
    return r.json()


def wait_state(served: Served, ex_id: str, *states: str) -> dict[str, Any]:
    """The execution once it is in one of ``states`` (followed over its SSE stream)."""
    with httpx.stream("GET", f"{served.url}/api/v1/executions/{ex_id}/follow", timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                data: dict[str, Any] = json.loads(line[6:])
                if data.get("state") in states and "task_runs" in data:
                    return data
    raise AssertionError(f"{ex_id} ended without reaching {states}")


def test_the_list_shows_an_execution_that_starts_while_it_is_open(
    page: Any, served: Served
) -> None:
    """With the Executions page open, an execution submitted elsewhere appears in it live
    (no reload), with its state as a word, its flow, namespace and labels."""
    expect(page.get_by_role("heading", name="Executions")).to_be_visible()
    expect(page.locator(".live")).to_have_text("● live")
    ex = api(served, "POST", "executions/team/hello", json={"name": "live"})
    row = page.locator(f'tr[data-id="{ex["id"]}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("SUCCESS")
    expect(row).to_contain_text("team")
    expect(row).to_contain_text("hello")
    shot(page, "executions")


def test_filters_and_search_by_id(page: Any, served: Served) -> None:
    """Filtering by flow lists only its executions; searching an id opens it; an unknown id
    says so."""
    hello = api(served, "POST", "executions/team/hello", params={"wait": True}, json={})
    api(served, "POST", "executions/team/retried", params={"wait": True}, json={})
    page.get_by_label("Flow", exact=True).fill("hello")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator('tbody tr[data-flow]:not([data-flow="hello"])')).to_have_count(0)
    expect(page.locator(f'tbody tr[data-id="{hello["id"]}"]')).to_be_visible()
    page.get_by_label("Search by execution id").fill("no-such-id")
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_role("alert")).to_contain_text("404")
    page.get_by_label("Search by execution id").fill(hello["id"])
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_role("heading", name=re.compile("Execution"))).to_contain_text(hello["id"])


def test_the_gantt_has_one_bar_per_task_run_with_its_attempts(page: Any, served: Served) -> None:
    """An execution's Gantt draws one bar per task run, with one segment per attempt, the
    failed attempts marked (not by colour only), nested flowables' children indented."""
    ex = api(served, "POST", "executions/team/retried", json={})
    done = wait_state(served, ex["id"], "SUCCESS", "WARNING", "FAILED")
    page.goto(f"{served.url}/#/executions/{ex['id']}")
    bars = page.locator(".gantt-bar")
    expect(bars).to_have_count(len(done["task_runs"]))
    for tr in done["task_runs"]:
        row = page.locator(f'[data-task-run="{tr["id"]}"]')
        expect(row.locator(".attempt")).to_have_count(len(tr["attempts"]))
        failed = sum(a["state"] == "FAILED" for a in tr["attempts"])
        expect(row.locator(".attempt.failed")).to_have_count(failed)
        if failed:
            expect(row.locator(".attempt.failed").first).to_have_text("✗")
    twice = next(tr for tr in done["task_runs"] if tr["task_id"] == "twice")
    assert len(twice["attempts"]) == 3
    once = page.locator('[data-task="once"] .glabel')
    both = page.locator('[data-task="both"] .glabel')
    indent = float(once.evaluate("e => parseFloat(getComputedStyle(e).paddingLeft)"))
    assert indent > float(both.evaluate("e => parseFloat(getComputedStyle(e).paddingLeft)"))
    expect(page.locator(".gaxis .tick")).to_have_count(5)
    shot(page, "execution-gantt")
    page.get_by_role("tab", name="Topology").click()
    expect(page.locator('[data-node="twice"]')).to_contain_text("SUCCESS")
    shot(page, "execution-topology")
    page.get_by_role("tab", name="History").click()
    expect(page.locator("table.hist").first).to_contain_text("RUNNING")


def test_kill_a_running_execution_from_its_page(page: Any, served: Served) -> None:
    """Kill on a running execution's page (confirmed) ends it KILLED, shown live."""
    ex = api(served, "POST", "executions/team/blocking", json={})
    wait_state(served, ex["id"], "RUNNING")
    page.goto(f"{served.url}/#/executions/{ex['id']}")
    expect(page.locator(".head .badge")).to_contain_text("RUNNING")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Kill").click()
    expect(page.locator(".head .badge")).to_contain_text("KILLED")
    assert api(served, "GET", f"executions/{ex['id']}")["state"] == "KILLED"
    expect(page.get_by_role("button", name="Kill")).to_have_count(0)


def test_resume_with_inputs_shows_a_bad_inputs_error(page: Any, served: Served) -> None:
    """A paused execution's page has a form of the Pause task's on_resume inputs; a bad value
    shows the API's validation error and resumes nothing; good values resume it."""
    ex = api(served, "POST", "executions/team/approval", json={})
    wait_state(served, ex["id"], "PAUSED")
    page.goto(f"{served.url}/#/executions/{ex['id']}")
    form = page.get_by_role("form", name="Resume")
    expect(form).to_be_visible()
    form.get_by_label("ok").check()
    form.get_by_label("limits").fill("[1, 2]")
    form.get_by_role("button", name="Resume").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("limits")
    assert api(served, "GET", f"executions/{ex['id']}")["state"] == "PAUSED"
    shot(page, "execution-resume-error")
    form.get_by_label("limits").fill('{"max": 3}')
    form.get_by_role("button", name="Resume").click()
    expect(page.locator(".head .badge")).to_contain_text("SUCCESS")
    done = api(served, "GET", f"executions/{ex['id']}")
    given = {"ok": True, "limits": {"max": 3}}
    assert done["task_run" + "s"][0]["outputs"] == {**given, "onResume": given}


def test_download_an_output_file(page: Any, served: Served, tmp_path: Path) -> None:
    """The Outputs tab shows a task run's outputs as a tree; its file downloads with its
    content; metrics show with their tags."""
    ex = api(served, "POST", "executions/team/hello", params={"wait": True}, json={"name": "Ada"})
    page.goto(f"{served.url}/#/executions/{ex['id']}?tab=Outputs")
    expect(page.locator(".panel .tree").first).to_contain_text("hello Ada")
    with page.expect_download() as info:
        page.get_by_role("link", name=re.compile("report.txt")).click()
    path = tmp_path / "got.txt"
    info.value.save_as(path)
    assert path.read_text() == "hello Ada"
    shot(page, "execution-outputs")
    page.get_by_role("tab", name="Metrics").click()
    expect(page.locator("table.list")).to_contain_text("reports")
    expect(page.locator("table.list")).to_contain_text("kind: daily")
    page.get_by_role("tab", name="Logs").click()
    expect(page.locator("table.logs")).to_contain_text("report for Ada")


def test_a_run_form_with_every_input_type(page: Any, served: Served) -> None:
    """A flow's run form has a field for each input type; what is typed in reaches the
    execution as the typed values; a bad one shows the API's error."""
    page.goto(f"{served.url}/#/flows/team/typed")
    form = page.get_by_role("form", name="Run this flow")
    for t in INPUT_TYPES:
        expect(form.get_by_label(f"a_{t}", exact=False).first).to_be_visible()
    values = {"string": "text", "int": "42", "float": "2.5", "json": '{"a": [1]}',
              "list": "[1, 2]", "dict": '{"k": "v"}', "any": "anything"}  # fmt: skip
    for t, v in values.items():
        form.locator(f"#in-a_{t}").fill(v)
    form.locator("#in-a_bool").check()
    form.locator("#in-a_list").fill('{"not": "a list"}')  # the API says what is wrong
    form.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("a_list")
    shot(page, "flow-run-error")
    form.locator("#in-a_list").fill("[1, 2]")
    form.get_by_role("button", name="Run").click()
    expect(page.get_by_role("heading", name=re.compile("Execution"))).to_be_visible()
    ex_id = page.url.rsplit("/", 1)[-1]
    done = wait_state(served, ex_id, "SUCCESS", "FAILED")
    assert done["inputs"] == {
        "a_string": "text", "a_int": 42, "a_float": 2.5, "a_bool": True, "a_json": {"a": [1]},
        "a_list": [1, 2], "a_dict": {"k": "v"}, "a_any": "anything",
    }  # fmt: skip


def test_flows_page_and_topology_of_every_shape(page: Any, served: Served) -> None:
    """Flows are listed by namespace; a flow's page shows its source state, triggers and
    executions; its execution's topology draws parallel, dag, foreach, errors and finally
    groups with each node's state as a word."""
    page.get_by_role("link", name="Flows").click()
    expect(page.get_by_role("heading", name="ops")).to_be_visible()
    shot(page, "flows")
    page.get_by_role("link", name="shapes").click()
    expect(page.get_by_role("heading", name="Triggers")).to_be_visible()
    expect(page.locator("main")).to_contain_text("nightly")
    shot(page, "flow")
    ex = api(served, "POST", "executions/ops/shapes", params={"wait": True}, json={})
    page.goto(f"{served.url}/#/executions/{ex['id']}?tab=Topology")
    for mode in ("parallel", "dag", "foreach", "errors", "finally"):
        expect(page.locator(f".g-{mode}")).to_have_count(1)
    expect(page.locator('[data-node="d4"]')).to_contain_text("after: d2, d3")
    expect(page.locator('[data-node="d4"]')).to_contain_text("SUCCESS")
    expect(page.locator('[data-node="on_error"]')).to_contain_text("not run")
    shot(page, "execution-topology-shapes")


def test_a_phone_sees_the_list_and_the_gantt(browser: Any, served: Served) -> None:
    """At a phone's width the pages fit without horizontal scrolling of the page itself."""
    ex = api(served, "POST", "executions/team/retried", params={"wait": True}, json={})
    context = browser.new_context(viewport={"width": 390, "height": 844})
    pg = context.new_page()
    try:
        pg.goto(f"{served.url}/#/executions/{ex['id']}")
        expect(pg.locator(".gantt-bar").first).to_be_visible()
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 392, width
        shot(pg, "phone-execution")
        pg.goto(f"{served.url}/#/executions")
        expect(pg.locator("tbody tr").first).to_be_visible()
        assert pg.evaluate("document.documentElement.scrollWidth") <= 392
        shot(pg, "phone-executions")
        pg.goto(f"{served.url}/#/flows/ops/shapes")
        expect(pg.get_by_role("switch", name="hook enabled")).to_be_visible()
        assert pg.evaluate("document.documentElement.scrollWidth") <= 392
        shot(pg, "phone-flow")
    finally:
        context.close()


YAML = """id: greeter
namespace: yaml
inputs:
  - id: name
    type: string
    default: world
tasks:
  - id: greet
    type: log
    message: "Hello, {{ inputs.name }}!"
"""


def test_a_flow_source_shows_its_validation_problems(page: Any, served: Served) -> None:
    """A deployed YAML flow's page shows its source as valid; an edit that breaks it shows
    the validator's problems with where they are, and deploys nothing."""
    r = httpx.post(served.url + "/api/v1/flows", content=YAML, timeout=30)
    assert r.status_code in (200, 201), r.text
    page.goto(f"{served.url}/#/flows/yaml/greeter")
    expect(page.locator("main")).to_contain_text("✓ valid")
    source = page.get_by_label("Source (YAML)")
    expect(source).to_have_value(YAML)
    source.fill(YAML.replace("type: log", "type: no_such_task"))
    page.get_by_role("button", name="Validate").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Validation problems")
    expect(alert).to_contain_text("no_such_task")
    shot(page, "flow-source-problems")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_role("alert")).to_contain_text("no_such_task")
    assert api(served, "GET", "flows/yaml/greeter")["revision"] == 1


def test_pause_restart_and_replay_from_a_chosen_task_run(page: Any, served: Served) -> None:
    """Pause on a running execution pauses it; Restart on a failed one runs its failed task
    again (attempt 2); Replay from a chosen task run opens the new execution, linked back."""
    GATE.clear()
    running = api(served, "POST", "executions/team/waiting", json={})
    wait_state(served, running["id"], "RUNNING")
    page.goto(f"{served.url}/#/executions/{running['id']}")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".head .badge")).to_contain_text("PAUSED")
    GATE.set()
    failed = api(served, "POST", "executions/team/failing", params={"wait": True}, json={})
    assert failed["state"] == "FAILED"
    page.goto(f"{served.url}/#/executions/{failed['id']}")
    expect(page.locator(".head .badge")).to_contain_text("FAILED")
    page.get_by_role("button", name="Restart").click()
    expect(page.locator("dl.meta")).to_contain_text("2 (restarted)")
    expect(page.locator(".head .badge")).to_contain_text("FAILED")
    first = next(tr for tr in failed["task_runs"] if tr["task_id"] == "first")
    page.get_by_label("Replay from").select_option(first["id"])
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("dl.meta")).to_contain_text("Replay of")
    assert failed["id"] not in page.url
    replayed = api(served, "GET", f"executions/{page.url.rsplit('/', 1)[-1]}")
    assert replayed["original_execution_id"] == failed["id"]
    meta = page.locator("dl.meta")
    expect(meta.get_by_role("link", name=failed["id"])).to_be_visible()
    meta.get_by_role("link", name=failed["id"]).click()  # back to the original: it lists it
    expect(page.get_by_role("heading", name=re.compile("Execution"))).to_contain_text(failed["id"])
    expect(meta).to_contain_text("Replays")
    expect(meta.get_by_role("link", name=replayed["id"])).to_be_visible()
    expect(meta).to_contain_text("Restarts")
    shot(page, "execution-links")


def test_subflow_links_and_log_filters(page: Any, served: Served) -> None:
    """A parent's page links to its subflow's execution, which links back; the Logs tab
    filters by task run and by level."""
    parent = api(served, "POST", "executions/team/parent", params={"wait": True}, json={})
    child_id = parent["task_runs"][0]["child_execution_id"]
    page.goto(f"{served.url}/#/executions/{parent['id']}")
    page.locator("dl.meta").get_by_role("link", name=re.compile("child")).click()
    expect(page.get_by_role("heading", name=re.compile("Execution"))).to_contain_text(child_id)
    expect(page.locator("dl.meta").get_by_role("link", name=parent["id"])).to_be_visible()
    shapes = api(served, "POST", "executions/ops/shapes", params={"wait": True}, json={})
    page.goto(f"{served.url}/#/executions/{shapes['id']}?tab=Logs")
    logs = page.locator("table.logs tbody")
    expect(logs).to_contain_text("go")
    expect(logs.locator("tr")).to_have_count(
        len(api(served, "GET", f"executions/{shapes['id']}/logs")["results"])
    )
    left = next(tr for tr in shapes["task_runs"] if tr["task_id"] == "left")
    page.get_by_label("Task").select_option(left["id"])
    expect(logs.locator("tr")).to_have_count(1)
    expect(logs).to_contain_text("left")
    page.get_by_label("Level").select_option("ERROR")
    expect(logs).to_contain_text("No log lines.")
    shot(page, "execution-logs")


def test_upload_a_file_from_the_run_form(page: Any, served: Served, tmp_path: Path) -> None:
    """A FILE input's field uploads the chosen file: the execution gets it as a stored file,
    its task reads the content, and the page downloads it back byte for byte."""
    doc = tmp_path / "notes.txt"
    doc.write_text("uploaded from the browser ✓")
    page.goto(f"{served.url}/#/flows/team/upload")
    form = page.get_by_role("form", name="Run this flow")
    form.get_by_label("doc").set_input_files(str(doc))
    shot(page, "flow-upload")
    form.get_by_role("button", name="Run").click()
    expect(page.get_by_role("heading", name=re.compile("Execution"))).to_be_visible()
    ex_id = page.url.rsplit("/", 1)[-1]
    done = wait_state(served, ex_id, "SUCCESS", "FAILED")
    assert done["state"] == "SUCCESS", done.get("error")
    assert done["inputs"]["doc"].startswith("actorflow://")
    assert done["task_runs"][0]["outputs"]["text"] == "uploaded from the browser ✓"
    page.goto(f"{served.url}/#/executions/{ex_id}?tab=Outputs")
    expect(page.locator(".panel .tree").first).to_contain_text("uploaded from the browser ✓")
    with page.expect_download() as info:  # the input itself, from the header
        page.locator("dl.meta").get_by_role("link", name=re.compile("notes.txt")).click()
    got = tmp_path / "got.txt"
    info.value.save_as(got)
    assert got.read_bytes() == doc.read_bytes()
    with page.expect_download() as info:  # what the task made of it
        page.locator(".panel").get_by_role("link", name=re.compile("copy.txt")).click()
    info.value.save_as(got)
    assert got.read_text() == "UPLOADED FROM THE BROWSER ✓"


def test_switch_a_trigger_off_and_on(page: Any, served: Served) -> None:
    """A flow's page has an on/off switch per trigger, labelled with the trigger's id and its
    state in words; flipping it changes what the API reports, and the page says so."""

    def enabled(trigger_id: str) -> bool:
        found = api(served, "GET", "triggers", params={"namespace": "ops"})["results"]
        return bool(next(t for t in found if t["id"] == trigger_id)["enabled"])

    assert enabled("hook") and not enabled("nightly")
    page.goto(f"{served.url}/#/flows/ops/shapes")
    hook = page.get_by_role("switch", name="hook enabled")
    nightly = page.get_by_role("switch", name="nightly enabled")
    expect(hook).to_be_checked()
    expect(nightly).not_to_be_checked()
    item = page.locator('li[data-trigger="hook"]')
    expect(item).to_contain_text("On: fires")
    expect(page.locator('li[data-trigger="nightly"]')).to_contain_text("Off: does not fire")
    hook.focus()
    page.keyboard.press("Space")  # a keyboard flips it as a click does
    expect(item).to_contain_text("Off: does not fire")
    expect(hook).not_to_be_checked()
    expect(hook).to_be_enabled()
    assert not enabled("hook")
    shot(page, "flow-triggers")
    r = httpx.post(f"{served.url}/api/v1/executions/webhook/ops/shapes/secret-key", timeout=30)
    assert r.status_code == 404  # switched off: the webhook starts nothing
    nightly.click()
    expect(page.locator('li[data-trigger="nightly"]')).to_contain_text("On: fires")
    assert enabled("nightly")
    hook.click()
    expect(item).to_contain_text("On: fires")
    assert enabled("hook")
    page.reload()  # the state shown comes from the API, not from the page's memory
    expect(page.get_by_role("switch", name="nightly enabled")).to_be_checked()
    api(served, "PUT", "triggers/ops/shapes/nightly", json={"enabled": False})


def test_the_gantt_redraws_in_place(page: Any, served: Served) -> None:
    """While an execution runs, a change redraws only what changed: the rows already drawn
    stay the same elements, the focused one keeps the focus and the page its scroll."""
    GATE.clear()
    ex = api(served, "POST", "executions/team/stepped", json={})
    wait_state(served, ex["id"], "RUNNING")
    page.set_viewport_size({"width": 1280, "height": 360})  # short: the page scrolls
    page.goto(f"{served.url}/#/executions/{ex['id']}")
    first = page.locator('[data-task="first"]')
    expect(page.locator('[data-task="wait"]')).to_have_attribute("data-state", "RUNNING")
    expect(first).to_have_attribute("data-state", "SUCCESS")
    first.evaluate("e => { e.dataset.mark = 'kept'; }")  # gone if the row is drawn anew
    page.locator('[data-task="wait"]').focus()
    page.keyboard.press("ArrowUp")  # the chart's rows are one tab stop, walked by arrows
    assert first.evaluate("e => document.activeElement === e")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 0
    GATE.set()
    expect(page.locator(".head .badge")).to_contain_text("SUCCESS")
    expect(page.locator('[data-task="after"]')).to_have_attribute("data-state", "SUCCESS")
    expect(page.locator('[data-task="wait"]')).to_have_attribute("data-state", "SUCCESS")
    expect(first).to_have_attribute("data-mark", "kept")
    assert first.evaluate("e => document.activeElement === e")
    assert page.evaluate("window.scrollY") >= scrolled
    expect(page.locator(".gantt-bar")).to_have_count(3)
