"""A single GPU is a single-GPU job: in the seeds' layout no data-parallel
sharding, no ZeRO, no collectives in the NCCL report (the coordinator reports
none: NCCL moves nothing without a peer), no link bandwidth, singular nouns.
The same run on two GPUs says all of it, so the checks can fail."""

from __future__ import annotations

import re
from datetime import UTC

import pytest

from fakerun import events as ev
from fakerun.render.styles import renderer_for
from fakerun.render.torchrun.formatter import EventFormatter
from fakerun.world import identity, styles
from fakerun.world.settings import Flags, resolve
from tests.unit.test_sim import run_timeline

T0 = 1767225600.0
# What only a job of several GPUs says.
MANY = re.compile(r"GPUs|data parallel|ZeRO|\[NCCL\]|NVLink|bus|Cluster|GPU \d+-\d+")


def script_text(nproc: int) -> str:
    """Rank 0's script lines of a whole healthy run, in the seeds' layout."""
    # NVLink: its bus would show. Seed 4: data parallel over 2 GPUs (seed 3 draws TP=2 since the memory plan).
    ident = identity.build(4, 1, nproc, 20, gpu="NVIDIA H100 80GB HBM3")
    formatter = EventFormatter(tz=UTC, script=renderer_for(styles.parse("torchrun"), 100, UTC), ident=ident,
                               settings=resolve(Flags(), {}, drop_in=True))
    events = [ev.RunIdentity(ident), ev.RendezvousComplete(nproc, list(range(nproc)), list(range(4100, 4100 + nproc))),
              *(ev.Phase("init", stage, 0, T0 + k) for k, stage in enumerate(("nccl", "model", "tokenizer",
                                                                                "dataset"))),
              *run_timeline(ident), grid(ident)]
    lines = [line for e in events for line in formatter.lines(e)]
    return "\n".join(line.text for line in lines if line.rank == 0 and "NCCL INFO" not in line.text)


def grid(ident: identity.Identity) -> ev.GpuStatus:
    """The GPU grid as the ranks' telemetry makes it (run_timeline sends none)."""
    return ev.GpuStatus(20, [ev.GpuSample(r, 0, r, 97, 71, 650.0, 60000, ident.gpu.memory_mib)
                             for r in range(ident.world)], T0 + 900)


@pytest.mark.parametrize("nproc", [1, 2])
def test_one_gpu_says_nothing_of_many(nproc):
    text = script_text(nproc)
    assert "Training Summary" in text and "Loading model" in text
    found = set(MANY.findall(text))
    if nproc == 1:
        assert not found, found
        assert "World size: 1 GPU on 1 node" in text and "Parallelism: single GPU" in text
        assert "Node 0 [GPU 0]:" in text
    else:
        assert {"GPUs", "data parallel", "ZeRO", "[NCCL]", "NVLink", "bus", "Cluster"} <= found


@pytest.mark.parametrize("nproc,reported", [(1, False), (2, True)])
def test_the_coordinator_reports_collectives_only_between_gpus(nproc, reported):
    events = run_timeline(identity.build(3, 1, nproc, 20))
    assert any(isinstance(e, ev.NcclStats) for e in events) == reported
