"""A run's identity: model, GPU, software, data, parallelism and
hyper-parameters, drawn once from the seed (or chosen by name). Every figure
the run shows derives from this, in physics.py; nothing is drawn twice."""

from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import dataclass

from fakerun.world import catalog
from fakerun.world.catalog import CatalogError, Dataset, Gpu, Model, Versions
from fakerun.world.draws import rng
from fakerun.world.memory import Parallelism, plan_memory
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
# How often a drawn cluster is AMD Instinct (ROCm) rather than NVIDIA: one
# draw in twelve, rare enough that the demo stays mostly NVIDIA, as the
# world's training clusters are, and often enough that a --loop meets one.
# Tossed on a coin of its own, so that an NVIDIA draw is the one it always was.
AMD_SHARE = 1 / 12


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


def build(seed: int, nnodes: int, nproc: int, total_steps: int | None = None,
          model: str | None = None, gpu: str | None = None, jokes: float = JOKES_NEVER,
          versions: catalog.Versions | None = None, asked: Asked = Asked()) -> Identity:
    """`jokes`: the chance that a draw is one of the catalog's joke rows.
    `versions`: the software set a --style pins (default: drawn from the seed,
    and drawn even when pinned, so a style changes no other figure of the run)."""
    r = rng(seed, "identity")
    world = nnodes * nproc
    fixed = catalog.find(catalog.models(), model, "model") if model else asked.model
    gpus = _cluster_gpus(seed, nnodes, versions)
    chosen_gpu = catalog.find(catalog.gpus(), gpu, "GPU") if gpu else \
        _pick(r, _gpus_for(fixed, nproc, world, asked, gpus), jokes)
    candidates = [fixed] if fixed else _pool(r, catalog.models(), jokes)
    fits = _fitting(candidates, chosen_gpu, nproc, world, asked)
    if not fits and not fixed and not gpu:  # the drawn GPU holds none of them (one 4090 alone)
        chosen_gpu = r.choice([g for g in gpus if _fitting(candidates, g, nproc, world, asked)] or gpus)
        fits = _fitting(candidates, chosen_gpu, nproc, world, asked)
    if not fits:
        raise CatalogError(_no_fit(fixed, candidates, chosen_gpu, nproc, world, asked))
    if chosen_gpu.vendor == "amd" and nnodes > 1:
        raise CatalogError(f"{chosen_gpu.name}: jobs across nodes run on NVIDIA GPUs only here "
                           "(RCCL's set-up across nodes is not simulated); run one node")
    chosen, parallel, micro = fits[0] if fixed else r.choice(fits)
    steps = total_steps or r.randrange(400, 801, 10)
    return Identity(
        seed=seed, model=chosen, gpu=chosen_gpu, dataset=_dataset(_pick(r, catalog.datasets(), jokes), asked),
        versions=_versions(r, versions, chosen_gpu), nnodes=nnodes, nproc=nproc, parallel=parallel,
        hyper=_hyper(r, chosen, parallel, micro, steps, asked),
        hosts=_hosts(r, nnodes), mfu=r.uniform(0.38, 0.52), data_loss=r.uniform(1.55, 1.85))


def _fitting(models: list[Model], gpu: Gpu, nproc: int, world: int,
             asked: Asked) -> list[tuple[Model, Parallelism, int]]:
    """Each model that fits, with its least sharding and largest micro batch."""
    return [(m, p, mb) for m in models if (plan := _plan(m, gpu, nproc, world, asked)) for p, mb in [plan]]


def _plan(model: Model, gpu: Gpu, nproc: int, world: int, asked: Asked) -> tuple[Parallelism, int] | None:
    return plan_memory(model, gpu, nproc, world, asked.micro_batch, asked.seq_len)


def _cluster_gpus(seed: int, nnodes: int, pinned: Versions | None) -> tuple[Gpu, ...]:
    """The GPUs the seed's cluster may have: AMD Instinct ones for one draw
    in AMD_SHARE, on one node (RCCL's lines across nodes are not modelled),
    where the software the job pins has a ROCm build; else NVIDIA's."""
    amd = rng(seed, "gpu-vendor").random() < AMD_SHARE and nnodes == 1 and (
        pinned is None or catalog.on_rocm(pinned) is not None)
    return tuple(g for g in catalog.gpus() if (g.vendor == "amd") == amd)


def _gpus_for(model: Model | None, nproc: int, world: int, asked: Asked,
              gpus: tuple[Gpu, ...]) -> tuple[Gpu, ...]:
    """The GPUs to draw from: for a model the job names, those it fits on
    (else all of them, and the error below names the shortfall)."""
    if model is None:
        return gpus
    return tuple(g for g in gpus if _plan(model, g, nproc, world, asked)) or gpus


def _no_fit(fixed: Model | None, candidates: list[Model], gpu: Gpu, nproc: int, world: int,
            asked: Asked) -> str:
    where = f"{world} x {gpu.name} ({gpu.memory_mib // 1024} GiB each)"
    if (asked.micro_batch or asked.seq_len) and _fitting(candidates, gpu, nproc, world, Asked()):
        # The model fits; the batch the job asks for does not, however sharded.
        model = candidates[0]
        micro, seq = asked.micro_batch or 1, asked.seq_len or min(model.context, 4096)
        return (f"a micro batch of {micro} x {seq} tokens does not fit on {where} with "
                f"{model.name if fixed else 'any model'}, however sharded: a real job runs out of "
                f"{'HIP' if gpu.vendor == 'amd' else 'CUDA'} memory at its first step; lower the batch "
                "size or the sequence length")
    what = candidates[0].name if fixed else "any model"
    return f"{what} does not fit on {where}; add GPUs or pick a smaller one"


def _dataset(drawn: Dataset, asked: Asked) -> Dataset:
    """A dataset the job names: the catalog's row, or the drawn one's size under its name."""
    if asked.dataset is None:
        return drawn
    name = asked.dataset.rsplit("/", 1)[-1]
    known = [d for d in catalog.datasets() if d.name.lower() == name.lower()]
    return known[0] if known else Dataset(name, drawn.tokens, drawn.use, drawn.kind)


def _versions(r: random.Random, pinned: Versions | None, gpu: Gpu) -> Versions:
    """The software set: pinned by a --style, else drawn; on an AMD GPU, its
    ROCm build (a drawn set without one runs the newest that has one)."""
    drawn = r.choice([v for v in catalog.versions() if v.drawn == "yes"])
    chosen = pinned or drawn
    if gpu.vendor != "amd":
        return chosen
    rocm = catalog.on_rocm(chosen)
    if rocm is None and pinned is None:
        rocm = next(b for v in catalog.versions() if v.drawn == "yes" and (b := catalog.on_rocm(v)))
    if rocm is None:
        builds = ", ".join(b.wheel for b in catalog.rocm_builds())
        raise CatalogError(f"{gpu.name}: no ROCm build of torch {chosen.torch} here (AMD GPUs run "
                           f"{builds}); pick a --style that runs it, or an NVIDIA GPU")
    return rocm


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


def _hyper(r, model: Model, par: Parallelism, micro: int, steps: int, asked: Asked) -> Hyper:
    seq = asked.seq_len or min(model.context, r.choice((2048, 4096)))
    target_tokens = r.choice((0.5e6, 1e6, 2e6))
    micro = asked.micro_batch or micro
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
