"""The coordinator's pure core: no sockets, no clock."""

from __future__ import annotations

import pytest

from fakerun import events as ev
from fakerun import protocol as p
from fakerun.coordinator.core import Coordinator, JobSpec
from fakerun.protocol.messages import agent_routing_id, rank_routing_id
from fakerun.protocol.tags import TRAIN_STEP as TRAIN_STEP_TAG
from fakerun.world.physics import Bounds

# A plan's bounds (RunConfig.bounds), large enough for every message below.
BOUNDS = Bounds(sim_s=3600.0, numel=10**6, power_w=700, memory_mib=81559, run_s=1e9)
JOB = JobSpec("run-1", "secret", 3, bounds=BOUNDS)


def frame(msg) -> bytes:
    return p.encode(msg)


def hello(rank: int, token: str = "secret", run_id: str = "run-1") -> bytes:
    return frame(p.Hello(rank, rank, 0, 100 + rank, run_id, token, {"RANK": str(rank)}))


def contribute(rank, seq, values, op="all_reduce", reduce_op="avg", tag="", step=0, root=0, numel=0):
    return frame(p.Contribute(rank, "world", seq, op, reduce_op, root, "float32", values, tag, step,
                              numel or len(values), 0.0))


@pytest.fixture
def core() -> Coordinator:
    c = Coordinator(JOB, collective_timeout_s=5.0, wall_clock=lambda: 1000.0)
    for r in range(3):
        c.handle(rank_routing_id(r), hello(r), 0.0)
    return c


def kinds(outcome):
    return [type(e).__name__ for e in outcome.events]


def test_rendezvous_completes_when_the_world_is_there():
    c = Coordinator(JOB, 5.0, lambda: 0.0)
    first = c.handle(rank_routing_id(2), hello(2), 0.0)
    assert first.events == [] and not first.replies
    c.handle(rank_routing_id(0), hello(0), 0.0)
    last = c.handle(rank_routing_id(1), hello(1), 0.0)
    assert kinds(last) == ["RankStarted"] * 3 + ["RendezvousComplete"]
    assert [e.rank for e in last.events[:3]] == [0, 1, 2]  # rank order, not arrival order
    assert [(i, type(m)) for i, m in last.replies] == [(rank_routing_id(r), p.Welcome) for r in range(3)]
    assert last.events[3].pids == [100, 101, 102]


def test_with_several_nodes_the_world_waits_for_every_agent_too():
    # Node 1's ranks may reach node 0 before node 1's agent does; were the
    # rendezvous announced then, that agent would never see its ranks start.
    job = JobSpec("run-1", "secret", 4, nnodes=2, digest="d", bounds=BOUNDS)
    c = Coordinator(job, 5.0, lambda: 0.0)
    for r in range(4):
        early = c.handle(rank_routing_id(r), frame(p.Hello(r, r % 2, r // 2, 100 + r, "run-1", "secret", {})), 0.0)
    assert early.events == [] and not c.ready
    joined = c.handle(agent_routing_id(1), frame(p.AgentHello(1, 2, 9, "host-1", "run-1", "secret", "d")), 0.1)
    assert joined.replies[0] == (agent_routing_id(1), p.Welcome(4, 0.0))  # the agent first, then its ranks
    assert kinds(joined) == ["RankStarted"] * 4 + ["RendezvousComplete"] and c.ready


@pytest.mark.parametrize(("identity", "msg", "reason"), [
    (rank_routing_id(0), hello(0, token="nope"), "wrong-token"),
    (rank_routing_id(0), hello(0, run_id="other"), "wrong-run-id"),
    (rank_routing_id(1), hello(0), "bad-rank"),
    (rank_routing_id(7), frame(p.Hello(7, 7, 0, 1, "run-1", "secret", {})), "bad-rank"),
])
def test_bad_hello_is_refused_and_counted(identity, msg, reason):
    c = Coordinator(JOB, 5.0, lambda: 0.0)
    out = c.handle(identity, msg, 0.0)
    assert out.replies == [(identity, p.Refused(reason))]
    assert c.rejected[reason] == 1 and not c.hellos


def test_duplicate_hello_is_refused(core):
    out = core.handle(rank_routing_id(1), hello(1), 0.0)
    assert out.replies == [(rank_routing_id(1), p.Refused("duplicate-rank"))]


def test_all_reduce_blocks_until_every_rank_then_reduces_in_rank_order(core):
    assert core.handle(rank_routing_id(2), contribute(2, 1, [3.0, 1.0], tag=TRAIN_STEP_TAG, step=1), 1.0).replies == []
    assert core.handle(rank_routing_id(0), contribute(0, 1, [1.0, 1.0], tag=TRAIN_STEP_TAG, step=1), 1.5).replies == []
    out = core.handle(rank_routing_id(1), contribute(1, 1, [2.0, 4.0], tag=TRAIN_STEP_TAG, step=1), 2.0)
    assert sorted((i, p.decode(m.frame)) for i, m in out.replies) == [
        (rank_routing_id(r), p.Release("world", 1, [2.0, 2.0], False, 0.0)) for r in range(3)]
    (coll,) = out.events  # without a timeline: no training semantics, only the record
    assert isinstance(coll, ev.Collective)
    assert (coll.op, coll.seq, coll.count, coll.ranks, coll.duration_us, coll.wall_us) == (
        "all_reduce", 1, 2, [0, 1, 2], 1_000_000, 1_000_000)


def test_a_different_tensor_size_is_a_desync(core):
    core.handle(rank_routing_id(0), contribute(0, 1, [1.0], numel=1000), 0.0)
    out = core.handle(rank_routing_id(1), contribute(1, 1, [1.0], numel=999), 0.0)
    assert kinds(out) == ["Desync"] and "TensorShape=[999]" in out.events[0].detail


def test_broadcast_and_barrier(core):
    for r, v in ((0, [9.0]), (1, [0.0]), (2, [0.0])):
        out = core.handle(rank_routing_id(r), contribute(r, 1, v, op="broadcast", reduce_op=""), 0.0)
    assert {p.decode(m.frame).values[0] for _, m in out.replies} == {9.0}
    for r in range(3):
        out = core.handle(rank_routing_id(r), contribute(r, 2, [], op="barrier", reduce_op=""), 0.0)
    assert len(out.replies) == 3 and out.events[0].op == "barrier"


def test_desync_names_both_ranks_and_aborts_them(core):
    core.handle(rank_routing_id(0), contribute(0, 1, [1.0]), 0.0)
    out = core.handle(rank_routing_id(1), contribute(1, 1, [], op="barrier", reduce_op=""), 0.0)
    (desync,) = out.events
    assert isinstance(desync, ev.Desync) and desync.ranks == [0, 1]
    assert "Rank 1 is running collective: CollectiveFingerPrint(SequenceNumber=1, OpType=BARRIER" in desync.detail
    assert "but Rank 0 is running collective: CollectiveFingerPrint(SequenceNumber=1, OpType=ALLREDUCE" in desync.detail
    assert sorted(i for i, m in out.replies if isinstance(m, p.Abort)) == [rank_routing_id(0), rank_routing_id(1)]


def test_skipped_sequence_number_is_a_desync(core):
    out = core.handle(rank_routing_id(0), contribute(0, 2, [1.0]), 0.0)
    assert kinds(out) == ["Desync"]


def test_watchdog_fires_for_the_waiting_ranks(core):
    core.handle(rank_routing_id(0), contribute(0, 1, [1.0, 1.0]), 10.0)
    core.handle(rank_routing_id(2), contribute(2, 1, [1.0, 1.0]), 11.0)
    assert core.next_deadline() == 15.0
    assert core.tick(14.9).events == []
    out = core.tick(15.2)
    (timeout,) = out.events
    assert (timeout.waiting, timeout.missing, timeout.timeout_ms, timeout.elapsed_ms) == ([0, 2], [1], 5000, 5200)
    assert timeout.op == "all_reduce" and timeout.numel == 2 and timeout.seq == 1
    assert [(i, m.cause) for i, m in out.replies] == [(rank_routing_id(0), "watchdog"), (rank_routing_id(2), "watchdog")]
    assert core.next_deadline() is None


def test_after_a_watchdog_timeout_the_clock_moves_past_every_rank_s_watchdog():
    """Each waiting rank notices within its poll (physics.watchdog_lag); what
    comes next (their deaths, the failure report) comes after the last."""
    from datetime import UTC

    from fakerun.coordinator.timeline import Timeline
    from fakerun.world import identity
    from fakerun.world import physics as sim
    from fakerun.world.clock import VirtualClock

    clock = VirtualClock(0.0, UTC)
    c = Coordinator(JOB, 5.0, clock, Timeline(identity.build(1, 1, 3, 20), clock), report_wall=False)
    for r in range(3):
        c.handle(rank_routing_id(r), hello(r), 0.0)
    for r in (0, 2):
        c.handle(rank_routing_id(r), contribute(r, 1, [1.0, 1.0]), 0.0)
    (timeout,) = c.tick(5.2).events
    assert timeout.time == 5.0
    assert clock.now == pytest.approx(5.0 + sim.WATCHDOG_REPORT_S)
    assert all(timeout.time + sim.watchdog_lag(1, r, timeout.seq) < clock.now for r in timeout.waiting)


def test_a_watchdog_counts_from_the_collective_s_start_after_the_ranks_work():
    """NCCL's watchdog times a collective from its enqueue: after the step's
    work (3 s here), not from the last collective's end."""
    from datetime import UTC

    from fakerun.coordinator.timeline import Timeline
    from fakerun.world import identity
    from fakerun.world.clock import VirtualClock

    clock = VirtualClock(0.0, UTC)
    c = Coordinator(JOB, 5.0, clock, Timeline(identity.build(1, 1, 3, 20), clock), report_wall=False)
    for r in range(3):
        c.handle(rank_routing_id(r), hello(r), 0.0)
    for r in (0, 2):
        c.handle(rank_routing_id(r), frame(p.Contribute(r, "world", 1, "all_reduce", "avg", 0, "float32",
                                                        [1.0, 1.0], "", 0, 2, 3.0)), 0.0)
    (timeout,) = c.tick(5.2).events
    assert timeout.time == 8.0


def test_rank_output_is_held_and_released_in_rank_order(core):
    core.handle(rank_routing_id(2), frame(p.Output(2, "stdout", ["from two"])), 0.0)
    core.handle(rank_routing_id(0), frame(p.Output(0, "stderr", ["from zero"])), 0.0)
    for r in range(3):
        out = core.handle(rank_routing_id(r), contribute(r, 1, [], op="barrier", reduce_op=""), 0.0)
    outputs = [e for e in out.events if isinstance(e, ev.RankOutput)]
    assert [(e.rank, e.lines) for e in outputs] == [(0, ["from zero"]), (2, ["from two"])]


def test_goodbye_is_acked_and_flushes_that_rank(core):
    core.handle(rank_routing_id(1), frame(p.Output(1, "stderr", ["bye"])), 0.0)
    out = core.handle(rank_routing_id(1), frame(p.Goodbye(1, 1, "exception")), 0.0)
    assert out.replies == [(rank_routing_id(1), p.Ack())]
    assert [e.lines for e in out.events] == [["bye"]]
    assert core.handle(rank_routing_id(1), contribute(1, 1, [1.0]), 0.0).replies == []
    assert core.rejected["out-of-phase"] == 1


def test_messages_from_strangers_and_impostors_are_counted(core):
    core.handle(b"stranger", contribute(0, 1, [1.0]), 0.0)
    core.handle(rank_routing_id(1), contribute(0, 1, [1.0]), 0.0)
    core.handle(rank_routing_id(1), frame(p.Ack()), 0.0)
    assert dict(core.rejected) == {"not-joined": 1, "rank-mismatch": 1, "unexpected-kind": 1}


def test_each_reject_reason_is_reported_once():
    c = Coordinator(JOB, 5.0, lambda: 0.0)
    first = c.handle(b"x", b"\xc1", 0.0)
    second = c.handle(b"x", b"\xc1", 0.0)
    assert kinds(first) == ["Rejected"] and second.events == []
    assert c.rejected["undecodable"] == 2


def test_out_of_range_inputs_from_a_joined_rank_are_rejected(core):
    bad_root = frame(p.Contribute(0, "world", 1, "broadcast", "", 7, "float32", [1.0], "", 0, 1, 0.0))
    nan_time = frame(p.Contribute(0, "world", 1, "all_reduce", "avg", 0, "float32", [1.0], "", 0, 1,
                                  float("nan")))
    hot = frame(p.Telemetry(0, 1, "train", -200, 74, 650, 60000))
    for msg in (bad_root, nan_time, hot):
        assert core.handle(rank_routing_id(0), msg, 0.0).replies == []
    assert dict(core.rejected) == {"bad-op": 1, "out-of-range": 2}


def test_mislabelled_or_diverged_collectives_never_crash_the_timeline():
    from datetime import UTC

    from fakerun.coordinator.timeline import Timeline
    from fakerun.world import identity
    from fakerun.world.clock import VirtualClock

    ident = identity.build(1, 1, 3, 20)
    c = Coordinator(JOB, 5.0, lambda: 0.0, Timeline(ident, VirtualClock(0.0, UTC)))
    for r in range(3):
        c.handle(rank_routing_id(r), hello(r), 0.0)
    for r in range(3):  # a barrier tagged as if it carried a validation loss
        out = c.handle(rank_routing_id(r), contribute(r, 1, [], op="barrier", reduce_op="", tag="validation"), 0.0)
    assert kinds(out) == ["Collective"]
    for r in range(3):  # a diverged loss: perplexity saturates, nothing raises
        out = c.handle(rank_routing_id(r), contribute(r, 2, [1e6, 1.0], tag=TRAIN_STEP_TAG, step=1), 0.0)
    step = next(e for e in out.events if isinstance(e, ev.Step))
    assert step.ppl == float("inf")


def test_an_agent_that_stops_then_is_done_no_longer_holds_node_0():
    job = JobSpec("run-1", "secret", 4, nnodes=2, digest="d", bounds=BOUNDS)
    c = Coordinator(job, 5.0, lambda: 0.0)
    c.handle(agent_routing_id(1), frame(p.AgentHello(1, 2, 9, "host-1", "run-1", "secret", "d")), 0.0)
    c.handle(agent_routing_id(1), frame(p.AgentReport(1, "stopping", "")), 0.1)
    assert c.waiting_for_agents  # its ranks are still stopping
    done = c.handle(agent_routing_id(1), frame(p.AgentReport(1, "done", "")), 0.2)
    assert done.replies == [(agent_routing_id(1), p.Ack())]  # it has every event: it may go
    assert not c.waiting_for_agents


def test_node_0_failing_is_named_by_its_host_on_the_other_nodes():
    """The coordinator's own node has no agent link to take a name from: its
    peers' NCCL errors said `node0<port>`, no host of the run's."""
    job = JobSpec("run-1", "secret", 4, nnodes=2, digest="d", bounds=BOUNDS, host="gpu01")
    c = Coordinator(job, 5.0, lambda: 0.0)
    for r in range(4):
        c.handle(rank_routing_id(r), frame(p.Hello(r, r % 2, r // 2, 100 + r, "run-1", "secret", {})), 0.0)
    c.handle(agent_routing_id(1), frame(p.AgentHello(1, 2, 9, "gpu02", "run-1", "secret", "d")), 0.1)
    for r in (2, 3):  # node 1's ranks wait in a collective node 0's never join
        c.handle(rank_routing_id(r), contribute(r, 1, [1.0]), 0.2)
    out = c.node_failed(0, "failed", "rank 1 exited with code 1")
    aborts = {who: msg.detail for who, msg in out.replies if isinstance(msg, p.Abort)}
    assert aborts == {rank_routing_id(2): "gpu01", rank_routing_id(3): "gpu01"}
