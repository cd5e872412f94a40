"""A run's identity: model, GPU, software, data, parallelism and
hyper-parameters, drawn once from the seed (or chosen by name). Every figure
the run shows derives from this, in physics.py; nothing is drawn twice."""

from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import dataclass, replace

from fakerun.world import catalog
from fakerun.world.catalog import CatalogError, Dataset, Gpu, Model, Versions
from fakerun.world.draws import rng, uniform
from fakerun.world.memory import SEQS, Job, MemoryPlan, Parallelism, Strategy, plan_memory
from fakerun.world.topology import Topology

ENV_PREFIX = "/opt/conda"  # the simulated cluster's Python environment
PYTHON = f"{ENV_PREFIX}/bin/python3"  # what runs the training script, as `ps` and the failure box show
# How often a run's draw (model, dataset, GPU) is a joke: --funny always;
# where nobody could take the run for a real job (the screen-saver --loop, the
# theatre) rarely, as the seeds' "rare appearance": one draw in 33, a joke run
# about one in eleven; everywhere else never (a drop-in, a pipe, JSONL).
JOKES_ALWAYS, JOKES_RARE, JOKES_NEVER = 1.0, 0.03, 0.0
# What a base model's pretraining is worth on a new corpus, in tokens of it: a
# fine-tune's loss starts near 2.6 instead of ln(vocab), and falls slowly.
PRETRAINED_TOKENS = 1e10
HOST_PATTERNS = ("gpu-node-{:02d}", "node{:03d}", "dgx-{:02d}", "trn-gpu-{:03d}")


@dataclass(frozen=True)
class Hyper:
    seq_len: int
    micro_batch: int
    grad_accum: int
    global_batch: int
    max_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    epochs: int
    steps_per_epoch: int
    log_every: int
    eval_batches: int
    pretrained_tokens: float = 0.0  # a fine-tune starts from a base model: what it has learnt, in tokens

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def fine_tune(self) -> bool:
        """Starts from a base model's weights (--model_name_or_path), not from scratch."""
        return self.pretrained_tokens > 0


@dataclass(frozen=True)
class Identity:
    seed: int
    model: Model
    gpu: Gpu
    dataset: Dataset
    versions: Versions
    nnodes: int
    nproc: int
    parallel: Parallelism
    hyper: Hyper
    hosts: tuple[str, ...]
    mfu: float
    data_loss: float  # the irreducible loss of this corpus (Chinchilla's E)

    @property
    def world(self) -> int:
        return self.nnodes * self.nproc

    @functools.cached_property
    def topology(self) -> Topology:
        return Topology(self.nnodes, self.nproc)

    def host(self, rank: int) -> str:
        return self.hosts[self.topology.node_of(rank)]

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.model.name.lower()).strip("-")


@dataclass(frozen=True)
class Asked:
    """What the job's own launch line fixes (the training script's arguments);
    None: drawn from the seed. Every draw is still made, so what is not asked
    for stays as the seed has it."""

    model: Model | None = None  # a catalog row, or a shape the arguments describe
    dataset: str | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    global_batch: int | None = None
    epochs: int | None = None
    lr: float | None = None
    seq_len: int | None = None
    log_every: int | None = None
    pretrained: bool = False  # fine-tuning a base model (--model_name_or_path), not training from scratch
    framework: str = "torchrun"  # whose script the job runs (its style): whose memory accounting holds
    strategy: Strategy = Strategy()  # what the script's arguments fix of its sharding and recomputation


def build(seed: int, nnodes: int, nproc: int, total_steps: int | None = None,
          model: str | None = None, gpu: str | None = None, jokes: float = JOKES_NEVER,
          versions: catalog.Versions | None = None, asked: Asked = Asked()) -> Identity:
    """`jokes`: the chance that a draw is one of the catalog's joke rows.
    `versions`: the software set a --style pins (default: drawn from the seed,
    and drawn even when pinned, so a style changes no other figure of the run)."""
    r = rng(seed, "identity")
    world = nnodes * nproc
    fixed = catalog.find(catalog.models(), model, "model") if model else asked.model
    chosen_gpu = catalog.find(catalog.gpus(), gpu, "GPU") if gpu else \
        _pick(r, _gpus_for(fixed, nproc, world, asked), jokes)
    candidates = [fixed] if fixed else _pool(r, catalog.models(), jokes)
    fits = _fitting(candidates, chosen_gpu, nproc, world, asked, seed, not fixed)
    if not fits and not fixed and not gpu:  # the drawn GPU holds none of them (one 4090 alone)
        holding = [g for g in catalog.gpus() if _fitting(candidates, g, nproc, world, asked, seed)]
        chosen_gpu = r.choice(holding) if holding else _largest(catalog.gpus())[0]
        fits = _fitting(candidates, chosen_gpu, nproc, world, asked, seed, not fixed)
    if not fits and not fixed:  # no model fills this cluster as a tuned job would (a --gpu): those that fit
        fits = _fitting(candidates, chosen_gpu, nproc, world, asked, seed, tuned=False)
    if not fits:
        raise CatalogError(_no_fit(fixed, candidates, chosen_gpu, nproc, world, asked))
    chosen, plan = fits[0] if fixed else r.choice(fits)
    steps = total_steps or r.randrange(400, 801, 10)
    return Identity(
        seed=seed, model=chosen, gpu=chosen_gpu, dataset=_dataset(_pick(r, catalog.datasets(), jokes), asked),
        versions=_versions(r, versions), nnodes=nnodes, nproc=nproc, parallel=plan.parallel,
        hyper=_hyper(r, chosen, plan, steps, asked),
        hosts=_hosts(r, nnodes), mfu=r.uniform(0.38, 0.52), data_loss=r.uniform(1.55, 1.85))


def _fitting(models: list[Model], gpu: Gpu, nproc: int, world: int, asked: Asked, seed: int = 0,
             tuned: bool = True) -> list[tuple[Model, MemoryPlan]]:
    """Each model that fits, with its plan: a drawn one only where a tuned
    job (85-95% of the fullest GPU) exists."""
    return [(m, p) for m in models if (p := _plan(m, gpu, nproc, world, asked, seed, tuned))]


def _job(model: Model, gpu: Gpu, nproc: int, world: int, asked: Asked) -> Job:
    return Job(model, gpu, nproc, world, asked.framework, asked.strategy, asked.micro_batch, asked.seq_len)


def _plan(model: Model, gpu: Gpu, nproc: int, world: int, asked: Asked, seed: int = 0,
          tuned: bool = False) -> MemoryPlan | None:
    """`tuned`: only a plan that fills the GPU as a tuned job does (a job the
    seed draws). A job whose arguments fix its batch keeps it: it fits or not."""
    pick = uniform(seed, "memory-plan", model.name, gpu.name, world)
    return plan_memory(_job(model, gpu, nproc, world, asked), pick, tuned and asked.micro_batch is None)


def _gpus_for(model: Model | None, nproc: int, world: int, asked: Asked) -> tuple[Gpu, ...]:
    """The GPUs to draw from: for a model the job names, those where it runs
    as a tuned job, else those it fits on (else the largest, and the error
    below names the shortfall)."""
    gpus = catalog.gpus()
    if model is None:
        return gpus
    tuned = tuple(g for g in gpus if _plan(model, g, nproc, world, asked, tuned=True))
    fitting = tuple(g for g in gpus if _plan(model, g, nproc, world, asked))
    return tuned or fitting or _largest(gpus)  # fits nowhere: the error speaks of the largest


def _largest(gpus: tuple[Gpu, ...]) -> tuple[Gpu, ...]:
    most = max(g.memory_mib for g in gpus if g.kind == "real")
    return tuple(g for g in gpus if g.memory_mib == most and g.kind == "real")


# What each framework's launch line would add to shard more: the flag, and the strategy it runs under.
SHARDER_FLAGS: dict[str, tuple[tuple[str, Strategy], ...]] = {
    "hf": (("--fsdp full_shard", Strategy("fsdp", (3,))),
           ("--deepspeed with a ZeRO-3 config", Strategy("zero", (3,)))),
    "lightning": (("--trainer.strategy fsdp", Strategy("fsdp", (3,))),
                  ("--trainer.strategy deepspeed_stage_3", Strategy("zero", (3,)))),
    "megatron": (("", Strategy("megatron", (1,))),),  # its flags name the plan's TP and PP
}
MAX_NODES = 128


def _no_fit(fixed: Model | None, candidates: list[Model], gpu: Gpu, nproc: int, world: int,
            asked: Asked) -> str:
    """One line: what does not fit where, and what would."""
    where = f"{world} x {gpu.name} ({gpu.memory_mib // 1024} GiB each)"
    model = candidates[0] if fixed else min(candidates, key=lambda m: m.params)  # the likeliest to fit
    what = model.name if fixed else "any model"
    free = replace(asked, micro_batch=None, seq_len=None)
    if (asked.micro_batch or asked.seq_len) and _fitting(candidates, gpu, nproc, world, free, tuned=False):
        # The model fits; the batch the job asks for does not, as the script shards it.
        micro, seq = asked.micro_batch or 1, asked.seq_len or min(SEQS)
        halves = (2 ** k for k in range((micro - 1).bit_length() - 1, -1, -1))  # powers of two below it
        smaller = next((m for m in halves if _fitting(candidates, gpu, nproc, world,
                                                      replace(asked, micro_batch=m), tuned=False)), None)
        fits = f"a micro batch of {smaller} fits" if smaller else "lower the sequence length"
        return (f"a micro batch of {micro} x {seq} tokens does not fit on {where} with {what} as the script "
                f"shards it: a real job runs out of CUDA memory at its first step; {fits}")
    ways = _would_fit(model, gpu, nproc, world, asked)
    if not ways and (asked.micro_batch or asked.seq_len):
        ways = [f"{way} and a smaller batch" for way in _would_fit(model, gpu, nproc, world, free)]
    if not ways:
        return f"{what} does not fit on {where} as the script shards it, nor on up to {MAX_NODES} such nodes"
    return f"{what} does not fit on {where} as the script shards it; it would fit {', or '.join(ways)}"


def _would_fit(model: Model, gpu: Gpu, nproc: int, world: int, asked: Asked) -> list[str]:
    """The alternatives that fit: more sharding (on this cluster, else on
    more nodes), more nodes as it is, a smaller model as it is."""
    ways = []
    shown = (asked.strategy.kind, asked.strategy.stages)
    others = [(f, s) for f, s in SHARDER_FLAGS.get(asked.framework, ()) if (s.kind, s.stages) != shown]
    for flag, strategy in (("as it is", asked.strategy), *others):
        found = _least_nodes(model, gpu, nproc, world, replace(asked, strategy=strategy))
        if found is None:
            continue
        nodes, plan = found
        said = [] if flag == "as it is" else [f"with {flag or _megatron_flags(plan.parallel)}"]
        if nodes * nproc > world:
            said.append(f"on {nodes} nodes of {nproc} GPUs")
        ways.append(" ".join(said))
    smaller = [m for m in catalog.models() if m.kind == "real" and m.params < model.params
               and _plan(m, gpu, nproc, world, replace(asked, model=m))]
    if smaller:
        best = max(smaller, key=lambda m: (_family(m) == _family(model), m.params))
        ways.append(f"as a smaller model ({best.name})")
    return ways


def _least_nodes(model: Model, gpu: Gpu, nproc: int, world: int,
                 asked: Asked) -> tuple[int, MemoryPlan] | None:
    """The fewest nodes of `nproc` GPUs, from this cluster's up, on which the job fits."""
    for nodes in (2 ** k for k in range(MAX_NODES.bit_length())):
        plan = _plan(model, gpu, nproc, nodes * nproc, asked) if nodes * nproc >= world else None
        if plan:
            return nodes, plan
    return None


def _family(model: Model) -> str:
    return re.split(r"[-_.\d]", model.name.lower(), maxsplit=1)[0]


def _megatron_flags(p: Parallelism) -> str:
    flags = (f"--tensor-model-parallel-size {p.tp} --pipeline-model-parallel-size {p.pp} "
             "--use-distributed-optimizer")
    return flags + (" --recompute-granularity full" if p.recompute == "full" else "")


def _dataset(drawn: Dataset, asked: Asked) -> Dataset:
    """A dataset the job names: the catalog's row, or the drawn one's size under its name."""
    if asked.dataset is None:
        return drawn
    name = asked.dataset.rsplit("/", 1)[-1]
    known = [d for d in catalog.datasets() if d.name.lower() == name.lower()]
    return known[0] if known else Dataset(name, drawn.tokens, drawn.use, drawn.kind)


def _versions(r: random.Random, pinned: catalog.Versions | None) -> catalog.Versions:
    drawn = r.choice([v for v in catalog.versions() if v.drawn == "yes"])
    return pinned or drawn


def _pick(r, rows, jokes: float):
    real = [x for x in rows if x.kind == "real"]
    silly = [x for x in rows if x.kind == "funny"]
    # The coin is tossed whatever the rate, so that the rate changes no other draw.
    return r.choice(silly if silly and r.random() < jokes else real)


def _pool(r, models, jokes: float) -> list[Model]:
    want_funny = r.random() < jokes
    pool = [m for m in models if (m.kind == "funny") == want_funny]
    r.shuffle(pool)
    return pool


def _hyper(r, model: Model, plan: MemoryPlan, steps: int, asked: Asked) -> Hyper:
    """The memory plan's micro batch and sequence (what the job asks, or what it is tuned to)."""
    seq, micro, par = plan.seq, plan.micro, plan.parallel
    target_tokens = r.choice((0.5e6, 1e6, 2e6))
    per_pass = micro * par.dp
    accum = _accum(asked, per_pass) or max(1, round(target_tokens / seq / per_pass))
    epochs = min(asked.epochs or r.choice((1, 2, 3)), steps)
    lr = _max_lr(r, model.params)
    lr = asked.lr or lr
    return Hyper(
        seq_len=seq, micro_batch=micro, grad_accum=accum, global_batch=per_pass * accum,
        max_lr=lr, min_lr=lr * r.uniform(0.01, 0.1), warmup_steps=max(1, round(steps * r.uniform(0.04, 0.1))),
        total_steps=steps, epochs=epochs, steps_per_epoch=math.ceil(steps / epochs),
        log_every=asked.log_every or _nice(steps / 60), eval_batches=r.choice((50, 100, 200)),
        pretrained_tokens=PRETRAINED_TOKENS if asked.pretrained else 0.0)


def _accum(asked: Asked, per_pass: int) -> int | None:
    """Gradient accumulation as asked, or as a global batch size implies."""
    if asked.grad_accum:
        return asked.grad_accum
    return max(1, asked.global_batch // per_pass) if asked.global_batch else None


def _max_lr(r, params: int) -> float:
    if params < 2e9:
        return r.choice((3e-4, 4e-4, 6e-4))
    if params < 20e9:
        return r.choice((1.5e-4, 2e-4, 3e-4))
    if params < 100e9:
        return r.choice((1e-4, 1.5e-4))
    return 8e-5


def _nice(x: float) -> int:
    for step in (1, 2, 5, 10, 20, 25, 50, 100):
        if x <= step:
            return step
    return 100


def _hosts(r, nnodes: int) -> tuple[str, ...]:
    pattern = r.choice(HOST_PATTERNS)
    base = r.randrange(1, 40)
    return tuple(pattern.format(base + i) for i in range(nnodes))
