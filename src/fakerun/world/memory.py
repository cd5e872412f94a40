"""What a job needs of its GPUs' memory, as the framework it runs under
accounts it, and the plan a tuned job lands on: the least sharding, then the
micro batch, sequence length and activation recomputation that fill the
fullest GPU to 85-95% (what people tune a job to before they launch it).

Training state per parameter, by how the framework holds it:
- ZeRO (DeepSpeed, and our own train.py, which shards the same way): bf16
  weights and grads, an fp32 master copy and Adam's two moments, 2 + 2 + 12
  bytes (Rajbhandari et al. 2020, "ZeRO", section 3); stage 1 shards the
  optimizer over data parallelism, 2 the grads too, 3 the weights too.
- DDP (the Trainer and Lightning without a sharding flag): fp32 weights under
  bf16 autocast, fp32 grads, Adam's moments: 4 + 4 + 8, and the reducer's
  buckets, a second copy of the grads (torch's DistributedDataParallel with
  its default gradient_as_bucket_view=False: "the saved memory size will be
  equal to the total gradients size" when it is True).
- FSDP with bf16 mixed precision: the same 4 + 4 + 8 in fp32 flat
  parameters, sharded as ZeRO-3 (full_shard) or ZeRO-2 (shard_grad_op).
- Megatron: bf16 weights, fp32 main grads, fp32 master and moments, 18 bytes,
  or 6 + 12/DP with the distributed optimizer (megatron/training/
  theoretical_memory_usage.py, core_v0.8.0 to core_v0.10.0).

Activations per transformer layer: s b h (18 + 4 f/h) bytes with flash
attention (Korthikanti et al. 2022, "Reducing Activation Recomputation in
Large Transformer Models", Table 2 as Megatron's theoretical_memory_usage
writes it), divided over TP by sequence parallelism; full recomputation keeps
only each layer's bf16 input and rebuilds one layer at a time. 1F1B keeps
(pp - stage) micro batches in flight. The last stage also holds the logits
and the loss's fp32 copies of them."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from fakerun.world.catalog import Gpu, Model

GIB = 1024**3
MIB = 1024**2
# nvidia-smi's memory used beyond what PyTorch reserved: the CUDA context, the
# cuBLAS workspace, NCCL's buffers (what torch's OOM text calls non-PyTorch memory).
CUDA_CONTEXT = 520 * MIB
# What the driver keeps of the memory nvidia-smi counts: torch's total capacity
# (cudaMemGetInfo) is this much less, e.g. 79.11 GiB on an H100 80GB's 81559 MiB.
DRIVER_RESERVED = int(0.55 * GIB)
# A tuned job's fullest GPU, as nvidia-smi shows it over the whole run.
FILL_LOW, FILL_HIGH = 0.85, 0.95
# The caching allocator reserves more than the peak it serves: a little at
# the first step, growing as it splits and caches blocks, up to a few percent.
FRAG_START, FRAG_MAX = 0.01, 0.05
# Per token and vocabulary entry on the last stage: the bf16 logits, the fp32
# upcast and the shifted copy the loss takes (transformers' ForCausalLMLoss),
# and log_softmax's fp32 output kept for backward.
HF_LOGIT_BYTES = 2 + 4 + 4 + 4
MICROS = (1, 2, 4, 8, 16, 32, 64)
SEQS = (2048, 4096, 8192)
MODEL_PARALLEL = (1, 2, 4, 8)

# (weights, grads, optimizer) bytes per parameter; extra: the DDP reducer's buckets.
# FSDP's state_dict_type, how it saves (accelerate's FullyShardedDataParallelPlugin).
FULL_STATE_DICT, SHARDED_STATE_DICT = "FULL_STATE_DICT", "SHARDED_STATE_DICT"
STATE_BYTES = {"zero": (2, 2, 12), "ddp": (4, 4, 8), "fsdp": (4, 4, 8), "megatron": (2, 4, 12)}
BUCKET_BYTES = {"ddp": 4}
# What each framework runs under unless its arguments say otherwise.
FRAMEWORK_KIND = {"torchrun": "zero", "hf": "ddp", "deepspeed": "zero", "lightning": "ddp",
                  "megatron": "megatron"}
KIND_STAGES = {"zero": (1, 2, 3), "ddp": (0,), "fsdp": (3,), "megatron": (1,)}
KIND_RECOMPUTE = {"megatron": ("selective", "full")}
RECOMPUTE = ("none", "full")
MODEL_PARALLEL_FRAMEWORKS = ("torchrun", "megatron")  # only these scripts split layers over TP and PP


@dataclass(frozen=True)
class Parallelism:
    tp: int
    pp: int
    dp: int
    zero: int  # ZeRO stage (FSDP: 3 full_shard, 2 shard_grad_op; Megatron: 1 distributed optimizer; 0 none)
    kind: str = "zero"  # how the framework holds the state: zero, ddp, fsdp, megatron
    recompute: str = "none"  # activation recomputation: none, selective (Megatron's), full
    state_dict: str = ""  # how FSDP saves it: FULL_STATE_DICT or SHARDED_STATE_DICT (its state_dict_type)


@dataclass(frozen=True)
class Strategy:
    """What the job's arguments fix of its memory layout; None (or empty):
    the framework's default, or the plan's choice."""

    kind: str | None = None
    stages: tuple[int, ...] = ()  # the ZeRO/FSDP stages it may run (a ds config's, a --fsdp mode's)
    tp: int | None = None
    pp: int | None = None
    recompute: str | None = None
    state_dict: str = ""  # FSDP's state_dict_type (Parallelism.state_dict)


@dataclass(frozen=True)
class MemoryPlan:
    parallel: Parallelism
    micro: int
    seq: int
    peak: float  # bytes PyTorch allocates at most on the fullest GPU
    capacity: float  # the GPU's memory, as nvidia-smi counts it

    @property
    def fill_range(self) -> tuple[float, float]:
        """The fullest GPU's nvidia-smi memory used over its total, from the
        first step's allocator to the most fragmented one's."""
        return tuple((self.peak * (1 + frag) + CUDA_CONTEXT) / self.capacity  # type: ignore[return-value]
                     for frag in (FRAG_START, FRAG_MAX))

    @property
    def tuned(self) -> bool:
        low, high = self.fill_range
        return low >= FILL_LOW and high <= FILL_HIGH


@dataclass(frozen=True)
class Job:
    """What the plan searches over: the model on its cluster, and what the
    job's arguments fix."""

    model: Model
    gpu: Gpu
    nproc: int
    world: int
    framework: str = "torchrun"
    strategy: Strategy = Strategy()
    micro: int | None = None
    seq: int | None = None


def plan_memory(job: Job, pick: float = 0.0, tuned: bool = True) -> MemoryPlan | None:
    """A plan for `job`: one of the tuned ones (`pick` in [0, 1) chooses),
    else, unless only a tuned job will do, the fullest that still fits."""
    options = tuned_plans(job)
    if options:
        return options[int(pick * len(options))]
    return None if tuned else fullest_fit(job)


@functools.cache
def tuned_plans(job: Job) -> tuple[MemoryPlan, ...]:
    """Every knob setting that fills the fullest GPU to 85-95%, at the
    least sharding that has one."""
    for par in layouts(job):
        found = tuple(_plans(job, par, tuned_only=True))
        if found:
            return found
    return ()


@functools.cache
def fullest_fit(job: Job) -> MemoryPlan | None:
    """The least sharding with room to spare (the GPU at most 95% full), at
    its fullest; failing that, the least sharding that fits at all, at its
    emptiest."""
    plans = [p for par in layouts(job) for p in _plans(job, par)]
    for par in dict.fromkeys(p.parallel for p in plans):
        roomy = [p for p in plans if p.parallel == par and p.fill_range[1] <= FILL_HIGH]
        if roomy:
            return max(roomy, key=lambda p: p.peak)
    return min(plans, key=lambda p: p.peak) if plans else None


def layouts(job: Job) -> list[Parallelism]:
    """The shardings the job's framework can run, least sharded first: the
    whole model on each GPU, then ZeRO's stages, then tensor and pipeline
    parallelism (TP within a node)."""
    s, kind = job.strategy, job.strategy.kind or FRAMEWORK_KIND[job.framework]
    split = job.framework in MODEL_PARALLEL_FRAMEWORKS
    tps = (s.tp,) if s.tp else (MODEL_PARALLEL if split else (1,))
    pps = (s.pp,) if s.pp else (MODEL_PARALLEL if split else (1,))
    out = []
    for tp in (t for t in tps if t <= job.nproc and job.nproc % t == 0):
        for pp in (p for p in pps if job.world % (tp * p) == 0 and p <= job.model.layers):
            dp = job.world // (tp * pp)
            out += [Parallelism(tp, pp, dp, z, kind, state_dict=s.state_dict)
                    for z in (s.stages or KIND_STAGES[kind])]
    return out


def _plans(job: Job, par: Parallelism, tuned_only: bool = False) -> list[MemoryPlan]:
    """Every knob setting on this layout that fits at all (`tuned_only`:
    that fills the GPU as a tuned job does, MemoryPlan.tuned). The peak is
    the state plus activations linear in the micro batch, so each
    (recompute, sequence) is two figures per stage, and a larger micro batch
    never has a smaller peak. Every launch draws a job through here for each
    model of the catalog: the bounds are tested on floats before any plan is
    made (bench/bench.py's first-line figure)."""
    s, capacity = job.strategy, job.gpu.memory_mib * MIB
    recomputes = (s.recompute,) if s.recompute else KIND_RECOMPUTE.get(par.kind, RECOMPUTE)
    seqs = (job.seq,) if job.seq else tuple(q for q in SEQS if q <= job.model.context) or (job.model.context,)
    micros = (job.micro,) if job.micro else MICROS
    working = working_bytes(job.model, par)
    fixed = [persistent_bytes(job.model, par, stage) + working for stage in _stages(par)]
    # The most a peak can be: its most fragmented reserve and the context within what CUDA hands out.
    limit = (capacity - DRIVER_RESERVED - CUDA_CONTEXT) / (1 + FRAG_MAX)
    if min(fixed) > limit:
        return []
    # MemoryPlan.tuned's bounds on the peak itself.
    low, high = (FILL_LOW * capacity - CUDA_CONTEXT) / (1 + FRAG_START), \
        (FILL_HIGH * capacity - CUDA_CONTEXT) / (1 + FRAG_MAX)
    plans = []
    for recompute in recomputes:
        layout = replace(par, recompute=recompute)
        for seq in seqs:
            per_micro = [activation_bytes(job.model, layout, 1, seq, stage) for stage in _stages(par)]
            for micro in micros:
                peak = max(f + a * micro for f, a in zip(fixed, per_micro, strict=True))
                if peak > limit:
                    break
                if not tuned_only or low * (1 - 1e-12) <= peak <= high * (1 + 1e-12):
                    plans.append(MemoryPlan(layout, micro, seq, peak, capacity))
    return [p for p in plans if p.tuned] if tuned_only else plans


def _stages(par: Parallelism) -> tuple[int, ...]:
    """The stages that can be the fullest: the first (most micro batches in
    flight) and the last (the logits)."""
    return (0, par.pp - 1) if par.pp > 1 else (0,)


# -- what the state and the activations take -------------------------------------
def stage_params(model: Model, par: Parallelism, stage: int) -> float:
    """Parameters on one (tensor, pipeline) shard: the layers split over PP and
    TP, the embedding on the first stage and the output layer on the last."""
    embedding = model.vocab * model.hidden
    body = model.params - embedding
    count = body / par.pp
    if stage == 0 or (par.pp > 1 and stage == par.pp - 1):
        count += embedding
    return count / par.tp


def state_bytes(model: Model, par: Parallelism, stage: int = 0) -> dict[str, float]:
    """The persistent training state of one GPU, sharded by ZeRO's stage
    (FSDP's, the distributed optimizer's) over data parallelism."""
    local = stage_params(model, par, stage)
    weights, grads, optimizer = STATE_BYTES[par.kind]
    grads += BUCKET_BYTES.get(par.kind, 0)
    return {"weights": weights * local / (par.dp if par.zero >= 3 else 1),
            "grads": grads * local / (par.dp if par.zero >= 2 else 1),
            "optimizer": optimizer * local / (par.dp if par.zero >= 1 else 1)}


def working_bytes(model: Model, par: Parallelism) -> float:
    """Fully sharded weights are gathered a layer at a time, the next one
    prefetched, and the layer's full grads wait for their reduce-scatter."""
    if par.zero < 3:
        return 0.0
    layer = (model.params - model.vocab * model.hidden) / model.layers / par.tp
    return 2 * (2 * layer) + 4 * layer


def mlp_width(model: Model) -> float:
    """The MLP width a token's activations see: a two-matrix MLP's with the
    same active weights (a SwiGLU's three matrices count 1.5 times its
    intermediate size, which is what it keeps for backward too; an MoE's the
    experts a token is routed through)."""
    h = model.hidden
    attention = h * (2 * h + 2 * model.kv_heads * (h // model.heads))
    per_layer = (model.active_params - model.vocab * h) / model.layers
    return max(float(h), (per_layer - attention) / (2 * h))


def layer_activation_bytes(model: Model, micro: int, seq: int) -> float:
    """One layer's activations kept for backward (flash attention, no recompute)."""
    return micro * seq * (18 * model.hidden + 4 * mlp_width(model))


def activation_bytes(model: Model, par: Parallelism, micro: int, seq: int, stage: int) -> float:
    tokens = micro * seq
    layers = model.layers / par.pp
    in_flight = par.pp - stage
    full = layer_activation_bytes(model, micro, seq)
    if par.recompute == "full":
        kept = 2 * tokens * model.hidden * layers * in_flight + full
    else:
        kept = full * layers * in_flight
    return (kept + _logit_bytes(model, par, tokens, stage)) / par.tp


def _logit_bytes(model: Model, par: Parallelism, tokens: int, stage: int) -> float:
    if stage != par.pp - 1:
        return 0.0
    if par.kind == "megatron":  # the output layer's input and its fp32 logits (theoretical_memory_usage)
        return 4 * tokens * (model.hidden + model.vocab)
    return HF_LOGIT_BYTES * tokens * model.vocab


def persistent_bytes(model: Model, par: Parallelism, stage: int) -> float:
    """Allocated between steps: the training state."""
    return sum(state_bytes(model, par, stage).values())


def peak_bytes(model: Model, par: Parallelism, micro: int, seq: int, stage: int) -> float:
    """The most PyTorch has allocated at once on this stage: the state, the
    gathered layers of a full shard, and the activations at the end of forward."""
    return (persistent_bytes(model, par, stage) + working_bytes(model, par)
            + activation_bytes(model, par, micro, seq, stage))
