"""What a model needs of a GPU's memory, and the least sharding that fits:
bf16 weights and grads, fp32 Adam state, activations under 1F1B with
activation checkpointing (the arithmetic of Korthikanti et al. 2022,
"Reducing Activation Recomputation in Large Transformer Models")."""

from __future__ import annotations

from dataclasses import dataclass

from fakerun.world.catalog import Gpu, Model

GIB = 1024**3
MEMORY_HEADROOM = 0.92  # the allocator never gets the last few percent
CONTEXT_OVERHEAD = int(1.4 * GIB)  # CUDA context, NCCL buffers, cuBLAS workspace


@dataclass(frozen=True)
class Parallelism:
    tp: int
    pp: int
    dp: int
    zero: int


def plan_memory(model: Model, gpu: Gpu, nproc: int, world: int, micro: int | None = None,
                seq: int | None = None) -> tuple[Parallelism, int] | None:
    """The least sharding (then the largest micro batch) that fits the GPU. A
    micro batch or sequence length the job's arguments fix must fit as it is:
    a real job with more than its GPUs hold runs out of CUDA memory at its
    first step (so does ours, as no job: None)."""
    capacity = gpu.memory_mib * 1024 * 1024 * MEMORY_HEADROOM
    micros = (micro,) if micro else (8, 4, 2, 1)
    seq = seq or min(model.context, 4096)
    for tp in (t for t in (1, 2, 4, 8) if t <= nproc and nproc % t == 0):
        for pp in (p for p in (1, 2, 4, 8) if world % (tp * p) == 0 and p <= model.layers):
            dp = world // (tp * pp)
            for zero in (1, 2, 3):
                for mb in micros:
                    par = Parallelism(tp, pp, dp, zero)
                    if peak_bytes(model, par, mb, seq, stage=0) < capacity:
                        return par, mb
    return None


def state_bytes(model: Model, par: Parallelism) -> dict[str, float]:
    """bf16 weights and grads, fp32 Adam (master, m, v), sharded by TP x PP
    and then by ZeRO stage over data parallelism."""
    shard = model.params / (par.tp * par.pp)
    return {
        "weights": 2 * shard / (par.dp if par.zero >= 3 else 1),
        "grads": 2 * shard / (par.dp if par.zero >= 2 else 1),
        "optimizer": 12 * shard / par.dp,
    }


def activation_bytes(model: Model, par: Parallelism, micro: int, seq: int, stage: int) -> float:
    """Activation checkpointing: layer inputs are kept, one layer is live at a
    time; 1F1B keeps (pp - stage) micro batches in flight; the last stage also
    holds fp32 logits."""
    tokens = micro * seq
    layers = model.layers / par.pp
    kept = 2 * tokens * model.hidden * layers * (par.pp - stage)
    live = 34 * tokens * model.hidden / par.tp
    logits = 4 * tokens * model.vocab / par.tp if stage == par.pp - 1 else 0
    return kept + live + logits


def peak_bytes(model: Model, par: Parallelism, micro: int, seq: int, stage: int) -> float:
    return (sum(state_bytes(model, par).values()) + activation_bytes(model, par, micro, seq, stage)
            + CONTEXT_OVERHEAD)
