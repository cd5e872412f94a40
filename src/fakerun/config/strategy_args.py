"""The memory layout a training script's own flags fix: how its framework
shards the training state and whether it recomputes activations.

- transformers' Trainer: plain DDP unless `--fsdp MODE` (full_shard,
  hybrid_shard: ZeRO-3's layout; shard_grad_op: ZeRO-2's; no_shard: DDP) or
  `--deepspeed ds_config.json` (the stage its zero_optimization says; a
  config we cannot read: ZeRO-2 or 3, what the Trainer's own example configs
  ds_config_zero2.json and ds_config_zero3.json use, the least that fits;
  its batch sizes, precision and optimizer values are checked against the
  Trainer's own, `trainer_values`);
  `--gradient_checkpointing` recomputes.
- Lightning: `--trainer.strategy` (ddp by default; fsdp; deepspeed, whose
  DeepSpeedStrategy defaults to stage 2; deepspeed_stage_N). The offload
  variants are taken at their stage (the CPU's share is not modelled).
- A DeepSpeed script: its config's stage (`--deepspeed_config`), else ours.
- Megatron: `--tensor-model-parallel-size` and `--pipeline-model-parallel-size`
  (1 when not given, as Megatron's arguments.py defaults them),
  `--use-distributed-optimizer`, `--recompute-activations` (selective) or
  `--recompute-granularity`.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from typing import Any

from fakerun.errors import UsageError
from fakerun.world.memory import FULL_STATE_DICT, SHARDED_STATE_DICT, Strategy

FSDP_STATE_DICT_ENV = "FSDP_STATE_DICT_TYPE"  # what `accelerate launch --fsdp_state_dict_type` sets
MAX_CONFIG_BYTES = 1 << 20  # a DeepSpeed config is a few hundred bytes; anything larger is not one
FULL_SHARD = Strategy("fsdp", (3,))
FSDP_MODES = {"shard_grad_op": Strategy("fsdp", (2,)), "hybrid_shard_zero2": Strategy("fsdp", (2,)),
              "no_shard": Strategy("ddp")}
TRAINER_DEEPSPEED = (2, 3)
LIGHTNING_DEEPSPEED_STAGE = 2  # DeepSpeedStrategy(stage=2)
TRUE = ("", "true", "1", "yes")
# The keys transformers' HfTrainerDeepSpeedConfig.trainer_config_process matches
# against TrainingArguments (integrations/deepspeed.py, 4.42.4 to 5.0.0).
DEEPSPEED_CHECKED = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                     "gradient_clipping", "optimizer.params.lr", "optimizer.params.betas",
                     "optimizer.params.eps", "optimizer.params.weight_decay",
                     "scheduler.params.warmup_max_lr", "fp16.enabled", "amp.enabled", "amp.opt_level",
                     "bf16.enabled")


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value`; "" for a bare flag; None if absent."""
    for k, token in enumerate(args):
        key, eq, value = token.partition("=")
        if key == f"--{name}":
            if eq:
                return value
            follows = args[k + 1] if k + 1 < len(args) else ""
            return "" if follows.startswith("--") else follows
    return None


def hf(args: list[str], environ: Mapping[str, str] | None = None) -> Strategy:
    checkpointing = flag(args, "gradient_checkpointing")
    recompute = "full" if checkpointing is not None and checkpointing.lower() in TRUE else "none"
    fsdp, deepspeed = flag(args, "fsdp"), flag(args, "deepspeed")
    if fsdp:
        mode = FSDP_MODES.get(fsdp.split()[0].lower(), FULL_SHARD)
        state_dict = fsdp_state_dict((environ or {}).get(FSDP_STATE_DICT_ENV))
        return Strategy(mode.kind, mode.stages, recompute=recompute, state_dict=state_dict)
    if deepspeed is not None:
        stage = config_stage(deepspeed)
        return Strategy("zero", (stage,) if stage is not None else TRAINER_DEEPSPEED, recompute=recompute)
    return Strategy("ddp", recompute=recompute)


def fsdp_state_dict(given: str | None) -> str:
    """FullyShardedDataParallelPlugin.__post_init__'s state_dict_type from the
    environment (accelerate utils/dataclasses.py at v1.1.1: a name of
    StateDictType in any case, or its number), FULL_STATE_DICT when unset;
    the Trainer's fsdp_config sets none (training_args.py, 4.42.4 to 5.0.0)."""
    if given is None or not given.strip():
        return FULL_STATE_DICT
    named = {"1": FULL_STATE_DICT, "2": "LOCAL_STATE_DICT", "3": SHARDED_STATE_DICT}.get(given, given.upper())
    if named not in (FULL_STATE_DICT, SHARDED_STATE_DICT, "LOCAL_STATE_DICT"):
        raise UsageError(f"{FSDP_STATE_DICT_ENV}={given}: accelerate's FSDP plugin takes FULL_STATE_DICT, "
                         "LOCAL_STATE_DICT or SHARDED_STATE_DICT (KeyError)")
    if named == "LOCAL_STATE_DICT":
        raise UsageError(f"{FSDP_STATE_DICT_ENV}={given}: the Trainer takes it; fakerun simulates only "
                         f"{FULL_STATE_DICT} and {SHARDED_STATE_DICT}")
    return named


def lightning(args: list[str]) -> Strategy:
    name = (flag(args, "trainer.strategy") or "ddp").lower()
    if name.startswith("fsdp"):
        return FULL_SHARD
    if name.startswith("deepspeed"):
        stage = name.removeprefix("deepspeed_stage_")[:1]
        return Strategy("zero", (int(stage) if stage and stage in "123" else LIGHTNING_DEEPSPEED_STAGE,))
    return Strategy("ddp")


def deepspeed(args: list[str]) -> Strategy:
    path = flag(args, "deepspeed_config") or flag(args, "deepspeed")
    stage = config_stage(path) if path else None
    return Strategy("zero", (stage,)) if stage is not None else Strategy("zero")


def megatron(args: list[str]) -> Strategy:
    for name in ("ckpt-format", "dist-ckpt-format"):  # core 0.9+'s, and 0.8's with --use-dist-ckpt
        if flag(args, name) == "zarr":
            raise UsageError(f"--{name} zarr: fakerun writes Megatron's torch and torch_dist formats only")
    granularity = flag(args, "recompute-granularity")
    recompute = granularity if granularity in ("full", "selective") else (
        "selective" if flag(args, "recompute-activations") is not None else "none")
    return Strategy("megatron", (1,) if flag(args, "use-distributed-optimizer") is not None else (0,),
                    tp=_size(flag(args, "tensor-model-parallel-size")),
                    pp=_size(flag(args, "pipeline-model-parallel-size")), recompute=recompute)


# validate_args' assertion when the world does not split into TP x PP groups
# (megatron/training/arguments.py; the encoder's size is 0 without an
# encoder): core_v0.8.0, core_v0.9.0 and core_v0.10.0, core_v0.15.0.
WORLD_SPLIT = (
    ((0, 9), "world size ({world}) is not divisible by tensor parallel size ({tp}) times pipeline parallel "
             "size ({pp}) times context parallel size (1)"),
    ((0, 15), "world size ({world}) is not divisible by total_model_size (encoder_model_size=0 + "
              "decoder_model_size={size})"),
    ((99, 0), "world size ({world}) is not divisible by total_model_size (total_model_size={size})"),
)


def check_megatron_world(strategy: Strategy, world: int, version: str) -> None:
    """Megatron's own words (one line) for a TP x PP that does not divide the world."""
    tp, pp = strategy.tp or 1, strategy.pp or 1
    if world % (tp * pp) == 0:
        return
    release = tuple(int(x) for x in version.split(".")[:2])
    text = next(t for below, t in WORLD_SPLIT if release < below)
    raise UsageError("AssertionError: " + text.format(world=world, tp=tp, pp=pp, size=tp * pp))


def _size(text: str | None) -> int:
    try:
        return max(1, int(text or 1))
    except ValueError:
        return 1


def config_stage(path: str) -> int | None:
    """zero_optimization.stage (1 to 3) of a DeepSpeed config file, if it is a
    readable regular file holding one."""
    try:
        stage = (read_config(path) or {}).get("zero_optimization", {}).get("stage")
    except AttributeError:  # "zero_optimization" is no object
        return None
    return stage if isinstance(stage, int) and 1 <= stage <= 3 else None


def read_config(path: str) -> dict[str, Any] | None:
    """A DeepSpeed config file's JSON object, if the path is a readable
    regular file holding one (never opening a FIFO or a device)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONFIG_BYTES:
            return None
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def trainer_values(path: str) -> tuple[tuple[str, object], ...]:
    """The config's values the Trainer fills or checks against its own
    arguments (world.trainer), by dotted key; lists as tuples."""
    config = read_config(path) or {}
    out = []
    for key in DEEPSPEED_CHECKED:
        node: object = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out.append((key, tuple(node) if isinstance(node, list) else node))
    return tuple(out)
