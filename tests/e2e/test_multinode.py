"""Several nodes: one agent each, talking TCP to node 0's coordinator."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import msgpack
import zmq

from fakerun.config.options import free_port
from fakerun.protocol.codec import encode
from fakerun.protocol.messages import AgentHello, Hello

from ..conftest import FAKERUN, wait_until

FAST = ("--speed", "0", "--seed", "5", "--max-steps", "6", "--output", "jsonl")


def by_node(job) -> dict[int, list[dict]]:
    nodes: dict[int, list[dict]] = {}
    for event in job.events():
        nodes.setdefault(event.get("node", -1), []).append(event)
    return nodes


def test_two_local_nodes_run_one_job(runner):
    job = runner.run("--nodes", "2", "--nproc", "4", "--no-theatre", *FAST, timeout=90)
    assert job.proc.returncode == 0, job.stderr[-2000:]
    nodes = by_node(job)
    assert set(nodes) == {0, 1}
    started = {e["rank"]: e for e in nodes[0] if e["event"] == "rank_started"}
    assert sorted(started) == list(range(8))
    for rank, e in started.items():
        env = e["env"]
        assert (env["RANK"], env["LOCAL_RANK"], env["GROUP_RANK"], env["WORLD_SIZE"],
                env["GROUP_WORLD_SIZE"]) == (str(rank), str(rank % 4), str(rank // 4), "8", "2")
    assert [e["step"] for e in nodes[0] if e["event"] == "step"] == list(range(1, 7))  # the run, once
    assert not [e for e in nodes[1] if e["event"] == "step"]  # node 1's copies are not merged in
    for node in (0, 1):
        exited = [e["rank"] for e in nodes[node] if e["event"] == "rank_exited"]
        assert exited == list(range(4 * node, 4 * node + 4))  # and reports its own ranks
        assert [e["exit_code"] for e in nodes[node] if e["event"] == "run_finished"] == [0]


def test_the_merged_stream_says_each_event_once(runner):
    """Node 0 relays the job's events to every other agent, for its own view;
    merged, each event comes once, from the agent that made it."""
    job = runner.run("--nodes", "2", "--nproc", "2", "--no-theatre", *FAST, timeout=90)
    assert job.proc.returncode == 0, job.stderr[-2000:]

    def once(name: str, key) -> list:
        found = [key(e) for e in job.of(name)]
        assert found and len(found) == len(set(found)), (name, found)
        return found

    assert once("step", lambda e: e["step"]) == list(range(1, 7))
    for name in ("validation", "checkpoint"):
        once(name, lambda e: e["step"])
    once("collective", lambda e: (e["comm"], e["seq"]))
    once("rendezvous", lambda e: e["world_size"])
    assert sorted(once("rank_started", lambda e: e["rank"])) == [0, 1, 2, 3]
    assert sorted(once("rank_exited", lambda e: e["rank"])) == [0, 1, 2, 3]
    assert all(e["node"] == e["node_rank"] for e in job.of("rank_exited"))  # each node its own ranks'
    for name in ("run_started", "run_finished"):  # each agent's own record of its run
        assert sorted(once(name, lambda e: e["node"])) == [0, 1]


def test_a_failure_in_the_merged_stream_is_told_once(runner):
    job = runner.run("--nodes", "2", "--nproc", "2", "--no-theatre", *FAST, "--scenario", "rank-crash",
                     "--fail-rank", "1", "--fail-step", "3", timeout=90)
    assert job.proc.returncode == 1
    output = [(e["rank"], e["stream"], tuple(e["lines"])) for e in job.of("rank_output")]
    assert 1 in {rank for rank, _, _ in output} and len(output) == len(set(output)), output
    lost = [(e["node_rank"], e["reason"]) for e in job.of("node_lost")]
    assert (0, "failed") in lost and len(lost) == len(set(lost)), lost
    assert sorted(e["node"] for e in job.of("run_failed")) == [0, 1]  # each agent's own report


def test_plain_lines_are_prefixed_with_their_node(runner):
    job = runner.run("--nodes", "2", "--nproc", "2", "--no-theatre", "--speed", "0", "--seed", "5",
                     "--max-steps", "3", "--output", "plain", timeout=90)
    assert job.proc.returncode == 0
    hosts = {line.split(": ", 1)[0] for line in job.stdout.splitlines() + job.stderr.splitlines()}
    assert len(hosts) == 2
    node1 = [line for line in job.stderr.splitlines() + job.stdout.splitlines()
             if line.startswith(sorted(hosts)[1] + ": [default1]:")]
    assert node1, "node 1's local rank 1 printed nothing"


def test_a_rank_failing_on_node_1_fails_both_nodes(runner):
    job = runner.run("--nodes", "2", "--nproc", "2", "--no-theatre", *FAST, "--scenario", "rank-crash",
                     "--fail-rank", "3", "--fail-step", "3", timeout=90)
    assert job.proc.returncode == 1
    nodes = by_node(job)
    failed = {n: [e for e in events if e["event"] == "run_failed"] for n, events in nodes.items()}
    assert failed[1][0]["root"]["rank"] == 3  # node 1 blames the rank that crashed
    assert failed[0][0]["root"]["rank"] in (0, 1)  # node 0, like torchrun's, blames its own
    assert "torch.distributed.DistBackendError: NCCL error in" in failed[0][0]["root"]["message"]
    for n in (0, 1):
        assert [e["exit_code"] for e in nodes[n] if e["event"] == "run_finished"] == [1]


def test_missing_node_gets_a_hint_then_a_rendezvous_timeout(runner):
    job = runner.run("--nnodes", "2", "--nproc", "2", "--master-port", str(free_port()),
                     "--rdzv-timeout", "5", *FAST, timeout=60)
    assert job.proc.returncode == 1
    hint = job.of("waiting_for_nodes")[0]
    assert hint["missing"] == [1]
    assert "--node-rank 1" in hint["commands"][0] and "FAKERUN_TOKEN=" in hint["commands"][0]
    assert job.of("rendezvous_timeout")


def test_ctrl_c_while_waiting_for_a_node(runner):
    job = runner.start("--nnodes", "2", "--nproc", "2", "--master-port", str(free_port()), *FAST)
    job.wait_for_event("run_started")
    job.kill(signal.SIGINT)
    assert job.wait(20) == 1  # torchrun's SignalException, uncaught


def test_peers_without_the_key_are_refused_and_counted_and_the_run_finishes(runner):
    """Node 0's TCP port is CurveZMQ with keys from the job's token: a peer
    without them fails the handshake (counted as "handshake"), so not one of
    its frames, a wrong-token hello or garbage, reaches the coordinator."""
    port = free_port()
    token = os.urandom(8).hex()
    env = os.environ | {"FAKERUN_TOKEN": token}
    # Llama-3.2-3B on L40S (seed 5): ~370 s of simulated work, ~3.7 s of wall; the first step after
    # 0.2 s, then ~3 s of steps, validation, checkpoint and export, in which the intruders (sent at
    # once after the first step) fail their handshakes.
    common = ("--nnodes", "2", "--nproc", "2", "--master-port", str(port), "--speed", "100",
              "--seed", "5", "--max-steps", "4", "--output", "jsonl")
    node0 = runner.start(*common, "--node-rank", "0", env=env)
    node1 = runner.start(*common, "--node-rank", "1", "--rdzv-id", node0.marker, env=env)
    node0.wait_for_event("step")
    ctx = zmq.Context()
    try:
        intruder = ctx.socket(zmq.DEALER)
        intruder.setsockopt(zmq.IDENTITY, b"agent-1")
        intruder.connect(f"tcp://127.0.0.1:{port}")
        intruder.send(encode(AgentHello(1, 2, 1, "evil", node0.marker, "wrong", "x")))
        spoof = ctx.socket(zmq.DEALER)
        spoof.setsockopt(zmq.IDENTITY, b"rank-9")
        spoof.connect(f"tcp://127.0.0.1:{port}")
        spoof.send(encode(Hello(9, 0, 1, 1, node0.marker, "wrong", {})))
        for i in range(300):
            spoof.send(os.urandom(i % 64 + 1))
        spoof.send(msgpack.packb({"v": 1, "kind": "contribute"}))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(4096))
        assert node0.wait(90) == 0, node0.stderr[-2000:]
        assert node1.wait(30) == 0, node1.stderr[-2000:]
    finally:
        ctx.destroy(linger=0)
    rejected = node0.of("run_finished")[0]["rejected"]
    assert set(rejected) == {"handshake"} and rejected["handshake"] >= 2, rejected
    assert [e["step"] for e in node1.of("step")][-1] == 4


def test_node_rank_needs_the_token(runner):
    job = runner.run("--nnodes", "2", "--node-rank", "1", "--master-port", "29999", *FAST)
    assert job.proc.returncode == 2
    assert "token" in job.stderr and job.stderr.count("\n") == 1


def test_node_1_whose_node_0_never_answers_waits_for_the_rendezvous_timeout(runner):
    """Node 0 may start after node 1: until it first answers, the node
    timeout does not apply (node 1 gave up after it), the rendezvous's does."""
    env = os.environ | {"FAKERUN_TOKEN": "t"}
    start = time.monotonic()
    job = runner.start("--nnodes", "2", "--node-rank", "1", "--nproc", "2", "--master-port",
                       str(free_port()), "--node-timeout", "1", "--rdzv-timeout", "4", *FAST, env=env)
    assert job.wait(40) == 1
    assert time.monotonic() - start >= 4
    assert not job.of("node_lost")
    assert job.of("rendezvous_timeout")



def test_smi_shows_the_whole_cluster_of_a_running_job(runner):
    # The first step after ~50 s of simulated start-up and step (seed 5): 2.5 s of wall.
    job = runner.start("--nodes", "2", "--nproc", "2", "--no-theatre", "--seed", "5", "--speed", "20",
                       "--max-steps", "2000", "--output", "jsonl")
    job.wait_for_event("step")
    pids = sorted(e["pid"] for e in job.of("rank_started") if e.get("node") == 0)
    table = subprocess.run([*FAKERUN, "smi", "--job", job.marker], capture_output=True, text=True,
                           timeout=30)
    assert table.returncode == 0, table.stderr
    assert "NVIDIA-SMI" in table.stdout and table.stdout.count("==> ") == 2  # one table per node
    shown = {int(line.split()[4]) for line in table.stdout.splitlines()
             if line.startswith("|") and " C " in line}
    assert set(pids) == shown
    job.kill(signal.SIGINT)
    assert job.wait(30) == 1  # each agent's, as torchrun's


def test_loop_reruns_on_the_same_cluster_until_sigint(runner):
    """--loop on two nodes: each run a fresh job (seed + 1, new ranks) on the
    same hosts and GPUs; both agents rendezvous again every time."""
    job = runner.start("--nodes", "2", "--nproc", "2", "--no-theatre", "--speed", "0", "--seed", "9",
                       "--max-steps", "3", "--loop", "--output", "jsonl")
    wait_until(lambda: len(job.of("run_finished")) >= 6, 90)
    job.kill(signal.SIGINT)
    assert job.wait() == 130
    nodes = by_node(job)
    for node in (0, 1):
        runs = [e for e in nodes[node] if e["event"] == "run_started"]
        assert [r["seed"] for r in runs[:3]] == [9, 10, 11], node
        assert [e["exit_code"] for e in nodes[node] if e["event"] == "run_finished"][:3] == [0, 0, 0]
    assert [s["step"] for s in nodes[0] if s["event"] == "step"][:9] == [1, 2, 3] * 3
    assert not [s for s in nodes[1] if s["event"] == "step"]  # each run's steps once, node 0's
    identities = [e["identity"] for e in job.of("run_identity")]
    assert len({(tuple(i["hosts"]), i["gpu"]["name"]) for i in identities}) == 1  # one cluster
    pids = [e["pid"] for e in job.of("rank_started") if e["node"] == 0]
    assert len(pids) == len(set(pids)) >= 12  # every run forks its own ranks: 4 of them a run
