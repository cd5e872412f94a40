"""AMD Instinct GPUs run ROCm's stack and print ROCm's own texts: RCCL's
init lines (ROCm/rccl at rocm-6.2.0, file:line cited per test), the ROCm
software line, xGMI in the cluster box. Expected texts are RCCL's, or lines of
real RCCL runs where a test says so."""

from __future__ import annotations

from collections import Counter

import pytest

from fakerun import events as ev
from fakerun.render.styles.pytorch import PytorchLines
from fakerun.world import catalog, identity
from fakerun.world import physics as sim
from fakerun.world.catalog import CatalogError

MI300X = "AMD Instinct MI300X"


def amd(nproc: int = 2, seed: int = 3) -> identity.Identity:
    return identity.build(seed, 1, nproc, 20, gpu=MI300X)


# -- the catalog and the draws ---------------------------------------------------
def test_an_amd_job_runs_torchs_rocm_wheel_and_what_ships_with_it():
    # torch 2.5.1+rocm6.2: torch.version.hip 6.2.41133 (ROCm 6.2.0); ROCm/rccl
    # rocm-6.2.0 makefiles/version.mk: NCCL 2.20.5; MIOpen 3.2.0; amdgpu 6.8.5.
    v = amd().versions
    assert (v.torch, v.nccl, v.cuda, v.cudnn, v.driver) == ("2.5.1+rocm6.2", "2.20.5", "6.2.0", "3.2.0", "6.8.5")
    assert v.cuda_driver == 60241133  # HIP_VERSION: 6 * 10^7 + 2 * 10^5 + 41133
    assert (v.transformers, v.deepspeed, v.lightning) == ("4.46.3", "0.16.4", "2.5.0")  # the same Python stack


def test_the_mi300x_row_is_what_rocm_smi_and_torch_see():
    gpu = catalog.find(catalog.gpus(), MI300X, "GPU")
    assert gpu.vendor == "amd" and gpu.kind == "real"
    assert gpu.memory_mib * 2**20 == 205822885888  # rocm-smi --showmeminfo vram: VRAM Total Memory (B)
    assert (gpu.power_cap_w, gpu.bf16_tflops) == (750, 1307)


def test_amd_clusters_are_drawn_rarely_and_only_with_the_rocm_stack():
    seen = Counter()
    for seed in range(1000):
        run = identity.build(seed, 1, 8, 20)
        seen[run.gpu.vendor] += 1
        assert run.versions.torch.endswith("+rocm6.2") == (run.gpu.vendor == "amd"), seed
    assert 50 <= seen["amd"] <= 120  # identity.AMD_SHARE: one in twelve


def test_the_vendor_coin_changes_no_nvidia_draw(monkeypatch: pytest.MonkeyPatch):
    # The coin is tossed on a stream of its own: an NVIDIA draw is the one a
    # catalog without AMD rows gives.
    seeds = range(120)
    drawn = {s: identity.build(s, 1, 8, 20) for s in seeds}
    nvidia_only = tuple(g for g in catalog.gpus() if g.vendor == "nvidia")
    monkeypatch.setattr(catalog, "gpus", lambda: nvidia_only)
    for seed in seeds:
        if drawn[seed].gpu.vendor == "nvidia":
            assert drawn[seed] == identity.build(seed, 1, 8, 20), seed
    assert any(run.gpu.vendor == "amd" for run in drawn.values())


def test_no_amd_draw_across_nodes_and_none_under_a_pin_without_a_rocm_build():
    assert all(identity.build(s, 2, 8, 20).gpu.vendor == "nvidia" for s in range(300))
    pinned = next(v for v in catalog.versions() if v.torch == "2.3.1")  # --style deepspeed's 0.14
    assert all(identity.build(s, 1, 8, 20, versions=pinned).gpu.vendor == "nvidia" for s in range(300))


def test_asking_for_amd_where_it_cannot_run_says_why():
    pinned = next(v for v in catalog.versions() if v.torch == "2.3.1")
    with pytest.raises(CatalogError, match="no ROCm build of torch 2.3.1"):
        identity.build(1, 1, 8, 20, gpu=MI300X, versions=pinned)
    with pytest.raises(CatalogError, match="across nodes"):
        identity.build(1, 2, 8, 20, gpu=MI300X)


# -- what the training script prints ---------------------------------------------
def layout(run: identity.Identity) -> PytorchLines:
    out = PytorchLines(100, None)
    out.routed(ev.RunIdentity(run))
    return out


def test_the_banner_names_rocms_stack():
    banner = [line.text for line in layout(amd()).banner(0.0)]
    assert any(t.endswith("RCCL: 2.20.5 | ROCm: 6.2.0 | MIOpen: 3.2.0 | Driver: 6.8.5") for t in banner)
    assert any(t.endswith("Framework: PyTorch 2.5.1+rocm6.2 + transformers 4.46.3") for t in banner)
    assert not any("CUDA" in t or "NCCL:" in t for t in banner)


def test_the_cluster_box_shows_the_xgmi_bus():
    run = amd(nproc=8)
    out = layout(run)
    out.routed(ev.NcclStats(20, [ev.OpStats("all_reduce", 1, 10**9, 5.0, 268.8)], 0.0))
    gpus = [ev.GpuSample(r, 0, r, 99, 70, 700, 1000, run.gpu.memory_mib) for r in range(8)]
    box = [line.text for line in out.lines(ev.GpuStatus(20, gpus, 0.0))]
    assert any("xGMI: 269 GB/s bus" in t for t in box) and not any("NVLink" in t for t in box)


@pytest.mark.parametrize("nproc,busbw", [(2, 38.4e9), (4, 115.2e9), (8, 268.8e9)])
def test_xgmi_bus_bandwidth_grows_with_the_links_a_ring_uses(nproc: int, busbw: float):
    # One 48 GB/s xGMI link between each pair of MI300X (RCCL's GFX94X_XGMI_WIDTH): k GPUs drive k-1 each.
    assert sim.node_busbw(amd(nproc)) == pytest.approx(busbw)
