"""PyTorch's caching allocator on one rank over the run: what is allocated
between steps and at a step's peak, and what it has reserved from the driver
(what nvidia-smi shows, with the CUDA context). Reserved memory only grows:
the allocator keeps the segments it has cudaMalloc'ed (none of the
frameworks' scripts call empty_cache), a little more at each of the early
steps as it splits and caches blocks for the step's varied sizes, then now
and then later; never past the GPU."""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fakerun.world.draws import rng, uniform
from fakerun.world.memory import (
    CUDA_CONTEXT,
    DRIVER_RESERVED,
    FRAG_MAX,
    FRAG_START,
    MIB,
    mlp_width,
    peak_bytes,
    persistent_bytes,
)

if TYPE_CHECKING:
    from fakerun.world.jobs import Identity

EARLY_GROWTHS, LATE_GROWTHS = 5, 2  # how many times a stage's reserve grows after its first step
GROWTH_MEAN_STEPS = 6.0  # the early ones: the allocator warming up; the late ones anywhere in the run
# Ranks of one pipeline stage allocate the same tensors in the same order, so
# their allocators grow alike; what differs (NCCL's timing, the order in which
# buckets complete) is a fraction of a percent.
RANK_SPREAD = 0.004


@dataclass(frozen=True)
class Usage:
    allocated: float  # between steps: the training state
    peak: float  # the most allocated at once during a step
    reserved: float  # the allocator's segments

    @property
    def used_mib(self) -> float:
        """nvidia-smi's memory used by this process."""
        return (self.reserved + CUDA_CONTEXT) / MIB


def stage_of(ident: Identity, rank: int) -> int:
    """The pipeline stage a global rank runs. Megatron orders its groups
    tp-cp-ep-dp-pp (megatron/core/parallel_state.py initialize_model_parallel's
    default `order`, core_v0.8.0 to core_v0.15.0): the stage is outermost, so
    with TP 2, PP 2, DP 2 ranks 0-3 are the first stage and 4-7 the last. Other
    scripts keep tensor parallelism fastest, then the pipeline."""
    p = ident.parallel
    if p.kind == "megatron":
        return rank // (p.tp * p.dp)
    return (rank // p.tp) % p.pp


def usage(ident: Identity, rank: int, step: int) -> Usage:
    """At `step` (0: loaded, before the first step)."""
    stage = stage_of(ident, rank)
    h, p = ident.hyper, ident.parallel
    state = persistent_bytes(ident.model, p, stage)
    if step <= 0:
        return Usage(state, state, state * (1 + FRAG_START))
    peak = peak_bytes(ident.model, p, h.micro_batch, h.seq_len, stage)
    frag = fragmentation(ident.seed, stage, rank, step, h.total_steps)
    return Usage(state, peak, peak * (1 + frag))


def fragmentation(seed: int, stage: int, rank: int, step: int, total_steps: int) -> float:
    """The reserve over the peak it serves: FRAG_START at the first step, a
    step up at each of the stage's growths up to `step`, and the rank's own
    bit; at most FRAG_MAX."""
    steps, total = _growths(seed, stage, total_steps)
    grown = bisect.bisect_right(steps, step)
    return FRAG_START + (total[grown - 1] if grown else 0.0) + RANK_SPREAD * uniform(seed, "allocator", rank)


# Bounded: keyed on the seed, and a --loop's agent draws a new one every run.
# A run asks for one entry a pipeline stage (at most 8: memory.MODEL_PARALLEL),
# so 16 keep the last two runs'; 256 took the soak's job (pp 4) 64 runs, 37 min, to fill.
@functools.lru_cache(maxsize=16)
def _growths(seed: int, stage: int, total_steps: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The steps at which the stage's reserve grows, and the growth so far
    after each; together at most FRAG_MAX - FRAG_START - RANK_SPREAD."""
    r = rng(seed, "allocator", stage)
    early = [1 + int(r.expovariate(1 / GROWTH_MEAN_STEPS)) for _ in range(EARLY_GROWTHS)]
    steps = sorted(early + [r.randint(1, max(1, total_steps)) for _ in range(LATE_GROWTHS)])
    sizes = [r.random() for _ in steps]
    scale = (FRAG_MAX - FRAG_START - RANK_SPREAD) * r.uniform(0.4, 1.0) / sum(sizes)
    total, out = 0.0, []
    for size in sizes:
        total += size * scale
        out.append(total)
    return tuple(steps), tuple(out)


@dataclass(frozen=True)
class OutOfMemory:
    """What torch's CUDA OOM error says, in bytes: a request of this job (the
    largest tensor its backward allocates on this rank) that what is left of
    the GPU cannot hold, the reserve grown to the rest."""

    tried: float
    total: float  # torch's total capacity (cudaMemGetInfo), below nvidia-smi's
    free: float
    in_use: float  # the process's, with its non-PyTorch memory (the context)
    allocated: float
    unallocated: float  # reserved by PyTorch but not allocated

    @property
    def reserved(self) -> float:
        return self.allocated + self.unallocated


def out_of_memory(ident: Identity, rank: int, step: int) -> OutOfMemory:
    now = usage(ident, rank, step)
    r = rng(ident.seed, "oom", rank, step)
    tried = max(_tensors(ident, stage_of(ident, rank)))
    # What torch sees: CUDA after the driver's share; hipMemGetInfo's total is the VRAM's
    # (MI250X: "63.98 GiB", 68702699520 B).
    total = ident.gpu.memory_mib * MIB - (DRIVER_RESERVED if ident.gpu.vendor == "nvidia" else 0)
    headroom = total - CUDA_CONTEXT - now.reserved  # >= 0: every plan fits
    free = min(tried, headroom) * r.uniform(0.05, 0.9)
    reserved = total - CUDA_CONTEXT - free
    unallocated = min(tried * r.uniform(0.02, 0.6), reserved - now.allocated)
    return OutOfMemory(tried, total, free, reserved + CUDA_CONTEXT, reserved - unallocated, unallocated)


def _tensors(ident: Identity, stage: int) -> list[float]:
    """Tensors backward allocates on this stage: the fp32 gradient of the
    logits (last stage), the MLP's bf16 intermediate, the fused QKV's."""
    m, p, h = ident.model, ident.parallel, ident.hyper
    tokens = h.micro_batch * h.seq_len
    out = [2 * tokens * mlp_width(m) / p.tp, 2 * tokens * 3 * m.hidden / p.tp]
    if stage == p.pp - 1:
        out.append(4 * tokens * m.vocab / p.tp)
    return out
