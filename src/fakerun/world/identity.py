"""A run's identity (jobs.Identity): model, GPU, software, data,
parallelism and hyper-parameters, drawn once from the seed (or chosen by
name). Every figure the run shows derives from it, in physics.py; nothing is
drawn twice."""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from dataclasses import dataclass, replace

from fakerun.world import catalog, jobs, trainer
from fakerun.world import physics as sim
from fakerun.world.catalog import CatalogError, Dataset, Gpu, Model, Versions
from fakerun.world.draws import rng, uniform
from fakerun.world.jobs import Hyper, Identity, Schedule, Shape
from fakerun.world.memory import SEQS, Job, MemoryPlan, Parallelism, Strategy, plan_memory, tuned_plans
from fakerun.world.trainer import TrainerArgs

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
# The seeds' run lasts 2-4 minutes: a default draw's whole simulated length
# (start-up, steps, validations, checkpoints, export) at its physical pace.
DEMO_SECONDS = (120.0, 240.0)
# Except, on a cluster of several nodes, a model of tens of billions of
# parameters, which such clusters are for: loading its weights and saving them (140 GB for a 70B
# model, at a parallel filesystem's few GB/s) take minutes of their own, so
# its run is a few minutes of training beside them: 4-10 minutes in all.
BIG_MODEL_PARAMS, BIG_DEMO_SECONDS = 30e9, (240.0, 600.0)
# Chinchilla's E of what the run trains on: web text, or instruction data
# (far more predictable: a fine-tune's loss ends near 0.8).
DATA_LOSS = {"pretrain": (1.55, 1.85), "finetune": (0.8, 0.95)}
# How often a drawn cluster is AMD Instinct (ROCm) rather than NVIDIA: one
# draw in twelve, rare enough that the demo stays mostly NVIDIA, as the
# world's training clusters are, and often enough that a --loop meets one.
# Tossed on a coin of its own, so that an NVIDIA draw is the one it always was.
AMD_SHARE = 1 / 12


@dataclass(frozen=True)
class HostName:
    """data/hosts.txt: who may carry a hostname pattern."""

    box: str  # "dgx", "any", or the one GPU a cloud instance type carries
    pattern: str


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
    trainer: TrainerArgs | None = None  # a transformers Trainer's schedule and cadences (world.trainer)
    cadence: jobs.Cadence | None = None  # when it validates and saves (None: as drawn)
    # Hyper fields the launch line fixes as they are, (name, value) pairs set
    # on the drawn job's (a framework's schedule, cadences and their defaults:
    # Megatron's --lr-decay-style, --min-lr, --eval-interval, --save-interval).
    # Set after the search, so every draw stays the seed's.
    hyper: tuple[tuple[str, object], ...] = ()


def build(seed: int, nnodes: int, nproc: int, total_steps: int | None = None,
          model: str | None = None, gpu: str | None = None, jokes: float = JOKES_NEVER,
          versions: catalog.Versions | None = None, asked: Asked = Asked()) -> Identity:
    """`jokes`: the chance that a draw is one of the catalog's joke rows.
    `versions`: the software set a --style pins (default: drawn from the seed,
    and drawn even when pinned, so a style changes no other figure of the run).
    Nothing fixing the run's length (no steps, no epochs asked), the job is
    one whose whole simulated run lasts DEMO_SECONDS; asked for, a job gets
    its real length, however long."""
    r = rng(seed, "identity")
    world = nnodes * nproc
    fixed = catalog.find(catalog.models(), model, "model") if model else asked.model
    gpus = _cluster_gpus(seed, nnodes, versions)
    chosen_gpu = catalog.find(catalog.gpus(), gpu, "GPU") if gpu else \
        _pick(r, _gpus_for(fixed, nproc, world, asked, gpus), jokes)
    cluster = _Cluster(seed, nnodes, nproc, versions, asked, total_steps, fixed)
    candidates = [fixed] if fixed else _pool(r, catalog.models(), jokes)
    datasets = _datasets(r, asked, jokes)
    job = cluster.job(r, chosen_gpu, candidates, datasets, gpus if not gpu else ())
    if not cluster.demo or gpu or fixed or _off(sim.run_seconds(job), job.model, job.nnodes) == 0:
        return job
    # No job of any model lands in the demo's length on the drawn GPU (a
    # small one, or two): the seed's cluster is another of its kind, drawn
    # from a stream of its own so that every other draw stays the seed's.
    others = [g for g in gpus if g != chosen_gpu and g.kind == chosen_gpu.kind]
    for other in rng(seed, "identity", "other-gpu").sample(others, len(others)):
        alternative = cluster.job(rng(seed, "identity", other.name), other, candidates, datasets, ())
        if _off(sim.run_seconds(alternative), alternative.model, nnodes) == 0:
            return alternative
    return job


@dataclass(frozen=True)
class _Cluster:
    """What a draw's job is made on: the cluster's shape and what the launch line asks."""

    seed: int
    nnodes: int
    nproc: int
    versions: Versions | None
    asked: Asked
    total_steps: int | None
    fixed: Model | None

    @property
    def demo(self) -> bool:
        """The length is the draw's to choose (DEMO_SECONDS)."""
        return self.total_steps is None and self.asked.epochs is None

    def job(self, r: random.Random, gpu: Gpu, candidates: list[Model], datasets: list[list[Dataset]],
            spare: tuple[Gpu, ...]) -> Identity:
        """The job on `gpu` (or, if it holds none of the models, on one of
        the `spare` GPUs that does)."""
        seed, asked, fixed, nproc = self.seed, self.asked, self.fixed, self.nproc
        world = self.nnodes * nproc
        fits = _fitting(candidates, gpu, nproc, world, asked, seed, not fixed)
        if not fits and not fixed and spare:  # the drawn GPU holds none of them (one 4090 alone)
            # From its own stream: a joke GPU drawn at some rate and refused here
            # must not shift the draws after it (the rate changes no other draw).
            holding = [g for g in spare if _fitting(candidates, g, nproc, world, asked, seed)]
            gpu = rng(seed, "identity", "gpu").choice(holding) if holding else _largest(spare)[0]
            fits = _fitting(candidates, gpu, nproc, world, asked, seed, not fixed)
        if not fits and not fixed:  # no model fills it as a tuned job would (a --gpu): those that fit
            fits = _fitting(candidates, gpu, nproc, world, asked, seed, tuned=False)
        if not fits:
            raise CatalogError(_no_fit(fixed, candidates, gpu, nproc, world, asked))
        if gpu.vendor == "amd" and self.nnodes > 1:
            raise CatalogError(f"{gpu.name}: jobs across nodes run on NVIDIA GPUs only here "
                               "(RCCL's set-up across nodes is not simulated); run one node")
        mfu, data_loss = r.uniform(0.38, 0.52), r.random()
        make = functools.partial(Identity, seed=seed, gpu=gpu, versions=_versions(r, self.versions, gpu),
                                 nnodes=self.nnodes, nproc=nproc, hosts=_hosts(r, gpu, self.nnodes), mfu=mfu,
                                 data_loss=0.0)
        draws = _Draws(r.random(), r.random(), r.choice((50, 100, 200)))
        search = _Search(make, datasets, jobs.Fixed(self.total_steps, asked.epochs, asked.grad_accum,
                                                    asked.global_batch), draws, asked)
        drawn = fits[:1] if fixed else r.sample(fits, len(fits))
        tunings = [(m, p) for m, plan in drawn
                   for p in _tunings(m, plan, gpu, nproc, world, asked, bool(fixed))]
        job = search.choose(r, tunings, demo=self.demo)
        low, high = DATA_LOSS[job.dataset.use]
        return dataclasses.replace(job, data_loss=low + (high - low) * data_loss)


@dataclass(frozen=True)
class _Draws:
    """The seed's draws a job's configuration takes, made before the search
    (which then draws nothing but its choice)."""

    lr: float  # uniform: which of the recipes' peak learning rates
    warmup: float  # uniform: which round warmup
    eval_batches: int


@dataclass(frozen=True)
class _Search:
    """The jobs people would run of a model on this cluster, and the one drawn."""

    make: functools.partial[Identity]
    datasets: list[list[Dataset]]  # by the kind of job drawn first
    fixed: jobs.Fixed
    draws: _Draws
    asked: Asked

    def choose(self, r: random.Random, fits: list[tuple[Model, MemoryPlan]], demo: bool) -> Identity:
        """The kind of job drawn first (fine-tune or pre-training), then the
        first model (in the drawn order) with jobs of that kind of the right
        length, one of those drawn; none of either kind: the job nearest that
        length. `demo`: the length is the draw's to choose (DEMO_SECONDS)."""
        # Each model's timed jobs, flattened only when none lands (most draws return before).
        tried: list[tuple[Model, Parallelism, Shape, list[tuple[float, Schedule]]]] = []
        nodes = self.make.keywords["nnodes"]
        for sets in self.datasets:
            for model, plan in fits:  # the memory plan's micro batch and sequence: asked, or tuned to
                if model.tuned and sets[0].use == "pretrain" and self.asked.model is None and demo:
                    continue  # nobody pre-trains an instruction-tuned release from scratch
                par, shape = plan.parallel, Shape(plan.seq, plan.micro, plan.parallel.dp)
                timed = self._timed(model, par, shape, sets)
                low, high = demo_seconds(model, nodes)  # _off(...) == 0, without a call per schedule
                landing = [schedule for seconds, schedule in timed if not demo or low <= seconds <= high]
                if landing:
                    return self._identity(model, par, shape, r.choice(landing))
                tried.append((model, par, shape, timed))
        nearest = [(seconds, model, par, shape, schedule)
                   for model, par, shape, timed in tried for seconds, schedule in timed]
        if not nearest:  # an instruction set too small for ten steps of any batch this cluster takes
            raise CatalogError(f"{self.datasets[0][0].name} holds too few sequences for a fine-tune on "
                               f"{self.make.keywords['nnodes'] * self.make.keywords['nproc']} GPUs: "
                               "ask for a batch (--per_device_train_batch_size) or fewer GPUs")
        _, model, par, shape, schedule = min(nearest, key=lambda t: _off(t[0], t[1], nodes))
        return self._identity(model, par, shape, schedule)

    def _timed(self, model: Model, par: Parallelism, shape: Shape,
               sets: list[Dataset]) -> list[tuple[float, Schedule]]:
        """Every job of `model` on these datasets, with its simulated length."""
        out: list[tuple[float, Schedule]] = []
        for dataset in sets:
            runs = jobs.schedules(shape, dataset, self.fixed)
            # A step's and an evaluation's cost depend on the dataset and the accumulation only:
            # one cost each, from the first schedule of it (the last written of the reversed ones).
            firsts = {schedule.grad_accum: schedule for schedule in reversed(runs)}
            costs = {accum: sim.run_cost(self._identity(model, par, shape, first))
                     for accum, first in firsts.items()}
            # Evaluations at every eval_every steps and the last: (total - 1) // every + 1.
            out += [(costs[s.grad_accum].seconds(s.total_steps, (s.total_steps - 1) // s.eval_every + 1), s)
                    for s in runs]
        return out

    def _identity(self, model: Model, par: Parallelism, shape: Shape, schedule: Schedule) -> Identity:
        return self.make(model=model, parallel=par, dataset=schedule.dataset,
                         hyper=self._hyper(schedule, shape, model))

    def _hyper(self, schedule: Schedule, shape: Shape, model: Model) -> Hyper:
        fine_tune = self.asked.pretrained or schedule.dataset.use == "finetune"
        peaks = jobs.peak_lrs(model, fine_tune)
        peak = self.asked.lr or peaks[int(self.draws.lr * len(peaks))]
        lrs = (peak, jobs.min_lr(peak, fine_tune), jobs.warmup_steps(schedule.total_steps, fine_tune,
                                                                     self.draws.warmup))
        drawn = jobs.hyper(schedule, shape, lrs, self.asked.log_every or jobs.log_every(schedule.total_steps),
                           jobs.eval_batches(schedule, shape, self.draws.eval_batches),
                           PRETRAINED_TOKENS if fine_tune else 0.0)
        # The script's cadence: the HF Trainer's arguments resolved per transformers
        # version (world.trainer), else the framework's cadence in its own units (jobs.Cadence).
        # Megatron's schedule flags are Hyper's own fields (Asked.hyper), set as they are.
        if self.asked.trainer is not None:
            made = self.make.keywords
            hyper = trainer.hyper(drawn, self.asked.trainer, made["versions"].transformers,
                                  made["nnodes"] * made["nproc"])
        else:
            cadence = self.asked.cadence or jobs.CADENCES.get(self.asked.framework)
            hyper = cadence.applied(drawn) if cadence else drawn
        if not self.asked.hyper:  # the search makes this per candidate job: no copy for nothing to set
            return hyper
        return replace(hyper, **dict(self.asked.hyper))  # type: ignore[arg-type]


def demo_seconds(model: Model, nnodes: int) -> tuple[float, float]:
    """The length a default draw of `model` on `nnodes` lasts: DEMO_SECONDS,
    or a big model's on several nodes."""
    return BIG_DEMO_SECONDS if nnodes > 1 and model.params >= BIG_MODEL_PARAMS else DEMO_SECONDS


def _off(seconds: float, model: Model, nnodes: int) -> float:
    """How far a run's length is from a demo's (0: inside)."""
    low, high = demo_seconds(model, nnodes)
    return max(0.0, low - seconds, seconds - high)


def _fitting(models: list[Model], gpu: Gpu, nproc: int, world: int, asked: Asked, seed: int = 0,
             tuned: bool = True) -> list[tuple[Model, MemoryPlan]]:
    """Each model that fits, with its plan: a drawn one only where a tuned
    job (85-95% of the fullest GPU) exists."""
    return [(m, p) for m in models if (p := _plan(m, gpu, nproc, world, asked, seed, tuned))]


def _tunings(model: Model, plan: MemoryPlan, gpu: Gpu, nproc: int, world: int, asked: Asked,
             fixed: bool) -> list[MemoryPlan]:
    """A drawn model's tuned plans, the seed's first: a job whose length a
    demo cannot show at one micro batch and sequence (a long sequence on one
    GPU) may at another. A named model keeps its plan."""
    options = [] if fixed else list(tuned_plans(_job(model, gpu, nproc, world, asked)))
    if plan not in options:
        return [plan]
    at = options.index(plan)
    return options[at:] + options[:at]


def _job(model: Model, gpu: Gpu, nproc: int, world: int, asked: Asked) -> Job:
    return Job(model, gpu, nproc, world, asked.framework, asked.strategy, asked.micro_batch, asked.seq_len)


def _plan(model: Model, gpu: Gpu, nproc: int, world: int, asked: Asked, seed: int = 0,
          tuned: bool = False) -> MemoryPlan | None:
    """`tuned`: only a plan that fills the GPU as a tuned job does (a job the
    seed draws). A job whose arguments fix its batch keeps it: it fits or not."""
    pick = uniform(seed, "memory-plan", model.name, gpu.name, world)
    return plan_memory(_job(model, gpu, nproc, world, asked), pick, tuned and asked.micro_batch is None)


def _cluster_gpus(seed: int, nnodes: int, pinned: Versions | None) -> tuple[Gpu, ...]:
    """The GPUs the seed's cluster may have: AMD Instinct ones for one draw
    in AMD_SHARE, on one node (RCCL's lines across nodes are not modelled),
    where the software the job pins has a ROCm build; else NVIDIA's."""
    amd = rng(seed, "gpu-vendor").random() < AMD_SHARE and nnodes == 1 and (
        pinned is None or catalog.on_rocm(pinned) is not None)
    return tuple(g for g in catalog.gpus() if (g.vendor == "amd") == amd)


def _gpus_for(model: Model | None, nproc: int, world: int, asked: Asked,
              gpus: tuple[Gpu, ...]) -> tuple[Gpu, ...]:
    """The GPUs to draw from: for a model the job names, those where it runs
    as a tuned job, else those it fits on (else the largest, and the error
    below names the shortfall)."""
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
        runtime = "HIP" if gpu.vendor == "amd" else "CUDA"
        return (f"a micro batch of {micro} x {seq} tokens does not fit on {where} with {what} as the script "
                f"shards it: a real job runs out of {runtime} memory at its first step; {fits}")
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


def _datasets(r: random.Random, asked: Asked, jokes: float) -> list[list[Dataset]]:
    """The datasets a job may train on, by kind, the kind drawn first
    first: a pre-training corpus, or the instruction sets a fine-tune runs
    whole epochs of. A base model's weights (--model_name_or_path) or asked
    epochs make a fine-tune; a model the launch line shapes (Megatron's
    flags), pre-training."""
    rows = catalog.datasets()
    corpus = _pick(r, [d for d in rows if d.use == "pretrain"], jokes)
    sets = [d for d in rows if d.use == "finetune" and d.kind == "real"]
    drawn_set = r.choice(sets)
    fine_tune_first = r.random() < 0.5
    if asked.dataset is not None:
        return [[_dataset(drawn_set if asked.pretrained or asked.epochs else corpus, asked)]]
    if asked.pretrained or asked.epochs:
        return [sets]
    if asked.model is not None or corpus.kind == "funny":  # a joke is a corpus's
        return [[corpus]]
    return [sets, [corpus]] if fine_tune_first else [[corpus], sets]


def _dataset(drawn: Dataset, asked: Asked) -> Dataset:
    """A dataset the job names: the catalog's row, or the drawn one's size under its name."""
    name = (asked.dataset or drawn.name).rsplit("/", 1)[-1]
    known = [d for d in catalog.datasets() if d.name.lower() == name.lower()]
    return known[0] if known else Dataset(name, drawn.tokens, drawn.use, drawn.kind)


def _versions(r: random.Random, pinned: Versions | None, gpu: Gpu) -> Versions:
    """The software set: pinned by a --style, else drawn; on an AMD GPU, its
    ROCm build (a drawn set without one runs the newest that has one)."""
    drawn = r.choice([v for v in catalog.versions() if v.drawn == "yes"])
    chosen = pinned or drawn
    if gpu.vendor != "amd":
        return _driver_for(chosen, gpu)
    rocm = catalog.on_rocm(chosen)
    if rocm is None and pinned is None:
        rocm = next(b for v in catalog.versions() if v.drawn == "yes" and (b := catalog.on_rocm(v)))
    if rocm is None:
        builds = ", ".join(b.wheel for b in catalog.rocm_builds())
        raise CatalogError(f"{gpu.name}: no ROCm build of torch {chosen.torch} here (AMD GPUs run "
                           f"{builds}); pick a --style that runs it, or an NVIDIA GPU")
    return rocm


def _driver_for(chosen: Versions, gpu: Gpu) -> Versions:
    """The machine's driver: the set's, unless the board needs a newer
    branch (gpus.txt's first driver branch); then the oldest driver here
    of that branch or later, with its CUDA version (nvidia-smi's header)."""
    if int(chosen.driver.split(".")[0]) >= gpu.min_driver:
        return chosen
    newer = sorted((v for v in catalog.versions() if int(v.driver.split(".")[0]) >= gpu.min_driver),
                   key=lambda v: tuple(int(x) for x in v.driver.split(".")))
    return replace(chosen, driver=newer[0].driver, cuda_driver=newer[0].cuda_driver)


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


def _hosts(r: random.Random, gpu: Gpu, nnodes: int) -> tuple[str, ...]:
    """Names as the hardware's owners give them: dgx only on NVIDIA's NVLink
    boxes, a cloud instance type only on the GPU it carries."""
    patterns = [h.pattern for h in catalog.load("hosts", HostName) if _carries(h.box, gpu)]
    pattern = r.choice(patterns)
    base = r.randrange(1, 40)
    return tuple(pattern.format(n=base + i) for i in range(nnodes))


def _carries(box: str, gpu: Gpu) -> bool:
    if box == "any":
        return True
    if box == "dgx":
        return gpu.vendor == "nvidia" and gpu.nvlink == "yes"
    return box == gpu.name
