"""The training script's own arguments, read as a description of the job.

fakerun stands in for `torchrun train.py ...`: when the script's arguments use
the common spellings (the transformers examples' HfArgumentParser flags,
Megatron-LM's), the simulated job takes its model, batch sizes, steps,
learning rate and output directory from them, and the output style follows
the framework they belong to. Anything else on the line is ignored, as
fakerun never runs the script.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from fakerun.config import lightning_args, megatron_schedule, strategy_args
from fakerun.errors import UsageError
from fakerun.world import catalog, megatron
from fakerun.world.identity import Asked
from fakerun.world.memory import Strategy
from fakerun.world.trainer import TrainerArgs

# Megatron's default tokenizer (GPT-2 BPE) padded to a multiple of 128.
MEGATRON_VOCAB = 50304
# TrainingArguments' fields that fix the schedule and its cadences (world.trainer resolves them).
TRAINER_FLAGS = ("lr_scheduler_type", "warmup_ratio", "warmup_steps", "eval_strategy",
                 "evaluation_strategy", "eval_steps", "save_strategy", "save_steps", "save_total_limit",
                 "per_device_eval_batch_size", "max_grad_norm", "weight_decay", "adam_beta1", "adam_beta2",
                 "adam_epsilon")
TRAINER_FLOATS = ("warmup_ratio", "warmup_steps", "eval_steps", "logging_steps", "save_steps",
                  "max_grad_norm", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon")
# Its booleans: HfArgumentParser's `--flag`, `--flag True` or `--flag=false` (string_to_bool).
# The precision flags alone do not make a line the Trainer's (other scripts take them too).
TRAINER_BOOLS = ("logging_first_step", "do_eval")
PRECISION_BOOLS = ("fp16", "bf16")
HF_FLAGS = ("model_name_or_path", "dataset_name", "per_device_train_batch_size",
            "gradient_accumulation_steps", "max_steps", "num_train_epochs", "learning_rate",
            "output_dir", "max_seq_length", "block_size", "logging_steps", *TRAINER_FLAGS)
# TrainingArguments' defaults: what a Trainer job runs with when its launch line is silent
# (num_train_epochs' 3 counts only without max_steps, which overrides it); the
# schedule's and cadences' are TrainerArgs'.
HF_DEFAULTS = {"per_device_train_batch_size": "8", "gradient_accumulation_steps": "1",
               "learning_rate": "5e-05"}
TRUE_WORDS = ("yes", "true", "t", "y", "1")
FALSE_WORDS = ("no", "false", "f", "n", "0")
# Values whose 0 means something (no warmup, no saving on a step count), not "unset".
ZERO_MEANS = ("warmup_steps", "warmup_ratio", "save_steps", "eval_steps", "save_total_limit", "max_grad_norm",
              "weight_decay")
MEGATRON_FLAGS = megatron.FLAGS
MEGATRON_DEFAULTS = {"log-interval": "100"}
SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)
# Every whole number here ends up a torch/NumPy int64 (a batch, a sequence, a
# layer count); the script would fail on a larger one at its first tensor.
# The bound also keeps every product the memory and time models take of them
# (tokens = batch x sequence, parameters = 12 layers x hidden^2) a finite float.
MAX_INT = 2**63 - 1
# What the script itself refuses: torch.optim.AdamW (`if not 0.0 <= lr: raise
# ValueError(f"Invalid learning rate: {lr}")`), the DataLoader (`batch_size
# should be a positive integer value`), the Trainer (accumulation 0 divides by
# zero in its steps per epoch), Megatron's validate_args (`assert
# args.micro_batch_size > 0`, `assert args.global_batch_size > 0`).
LEARNING_RATES = ("learning_rate", "lr")
COUNTS = ("per_device_train_batch_size", "gradient_accumulation_steps", "micro-batch-size",
          "global-batch-size")


@dataclass(frozen=True)
class ScriptArgs:
    """What the launch line says about the job; None: not said."""

    style: str | None = None
    max_steps: int | None = None
    output_dir: Path | None = None
    asked: Asked = field(default_factory=Asked)
    # The checkpoint the script is told to resume: LightningCLI's --ckpt_path,
    # Megatron's --load (where one is saved).
    resume: str | None = None
    lightning: lightning_args.TrainerArgs | None = None  # a Lightning script's Trainer arguments

    def check_world(self, nproc: int, nnodes: int) -> None:
        """What the script checks against the world torchrun gives it."""
        if self.lightning is not None:
            self.lightning.check_world(nproc, nnodes)


def read(entrypoint: str, args: tuple[str, ...] | list[str],
         environ: Mapping[str, str] | None = None) -> ScriptArgs:
    """`environ`: the environment torchrun hands the script (FSDP_STATE_DICT_TYPE)."""
    hf = _parse(args, HF_FLAGS)
    bools = _parse(args, (), TRAINER_BOOLS + PRECISION_BOOLS)
    mg = _parse(args, MEGATRON_FLAGS)
    if mg or Path(entrypoint).name.startswith("pretrain_"):
        return _with_strategy(_megatron(mg), strategy_args.megatron(list(args)))
    if hf or any(k in bools for k in TRAINER_BOOLS):
        return _with_strategy(_hf(hf, bools, strategy_args.flag(list(args), "deepspeed")),
                              strategy_args.hf(list(args), environ))
    style = _style_of(entrypoint, args)
    if style == "lightning":
        return _lightning(list(args))
    if style == "deepspeed":
        return _with_strategy(ScriptArgs(style=style), strategy_args.deepspeed(list(args)))
    return ScriptArgs(style=style)


def _with_strategy(script: ScriptArgs, strategy: Strategy) -> ScriptArgs:
    return dataclasses.replace(script, asked=dataclasses.replace(script.asked, strategy=strategy))


def _parse(args: tuple[str, ...] | list[str], flags: tuple[str, ...],
           bools: tuple[str, ...] = ()) -> dict[str, str]:
    """The values of `flags` (`--flag value` or `--flag=value`) and of the
    boolean `bools` ("true" when bare); the rest is ignored."""
    parser = _Parser(add_help=False, allow_abbrev=False)
    for flag in flags:
        parser.add_argument(f"--{flag}", dest=flag)
    for flag in bools:
        parser.add_argument(f"--{flag}", dest=flag, nargs="?", const="true")
    known, _ = parser.parse_known_args(list(args))
    return {k: v for k, v in vars(known).items() if v is not None}


class _Parser(argparse.ArgumentParser):
    """The script's own parser refuses a job flag without its value (`--max_steps`
    last, or `--learning_rate -inf`, which looks like an option): so do we, in
    one line, not argparse's usage block under the name `__main__.py`."""

    def error(self, message: str) -> NoReturn:
        raise ScriptArgsError(f"training script argument {message.removeprefix('argument ')} "
                              "(the script's own parser refuses it)")


def _style_of(entrypoint: str, args: tuple[str, ...] | list[str]) -> str | None:
    """Frameworks recognised by their own flags when none of the job flags are there."""
    if lightning_args.is_cli(list(args)) or "lightning" in Path(entrypoint).name:
        return "lightning"
    if any(a.split("=")[0] in ("--deepspeed", "--deepspeed_config") for a in args):
        return "deepspeed"
    return None


def _hf(given: dict[str, str], bools: dict[str, str], deepspeed: str | None) -> ScriptArgs:
    v = {**HF_DEFAULTS, **({} if "max_steps" in given else {"num_train_epochs": "3"}), **given}
    asked = Asked(model=_model(v.get("model_name_or_path")), pretrained="model_name_or_path" in v,
                  dataset=v.get("dataset_name"),
                  micro_batch=_int(v, "per_device_train_batch_size"),
                  grad_accum=_int(v, "gradient_accumulation_steps"),
                  epochs=_epochs(v), lr=_float(v, "learning_rate"),
                  seq_len=_int(v, "max_seq_length") or _int(v, "block_size"),
                  trainer=_trainer(v, bools, deepspeed))
    out = v.get("output_dir")
    return ScriptArgs("hf", _int(v, "max_steps"), Path(out) if out else None, asked)


def _trainer(v: dict[str, str], bools: dict[str, str], deepspeed: str | None) -> TrainerArgs:
    """TrainingArguments' schedule, cadences and the values a --deepspeed
    config is checked against; the defaults where not given."""
    given: dict[str, object] = {k: v[k] for k in ("lr_scheduler_type", "eval_strategy", "evaluation_strategy",
                                                  "save_strategy") if k in v}
    for key in TRAINER_FLOATS:
        if (value := _float(v, key)) is not None:
            given[key] = value
    for key in ("save_total_limit", "per_device_eval_batch_size"):
        if (count := _int(v, key)) is not None:
            given[key] = count
    given.update({k: _bool(k, bools[k]) for k in TRAINER_BOOLS + PRECISION_BOOLS if k in bools})
    given.pop("do_eval", None)  # the script's own evaluate() after train(); the Trainer's loop ignores it
    if deepspeed:
        given["deepspeed"] = strategy_args.trainer_values(deepspeed)
    return TrainerArgs(**given)  # type: ignore[arg-type]


def _bool(key: str, text: str) -> bool:
    """HfArgumentParser's string_to_bool (hf_argparser.py)."""
    if text.lower() in TRUE_WORDS + FALSE_WORDS:
        return text.lower() in TRUE_WORDS
    raise ScriptArgsError(f"training script argument --{key}: Truthy value expected: got {text} but "
                          "expected one of yes/no, true/false, t/f, y/n, 1/0 (case insensitive). "
                          "(the script's own parser refuses it)")
def _lightning(args: list[str]) -> ScriptArgs:
    """A LightningModule script: its Trainer's arguments (LightningCLI's `--trainer.*`)."""
    t = lightning_args.read(args)
    asked = Asked(epochs=t.max_epochs, grad_accum=t.grad_accum, log_every=t.log_every, lr=t.lr,
                  cadence=t.cadence)
    script = ScriptArgs("lightning", t.max_steps, t.root_dir, asked, resume=t.ckpt_path, lightning=t)
    return _with_strategy(script, strategy_args.lightning(args))


def _megatron(given: dict[str, str]) -> ScriptArgs:
    v = {**MEGATRON_DEFAULTS, **given}
    layers, hidden = _int(v, "num-layers"), _int(v, "hidden-size")
    model = _shape(layers, hidden, _int(v, "num-attention-heads"), _int(v, "num-query-groups"),
                   _int(v, "seq-length")) if layers and hidden else None
    asked = Asked(model=model, micro_batch=_int(v, "micro-batch-size"),
                  global_batch=_int(v, "global-batch-size"), lr=_float(v, "lr"),
                  seq_len=_int(v, "seq-length"), log_every=_int(v, "log-interval"),
                  hyper=megatron_schedule.hyper(_schedule(v)))
    save = v.get("save")
    return ScriptArgs("megatron", _int(v, "train-iters"), Path(save) if save else None, asked,
                      megatron_schedule.resume(v.get("load")))


def _schedule(v: dict[str, str]) -> megatron_schedule.Given:
    return megatron_schedule.Given(
        train_iters=_int(v, "train-iters"), decay_iters=_int(v, "lr-decay-iters"), lr=_float(v, "lr"),
        decay=v.get("lr-decay-style"),
        min_lr=_float(v, "min-lr"), warmup_iters=_int(v, "lr-warmup-iters"),
        warmup_fraction=_float(v, "lr-warmup-fraction"), eval_interval=_int(v, "eval-interval"),
        eval_iters=_int_or_zero(v, "eval-iters"), save_interval=_int(v, "save-interval"), save="save" in v)


def _model(name: str | None) -> catalog.Model | None:
    """A Hub id (`meta-llama/Llama-3.1-8B`) or a local path: the catalog's model
    of that name, else the catalog's nearest in family and size, under the
    name given (a fine-tune keeps its base model's shape)."""
    if not name:
        return None
    short = name.rstrip("/").rsplit("/", 1)[-1]
    models = [m for m in catalog.models() if m.kind == "real"]
    for m in models:
        if m.name.lower() == short.lower():
            return m
    family = [m for m in models if _family(m.name) in short.lower()] or models
    size = _size(short)
    if size is None:
        return dataclasses.replace(family[0], name=short)
    nearest = min(family, key=lambda m: abs(math.log(m.params / size)))
    return dataclasses.replace(nearest, name=short)


def _family(name: str) -> str:
    return re.split(r"[-_.\d]", name.lower(), maxsplit=1)[0]


def _size(name: str) -> float | None:
    """The size a name says (`7b`, `125M`); None if none, or one no model has
    (`0b`, or so many digits that it is no number: it was a ZeroDivisionError
    or a math domain error in the nearest-size search)."""
    m = SIZE.search(name)
    if not m:
        return None
    size = float(m.group(1)) * (1e9 if m.group(2).lower() == "b" else 1e6)
    return size if 0 < size < math.inf else None


def _shape(layers: int, hidden: int, heads: int | None, groups: int | None, seq: int | None) -> catalog.Model:
    """A GPT the Megatron flags describe: 12·L·h² in the blocks, tied embeddings."""
    params = 12 * layers * hidden * hidden + 13 * layers * hidden + MEGATRON_VOCAB * hidden
    heads = heads or max(1, hidden // 128)
    return catalog.Model(f"GPT-{params / 1e9:.1f}B", "GPTModel", params, params, layers, hidden, heads,
                         groups or heads, MEGATRON_VOCAB, seq or 4096, "real")


class ScriptArgsError(UsageError):
    """A job flag whose value the script itself would refuse; one line."""


def _number(v: dict[str, str], key: str, kind: type[int] | type[float]) -> float | None:
    """A positive value, or None: unset, or the transformers way of unsetting (`--max_steps -1`)."""
    if key not in v:
        return None
    shown = v[key] if len(v[key]) <= 40 else v[key][:20] + "..." + v[key][-8:]  # one readable line
    said = f"training script argument --{key} {shown!r}"
    try:
        value = kind(v[key])
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ScriptArgsError(f"{said}: expected {what}") from None
    if key in LEARNING_RATES and not value >= 0:  # also NaN
        raise ScriptArgsError(f"{said}: Invalid learning rate: {value} (torch.optim.AdamW refuses it)")
    if key in COUNTS and value <= 0:
        raise ScriptArgsError(f"{said}: must be at least 1 (the script itself refuses it)")
    if kind is int and not -MAX_INT <= value <= MAX_INT:
        raise ScriptArgsError(f"{said}: expected a whole number of at most {MAX_INT} (an int64)")
    if not math.isfinite(value):  # the Trainer's math.ceil(epochs) raises on it; no run has it
        raise ScriptArgsError(f"{said}: expected a finite number")
    return value if value > 0 or (value == 0 and key in ZERO_MEANS) else None


def _int(v: dict[str, str], key: str) -> int | None:
    return _number(v, key, int)  # type: ignore[return-value]


def _int_or_zero(v: dict[str, str], key: str) -> int | None:
    """A count where 0 is a value (`--eval-interval 0`: never in the loop), not unset."""
    value = _int(v, key)
    return 0 if value is None and key in v and int(v[key]) == 0 else value


def _float(v: dict[str, str], key: str) -> float | None:
    return _number(v, key, float)


def _epochs(v: dict[str, str]) -> int | None:
    epochs = _float(v, "num_train_epochs")
    return math.ceil(epochs) if epochs else None
