"""NCCL's own latency model (src/graph/tuning.cc, v2.21.5-1): what its tuner
charges a ring and a tree all_reduce before a byte moves, for the job's
topology, worked out by hand from the table."""

from __future__ import annotations

import pytest

from fakerun.world import identity
from fakerun.world import physics as sim
from fakerun.world.nccl_latency import allreduce_latency_us

H100, L40S = "NVIDIA H100 80GB HBM3", "NVIDIA L40S"


@pytest.mark.parametrize(("nodes", "nproc", "gpu", "ring", "tree"), [
    # tuning.cc v2.21.5-1, LL: ring baseLat 6.6 + 2(n-1) steps; tree 6.8 + 2 x (intra chain + log2 nodes).
    (1, 8, H100, 6.6 + 14 * 0.6, 6.8 + 2 * 7 * 0.6),  # NVLink: hwLat .6 both
    (1, 8, L40S, 6.6 + 14 * 1.0, 6.8 + 2 * 7 * 1.0),  # PCI: hwLat 1.0 both
    (1, 2, L40S, 6.6 + 2 * 1.0, 6.8 + 2 * 1 * 1.0),
    # Two nodes: 4 of the ring's 30 steps cross the network (2.7), the rest pay at least the
    # 1 us net overhead; the tree's one inter-node level pays the network's 5.0.
    (2, 8, H100, 6.6 + 26 * 1.0 + 4 * 2.7, 6.8 + 2 * (7 * 0.6 + 1 * 5.0)),
    (8, 8, H100, 6.6 + 110 * 1.0 + 16 * 2.7, 6.8 + 2 * (7 * 0.6 + 3 * 5.0)),
])
def test_ring_and_tree_latency_are_nccls_tuning_model(nodes, nproc, gpu, ring, tree):
    ident = identity.build(5, nodes, nproc, 40, gpu=gpu)
    assert allreduce_latency_us(ident, "ring") == pytest.approx(ring)
    assert allreduce_latency_us(ident, "tree") == pytest.approx(tree)


def test_simple_ring_latency_on_one_nvlink_node():
    # baseLat 8.4 + 14 steps x hwLat[NVLINK][Ring][Simple] 3.4
    assert allreduce_latency_us(identity.build(5, 1, 8, 40, gpu=H100), "ring", "Simple") == pytest.approx(56.0)


def test_a_barrier_never_beats_the_latency_nccl_charges_its_best_algorithm():
    """A barrier is a one-element all_reduce: its modelled time is at least the latency floor."""
    for nodes in (1, 2, 8):
        job = identity.build(5, nodes, 8, 40, gpu=H100)
        assert sim.allreduce_seconds(job, 1) * 1e6 >= min(allreduce_latency_us(job, a) for a in ("ring", "tree"))


def test_one_gpu_has_no_latency():
    assert allreduce_latency_us(identity.build(5, 1, 1, 40), "ring") == 0.0
