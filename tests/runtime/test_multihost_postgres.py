"""Three worker "hosts" (network namespaces joined to this one by veth pairs) share one
PostgreSQL over the network: a host cut off loses its executions to the others, and its late
writes once the link is back are refused by fencing (real processes, real links)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import actorflow as af
from _support import postgres
from _support.histories import check_stored_histories
from _support.workers import LEASE_WORKER, Worker, pg_rows, side_lines, until, workers

pytestmark = pytest.mark.anyio
sys.path.insert(0, str(LEASE_WORKER.parent))
from lease_worker import GATED  # noqa: E402

HOSTS = 3
PER_HOST = 3  # each worker's max_active: the 9 executions spread 3 per host
TTL = 2.0


def _unavailable(reason: str) -> None:
    print(reason)
    if os.environ.get("CI") == "true":
        pytest.fail(f"the multi-host test must run in CI: {reason}")
    pytest.skip(reason)


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


class Hosts:
    """Network namespaces, each with a veth pair to this one: the host side k gets
    10.213.N.(4k+1)/30, the namespace side 10.213.N.(4k+2)/30.

    Names and the subnet carry this process's id, so two runs at once do not collide.
    """

    def __init__(self, n: int) -> None:
        tag = os.getpid() % 10_000
        self.subnet = 1 + os.getpid() % 250
        self.namespaces = [f"afmh{tag}n{k}" for k in range(n)]
        self.host_links = [f"afmh{tag}h{k}" for k in range(n)]

    def host_address(self, k: int) -> str:
        return f"10.213.{self.subnet}.{4 * k + 1}"

    @property
    def network(self) -> str:
        return f"10.213.{self.subnet}.0/24"

    def prefix(self, k: int) -> list[str]:
        """What runs a command on host ``k``."""
        return ["ip", "netns", "exec", self.namespaces[k]]

    def up(self) -> None:
        for k, (ns, link) in enumerate(zip(self.namespaces, self.host_links, strict=True)):
            inner = f"{link[:-2]}i{k}"
            _ip("netns", "add", ns)
            _ip("link", "add", link, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"{self.host_address(k)}/30", "dev", link)
            _ip("link", "set", link, "up")
            _ip("-n", ns, "addr", "add", f"10.213.{self.subnet}.{4 * k + 2}/30", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, k: int) -> None:
        _ip("link", "set", self.host_links[k], "down")

    def restore(self, k: int) -> None:
        _ip("link", "set", self.host_links[k], "up")

    def down(self) -> None:
        """Remove every namespace and link made (also those of a half-done ``up``)."""
        for ns, link in zip(self.namespaces, self.host_links, strict=True):
            for args in (("link", "del", link), ("netns", "del", ns)):
                subprocess.run(["ip", *args], capture_output=True, timeout=30, check=False)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    """Three network namespaces, removed after the test, however it ends."""
    if os.geteuid() != 0:
        _unavailable("not root: making network namespaces needs root")
    if shutil.which("ip") is None:
        _unavailable("no `ip` command (iproute2) to make network namespaces")
    made = Hosts(HOSTS)
    try:
        made.up()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        made.down()
        _unavailable(f"cannot make network namespaces here: {exc}")
    try:
        yield made
    finally:
        made.down()


@pytest.fixture
def net_cluster(hosts: Hosts) -> Iterator[postgres.Cluster]:
    """A throwaway PostgreSQL listening on the host side of every veth pair too."""
    try:
        cluster = postgres.start(
            listen=[hosts.host_address(k) for k in range(HOSTS)],
            trust=[hosts.network],
            throwaway=True,
        )
    except postgres.Unavailable as exc:
        _unavailable(f"no PostgreSQL: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def net_db(net_cluster: postgres.Cluster) -> AsyncIterator[str]:
    """A new database on that server; its name."""
    name = await postgres.create_database(net_cluster)
    yield name
    await postgres.drop_database(net_cluster, name)


TABLES = (
    ("executions", "id"), ("task_runs", "seq"), ("attempts", "seq"),
    ("state_history", "seq"), ("logs", "seq"),
)  # fmt: skip


def _snapshot(dsn: str) -> list[Any]:
    return [pg_rows(dsn, f"SELECT * FROM {t} ORDER BY {order}") for t, order in TABLES]


def _heartbeat(dsn: str, pid: int) -> float:
    got = pg_rows(dsn, "SELECT max(heartbeat) FROM owners WHERE owner LIKE $1", f"%:{pid}:%")
    return float(got[0][0] or 0.0)


async def test_a_host_cut_off_loses_its_executions_and_its_late_writes_are_refused(
    hosts: Hosts, net_cluster: postgres.Cluster, net_db: str, tmp_path: Path
) -> None:
    """Nine executions run on three hosts, three each, until the test opens their gate. Cut
    one host's link, open the gate: its leases expire and the other two adopt and finish
    its executions. Restore the link: its late writes are refused by fencing (the database
    stays as the adopters left it) and it logs that it lost those executions. Afterwards
    every execution is terminal, no completed task run ran twice (each stored attempt ran
    once, nothing else ran), and every stored history follows the transition tables."""
    local = net_cluster.dsn(net_db)  # this host's socket: the client and the checks
    assert net_cluster.port is not None
    remote = [
        f"postgresql://postgres@{hosts.host_address(k)}:{net_cluster.port}/{net_db}"
        for k in range(HOSTS)
    ]
    side, files = tmp_path / "side", tmp_path / "files"
    env = {**os.environ, "ACTORFLOW_FILES": str(files)}  # the "shared mount" of every host
    async with af.Runtime.open(local, worker=False, files=files):
        pass  # the schema exists before the workers race to create it
    procs = [
        Worker(remote[k], side, TTL, "--max-active", str(PER_HOST), prefix=hosts.prefix(k),
               env=env)
        for k in range(HOSTS)
    ]  # fmt: skip
    attempts = "SELECT count(*) FROM attempts"
    with workers(*procs):
        # Every attempt runs until the gate file exists: the test opens it once the link is
        # cut, so the cut-off host's attempts end (and try to write) only after, however
        # slow this machine is; an adopter's attempt finds the gate open and ends at once.
        gate = tmp_path / "gate"
        async with af.Runtime.open(local, worker=False, flows=[GATED], files=files) as client:
            ids = [(await client.submit(GATED, {"gate": str(gate)})).id for _ in range(9)]
        until("every first attempt to be stored", lambda: pg_rows(local, attempts)[0][0] >= 9)
        owner_of = dict(pg_rows(local, "SELECT id, owner FROM executions"))
        per_host = [
            {e for e, o in owner_of.items() if f":{w.pid}:" in o} for w in procs
        ]  # the owner name holds the worker's pid (ip netns exec execs it)
        assert [len(p) for p in per_host] == [PER_HOST] * HOSTS, owner_of
        victim, lost = procs[0], per_host[0]

        # Cut right after a heartbeat committed: no transaction of the victim's is open on
        # the server then, so none holds row locks the adopters would wait behind.
        beat = _heartbeat(local, victim.pid)
        until("a heartbeat of the victim", lambda: _heartbeat(local, victim.pid) > beat)
        hosts.cut(0)
        gate.touch()
        ended = "SELECT count(*) FROM executions WHERE ended IS NOT NULL"
        until("every execution to end", lambda: pg_rows(local, ended)[0][0] >= 9, 60)
        before = _snapshot(local)
        assert victim.proc.poll() is None, victim.stderr()

        hosts.restore(0)
        until(
            "the reconnected host to stop every execution it lost",
            lambda: all(f"execution {i}: lease lost" in victim.stderr() for i in lost),
            timeout=90,
        )
        # Its refused batches are answered before it logs; one more beat for stragglers.
        beat = _heartbeat(local, victim.pid)
        until("a heartbeat after the link is back", lambda: _heartbeat(local, victim.pid) > beat)
        assert _snapshot(local) == before  # every late write was refused
        assert "claimed by" in victim.stderr()

    states = dict(pg_rows(local, "SELECT id, state FROM executions"))
    assert set(states) == set(ids) and Counter(states.values()) == {"SUCCESS": 9}, states
    stored = pg_rows(local, "SELECT execution_id, task_run_id, number, state FROM attempts")
    ran = side_lines(side)
    # Each attempt ran once, and exactly the stored attempts ran.
    assert Counter((line[1], int(line[2])) for line in ran).most_common(1)[0][1] == 1
    assert {(line[1], int(line[2])) for line in ran} == {(a[1], a[2]) for a in stored}
    by_execution: dict[str, Counter[str]] = {}
    for a in stored:
        by_execution.setdefault(a[0], Counter())[a[3]] += 1
    for ex_id, counts in by_execution.items():
        # The cut-off host's attempt was interrupted; an adopter's second one succeeded.
        want = {"FAILED": 1, "SUCCESS": 1} if ex_id in lost else {"SUCCESS": 1}
        assert counts == want, (ex_id, counts)
    adopters = {line[3] for line in ran if line[0] in lost and line[2] == "2"}
    assert adopters and adopters <= {str(w.pid) for w in procs[1:]}
    histories = pg_rows(
        local, "SELECT execution_id, task_run_id, state FROM state_history ORDER BY seq"
    )
    assert check_stored_histories(histories) == 9 * 2  # each execution and its task run
