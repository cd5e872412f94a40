"""A compute-fabric port that goes down and comes back: the `link-flap`
scenario. The cable of the InfiniBand HCA beside --fail-rank's GPU loses
contact as that step's gradient all-reduce starts, regains it a moment
later, and the port is active again once its link has trained. Every
rank's all-reduce waits on the channels through that port (NCCL moves none
of their traffic to the node's other rails): the HCA retransmits after each
timeout of the queue pair, and the first retry after the port is back goes
through. Shorter than the transport's retries, the flap costs one slow step;
the job trains on. Pure: a function of the run's identity and the fault.

On one node nothing crosses the port: the ranks reduce over NVLink, and
the flap shows only in the kernel's log and NCCL's warnings (an NVLink that
drops does not come back by itself: the driver reports Xid 74 and the GPU
needs a reset, which is no flap)."""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass
from importlib import resources

from fakerun.world import physics
from fakerun.world.identity import Identity

# From a module's "Cable plugged" to its port's "Link up": 5.94 s in a real
# ConnectX kern.log (jishuzhan.net/article/1911252493641777153: "Port module
# event: module 0, Cable plugged" at 32704.121294, "enp1s0f0: Link up" at
# 32710.060490): the link's training, before the port carries traffic again.
LINK_TRAINING_S = 5.94
# NCCL's queue pairs (src/transport/net_ib.cc): NCCL_IB_RETRY_CNT 7 at every
# pinned tag; NCCL_IB_TIMEOUT 18 up to 2.22, 20 from 2.23 (v2.23.4-1). The
# HCA resends after 4.096 us x 2^timeout; the 7th retry is the last.
IB_RETRY_CNT = 7
IB_TIMEOUT_SINCE = ((2, 23), 20)
IB_TIMEOUT_BEFORE = 18
# The rails of fakerun's NVLink nodes of Ampere and Hopper: a ConnectX port
# a GPU, NCCL's mlx5_N (render/torchrun/nccl.py IB_PORTS), each on its GPU's
# PCIe switch, three buses before it as on the DGX H100 (GPU 0 at 1b:00.0,
# its HCA ibp24s0 at 18:00.0: DGX H100/H200 User Guide, "Network Ports").
# A DGX-1's V100s share four ports, whose places fakerun does not know.
HCA_BUS_BEFORE_GPU = 3
RAILS = ("ampere", "hopper")


@dataclass(frozen=True)
class Flap:
    node: int
    gpu: int  # the local rank whose HCA it is
    hca: str  # its PCI address, as the kernel names the device
    step: int
    unplugged_s: float  # the cable out of contact
    down_s: float  # the port down: from IBV_EVENT_PORT_ERR to IBV_EVENT_PORT_ACTIVE
    stall_s: float  # how much longer the step's all-reduce takes


def supported(ident: Identity, unplugged_s: float) -> str | None:
    """Why the scenario cannot run on this run's nodes, or None."""
    if ident.gpu.vendor != "nvidia" or ident.gpu.nvlink != "yes":
        return (f"--scenario link-flap flaps an InfiniBand port of an NVLink node (NCCL's NET/IB): "
                f"{ident.gpu.name} nodes talk over Ethernet sockets here; pick an SXM GPU (--gpu)")
    if ident.gpu.architecture not in RAILS:
        return (f"--scenario link-flap needs nodes with an InfiniBand port a GPU (A100, H100, H200 SXM): "
                f"{ident.gpu.name} nodes share theirs")
    if unplugged_s > (longest := longest_unplugged(ident)):
        return (f"link-flap: unplugged_s {unplugged_s:g} outlasts NCCL {ident.versions.nccl}'s retries "
                f"(at most {longest:.2f} s): the job would fail, not flap")
    return None


def flap(ident: Identity, rank: int, step: int, unplugged_s: float) -> Flap:
    topo = ident.topology
    gpu = topo.local_rank_of(rank)
    bus = int(ident.gpu.bus_id(gpu), 16) - HCA_BUS_BEFORE_GPU
    down = unplugged_s + LINK_TRAINING_S
    return Flap(topo.node_of(rank), gpu, f"0000:{bus:02x}:00.0", step, unplugged_s, down,
                _retried(ident, down))


def retry_s(ident: Identity) -> float:
    """The queue pair's local ACK timeout, under the run's NCCL defaults."""
    (major, minor), since = IB_TIMEOUT_SINCE
    version = tuple(int(x) for x in ident.versions.nccl.split("+")[0].split(".")[:2])
    return 4.096e-6 * 2 ** (since if version >= (major, minor) else IB_TIMEOUT_BEFORE)


def longest_unplugged(ident: Identity) -> float:
    """The longest the cable may stay out for the last retry to land: past
    it the work request fails (IBV_WC_RETRY_EXC_ERR) and so does the job."""
    return IB_RETRY_CNT * retry_s(ident) - LINK_TRAINING_S


def _retried(ident: Identity, down_s: float) -> float:
    """From the first lost send to the retry that goes through."""
    timeout = retry_s(ident)
    return math.ceil(down_s / timeout) * timeout


def healthy_s(ident: Identity) -> float:
    """The gradient all-reduce the flap stalls, on a healthy fabric."""
    return physics.allreduce_seconds(ident, physics.grad_numel(ident))


@functools.cache
def _texts() -> dict[str, str]:
    text = resources.files("fakerun").joinpath("data", "link_flap.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)["kernel"]


def kernel_lines(f: Flap) -> list[tuple[float, str]]:
    """(seconds after the cable lost contact, the line its node's kernel logs)."""
    texts = _texts()
    return [(0.0, texts["unplugged"].format(hca=f.hca, module=0)),
            (f.unplugged_s, texts["plugged"].format(hca=f.hca, module=0))]
