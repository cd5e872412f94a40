"""The jobs people run, configured as they configure them: batch sizes and
accumulation in powers of two, a round global batch, learning rates from the
recipes, round step counts and intervals, and epochs that agree with the
data (a pre-training run covers a sliver of its corpus; a fine-tune runs
whole epochs of its instruction set).

`schedules` lists every such configuration of a model on a cluster;
identity.build draws among those whose simulated length suits the run, and
makes the run's Identity of it."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace

from fakerun.world.catalog import Dataset, Gpu, Model, Versions
from fakerun.world.memory import Parallelism
from fakerun.world.topology import Topology

# max_steps people write for a short run.
ROUND_STEPS = (100, 150, 200, 250, 300, 400, 500, 600, 800, 1000)
ACCUMS = (1, 2, 4, 8, 16, 32, 64)
# Global batches, in sequences. Fine-tunes: Alpaca and Tulu take 128, LIMA 32
# (Zhou et al. 2023), Zephyr's SFT 128-512; pre-training a few hundred to a few
# thousand sequences (GPT-3 125M: 0.5M tokens; Llama 3: 4M-16M), or fewer in
# a small run on a few GPUs.
FINETUNE_BATCH = (16, 512)
PRETRAIN_BATCH = (8, 2048)
PRETRAIN_MAX_TOKENS = 4 * 2**20  # per step: Llama 2's 4M tokens (Touvron et al. 2023)
# and at least a quarter of GPT-3's smallest (0.5M tokens for its 125M model, Brown et al.
# 2020, Table 2.1): a pre-training step of a few sequences is no recipe anyone runs.
PRETRAIN_MIN_TOKENS = 2**18
FINETUNE_EPOCHS = (2, 3)  # Alpaca 3, Tulu 2, Vicuna 3
MIN_STEPS_PER_EPOCH = 10  # a fine-tune's epoch is more than a handful of steps
# --eval-interval / eval_steps people write; a short run evaluates 1-5 times.
EVAL_INTERVALS = (5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000)
MAX_EVALS = 5
# A pre-training warmup: a round count, 4-10% of a short run's steps.
WARMUPS = (10, 20, 25, 50, 100)
WARMUP_SHARE = (0.04, 0.10)
PRETRAIN_WARMUP_FALLBACK = 0.05  # for a step count no round warmup suits
# Alpaca's recipe: warmup_ratio 0.03; the Trainer rounds up
# (TrainingArguments.get_warmup_steps: math.ceil(num_training_steps * warmup_ratio)).
FINETUNE_WARMUP_RATIO = 0.03
# Pre-training decays to 10% of the peak (Llama 2 and 3: "cosine ... down to 10%
# of the peak learning rate"); the Trainer's cosine schedule decays to 0.
PRETRAIN_MIN_LR = 0.1
VALIDATION_SPLIT = 0.05  # a fine-tune holds out 5% of its set (train_test_split(test_size=0.05))


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
    epochs: int  # epochs the run reaches into (the last may be partial; a pre-training run: 1)
    steps_per_epoch: int  # optimizer steps in one pass over the dataset (packed sequences)
    eval_every: int  # steps between validations (0: it never validates on a step count)
    log_every: int
    eval_batches: int
    pretrained_tokens: float = 0.0  # a fine-tune starts from a base model: what it has learnt, in tokens
    # The LR schedule after warmup, as the framework names it: "cosine" decays
    # to min_lr, "linear" straight to min_lr, "constant" holds the peak
    # (physics.learning_rate).
    decay: str = "cosine"
    save_every: int | None = None  # steps between checkpoints (None: one after each validation; 0: never)
    # The step the decay reaches min_lr at, to hold it after (Megatron's
    # --lr-decay-iters); None: the last step.
    decay_steps: int | None = None
    # Megatron: train() evaluates on its interval, and pretrain() once more
    # after training and its final save, even at a step train() has just
    # evaluated (the end-of-run evaluation comes after the save).
    eval_after_loop: bool = False
    eval_at_end: bool = True  # the script validates after its last step whatever the interval
    save_at_end: bool = True  # and saves then
    save_limit: int | None = None  # checkpoints kept (the Trainer's save_total_limit; None: all)
    eval_micro_batch: int | None = None  # per-device batch in validation (None: the training micro batch)
    log_first_step: bool = False  # the Trainer's logging_first_step: step 1 logs too

    @property
    def eval_batch(self) -> int:
        return self.eval_micro_batch or self.micro_batch

    def logs_after(self, step: int) -> bool:
        """The script logs its training figures after this step."""
        return step % self.log_every == 0 or (self.log_first_step and step == 1)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def fine_tune(self) -> bool:
        """Starts from a base model's weights (--model_name_or_path), not from scratch."""
        return self.pretrained_tokens > 0

    def evaluates_after(self, step: int) -> bool:
        """The script validates after this step."""
        return _due(step, self.eval_every, self.total_steps, self.eval_at_end)

    def saves_after(self, step: int) -> bool:
        """The script saves a checkpoint after this step."""
        if self.save_every is None:
            return self.evaluates_after(step)
        return _due(step, self.save_every, self.total_steps, self.save_at_end)

    def evaluates_in_loop(self, step: int) -> bool:
        """On the evaluation interval (train()'s own, where eval_after_loop)."""
        return self.eval_every > 0 and step % self.eval_every == 0

    @property
    def evaluations(self) -> int:
        return len(self.eval_steps()) + self.evaluates_again()

    def evaluates_again(self) -> bool:
        """A second evaluation after the last step (eval_after_loop, the last step on the interval)."""
        return self.eval_after_loop and self.eval_at_end and self.evaluates_in_loop(self.total_steps)

    def eval_steps(self) -> list[int]:
        return _steps(self.eval_every, self.total_steps, self.eval_at_end)

    def save_steps(self) -> list[int]:
        if self.save_every is None:
            return self.eval_steps()
        return _steps(self.save_every, self.total_steps, self.save_at_end)


@dataclass(frozen=True)
class Cadence:
    """When a script validates and saves, as its framework's arguments (or
    their defaults) say, in the units the framework counts: optimizer steps,
    training batches (micro-batches), epochs, or a share of an epoch's
    batches (Lightning's val_check_interval and limit_val_batches). None: as
    drawn."""

    eval_steps: int | None = None  # every N optimizer steps (0: never)
    eval_micro: int | None = None  # every N training batches
    eval_epochs: int | None = None  # at the end of every N-th epoch
    eval_share: float | None = None  # every this share of an epoch's batches
    eval_at_end: bool | None = None
    eval_batches: int | None = None  # validation batches per rank, at most (0: no validation at all)
    eval_batches_share: float | None = None  # or this share of them
    save_steps: int | None = None
    save_epochs: int | None = None
    save_after_eval: bool = False  # a checkpoint after each validation, and only then
    save_at_end: bool | None = None

    def applied(self, h: Hyper) -> Hyper:
        batches = self._eval_batches(h.eval_batches)
        eval_every = self._eval_every(h) if batches else 0  # nothing to validate: the phase never comes
        save_every = None if self.save_after_eval else (
            self.save_steps if self.save_steps is not None else
            self.save_epochs * h.steps_per_epoch if self.save_epochs is not None else h.save_every)
        return replace(h, eval_every=eval_every, eval_batches=batches or h.eval_batches,
                       eval_at_end=bool(batches) and (h.eval_at_end if self.eval_at_end is None
                                                      else self.eval_at_end),
                       save_every=save_every,
                       save_at_end=h.save_at_end if self.save_at_end is None else self.save_at_end)

    def _eval_every(self, h: Hyper) -> int:
        batches = h.steps_per_epoch * h.grad_accum  # an epoch's training batches
        if self.eval_steps is not None:
            return self.eval_steps
        if self.eval_micro is not None:
            return max(1, self.eval_micro // h.grad_accum)
        if self.eval_epochs is not None:
            return self.eval_epochs * h.steps_per_epoch
        if self.eval_share is not None:
            return max(1, int(batches * self.eval_share) // h.grad_accum)
        return h.eval_every

    def _eval_batches(self, drawn: int) -> int:
        if self.eval_batches is not None:
            return min(drawn, self.eval_batches)
        if self.eval_batches_share is not None:
            return int(drawn * self.eval_batches_share)
        return drawn


# A framework's own cadence when its arguments leave it out. Lightning's
# Trainer (trainer.py, callbacks/model_checkpoint.py at 2.4.0-2.6.5):
# val_check_interval=1.0 and check_val_every_n_epoch=1 validate at each
# epoch's last batch only (training_epoch_loop.py _should_check_val_fx: not
# when max_steps stops an epoch short); the default ModelCheckpoint then saves
# in on_train_epoch_end, which also runs when max_steps ends the epoch early.
CADENCES = {"lightning": Cadence(eval_epochs=1, eval_at_end=False, save_epochs=1, save_at_end=True)}


def _due(step: int, every: int, total: int, at_end: bool) -> bool:
    return (every > 0 and step % every == 0) or (at_end and step == total)


def _steps(every: int, total: int, at_end: bool) -> list[int]:
    """The steps an interval falls on (0: none), and the last one if `at_end`."""
    steps = set(range(every, total + 1, every)) if every > 0 else set()
    return sorted(steps | ({total} if at_end else set()))


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
class Shape:
    """What the model, its memory plan and the cluster fix of a batch."""

    seq_len: int
    micro_batch: int
    dp: int


@dataclass(frozen=True)
class Schedule:
    """A job's data and length: everything but its learning rates."""

    dataset: Dataset
    grad_accum: int
    global_batch: int
    total_steps: int
    epochs: int
    steps_per_epoch: int
    eval_every: int


@dataclass(frozen=True)
class Fixed:
    """What the launch line fixes of a schedule (None: drawn)."""

    total_steps: int | None = None
    epochs: int | None = None
    grad_accum: int | None = None
    global_batch: int | None = None


def schedules(shape: Shape, dataset: Dataset, fixed: Fixed) -> tuple[Schedule, ...]:
    """Every round configuration of `dataset` on this shape."""
    return _schedules(shape.micro_batch * shape.dp, shape.seq_len, dataset, fixed)


# Pure; the same batches and datasets come back draw after draw. Keyed by what
# a shape fixes of them (the sequences of one pass, and their length), not by
# the shape: plans of a micro batch and data parallelism with the same product
# share one entry (200 seeds on each of test_draw_configs' clusters missed
# 16115 of 38060 by shape, 11508 thus). Bounded: a
# --loop draws run after run, each adding new shapes (a draw asks for at most
# ~60, so two draws' worth stay); unbounded, a default two-node --loop grew
# 595 entries and 3.3 MB in 100 draws.
@functools.lru_cache(maxsize=128)
def _schedules(per_pass: int, seq_len: int, dataset: Dataset, fixed: Fixed) -> tuple[Schedule, ...]:
    out = []
    for accum in _accums(per_pass, seq_len, dataset, fixed):
        batch = per_pass * accum
        per_epoch = dataset.tokens // (batch * seq_len)  # packed; the last partial batch is dropped
        if per_epoch < _least_epoch(dataset, fixed):
            continue
        per_epoch = max(1, per_epoch)  # an asked batch larger than the data: one (partial) step an epoch
        for total, every in _lengths(dataset, per_epoch, fixed):
            out.append(Schedule(dataset, accum, batch, total, math.ceil(total / per_epoch), per_epoch, every))
    return tuple(out)


def _least_epoch(dataset: Dataset, fixed: Fixed) -> int:
    """The fewest steps an epoch of a drawn batch takes; a batch the launch
    line asks for runs as asked, even past the data."""
    if fixed.grad_accum or fixed.global_batch:
        return 0
    return MIN_STEPS_PER_EPOCH if _epoch_driven(dataset, fixed) else 1


def _epoch_driven(dataset: Dataset, fixed: Fixed) -> bool:
    """A fine-tune runs whole epochs of its set; so does a launch that asks for epochs."""
    return dataset.use == "finetune" or fixed.epochs is not None


def _accums(per_pass: int, seq_len: int, dataset: Dataset, fixed: Fixed) -> tuple[int, ...]:
    if fixed.grad_accum:
        return (fixed.grad_accum,)
    if fixed.global_batch:
        return (max(1, fixed.global_batch // per_pass),)
    low, high = FINETUNE_BATCH if dataset.use == "finetune" else PRETRAIN_BATCH
    fitting = tuple(a for a in ACCUMS if low <= per_pass * a <= high
                    and (dataset.use == "finetune"
                         or PRETRAIN_MIN_TOKENS <= per_pass * a * seq_len <= PRETRAIN_MAX_TOKENS))
    if fitting:
        return fitting
    # None in range: a cluster whose one pass is already past it takes none;
    # one whose passes stay short of it, as many as a recipe's batch allows.
    return (1,) if per_pass * seq_len > PRETRAIN_MAX_TOKENS else \
        (max((a for a in ACCUMS if per_pass * a <= high), default=1),)


def _lengths(dataset: Dataset, per_epoch: int, fixed: Fixed) -> tuple[tuple[int, int], ...]:
    """(total steps, evaluation interval) pairs."""
    if fixed.total_steps is not None:
        total = fixed.total_steps
        if _epoch_driven(dataset, fixed):
            return ((total, per_epoch),)
        return tuple((total, every) for every in _intervals(total))
    if _epoch_driven(dataset, fixed):
        counts = (fixed.epochs,) if fixed.epochs else FINETUNE_EPOCHS
        return tuple((epochs * per_epoch, per_epoch) for epochs in counts)
    return _round_lengths()


@functools.cache
def _round_lengths() -> tuple[tuple[int, int], ...]:
    """A drawn pre-training run's: every round length and interval (the
    same for every batch; built once, not at each of the schedules' misses)."""
    return tuple((total, every) for total in ROUND_STEPS for every in _intervals(total))


def _intervals(total: int) -> list[int]:
    """Round evaluation intervals that divide the run into 1-5 parts, and
    the whole run."""
    fitting = [e for e in EVAL_INTERVALS if e < total and total % e == 0 and total // e <= MAX_EVALS]
    return [*fitting, total]


def warmup_steps(total: int, fine_tune: bool, drawn: float) -> int:
    """`drawn`: a uniform draw in [0, 1) choosing among the round counts."""
    if fine_tune:
        return max(1, math.ceil(total * FINETUNE_WARMUP_RATIO))
    low, high = WARMUP_SHARE
    counts = [w for w in WARMUPS if low * total <= w <= high * total]
    if not counts:
        return max(1, round(total * PRETRAIN_WARMUP_FALLBACK))
    return counts[int(drawn * len(counts))]


def peak_lrs(model: Model, fine_tune: bool) -> tuple[float, ...]:
    """The peak learning rates recipes use for a model of this size."""
    n = model.params
    if fine_tune:
        # Alpaca 7B 2e-5, 13B 1e-5; Tulu 2e-5 (70B 1e-5); the Trainer's default 5e-5;
        # small models higher (1e-4, 2e-4).
        if n < 2e9:
            return (5e-5, 1e-4, 2e-4)
        return (1e-5, 2e-5, 5e-5) if n < 20e9 else (1e-5, 2e-5)
    # GPT-3's table (Brown et al. 2020: 1.3B 2e-4, 2.7B 1.6e-4, 6.7B 1.2e-4, 13B 1e-4),
    # Llama 2 (7B-13B 3e-4, 34B-70B 1.5e-4), Llama 3 (8B 3e-4, 70B 1.5e-4, 405B 8e-5).
    if n < 2e9:
        return (3e-4, 4e-4, 6e-4)
    if n < 20e9:
        return (1.5e-4, 2e-4, 3e-4)
    return (1e-4, 1.5e-4) if n < 100e9 else (8e-5,)


def min_lr(peak: float, fine_tune: bool) -> float:
    """As a launch line writes it (--min-lr 3e-5), not as a float product (2.9999999999999997e-05)."""
    return 0.0 if fine_tune else float(f"{peak * PRETRAIN_MIN_LR:.6g}")


def log_every(total: int) -> int:
    """A round logging interval, about 60 lines a run."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100):
        if total / 60 <= step:
            return step
    return 100


def eval_batches(schedule: Schedule, shape: Shape, drawn: int) -> int:
    """Validation batches per rank: the drawn count, or for a fine-tune no
    more than its held-out split holds."""
    if schedule.dataset.use != "finetune":
        return drawn
    per_rank = schedule.steps_per_epoch * schedule.grad_accum  # a rank's micro batches per epoch
    return max(1, min(drawn, round(per_rank * VALIDATION_SPLIT)))


def hyper(schedule: Schedule, shape: Shape, lrs: tuple[float, float, int], logging: int,
          batches: int, pretrained_tokens: float) -> Hyper:
    peak, low, warmup = lrs
    return Hyper(seq_len=shape.seq_len, micro_batch=shape.micro_batch, grad_accum=schedule.grad_accum,
                 global_batch=schedule.global_batch, max_lr=peak, min_lr=low, warmup_steps=warmup,
                 total_steps=schedule.total_steps, epochs=schedule.epochs,
                 steps_per_epoch=schedule.steps_per_epoch, eval_every=schedule.eval_every,
                 log_every=logging, eval_batches=batches, pretrained_tokens=pretrained_tokens)
