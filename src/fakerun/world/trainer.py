"""transformers' TrainingArguments as the pinned Trainer resolves them into
the job's schedule: the LR scheduler, warmup, and the cadences of logging,
evaluation and checkpoints.

Sources (huggingface/transformers at v4.42.4, v4.44.2, v4.46.3, v5.0.0):
- training_args.py: the defaults (lr_scheduler_type "linear", warmup 0,
  eval_strategy "no", save_strategy "steps", save_steps 500, logging_steps
  500, per_device_eval_batch_size 8), __post_init__ (eval_steps falls back
  to logging_steps; `evaluation_strategy` is the deprecated spelling of
  eval_strategy up to 4.46 and gone in 5.0), get_warmup_steps (4.x:
  warmup_steps if > 0 else ceil(steps x warmup_ratio); 5.0: warmup_steps
  below 1 is a ratio and warmup_ratio, deprecated, replaces it).
- trainer.py _inner_training_loop: a logging/eval/save interval below 1 is a
  ratio of max_steps (`math.ceil(max_steps * args.logging_steps)`).
- trainer_callback.py DefaultFlowCallback: on_step_end logs, evaluates and
  saves on multiples of the intervals and, at max_steps, saves when the
  save strategy is not "no" (5.0: when it is "steps"); on_epoch_end
  evaluates and saves under the "epoch" strategies, also at a stop mid-epoch
  (the loop calls it after breaking out).
- optimization.py: the schedules (physics.learning_rate follows them).

And the figures the Trainer logs (its log dicts, trainer_state.json's
log_history): float32 as its tensors hold them, its epoch float, its
interval-mean loss (`LossTally`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace

from fakerun.errors import UsageError
from fakerun.world.jobs import Hyper

# lr_scheduler_type -> (Hyper.decay, whether the warmup applies). The Trainer's
# linear and cosine decay to 0.0; cosine_with_restarts at its default one cycle
# is the cosine (optimization.py: pi * ((1.0 * progress) % 1.0) is pi * progress
# below the end, 0.0 at it); "constant" ignores any warmup (get_constant_schedule).
SCHEDULES = {"linear": ("linear", True), "cosine": ("cosine", True),
             "cosine_with_restarts": ("cosine", True), "constant": ("constant", False),
             "constant_with_warmup": ("constant", True)}
# SchedulerType's members in its order (trainer_utils.py), 4.42.4 to 4.46.3 and 5.0.0
# (which adds cosine_warmup_with_min_lr): the parser's choices. Those not in
# SCHEDULES are taken by the Trainer; their curves (and ReduceLROnPlateau's
# dependence on the eval loss) are not simulated.
SCHEDULER_TYPES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                   "constant_with_warmup", "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr",
                   "warmup_stable_decay")
SCHEDULER_TYPES_5 = (*SCHEDULER_TYPES[:-1], "cosine_warmup_with_min_lr", SCHEDULER_TYPES[-1])
INTERVAL_STRATEGIES = ("no", "steps", "epoch")  # IntervalStrategy
SAVE_STRATEGIES_5 = ("no", "steps", "epoch", "best")  # SaveStrategy (5.0)
FLOAT32_MAX = 3.4028234663852886e38


def float32(x: float) -> float:
    """`x` as a float32 tensor holds it, widened back by `.item()`: what the
    Trainer prints of its loss, grad_norm and eval_loss (7.181692123413086,
    never a double's 7.181692116380173)."""
    if math.isfinite(x) and abs(x) > FLOAT32_MAX:
        return math.copysign(math.inf, x)  # past float32's range: inf, as the cast gives
    return float(struct.unpack("f", struct.pack("f", x))[0])


def trainer_epoch(h: Hyper, step: int) -> float:
    """TrainerState.epoch after global step `step`, as _inner_training_loop
    computes it: `epoch + (step + 1 + steps_skipped) / steps_in_epoch`, its
    step counting micro batches (the dataloader's batches on a rank) and
    steps_in_epoch their number, so that an epoch's end is a whole float."""
    done = (step - 1) // h.steps_per_epoch if step > 0 else 0
    in_epoch = step - done * h.steps_per_epoch
    return done + (in_epoch * h.grad_accum) / (h.steps_per_epoch * h.grad_accum)


@dataclass
class LossTally:
    """The Trainer's tr_loss (a float32 tensor, each step's loss added) and
    _total_loss_scalar (each logged interval's .item(), a Python float)."""

    interval: float = 0.0
    last_logged: int | None = None  # _globalstep_last_logged: the step training (re)started from
    total: float = 0.0

    def add(self, step: int, loss: float) -> None:
        if self.last_logged is None:
            self.last_logged = step - 1
        self.interval = float32(self.interval + float32(loss))

    def logged(self, step: int) -> float:
        """The mean since the last log (tr_loss_scalar / (global_step -
        _globalstep_last_logged)); the interval starts again."""
        mean = self.interval / (step - (self.last_logged or 0))
        self.total += self.interval
        self.interval, self.last_logged = 0.0, step
        return mean

    def train_loss(self, steps: int) -> float:
        """_total_loss_scalar (and what is left of tr_loss) over the global
        step: after a resume also the steps before it, as the Trainer divides."""
        return (self.total + self.interval) / max(steps, 0.001)


@dataclass(frozen=True)
class TrainerArgs:
    """What the launch line gave of TrainingArguments, with its defaults;
    resolved against the run's length and transformers version by `hyper`."""

    lr_scheduler_type: str = "linear"
    warmup_steps: float = 0.0
    warmup_ratio: float | None = None  # None: not given (4.x's default is 0.0)
    eval_strategy: str = "no"
    evaluation_strategy: str | None = None  # the deprecated spelling, if given
    eval_steps: float | None = None
    logging_steps: float = 500.0
    logging_first_step: bool = False
    save_strategy: str = "steps"
    save_steps: float = 500.0
    save_total_limit: int | None = None
    per_device_eval_batch_size: int = 8
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    fp16: bool = False
    bf16: bool = False
    # A --deepspeed config's values the Trainer fills or checks (dotted key ->
    # the file's value, lists as tuples); None: no --deepspeed.
    deepspeed: tuple[tuple[str, object], ...] | None = None


def choices(transformers: str) -> tuple[str, ...]:
    """lr_scheduler_type's choices at this version, as HfArgumentParser lists them."""
    return SCHEDULER_TYPES_5 if _v5(transformers) else SCHEDULER_TYPES


def hyper(h: Hyper, t: TrainerArgs, transformers: str, world: int) -> Hyper:
    """`h` (the job's length, batch and peak LR) under these arguments, on `world` processes."""
    v5 = _v5(transformers)
    _check(t, v5)
    _check_deepspeed(h, t, v5, world)
    decay, warms = SCHEDULES[t.lr_scheduler_type]
    total = h.total_steps
    log_every = _interval(t.logging_steps, total)
    eval_strategy = t.evaluation_strategy or t.eval_strategy
    eval_every, eval_at_end = _evaluation(eval_strategy, t.eval_steps or t.logging_steps, h)
    save_every, save_at_end = _saving(t.save_strategy, t.save_steps, h)
    return replace(h, decay=decay, min_lr=0.0, warmup_steps=_warmup(t, total, v5) if warms else 0,
                   log_every=log_every, log_first_step=t.logging_first_step,
                   eval_every=eval_every, eval_at_end=eval_at_end, save_every=save_every,
                   save_at_end=save_at_end, save_limit=t.save_total_limit,
                   eval_micro_batch=t.per_device_eval_batch_size,
                   eval_batches=_eval_batches(h, t.per_device_eval_batch_size))


def _v5(transformers: str) -> bool:
    return int(transformers.split(".")[0]) >= 5


def _check(t: TrainerArgs, v5: bool) -> None:
    """What the pinned version's parser or __post_init__ refuses, in one line."""
    if v5 and t.evaluation_strategy is not None:
        # 5.0 removed the field: run_clm's parse_args_into_dataclasses raises on what is left over.
        raise UsageError("training script: ValueError: Some specified arguments are not used by the "
                         f"HfArgumentParser: ['--evaluation_strategy', '{t.evaluation_strategy}']")
    saves = SAVE_STRATEGIES_5 if v5 else INTERVAL_STRATEGIES
    for flag, value, allowed in (("lr_scheduler_type", t.lr_scheduler_type, choices("5" if v5 else "4")),
                                 ("eval_strategy", t.eval_strategy, INTERVAL_STRATEGIES),
                                 ("evaluation_strategy", t.evaluation_strategy, (None, *INTERVAL_STRATEGIES)),
                                 ("save_strategy", t.save_strategy, saves)):
        if value not in allowed:  # argparse's choices, as HfArgumentParser gives an Enum field
            listed = ", ".join(repr(c) for c in allowed if c is not None)
            _refuse(f"--{flag}: invalid choice: {value!r} (choose from {listed})")
    for flag, value in (("warmup_steps", t.warmup_steps), ("logging_steps", t.logging_steps),
                        ("eval_steps", t.eval_steps or 0.0), ("save_steps", t.save_steps)):
        if flag == "warmup_steps" and not v5 and value != int(value):
            _refuse(f"--warmup_steps: invalid int value: '{value:g}'")  # an int field before 5.0
        if flag != "warmup_steps" and value > 1 and value != int(value):
            _refuse(f"--{flag} must be an integer if bigger than 1: {value}", parser=False)
    if not v5 and t.warmup_ratio is not None and not 0 <= t.warmup_ratio <= 1:
        _refuse("warmup_ratio must lie in range [0,1]", parser=False)
    if t.lr_scheduler_type not in SCHEDULES:
        raise UsageError(f"training script argument --lr_scheduler_type {t.lr_scheduler_type}: the Trainer "
                         f"takes it; fakerun simulates only {', '.join(SCHEDULES)}")
    if t.save_strategy == "best":
        raise UsageError("training script argument --save_strategy best: the Trainer takes it; fakerun "
                         "simulates only no, steps and epoch")


def _check_deepspeed(h: Hyper, t: TrainerArgs, v5: bool, world: int) -> None:
    """HfTrainerDeepSpeedConfig (integrations/deepspeed.py): trainer_config_process
    fills each "auto" with the Trainer's value and notes every other value that
    differs; trainer_config_finalize raises them all at once. One line here."""
    if t.deepspeed is None:
        return
    given = dict(t.deepspeed)
    mismatches = [f"- ds {key}={_shown(given[key])} vs hf {name}={_shown(value)}"
                  for key, value, name in _deepspeed_fills(h, t, v5, world)
                  if key in given and given[key] != "auto" and given[key] != value]
    if mismatches:
        _refuse("Please correct the following DeepSpeed config values that mismatch TrainingArguments "
                f"values: {' '.join(mismatches)} The easiest method is to set these DeepSpeed config values "
                "to 'auto'.", parser=False)


def _deepspeed_fills(h: Hyper, t: TrainerArgs, v5: bool,
                     world: int) -> list[tuple[str, object, str]]:
    """trainer_config_process's fill_match calls, in its order: (ds key, the
    Trainer's value, the name it gives it). 4.x also checks apex's amp."""
    fp16 = "fp16|fp16_full_eval" if v5 else "fp16|fp16_full_eval+fp16_backend(amp)"
    amp: list[tuple[str, object, str]] = [] if v5 else [
        ("amp.enabled", False, "fp16+fp16_backend(apex)"), ("amp.opt_level", "O1", "fp16_opt_level")]
    return [("train_micro_batch_size_per_gpu", h.micro_batch, "per_device_train_batch_size"),
            ("gradient_accumulation_steps", h.grad_accum, "gradient_accumulation_steps"),
            ("train_batch_size", world * h.micro_batch * h.grad_accum, "train_batch_size (calculated)"),
            ("gradient_clipping", t.max_grad_norm, "max_grad_norm"),
            ("optimizer.params.lr", h.max_lr, "learning_rate"),
            ("optimizer.params.betas", (t.adam_beta1, t.adam_beta2), "adam_beta1+adam_beta2"),
            ("optimizer.params.eps", t.adam_epsilon, "adam_epsilon"),
            ("optimizer.params.weight_decay", t.weight_decay, "weight_decay"),
            ("scheduler.params.warmup_max_lr", h.max_lr, "learning_rate"),
            ("fp16.enabled", t.fp16, fp16), *amp,
            ("bf16.enabled", t.bf16, "bf16|bf16_full_eval")]


def _shown(value: object) -> str:
    """As the f-string shows the JSON value or the Trainer's (a list, not our tuple)."""
    return str(list(value)) if isinstance(value, tuple) else str(value)


def _refuse(message: str, parser: bool = True) -> None:
    """One line: the script's parser's error, or TrainingArguments.__post_init__'s ValueError."""
    if parser:
        raise UsageError(f"training script argument {message} (the script's own parser refuses it)")
    raise UsageError(f"training script: ValueError: {message}")


def _interval(value: float, total: int) -> int:
    """An interval below 1 is a ratio of the run's steps, rounded up (trainer.py)."""
    return math.ceil(total * value) if value < 1 else int(value)


def _warmup(t: TrainerArgs, total: int, v5: bool) -> int:
    """TrainingArguments.get_warmup_steps at this version."""
    if v5:
        steps = t.warmup_ratio if t.warmup_ratio is not None else t.warmup_steps
        return int(steps) if steps >= 1 else math.ceil(total * steps)
    return int(t.warmup_steps) if t.warmup_steps > 0 else math.ceil(total * (t.warmup_ratio or 0.0))


def _evaluation(strategy: str, steps: float, h: Hyper) -> tuple[int, bool]:
    """(eval_every, eval_at_end): "steps" on multiples only; "epoch" at each
    epoch's end and where training stops."""
    if strategy == "steps":
        return _interval(steps, h.total_steps), False
    if strategy == "epoch":
        return h.steps_per_epoch, True
    return 0, False


def _saving(strategy: str, steps: float, h: Hyper) -> tuple[int, bool]:
    """(save_every, save_at_end): on multiples, at each epoch's end, and at
    max_steps while the strategy is not "no" (5.0: "steps"; its "epoch" saves
    there through on_epoch_end)."""
    if strategy == "steps":
        return _interval(steps, h.total_steps), True
    if strategy == "epoch":
        return h.steps_per_epoch, True
    return 0, False


def _eval_batches(h: Hyper, eval_batch: int) -> int:
    """The held-out set the job drew (batches of its training micro batch),
    in batches of the evaluation's own size."""
    return max(1, round(h.eval_batches * h.micro_batch / eval_batch))
