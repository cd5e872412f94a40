"""The link-flap scenario: the stall its retries cost, the condition and the
collective times it sets, the coordinator's kernel lines and port events,
and the WARN the pinned NCCL prints for the HCA's async events (issue 22)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from fakerun import events as ev
from fakerun.config.options import Fault
from fakerun.coordinator.timeline import Completed, Timeline
from fakerun.errors import UsageError
from fakerun.protocol import tags
from fakerun.render.torchrun.nccl import NcclInit
from fakerun.world import hardware, linkflap, pace
from fakerun.world import physics as sim
from fakerun.world.clock import VirtualClock
from fakerun.world.scenarios import catalog
from fakerun.world.settings import Flags, resolve
from tests.unit.test_bounds import config
from tests.unit.test_nccl import A100, H100, H100_PCIE, V100, ident

STEP = 4
FLAP = Fault("link-flap", 2, STEP, (("unplugged_s", 1.0),))  # rank 2: node 1's first GPU with 2 a node
T0 = datetime(2026, 4, 18, 12, 45, 41, tzinfo=UTC).timestamp()


def two_nodes(nccl: str = "2.21.5"):
    return ident(gpu=H100, nproc=2, nnodes=2, nccl=nccl)


def test_the_scenario_is_in_the_catalog():
    s = catalog()["link-flap"]
    assert (s.fault, s.params, s.recurs) == ("link-flap", {"unplugged_s": 1.0}, False)


@pytest.mark.parametrize(("nccl", "timeout", "retries"), [("2.20.5", 18, 7), ("2.21.5", 18, 7), ("2.27.5", 20, 2)])
def test_the_all_reduce_waits_for_the_first_retry_after_the_port_is_back(nccl, timeout, retries):
    """src/transport/net_ib.cc NCCL_IB_TIMEOUT (18 at v2.20.5-1 and v2.21.5-1,
    20 at v2.27.5-1), NCCL_IB_RETRY_CNT 7: a resend every 4.096 us x 2^timeout.
    The port is down 1 s unplugged + 5.94 s of link training."""
    f = linkflap.flap(two_nodes(nccl), 2, STEP, 1.0)
    assert (f.node, f.gpu, f.down_s) == (1, 0, pytest.approx(6.94))
    assert f.stall_s == pytest.approx(retries * 4.096e-6 * 2**timeout)
    assert f.down_s <= f.stall_s <= linkflap.IB_RETRY_CNT * linkflap.retry_s(two_nodes(nccl))


@pytest.mark.parametrize("gpu", [H100, A100])
def test_the_hca_sits_on_its_gpu_s_switch_and_is_no_gpu(gpu):
    run = ident(gpu=gpu, nproc=8, nnodes=2)
    buses = {run.gpu.bus_id(local) for local in range(8)}
    hcas = {linkflap.flap(run, rank, STEP, 1.0).hca for rank in range(8)}
    assert len(hcas) == 8 and all(re.fullmatch(r"0000:[0-9a-f]{2}:00\.0", h) for h in hcas)
    assert not {h.split(":")[1] for h in hcas} & buses


def test_the_condition_and_the_collective_times_agree():
    run = two_nodes()
    healthy = sim.allreduce_seconds(run, sim.grad_numel(run))
    stall = linkflap.flap(run, 2, STEP, 1.0).stall_s
    factors = {(r, s): hardware.condition(run, FLAP, r, s).link_factor for r in range(4) for s in range(1, 9)}
    assert {k for k, v in factors.items() if v != 1.0} == {(2, STEP), (3, STEP)}  # node 1, the flap's step
    assert factors[2, STEP] == pytest.approx(healthy / (healthy + stall))
    grads = {s: pace.collective_seconds(run, FLAP, "all_reduce", sim.grad_numel(run), s) for s in range(1, 9)}
    assert grads[STEP] == pytest.approx(healthy + stall)
    assert all(grads[s] == healthy for s in grads if s != STEP)
    assert pace.collective_seconds(run, FLAP, "all_reduce", 1, STEP) == sim.collective_seconds(run, "all_reduce", 1)
    one_node = ident(gpu=H100, nproc=4)  # over NVLink: nothing crosses the port
    assert pace.collective_seconds(one_node, FLAP, "all_reduce", sim.grad_numel(one_node), STEP) == \
        sim.collective_seconds(one_node, "all_reduce", sim.grad_numel(one_node))


def steps_of(run, fault) -> tuple[list, float]:
    """The timeline's events over 8 training steps, and when step STEP's all-reduce started."""
    t = Timeline(run, VirtualClock(T0, UTC), fault=fault)
    out, started = [], 0.0
    for step in range(1, 9):
        work = sim.compute_seconds(run, step)
        if step == STEP:
            started = t.clock.now + work
        done = Completed(tags.TRAIN_STEP, "all_reduce", step, sim.grad_numel(run), dict.fromkeys(range(run.world), work),
                         {r: [2.0, 1.0] for r in range(run.world)}, [2.0, 1.0], 0)
        out += t.on_collective(done)[0]
    return out, started


def test_the_timeline_says_what_the_kernel_and_the_hca_report_and_slows_that_step():
    run = two_nodes()
    f = linkflap.flap(run, 2, STEP, 1.0)
    flapped, started = steps_of(run, FLAP)
    healthy, _ = steps_of(run, None)
    # drivers/net/ethernet/mellanox/mlx5/core/events.c port_module(): mlx5_core_info (dev_info's
    # "mlx5_core <pci>: "), "Port module event: module %u, %s"; the HCA three buses before its GPU.
    bus = int(run.gpu.bus_id(0), 16) - 3
    said = [(e.node_rank, e.text, e.time - started) for e in flapped if isinstance(e, ev.KernelMessage)]
    assert said == [(1, f"mlx5_core 0000:{bus:02x}:00.0: Port module event: module 0, Cable unplugged", 0.0),
                    (1, f"mlx5_core 0000:{bus:02x}:00.0: Port module event: module 0, Cable plugged",
                     pytest.approx(1.0))]
    ports = [(e.node_rank, e.gpu, e.active, e.time - started) for e in flapped if isinstance(e, ev.PortEvent)]
    assert ports == [(1, 0, False, 0.0), (1, 0, True, pytest.approx(f.down_s))]
    times = [e.time for e in flapped]
    assert times == sorted(times)  # each line when it happened, the step's after them all
    slow = {e.step: e.step_time_s for e in flapped if isinstance(e, ev.Step)}
    fine = {e.step: e.step_time_s for e in healthy if isinstance(e, ev.Step)}
    assert slow[STEP] == pytest.approx(fine[STEP] + f.stall_s)
    assert all(slow[s] == fine[s] for s in fine if s != STEP)  # it recovers at once
    assert not [e for e in healthy if isinstance(e, ev.KernelMessage | ev.PortEvent)]


def warns(nccl: str, active: bool, env: dict[str, str]) -> list[str]:
    run = two_nodes(nccl)
    pids = {rank: 4000 + 3 * rank for rank in range(run.world)}
    nccl_init = NcclInit(run, pids, resolve(Flags(), env, drop_in=True))
    lines = [line for rank in (2, 3) for line in nccl_init.port_event(rank, 0, active, T0, UTC)]
    assert [line.rank for line in lines] == [2, 2, 3, 3] or not lines
    return [line.text for line in lines]


@pytest.mark.parametrize(("nccl", "site", "said"), [
    # ncclIbAsyncThreadMain: WARN("NET/IB : %s:%d Got async event : %s", devName, portNum, str) at
    # src/transport/net_ib.cc:100 (v2.20.5-1) and :101 (v2.21.5-1); v2.27.5-1 :199 for the
    # non-fatal events, "Got async error event: %s". ibv_event_type_str (rdma-core
    # libibverbs/enum_strs.c): IBV_EVENT_PORT_ERR "port error", IBV_EVENT_PORT_ACTIVE "port active".
    ("2.20.5", "transport/net_ib.cc:100", "NET/IB : mlx5_0:1 Got async event : port {event}"),
    ("2.21.5", "transport/net_ib.cc:101", "NET/IB : mlx5_0:1 Got async event : port {event}"),
    ("2.27.5", "transport/net_ib.cc:199", "NET/IB : mlx5_0:1 Got async error event: port {event}"),
])
@pytest.mark.parametrize("active", [False, True])
def test_every_rank_of_the_node_warns_of_the_port_as_its_nccl_does(nccl, site, said, active):
    stamp = r"\[2026-04-18 12:45:41\] " if nccl == "2.27.5" else ""
    text = re.escape(said.format(event="active" if active else "error"))
    lines = warns(nccl, active, {"NCCL_DEBUG": "WARN"})
    assert lines[0] == lines[2] == ""  # a WARN begins with a newline
    for line, rank in ((lines[1], 2), (lines[3], 3)):
        assert re.fullmatch(rf"{stamp}[\w-]+:{4000 + 3 * rank}:\d+ \[{rank - 2}\] {re.escape(site)} NCCL WARN {text}",
                            line), line


def test_the_warn_comes_from_the_hca_s_own_thread():
    run = two_nodes()
    pids = {rank: 4000 + 3 * rank for rank in range(run.world)}
    nccl_init = NcclInit(run, pids, resolve(Flags(), {"NCCL_DEBUG": "WARN"}, drop_in=True))
    tid = int(nccl_init.port_event(2, 0, False, T0, UTC)[1].text.split(" ")[0].split(":")[2])
    others = {t for rank in pids for t in (pids[rank], *nccl_init.tids[rank])}
    assert tid not in others and tid == nccl_init.tids[2][0] + 1  # started on the init thread, first after it


@pytest.mark.parametrize("env", [{}, {"NCCL_DEBUG": "VERSION"}])
def test_no_warn_below_warn(env):
    assert warns("2.21.5", False, env) == []


def test_nodes_without_an_ib_hca_and_flaps_past_the_retries_are_refused():
    assert hardware.unsupported(two_nodes(), FLAP) is None
    pcie = ident(gpu=H100_PCIE, nproc=2, nnodes=2)
    assert "talk over Ethernet sockets" in hardware.unsupported(pcie, FLAP)
    assert "share theirs" in hardware.unsupported(ident(gpu=V100, nproc=2, nnodes=2), FLAP)
    # 7 retries of 1.07 s (NCCL 2.21) outlast 1.5 s unplugged and 5.94 s of training, not 2 s.
    long = Fault("link-flap", 2, STEP, (("unplugged_s", 2.0),))
    assert "outlasts NCCL 2.21.5's retries (at most 1.58 s)" in hardware.unsupported(two_nodes(), long)
    assert hardware.unsupported(two_nodes("2.27.5"), long) is None  # 7 x 4.29 s


def test_without_gpu_asked_the_seed_puts_the_job_on_nodes_that_can_flap():
    scenario = ("--nproc", "2", "--nnodes", "2", "--seed", "11", "--scenario", "link-flap")
    assert config("--nproc", "2", "--nnodes", "2", "--seed", "11").identity.gpu.name == "NVIDIA A100-PCIE-40GB"
    drawn = config(*scenario).identity
    assert hardware.unsupported(drawn, FLAP) is None and drawn == config(*scenario).identity  # the seed's, again
    with pytest.raises(UsageError, match="talk over Ethernet sockets"):
        config(*scenario, "--gpu", H100_PCIE)  # asked for: refused, not replaced
