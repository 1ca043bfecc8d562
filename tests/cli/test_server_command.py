"""`actorflow server` as a user runs it: a real process serving the API, stopped by SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path

from _support.cli import EXAMPLES, finish, start


def _request(url: str, body: bytes | None = None) -> dict[str, object]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        data: dict[str, object] = json.loads(resp.read())
        return data


def test_server_serves_the_flows_of_a_directory_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The server deploys --flows DIR, runs a submitted execution to SUCCESS, and exits 0 on
    SIGTERM."""
    proc = start("server", "--db", tmp_path / "s.db", "--flows", EXAMPLES, "--port", "0")
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert found, line
    base = f"http://127.0.0.1:{found.group(1)}/api/v1"
    try:
        assert _request(f"{base}/health")["status"] == "ok"
        flows = _request(f"{base}/flows")["results"]
        assert isinstance(flows, list) and {"hello"} <= {f["id"] for f in flows}
        hello = next(f for f in flows if f["id"] == "hello")
        ex = _request(f"{base}/executions/{hello['namespace']}/hello?wait=true",
                      json.dumps({"name": "Ada"}).encode())  # fmt: skip
        assert ex["state"] == "SUCCESS"
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _out, err = finish(proc)
    assert code == 0, err


def test_server_refuses_a_missing_flows_directory(tmp_path: Path) -> None:
    """--flows on a path that is not a directory exits 2 with the path in the message."""
    proc = start("server", "--db", tmp_path / "s.db", "--flows", tmp_path / "nope", "--port", "0")
    code, _out, err = finish(proc)
    assert code == 2 and "nope" in err and "not a directory" in err


def test_flow_deploy_list_and_show(tmp_path: Path) -> None:
    """`flow deploy DIR` stores every flow, `flows` lists them, `flow show` prints a source;
    deploying again changes nothing."""
    from _support.cli import af, af_json

    db = tmp_path / "f.db"
    out = af_json("flow", "deploy", EXAMPLES, "--db", db)
    assert {d["id"] for d in out} >= {"hello", "approval"} and all(d["new"] for d in out)
    again = af_json("flow", "deploy", EXAMPLES / "hello.yaml", "--db", db)
    assert again == [{**next(d for d in out if d["id"] == "hello"), "new": False}]
    listed = af_json("flows", "--db", db)
    assert {f["id"] for f in listed} == {d["id"] for d in out}
    shown = af("flow", "show", "examples.hello", "--db", db).stdout
    assert shown == (EXAMPLES / "hello.yaml").read_text()
    missing = af("flow", "show", "nope", "--db", db, code=1)
    assert "no deployed flow 'nope'" in missing.stderr
