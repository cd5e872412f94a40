"""Two hosts for real: node 0 and node 1 in network namespaces of their own,
joined by a veth pair the test creates. They find each other over the veth
addresses (node 0 listens on its veth address, not loopback); then the link
is cut mid-run and both sides must notice, fail and exit, leaving nothing."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FAKERUN, Job, job_processes, wait_until

NODE_TIMEOUT_S = 4
DETECT_S = NODE_TIMEOUT_S + 30  # silence noticed, then each node's ranks reaped and summaries written
IP_TIMEOUT = 10


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=check)


@dataclass
class Hosts:
    names: tuple[str, str]  # the two namespaces
    veths: tuple[str, str]
    addrs: tuple[str, str]

    def exec(self, host: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[host]]

    def cut(self) -> None:
        """Both ends down: packets are dropped, nothing says goodbye (no RST)."""
        for host in (0, 1):
            ip("-n", self.names[host], "link", "set", self.veths[host], "down")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    try:
        probe = ip("netns", "add", f"fakerun-probe-{uuid.uuid4().hex[:6]}", check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "the ip tool (iproute2) is not available"
    if probe.returncode:
        return f"ip netns add is not permitted here: {probe.stderr.strip()}"
    name = probe.args[-1]
    ip("netns", "del", name, check=False)
    return None


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    subnet = int(tag[:2], 16)  # 10.201.<subnet>.0/24: unlikely to meet a real network here
    made = Hosts((f"fakerun-a-{tag}", f"fakerun-b-{tag}"), (f"fr{tag}a", f"fr{tag}b"),
                 (f"10.201.{subnet}.1", f"10.201.{subnet}.2"))
    try:
        for name in made.names:
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("link", "add", made.veths[0], "type", "veth", "peer", "name", made.veths[1])
        for host in (0, 1):
            ip("link", "set", made.veths[host], "netns", made.names[host])
            ip("-n", made.names[host], "addr", "add", f"{made.addrs[host]}/24", "dev", made.veths[host])
            ip("-n", made.names[host], "link", "set", made.veths[host], "up")
        yield made
    finally:
        for name in made.names:  # deleting a namespace deletes its veth end, and so the pair
            ip("netns", "del", name, check=False)
        assert not [n for n in made.names if n in ip("netns", "list").stdout], "namespaces left behind"


def start(hosts: Hosts, node: int, marker: str, token: str, tmp: Path) -> Job:
    argv = [*hosts.exec(node), *FAKERUN, "--rdzv-id", marker, "--nnodes", "2", "--node-rank", str(node),
            "--nproc", "2", "--master-addr", hosts.addrs[0], "--master-port", "29500",
            "--node-timeout", str(NODE_TIMEOUT_S), "--token", token, "--seed", "7",
            "--max-steps", "1000000", "--speed", "5", "--output", "jsonl"]
    out, err = tmp / f"node{node}.out", tmp / f"node{node}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(argv, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
    return Job(proc, marker, out, err)


def test_two_hosts_over_veth_then_the_link_is_cut(hosts, tmp_path):
    marker, token = f"fakerun-test-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    jobs = [start(hosts, node, marker, token, tmp_path) for node in (0, 1)]
    try:
        for job in jobs:  # training over the veth link, on both hosts
            job.wait_for_event("step", count=3, timeout=60)
        started = {e["rank"]: e["env"] for e in jobs[0].of("rank_started")}
        assert started[2]["MASTER_ADDR"] == hosts.addrs[0] and started[2]["GROUP_RANK"] == "1"
        hosts.cut()
        cut_at = time.monotonic()
        codes = [job.wait(DETECT_S) for job in jobs]
        elapsed = time.monotonic() - cut_at
    finally:
        for job in jobs:
            if job.proc.poll() is None:
                job.proc.kill()
                job.proc.wait(10)
    assert all(code != 0 for code in codes), codes
    assert elapsed < DETECT_S
    # Node 0 lost node 1, node 1 lost node 0; each said why, and failed its run.
    lost = [{(e["node_rank"], e["reason"]) for e in job.of("node_lost")} for job in jobs]
    assert (1, "silent") in lost[0] and (0, "silent") in lost[1]
    for job in jobs:
        assert [e["exit_code"] for e in job.of("run_finished")] == [job.proc.returncode]
    wait_until(lambda: not job_processes(marker), 10)
