"""Node 0's link (LocalHub) and the ranks' Communicator over a real ipc://
socket, in one process: the ranks (threads here, forked processes in a job)
rendezvous, all_reduce and leave; the link turns the coordinator's outcome
into events and replies."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import zmq

from fakerun import events as ev
from fakerun import protocol as p
from fakerun.coordinator.core import Coordinator, JobSpec
from fakerun.launcher.local_link import LocalHub
from fakerun.protocol.keys import JobKeys
from fakerun.rank.communicator import Communicator
from fakerun.world.physics import Bounds

BOUNDS = Bounds(sim_s=3600.0, numel=10**6, power_w=700, memory_mib=81559, run_s=1e9)
TOKEN = "secret"


def rank(ctx: zmq.Context, endpoint: str, r: int, results: dict[int, object]) -> None:
    comm = Communicator(ctx, endpoint, r, os.getppid(), TOKEN)
    try:
        comm.hello(p.Hello(r, r, 0, 100 + r, "run-1", TOKEN, {}), timeout_s=10)
        results[r] = (comm.all_reduce([r + 1.0, 10.0 * r], "sum", tag="t", step=1),
                      comm.goodbye(0))
    except Exception as exc:  # noqa: BLE001 - the test reports what the rank met
        results[r] = exc
    finally:
        comm.close()


def test_ranks_rendezvous_reduce_and_leave_through_node_0s_link(tmp_path: Path) -> None:
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path / 'c.sock'}"
    core = Coordinator(JobSpec("run-1", TOKEN, 2, bounds=BOUNDS), 60.0, time.time)
    hub = LocalHub(ctx, [endpoint], core, lambda missing: [], time.monotonic(), JobKeys.derive(TOKEN))
    results: dict[int, object] = {}
    ranks = [threading.Thread(target=rank, args=(ctx, endpoint, r, results)) for r in range(2)]
    events: list[ev.Event] = []
    try:
        for t in ranks:
            t.start()
        deadline = time.monotonic() + 15
        while any(t.is_alive() for t in ranks) and time.monotonic() < deadline:
            if hub.socket.poll(50):
                events += hub.receive(time.monotonic())
        assert not any(t.is_alive() for t in ranks), "the ranks never finished"
    finally:
        hub.close()
        ctx.destroy(linger=0)
    assert results == {0: ([3.0, 10.0], True), 1: ([3.0, 10.0], True)}
    assert hub.ready and hub.joined() == [0, 1]
    kinds = [type(e).NAME for e in events]
    assert kinds.index("rendezvous") < kinds.index("collective")
    done = next(e for e in events if isinstance(e, ev.Collective))
    assert (done.op, done.seq, done.count) == ("all_reduce", 1, 2)
    assert hub.rejected() == {}


def test_a_failed_node_still_hears_the_run_until_its_ack(tmp_path: Path) -> None:
    """A node whose rank failed reports it, then stays for its ranks' last
    words (their tracebacks, relayed by node 0) until node 0's Ack. Node 0
    stopped relaying to a failed node: under srun's one task a rank, every
    task but task 0 showed nothing of its own rank's crash."""
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path / 'c.sock'}"
    job = JobSpec("run-1", TOKEN, 4, nnodes=2, digest="d", bounds=BOUNDS, host="gpu01")
    hub = LocalHub(ctx, [endpoint], Coordinator(job, 60.0, time.time), lambda missing: [],
                   time.monotonic(), JobKeys.derive(TOKEN))
    agent = ctx.socket(zmq.DEALER)
    agent.setsockopt(zmq.IDENTITY, p.agent_routing_id(1))
    agent.connect(endpoint)
    heard: list[object] = []
    try:
        agent.send(p.encode(p.AgentHello(1, 2, 9, "gpu02", "run-1", TOKEN, "d")))
        agent.send(p.encode(p.AgentReport(1, "failed", "rank 2 exited with code 1")))
        agent.send(p.encode(p.AgentReport(1, "done", "")))
        deadline = time.monotonic() + 10
        while not any(isinstance(m, p.Ack) for m in heard) and time.monotonic() < deadline:
            if hub.socket.poll(20):
                hub.receive(time.monotonic())
            while agent.poll(0):
                heard.append(p.decode(agent.recv()))
    finally:
        agent.close(linger=0)
        hub.close()
        ctx.destroy(linger=0)
    relayed = [item for m in heard if isinstance(m, p.Events) for item in m.items]
    assert any('"event":"node_lost"' in item and '"node_rank":1' in item for item in relayed), heard
    assert isinstance(heard[-1], p.Ack)  # after every event
