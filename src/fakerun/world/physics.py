"""The training model: pure functions of (identity, rank, step).

Every random draw comes from an RNG seeded by (seed, purpose, rank, step), so
a rank, the coordinator and a test all compute the same value. Figures are
physically tied together: step time comes from FLOPs over peak FLOP/s times
MFU, tokens/s from step time, memory from the sharded state, power from
utilisation, checkpoint sizes from the parameter count.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fakerun.world.allocator import stage_of as stage_of
from fakerun.world.allocator import usage
from fakerun.world.draws import GAUSS_MAX, gauss, rng, uniform

if TYPE_CHECKING:
    from fakerun.world.catalog import Gpu
    from fakerun.world.jobs import Hyper, Identity

GIB = 1024**3
# Chinchilla's fit (Hoffmann et al. 2022): L(N, D) = E + A / N^alpha + B / D^beta
CHINCHILLA_A, CHINCHILLA_ALPHA = 406.4, 0.34
CHINCHILLA_B, CHINCHILLA_BETA = 410.7, 0.28
RANK_NOISE = 0.03  # spread of one rank's micro-batch loss around the mean
SPIKE_RATE = 0.004  # chance per step that a loss spike starts
SPIKE_MAX_DECAY = 40.0  # steps: the slowest recovery a spike is drawn out to (to reach a logged step)
SPIKE_MAX_LEAD = int(SPIKE_MAX_DECAY * math.log(2))  # steps before a logged step that still see half a spike


def safe_exp(x: float) -> float:
    """exp that saturates to inf (a diverged loss's perplexity) instead of raising."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# -- loss ------------------------------------------------------------------
def lr_progress(ident: Identity, step: float) -> float:
    """Cumulative LR / peak LR after `step` steps (how far optimisation got),
    in closed form: the integral of the warmup ramp and the decay."""
    h = ident.hyper
    w, span = h.warmup_steps, max(1, _decay_end(h) - h.warmup_steps)
    if w > 0 and step <= w:  # no warmup (Megatron's default --lr-warmup-iters 0): the decay from the start
        return step * step / (2.0 * w)
    past = min(step, h.total_steps) - w
    x = min(past, span)
    lo = h.min_lr / h.max_lr
    held = lo * (past - x)  # at min_lr once the decay has ended (--lr-decay-iters before the last step)
    if h.decay == "constant":
        return w / 2.0 + past
    if h.decay == "linear":
        decayed = lo * x + (1 - lo) * (x - x * x / (2.0 * span))
    else:
        decayed = lo * x + (1 - lo) / 2 * (x + span / math.pi * math.sin(math.pi * x / span))
    return w / 2.0 + decayed + held


def _decay_end(h: Hyper) -> int:
    """The step the schedule's decay ends at."""
    return h.decay_steps or h.total_steps


def trend_loss(ident: Identity, step: int) -> float:
    """Expected training loss after `step` steps: a base model fine-tuned on
    an instruction set tells its own story (`_instruct_loss`); anything
    else follows Chinchilla's law over the tokens seen, weighted by the
    learning rate (slow in warmup, flattening as the cosine ends), from
    ln(vocab) (continued pre-training: from where its base model is),
    never reaching the floor E + A/N^alpha."""
    if instruct(ident):
        return _instruct_loss(ident, step) - _memorised(ident, step)
    tokens = max(1e-3, lr_progress(ident, step)) * ident.hyper.tokens_per_step + ident.hyper.pretrained_tokens
    model_term = CHINCHILLA_A / ident.model.params ** CHINCHILLA_ALPHA
    data_term = CHINCHILLA_B / tokens ** CHINCHILLA_BETA
    return _soft_min(ident.data_loss + model_term + data_term, math.log(ident.model.vocab))


def val_trend(ident: Identity, step: int) -> float:
    """Expected held-out loss after `step` steps: the training trend and a
    small generalisation gap; a fine-tune's flattens where the examples
    stop teaching anything new, and creeps up as they are seen again."""
    if instruct(ident):
        seen_again = max(0.0, step / ident.hyper.steps_per_epoch - 1.0)
        return _instruct_loss(ident, step) + _overfit(ident) * seen_again**2
    return trend_loss(ident, step) * (1.0 + VAL_GAP)


VAL_GAP = 0.01


# -- the fine-tune story -------------------------------------------------------
# A base model on an instruction set: its first loss is the base model's on
# the set, near 2.3 for a 7B (bigger base, lower start); it learns the format
# fast, then slowly (two rates of adaptation); from the second epoch on the
# training loss steps down as the examples come round again (memorisation),
# towards ~0.8 after three epochs, while the held-out loss flattens near
# 1.0-1.3 and creeps up in the last epoch. Instruction data is far more
# predictable than web text: its floor (Identity.data_loss) is ~0.8-0.95.
INSTRUCT_START, INSTRUCT_START_PARAMS, INSTRUCT_START_SLOPE = 2.3, 7e9, 0.04
INSTRUCT_MODEL_TERM, INSTRUCT_MODEL_SLOPE = 0.3, 0.15  # the floor's share a bigger model removes
INSTRUCT_FAST, INSTRUCT_FAST_RATE, INSTRUCT_SLOW_RATE = 0.85, 6.0, 1.0  # per epoch at peak LR
MEMORISE = (0.17, 0.23)  # training-loss drop the first repeat of the examples brings
MEMORISE_DECAY = 0.5  # each later repeat brings this share of the one before
OVERFIT = (0.01, 0.03)  # held-out loss rise by (epochs seen again)^2


def instruct(ident: Identity) -> bool:
    """A base model fine-tuned on an instruction set (not pre-training, nor
    continued pre-training of a base model on a corpus)."""
    return ident.hyper.fine_tune and ident.dataset.use == "finetune"


def instruct_start(ident: Identity) -> float:
    return INSTRUCT_START * (ident.model.params / INSTRUCT_START_PARAMS) ** -INSTRUCT_START_SLOPE


def _instruct_floor(ident: Identity) -> float:
    return ident.data_loss + INSTRUCT_MODEL_TERM * (ident.model.params / 1e9) ** -INSTRUCT_MODEL_SLOPE


def _instruct_loss(ident: Identity, step: float) -> float:
    """What the model has learnt of the task, as a held-out set sees it.
    A step reports the loss of its batch before its own update: a fine-tune
    takes few steps, and its first one shows the base model's loss."""
    epochs = lr_progress(ident, step - 1) / ident.hyper.steps_per_epoch  # epochs' worth at the peak LR
    left = INSTRUCT_FAST * math.exp(-INSTRUCT_FAST_RATE * epochs) + (1 - INSTRUCT_FAST) * math.exp(
        -INSTRUCT_SLOW_RATE * epochs)
    floor = _instruct_floor(ident)
    return floor + (instruct_start(ident) - floor) * left


def _memorised(ident: Identity, step: int) -> float:
    """The training loss's drop on examples seen before: a step down at each new epoch."""
    h = ident.hyper
    repeats = min(h.epochs, max(0, step - 1) // h.steps_per_epoch + 1) - 1
    low, high = MEMORISE
    first = low + (high - low) * uniform(ident.seed, "memorise")
    return first * (1 - MEMORISE_DECAY**repeats) / (1 - MEMORISE_DECAY)


def _overfit(ident: Identity) -> float:
    low, high = OVERFIT
    return low + (high - low) * uniform(ident.seed, "overfit")


def _soft_min(a: float, b: float, p: float = 6.0) -> float:
    """Smooth min: an untrained model sits just under ln(vocab), then the
    curve bends onto the scaling law without a kink or a plateau."""
    return (a ** -p + b ** -p) ** (-1.0 / p)


def spikes(ident: Identity) -> tuple[tuple[int, float, float], ...]:
    """The run's loss spikes (start step, relative height, decay in steps):
    a Poisson process after warmup, so the cost follows the spike count,
    not the run length."""
    # Keyed on ints: hashing the whole Identity on every step showed in profiles.
    h = ident.hyper
    return _spikes(ident.seed, h.warmup_steps, h.total_steps, h.log_every)


# Keyed on the seed: a --loop draws a new one every run, and a run asks for one
# entry; 8 keep the last runs' (64 took 64 runs to fill: 37 min of the soak's job).
@functools.lru_cache(maxsize=8)
def _spikes(seed: int, warmup: int, total: int, every: int) -> tuple[tuple[int, float, float], ...]:
    r = rng(seed, "spikes")
    out, at = [], float(warmup)
    while True:
        at += r.expovariate(SPIKE_RATE)
        if at > total:
            return tuple(out)
        # A spike too far before the next logged step for any plausible
        # recovery to reach it starts later instead: it shows, and never lasts
        # for hundreds of steps (a run logging every 500 steps, say).
        drawn = int(at) + 1
        start = max(drawn, next_logged_step(drawn, every, total) - SPIKE_MAX_LEAD)
        out.append((start, r.uniform(0.04, 0.15), visible_decay(start, r.uniform(3.0, 8.0), every, total)))


def next_logged_step(step: int, every: int, total: int) -> int:
    """The first step at or after `step` that the scripts log (every
    `every` steps, and the last)."""
    return min(-(-step // every) * every, total)


def visible_decay(start: int, decay: float, every: int, total: int) -> float:
    """A spike's decay, stretched so that the next logged step still shows
    at least half its height (as far as SPIKE_MAX_DECAY allows): a spike
    that rose and fell between two logged steps is one nobody sees."""
    gap = next_logged_step(start, every, total) - start
    return max(decay, min(gap / math.log(2), SPIKE_MAX_DECAY))


SPIKE_REACH = 4.0 * SPIKE_MAX_DECAY  # steps after its start beyond which a spike's remainder is under 2 %


def spike(ident: Identity, step: int) -> float:
    """Relative loss bump from the spikes under way at `step`, decaying."""
    table = spikes(ident)
    bump = 0.0
    for k in range(bisect.bisect_left(table, (step - SPIKE_REACH,)), len(table)):
        start, height, decay = table[k]
        if start > step:
            break
        bump += height * math.exp(-(step - start) / decay)
    return bump


def local_loss(ident: Identity, rank: int, step: int) -> float:
    """One rank's micro-batch loss; the run's loss is the mean over ranks."""
    eps = gauss(ident.seed, "loss", rank, step)
    return trend_loss(ident, step) * (1.0 + spike(ident, step)) * math.exp(RANK_NOISE * eps)


def local_grad_norm(ident: Identity, rank: int, step: int) -> float:
    """Pre-clip grad norm: large and spiky early, settling below ~1."""
    progress = step / ident.hyper.total_steps
    base = 0.25 + 6.0 / math.sqrt(1.0 + step / 3.0)
    sigma = 0.35 * (1.0 - progress) + 0.06
    return base * (1.0 + 8.0 * spike(ident, step)) * math.exp(sigma * gauss(ident.seed, "gn", rank, step))


OVERFLOW_HISTORY = 8  # steps of grad norms an overflow is judged against
OVERFLOW_JUMP = 4.0  # a grad norm this many times its recent mean overflows fp16


def overflows(recent: list[float], grad_norm: float) -> bool:
    """Would an fp16 loss scaler overflow on this step? Its scale is tuned to
    the gradients it has been seeing, so a sudden jump (a loss spike) or a
    non-finite norm takes the scaled gradients past fp16's range."""
    if not math.isfinite(grad_norm):
        return True
    return len(recent) >= OVERFLOW_HISTORY // 2 and grad_norm > OVERFLOW_JUMP * sum(recent) / len(recent)


def local_val_loss(ident: Identity, rank: int, step: int, again: bool = False) -> float:
    """Held-out loss: its trend, less noisy than a training batch's. `again`:
    a second evaluation at `step`, on the next batches of the validation set."""
    wobble = 1.0 + 0.005 * gauss(ident.seed, "gap", step)
    batches = (step, "again") if again else (step,)
    return val_trend(ident, step) * wobble * math.exp(0.004 * gauss(ident.seed, "val", rank, *batches))


# -- schedule and throughput -------------------------------------------------
def learning_rate(ident: Identity, step: int) -> float:
    """The LR after `step` optimizer steps: linear warmup, then the decay the
    hyper-parameters name, to min_lr. It is what the Trainer logs at global
    step N (4.x): its LambdaLR is stepped after the optimizer, so
    `_get_learning_rate()` gives base_lr * lambda(N), 0.0 at the end of a
    linear or cosine schedule. Computed as transformers' optimization.py
    computes the lambdas (float(N) / float(max(1, W)) in warmup;
    float(T - N) / float(max(1, T - W)) for linear), times the peak as
    torch's LambdaLR.get_lr does, so that the repr of the value is theirs."""
    h = ident.hyper
    if step < h.warmup_steps:
        return h.max_lr * (float(step) / float(h.warmup_steps))
    span = max(1, _decay_end(h) - h.warmup_steps)  # at min_lr after Megatron's --lr-decay-iters
    done = min(step - h.warmup_steps, span)
    return h.min_lr + (h.max_lr - h.min_lr) * _decayed(h.decay, done, span)


def _decayed(decay: str, done: int, span: int) -> float:
    """The share of the way from min_lr to the peak left after `done` of the decay's `span` steps."""
    if decay == "constant":
        return 1.0
    if decay == "linear":
        return float(span - done) / float(span)
    return 0.5 * (1.0 + math.cos(math.pi * (float(done) / float(span))))


def mfu(ident: Identity, step: int) -> float:
    return ident.mfu * _mfu_jitter(ident.seed, step)


# A draw's search times every job it considers at step 0's MFU (an evaluation's
# nominal length): one hash, not one per candidate (~600,000 in test_draw_configs).
# A few entries: a search asks for one, a rank for its step's (a --loop's agent
# fills 64 only after dozens of runs: test_loop_memory).
@functools.lru_cache(maxsize=8)
def _mfu_jitter(seed: int, step: int) -> float:
    return math.exp(0.025 * gauss(seed, "mfu", step))


def flops_per_step(ident: Identity) -> float:
    """6 N T (Kaplan et al. 2020), N the parameters each token goes through:
    a mixture of experts' active ones, not its total."""
    return 6.0 * ident.model.active_params * ident.hyper.tokens_per_step


def compute_seconds(ident: Identity, step: int) -> float:
    """Step time = 6 N T / (GPUs x peak x MFU)."""
    return _step_seconds(ident, mfu(ident, step))


def _step_seconds(ident: Identity, mfu_now: float) -> float:
    peak = ident.gpu.bf16_tflops * 1e12
    return flops_per_step(ident) / (ident.world * peak * mfu_now)


def slowest_step_seconds(ident: Identity) -> float:
    """compute_seconds at its largest: the MFU's jitter at its lowest."""
    return _step_seconds(ident, ident.mfu * math.exp(0.025 * -GAUSS_MAX))


# All-reduce bus bandwidths (nccl-tests' busbw), bytes/s: within a node over
# NVLink or PCIe; across nodes the network is the bottleneck. NVLink by
# generation: Hopper's NVSwitch (900 GB/s a GPU) 360; A100's (600 GB/s) ~200-210
# on 8 GPUs (NVIDIA/nccl-tests#149 and #178); V100's hybrid cube mesh (300 GB/s
# a GPU, 150 each way) at most 130. PCIe: a ring through the host at ~85% of
# an x16 link's one-way rate, doubling with each generation (Gen4: 22).
NVLINK_BUSBW = 360e9
NVLINK_BUSBW_BY_ARCH = {"hopper": NVLINK_BUSBW, "ampere": 210e9, "volta": 130e9}
PCIE_BUSBW = {3: 11e9, 4: 22e9, 5: 44e9}
# An AMD node is a full mesh of xGMI links, one between each pair of GPUs,
# 48 GB/s each way after protocol overheads on MI300X (RCCL's
# GFX94X_XGMI_WIDTH, src/graph/topo.h at rocm-6.2.0; ROCm/rccl#1210). A ring
# all-reduce over k of them sends on the k-1 links of each GPU at once (RCCL's
# rings for the 8-GPU node use every link), so fewer GPUs get a fraction of the
# bus (the "less than 8 MI300 GPUs" note in ROCm/rccl's README); the
# efficiency is NVLink's above (360 of its 450 GB/s).
XGMI_LINK_BW, LINK_EFFICIENCY = 48e9, 0.8
# An MI250X node's 8 GCDs are no mesh: the two GCDs of a package share 4 links,
# others 1 or 2 (RCCL's rome_model_73 connMatrix), 36 GB/s each way a link
# (MI200_XGMI_WIDTH); RCCL's rings for the node run 4 at once (2 each way),
# each through single links: 4 links' worth. Two GCDs of a package: their 4
# links; other partial nodes: one ring each way over single links.
MI250X_LINK_BW = 36e9


def _mi250x_links(nproc: int) -> int:
    return 4 if nproc in (2, 8) else 2


@dataclass(frozen=True)
class Network:
    """The nodes' network: what the GPU box shows and the bus bandwidth an
    all-reduce across nodes gets from it."""

    label: str
    busbw: float


# DGX-style NVLink nodes have ConnectX InfiniBand ports (NCCL: NET/IB): a 400G
# NDR port a GPU on Hopper (DGX H100), a 200G HDR port a GPU on DGX A100, four
# 100G EDR ports on a DGX-1 (a port to two V100s); an all-reduce across nodes
# gets ~90% of a GPU's share of them (8x100G EDR V100 nodes measure ~6 GB/s:
# NVIDIA/nccl-tests#29). The PCIe boxes have a 100 GbE port, which NCCL drives
# over its socket transport (NET/Socket), at most its 12.5 GB/s line rate less
# TCP's overhead.
IB_NETWORKS = {"hopper": Network("InfiniBand: 8x400 Gb/s", 45e9),
               "ampere": Network("InfiniBand: 8x200 Gb/s", 22e9),
               "volta": Network("InfiniBand: 4x100 Gb/s", 5.6e9)}
ETHERNET = Network("Ethernet: 100 Gb/s", 10e9)


def node_busbw(ident: Identity) -> float:
    """One node's all-reduce bus bandwidth, over its GPUs' own links."""
    if ident.gpu.name == "AMD Instinct MI250X":
        return MI250X_LINK_BW * _mi250x_links(ident.nproc) * LINK_EFFICIENCY
    if ident.gpu.vendor == "amd":
        return XGMI_LINK_BW * max(1, ident.nproc - 1) * LINK_EFFICIENCY
    return nvlink_busbw(ident.gpu) if ident.gpu.nvlink == "yes" else PCIE_BUSBW[ident.gpu.pcie_gen]


def nvlink_busbw(gpu: Gpu) -> float:
    return NVLINK_BUSBW_BY_ARCH.get(gpu.architecture, NVLINK_BUSBW)


def network(ident: Identity) -> Network:
    if ident.gpu.nvlink != "yes":
        return ETHERNET
    return IB_NETWORKS.get(ident.gpu.architecture, IB_NETWORKS["hopper"])


def allreduce_seconds(ident: Identity, numel: int, bytes_per: int = 2) -> float:
    """Ring all_reduce: 2 (n-1)/n x size / bus bandwidth + a latency floor."""
    n = ident.world
    if n == 1 or numel == 0:
        return 0.0
    busbw = node_busbw(ident) if ident.nnodes == 1 else network(ident).busbw
    return 2 * (n - 1) / n * numel * bytes_per / busbw + 20e-6 * math.log2(n)


def collective_seconds(ident: Identity, op: str, numel: int) -> float:
    """A collective's own simulated time: an all_reduce's ring, a broadcast
    half of it (one pass), a barrier the latency of a tiny all_reduce. The
    coordinator's clock adds it after the slowest rank's work, and each rank
    paces to the moment it ends (so a line is printed when its stamp says)."""
    if op == "all_reduce":
        return allreduce_seconds(ident, numel)
    if op == "broadcast":
        return allreduce_seconds(ident, numel) / 2
    return 30e-6 * math.log2(max(2, ident.world))


# How often ProcessGroupNCCL's watchdog thread looks at its pending work
# (kWatchdogThreadSleepMillis, 100 ms in torch 2.3-2.9's ProcessGroupNCCL.cpp):
# each rank notices a timed-out collective on its own, up to this much after
# the deadline.
WATCHDOG_POLL_S = 0.1
# From the deadline to a rank's last watchdog line, at most: its poll, then
# its few lines, under half a millisecond apart in all (the formatter's
# WATCHDOG_GAPS_US). Nothing the job says after the timeout comes earlier.
WATCHDOG_REPORT_S = WATCHDOG_POLL_S + 0.001


def watchdog_lag(seed: int, rank: int, seq: int) -> float:
    """Seconds after the deadline at which `rank`'s watchdog notices collective `seq`."""
    return WATCHDOG_POLL_S * uniform(seed, "watchdog", rank, seq)


@dataclass(frozen=True)
class Throughput:
    step_time_s: float
    tokens_per_s: float
    samples_per_s: float
    mfu: float
    tflops_per_gpu: float


def throughput(ident: Identity, step_time_s: float) -> Throughput:
    tokens = ident.hyper.tokens_per_step
    achieved = flops_per_step(ident) / (ident.world * step_time_s)
    return Throughput(step_time_s, tokens / step_time_s, ident.hyper.global_batch / step_time_s,
                      achieved / (ident.gpu.bf16_tflops * 1e12), achieved / 1e12)


def grad_numel(ident: Identity) -> int:
    """Elements one rank's gradient all_reduce moves (its TP x PP shard)."""
    return ident.model.params // (ident.parallel.tp * ident.parallel.pp)


# -- memory and telemetry ----------------------------------------------------
def memory_bytes(ident: Identity, rank: int, step: int | None = None) -> tuple[float, float]:
    """(peak allocated, reserved) on this rank at `step` (by default late in
    the run, the allocator warmed up); pipeline stages differ, ranks within a
    stage slightly (each allocator's fragmentation is its own)."""
    now = usage(ident, rank, ident.hyper.total_steps if step is None else step)
    return now.peak, now.reserved


PHASE_LOAD = {"train": 1.0, "validation": 0.68, "checkpoint": 0.12, "init": 0.05, "export": 0.2}


# A board's temperature: its inlet air, plus its draw (as a share of its
# power cap) through its heatsink's thermal resistance (degrees C at the cap).
INLET_C, HEATSINK_C_AT_CAP = 34.0, 44.0


@dataclass(frozen=True)
class Telemetry:
    util: int
    temp_c: int
    power_w: int
    mem_used_mib: int


def telemetry(ident: Identity, rank: int, step: int, phase: str) -> Telemetry:
    """A coordinated cluster: a shared per-step swing, a per-node drift and a
    fixed per-device offset; power follows utilisation, never above the cap."""
    load = PHASE_LOAD.get(phase, 1.0)
    shared = 0.015 * gauss(ident.seed, "tele", step)
    node = 0.01 * gauss(ident.seed, "tele-node", ident.topology.node_of(rank), step // 20)
    device = 0.01 * gauss(ident.seed, "tele-dev", rank)
    util = max(0.0, min(1.0, load * (0.97 + shared + node + device)))
    cap = ident.gpu.power_cap_w
    power = min(cap, cap * (0.22 + 0.74 * util) * (1.0 + 0.5 * device))
    temp = INLET_C + HEATSINK_C_AT_CAP * (power / cap) + 150 * device
    used = usage(ident, rank, step if phase != "init" else 0).used_mib
    return Telemetry(round(util * 100), round(temp), round(power), round(min(used, ident.gpu.memory_mib)))


# -- phases --------------------------------------------------------------------
def checkpoint_bytes(ident: Identity) -> dict[str, float]:
    """bf16 weights plus fp32 optimizer states (master, exp_avg, exp_avg_sq)."""
    return {"model": 2.0 * ident.model.params, "optimizer": 12.0 * ident.model.params}


# How much a phase's duration differs from one occurrence to the next (the
# filesystem's load, the eval batches' lengths) and, within one occurrence,
# from one rank to another (each process does its own share): (occasion, rank)
# as fractions. A real run never repeats a duration to the digit.
PHASE_SPREAD = {"validation": (0.03, 0.002), "checkpoint": (0.08, 0.01), "export": (0.05, 0.01)}


def phase_factor(ident: Identity, phase: str, rank: int, step: int, again: bool = False) -> float:
    """One rank's duration of `phase` at `step` over its nominal: the
    occasion's swing (shared by the ranks) times the rank's own lag.
    `again`: the phase's second occasion at that step (Hyper.eval_after_loop)."""
    occasion, lag = PHASE_SPREAD[phase]
    at = (step, "again") if again else (step,)
    swing = 1.0 + occasion * (2.0 * uniform(ident.seed, phase, *at) - 1.0)
    return swing * (1.0 + lag * uniform(ident.seed, phase, rank, *at))


def slowest_phase_factor(phase: str) -> float:
    """phase_factor at its largest."""
    occasion, lag = PHASE_SPREAD[phase]
    return (1.0 + occasion) * (1.0 + lag)


def checkpoint_seconds(ident: Identity, rank: int = 0, step: int = 0) -> float:
    """One rank's save of the checkpoint at `step`."""
    return _checkpoint_nominal(ident) * phase_factor(ident, "checkpoint", rank, step)


def _checkpoint_nominal(ident: Identity) -> float:
    per_node_bw = 2.5e9  # bytes/s to a parallel filesystem
    return sum(checkpoint_bytes(ident).values()) / (per_node_bw * ident.nnodes) + 3.0


def eval_seconds(ident: Identity, rank: int = 0, step: int = 0, again: bool = False) -> float:
    """One rank's evaluation at `step` (`again`: its second there, on other batches)."""
    return _eval_nominal(ident) * phase_factor(ident, "validation", rank, step, again)


def eval_samples(ident: Identity) -> int:
    """One evaluation's samples: its batches (of the evaluation's own batch
    size) on every data-parallel rank."""
    return ident.hyper.eval_batches * ident.hyper.eval_batch * ident.parallel.dp


def _eval_nominal(ident: Identity) -> float:
    """A forward pass (a third of a step's 6 N T) over each evaluation batch."""
    h = ident.hyper
    forward_only = compute_seconds(ident, 0) / 3.0 / h.grad_accum * (h.eval_batch / h.micro_batch)
    return h.eval_batches * forward_only


def init_seconds(ident: Identity) -> dict[str, float]:
    """Each start-up stage's simulated work, by its collective's tag."""
    return {"init_process_group": 1.5 + 0.1 * ident.world, "load_model": load_seconds(ident),
            "load_tokenizer": 1.1, "load_dataset": 7.5}


def load_seconds(ident: Identity) -> float:
    return 2.0 * ident.model.params / 3e9 + 4.0


def export_seconds(ident: Identity, rank: int = 0, step: int = 0) -> float:
    """One rank's part of the final export, after `step`."""
    return _export_nominal(ident) * phase_factor(ident, "export", rank, step)


def _export_nominal(ident: Identity) -> float:
    return 2.0 * ident.model.params / 1.5e9 + 2.0


# -- the plan's bounds ---------------------------------------------------------
# Floats computed in another order (the straggler's factor, a sum) may land a
# rounding away from the bound: a margin far below any figure shown.
ROUNDING = 1 + 1e-9


@dataclass(frozen=True)
class Bounds:
    """The largest figures a rank of this run reports, derived from its plan
    (one source of truth): the coordinator refuses anything beyond them, and
    the run's configuration refuses a plan whose figures no job could have."""

    sim_s: float  # simulated seconds of work a rank reports before one collective
    numel: int  # elements of one collective's simulated tensor
    power_w: int  # nvidia-smi's power draw, never above the cap
    memory_mib: int  # and memory used, never above the GPU's
    run_s: float  # the whole run's simulated time, at most


def bounds(ident: Identity, slow: float = 1.0) -> Bounds:
    """`slow`: how many times slower a rank's steps may be (a straggler's
    factor, a throttled GPU's clock: pace.slowest), else 1."""
    step = slowest_step_seconds(ident) * slow
    phases = {name: seconds * slowest_phase_factor(name) for name, seconds in _phase_nominals(ident).items()}
    # One save more than the schedule's: a preemption's, after the step it stopped at.
    run = _run_cost(ident, step, phases).seconds(ident.hyper.total_steps, ident.hyper.evaluations + 1)
    return Bounds(max(step, *phases.values(), *init_seconds(ident).values()) * ROUNDING, grad_numel(ident),
                  ident.gpu.power_cap_w, ident.gpu.memory_mib, run * ROUNDING)


def run_seconds(ident: Identity) -> float:
    """The whole run's simulated time at its nominal pace (the MFU as drawn,
    each phase as long as it nominally takes): start-up, every step, every
    validation and checkpoint, the export."""
    return run_cost(ident).seconds(ident.hyper.total_steps, ident.hyper.evaluations)


@dataclass(frozen=True)
class RunCost:
    """A run's simulated time by what it does: once (start-up, export), per
    step, per validation and its checkpoint."""

    once: float
    step: float
    evaluation: float

    def seconds(self, steps: int, evaluations: int) -> float:
        return self.once + steps * self.step + evaluations * self.evaluation


def run_cost(ident: Identity) -> RunCost:
    return _run_cost(ident, _step_seconds(ident, ident.mfu), _phase_nominals(ident))


def _phase_nominals(ident: Identity) -> dict[str, float]:
    return {"validation": _eval_nominal(ident), "checkpoint": _checkpoint_nominal(ident),
            "export": _export_nominal(ident)}


def _run_cost(ident: Identity, step: float, phases: dict[str, float]) -> RunCost:
    sync = allreduce_seconds(ident, grad_numel(ident))
    return RunCost(sum(init_seconds(ident).values()) + sync + phases["export"], step + sync,
                   phases["validation"] + phases["checkpoint"])
