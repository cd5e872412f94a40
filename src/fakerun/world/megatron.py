"""Megatron-LM's launch line as its argparse leaves it, and what it fixes of
the run's checkpoints, per pinned megatron-core version: the format they are
saved in and who writes which file. Read by the renderer (the lines) and the
checkpoint writer (the files), so that both say the same.

The format (megatron/training/arguments.py and checkpointing.py):
- core_v0.8.0: the legacy `torch` format unless `--use-dist-ckpt`
  (then `--dist-ckpt-format`, torch_dist by default);
- core_v0.9.0 on: `--ckpt-format`, torch_dist by default (`torch` is the
  legacy one; validate_args sets use_dist_ckpt from it).
`--ckpt-fully-parallel-save` is on by default (`--no-ckpt-fully-parallel-save`
turns it off): the distributed optimizer's state is then stored as
`fully_sharded_model_space`, else `dp_zero_gather_scatter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LIST_FLAGS = ("data_path", "train_data_path", "valid_data_path", "test_data_path")
LEGACY, DIST = "torch", "torch_dist"
TRACKER = "latest_checkpointed_iteration.txt"  # checkpointing.get_checkpoint_tracker_filename
# The flags of Megatron's that describe the job (config/script_args.py reads
# them): a launch line with any of them, or a pretrain_*.py script, is a
# Megatron launch, whose defaults are Megatron's.
FLAGS = ("num-layers", "hidden-size", "num-attention-heads", "num-query-groups", "seq-length",
         "micro-batch-size", "global-batch-size", "train-iters", "lr", "save", "log-interval",
         "min-lr", "lr-decay-style", "lr-warmup-iters", "lr-warmup-fraction", "eval-interval",
         "eval-iters", "save-interval", "load", "lr-decay-iters")


def is_launch(entrypoint: str, given: dict[str, Any]) -> bool:
    """A Megatron launch line (`given`: its launch_args)."""
    return entrypoint.rsplit("/", 1)[-1].startswith("pretrain_") or any(
        f.replace("-", "_") in given for f in FLAGS)


def launch_args(args: Sequence[str]) -> dict[str, Any]:
    """The launch line's flags as argparse leaves them in Megatron's namespace:
    `--foo-bar 3` is foo_bar=3, a bare `--foo` is True, several values (and
    the data paths, nargs='*') a list of strings."""
    values: dict[str, list[str]] = {}
    name = None
    for token in args:
        if token.startswith("--"):
            flag, eq, value = token[2:].partition("=")
            name = flag.replace("-", "_")
            values[name] = [value] if eq else []
        elif name is not None:
            values[name].append(token)
    return {k: _namespace(k, v) for k, v in values.items()}


def _namespace(name: str, values: list[str]) -> Any:
    if name in LIST_FLAGS or len(values) > 1:
        return values
    return _value(values[0]) if values else True


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class CheckpointFormat:
    """How a run's checkpoints are saved."""

    name: str  # "torch" (legacy: one file per model-parallel rank) or "torch_dist"
    distributed_optimizer: bool
    fully_parallel: bool = True
    save_optim: bool = True  # not --no-save-optim
    save_rng: bool = True  # not --no-save-rng

    @property
    def dist(self) -> bool:
        return self.name != LEGACY

    @property
    def sharding(self) -> str:
        """The distributed optimizer's sharded state ("Storing distributed
        optimizer sharded state of type ...")."""
        return "fully_sharded_model_space" if self.fully_parallel else "dp_zero_gather_scatter"


def checkpoint_format(version: str, given: dict[str, Any], distributed_optimizer: bool) -> CheckpointFormat:
    """`given`: launch_args of the launch line; `version`: megatron-core's."""
    minor = int(version.split(".")[1])
    if minor < 9:
        name = str(given.get("dist_ckpt_format", DIST)) if given.get("use_dist_ckpt") else LEGACY
    else:
        name = str(given.get("ckpt_format", DIST))
    return CheckpointFormat(name, distributed_optimizer, not given.get("no_ckpt_fully_parallel_save"),
                            not given.get("no_save_optim"), not given.get("no_save_rng"))


def iteration_dir(step: int) -> str:
    """checkpointing.get_checkpoint_name's directory of a (non-release) save."""
    return f"iter_{step:07d}"
