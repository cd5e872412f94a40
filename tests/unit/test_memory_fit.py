"""Jobs that would run: every drawn job fits its GPUs as its framework
accounts memory and fills the fullest one as a tuned job does (85-95% of
nvidia-smi's total, over the whole run); what the allocator reports is
possible at every step; the OOM scenario's figures add up. Through the
world model, over 1,000 seeds (issue 19, item 2)."""

from __future__ import annotations

import re

import pytest

from fakerun.config import script_args
from fakerun.rank.faults import format_size, oom_sizes
from fakerun.world import catalog, identity
from fakerun.world import physics as sim
from fakerun.world.allocator import out_of_memory, usage
from fakerun.world.memory import (
    CUDA_CONTEXT,
    FILL_HIGH,
    FILL_LOW,
    MIB,
    Job,
    Parallelism,
    Strategy,
    plan_memory,
    state_bytes,
)

SEEDS = range(1000)
CLUSTERS = ((1, 8), (1, 4), (2, 8), (1, 2), (1, 1), (4, 8))
FRAMEWORKS = ("torchrun", "hf", "megatron", "deepspeed", "lightning")


def drawn(seed: int) -> identity.Identity:
    nnodes, nproc = CLUSTERS[seed % len(CLUSTERS)]
    framework = FRAMEWORKS[seed % len(FRAMEWORKS)]
    return identity.build(seed, nnodes, nproc, asked=identity.Asked(framework=framework))


def sampled_steps(i: identity.Identity) -> list[int]:
    return sorted({1, 2, 3, 5, 8, 13, 30, i.hyper.total_steps // 2, i.hyper.total_steps})


@pytest.fixture(scope="module")
def idents() -> list[identity.Identity]:
    return [drawn(seed) for seed in SEEDS]


def test_every_drawn_job_fills_its_fullest_gpu_as_a_tuned_job_does(idents):
    for i in idents:
        total = i.gpu.memory_mib
        for step in sampled_steps(i):
            fullest = max(sim.telemetry(i, r, step, "train").mem_used_mib for r in range(i.world))
            assert FILL_LOW <= fullest / total <= FILL_HIGH, (i.seed, i.model.name, i.gpu.name, i.parallel, step)


def test_the_allocator_never_reports_the_impossible(idents):
    """allocated <= peak <= reserved <= what CUDA can hand out, at every step;
    the reserve only grows (no script calls empty_cache); nvidia-smi shows it
    with the CUDA context."""
    for i in idents:
        capacity = i.gpu.memory_mib * MIB
        for r in range(i.world):
            before = usage(i, r, 0).reserved
            for step in sampled_steps(i):
                u = usage(i, r, step)
                assert u.allocated <= u.peak <= u.reserved and u.reserved + CUDA_CONTEXT <= capacity
                assert u.reserved >= before
                before = u.reserved
            assert sim.telemetry(i, r, 1, "init").mem_used_mib < sim.telemetry(i, r, 1, "train").mem_used_mib


def test_the_reserve_warms_up_then_varies_a_little(idents):
    grew = [usage(i, 0, i.hyper.total_steps).reserved > usage(i, 0, 1).reserved for i in idents]
    assert sum(grew) > 0.9 * len(grew)
    for i in idents[:100]:
        late = [usage(i, 0, s).reserved for s in sampled_steps(i)[3:]]
        assert max(late) <= 1.05 * min(late)


def test_every_scenario_oom_is_arithmetically_possible(idents):
    """torch's text: the request exceeds what is free; what the process uses
    is at most the total; allocated <= reserved (no negative remainder)."""
    for i in idents:
        rank, step = min(1, i.world - 1), max(1, i.hyper.total_steps // 2)
        oom = out_of_memory(i, rank, step)
        assert oom.tried > oom.free > 0
        assert oom.in_use <= oom.total and oom.free + oom.in_use == pytest.approx(oom.total)
        assert oom.unallocated >= 0 and oom.allocated <= oom.reserved
        assert oom.allocated >= usage(i, rank, step).allocated  # the state is still there
        sizes = oom_sizes(i, rank, step)
        assert not any(v.startswith("-") for v in sizes.values())
        assert _gib(sizes["tried"]) > _gib(sizes["free"]) and _gib(sizes["in_use"]) <= _gib(sizes["total"])


def _gib(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+) (bytes|KiB|MiB|GiB)", text).groups()
    return float(number) * {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit] / 2**30


def test_format_size_is_c10s():
    assert format_size(1000) == "1000 bytes" and format_size(3 * 2**29) == "1.50 GiB"


# -- the frameworks' own accounting ------------------------------------------------
def model(name: str) -> catalog.Model:
    return catalog.find(catalog.models(), name, "model")


H100 = catalog.find(catalog.gpus(), "NVIDIA H100 80GB HBM3", "GPU")


@pytest.mark.parametrize("argv,names", [
    (("train.py", "--model_name_or_path", "meta-llama/Llama-3.1-8B", "--per_device_train_batch_size", "4"),
     ("--fsdp full_shard", "ZeRO-3", "nodes", "smaller model (Llama-3.2-1B)")),
    (("lightning_train.py", "--trainer.strategy", "ddp"),
     ("--trainer.strategy fsdp", "--trainer.strategy deepspeed_stage_3", "smaller model (Llama-3.2-3B)")),
])
def test_plain_ddp_of_a_big_model_is_a_one_line_error_naming_what_fits(argv, names):
    """Llama-3.1-8B under DDP: 20 bytes a parameter (fp32 weights, grads and
    Adam, the reducer's buckets) is 160 GB a GPU."""
    asked = script_args.read(argv[0], list(argv[1:])).asked
    framework = "hf" if "--model_name_or_path" in argv else "lightning"
    asked = identity.Asked(model=asked.model or model("Llama-3.1-8B"), micro_batch=asked.micro_batch,
                           framework=framework, strategy=asked.strategy)
    with pytest.raises(catalog.CatalogError) as raised:
        identity.build(1, 1, 2, gpu=H100.name, asked=asked)
    message = str(raised.value)
    assert "\n" not in message and "does not fit" in message
    assert all(name in message for name in names), message


def test_the_same_job_fully_sharded_fits_on_a_node():
    argv = ["--model_name_or_path", "meta-llama/Llama-3.1-8B", "--per_device_train_batch_size", "4",
            "--fsdp", "full_shard auto_wrap", "--gradient_checkpointing"]
    asked = script_args.read("train.py", argv).asked
    ident = identity.build(1, 1, 8, gpu=H100.name, asked=identity.Asked(
        model=asked.model, micro_batch=4, framework="hf", strategy=asked.strategy))
    assert (ident.parallel.kind, ident.parallel.zero, ident.parallel.recompute) == ("fsdp", 3, "full")


def test_megatron_13b_at_tp1_pp1_on_80gb_does_not_run():
    """18 bytes a parameter without the distributed optimizer: 13B is 218 GB."""
    plain = Strategy("megatron", (0,), tp=1, pp=1, recompute="none")
    job = Job(model("Llama-2-13b-hf"), H100, 8, 8, "megatron", plain)
    assert plan_memory(job, tuned=False) is None
    assert plan_memory(Job(model("Llama-2-13b-hf"), H100, 8, 8, "megatron")) is not None


def test_ddp_accounts_twenty_bytes_and_zero_sixteen_sharded():
    m = model("Llama-3.2-1B")
    plain = sum(state_bytes(m, Parallelism(1, 1, 8, 0, "ddp")).values())
    zero1 = sum(state_bytes(m, Parallelism(1, 1, 8, 1, "zero")).values())
    assert plain == pytest.approx(20 * m.params)
    assert zero1 == pytest.approx((2 + 2 + 12 / 8) * m.params)
