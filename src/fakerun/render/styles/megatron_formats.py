"""The text of Megatron's prints, from their figures: the arguments block,
the timers, the validation block, the iteration line, the checkpoint lines
and the memory report, and which of their variants each pinned megatron-core
version prints (Flavour)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
RULE_ARGS = ("------------------------ arguments ------------------------",
             "-------------------- end of arguments ---------------------")


@dataclass(frozen=True)
class Flavour:
    """What differs between the pinned megatron-core versions."""

    micro: bool  # 2026 upstream (0.15): microsecond timestamps, timestamped save lines
    shard_suffix: bool  # the save line's "[ t 1/2, p 1/1 ]" (core_v0.10.0's save_checkpoint on)
    core_logger: bool  # 0.9+: the LR scheduler lives in megatron.core and logs
    microbatches: str  # 0.8 says "micro-batches"
    block: bool  # theoretical memory says "transformer block" (else "layers")
    save_memory: bool  # memory reports around the first saves

    @classmethod
    def of(cls, version: str) -> Flavour:
        minor = int(version.split(".")[1])
        return cls(micro=minor >= 15, shard_suffix=minor >= 10, core_logger=minor >= 9,
                   microbatches="micro-batches" if minor < 9 else "microbatches", block=minor >= 15,
                   save_memory=minor >= 15)


def args_block(values: dict[str, Any]) -> list[str]:
    """arguments.py _print_args: dotted to column 48, sorted case-insensitively
    as whole formatted lines (so `lr` sorts before `lr_decay_style`)."""
    rows = ["  {} {} {}".format(name, "." * (48 - len(name)), value) for name, value in values.items()]
    return [RULE_ARGS[0], *sorted(rows, key=str.lower), RULE_ARGS[1]]


def timers_block(rows: list[tuple[str, float, float]]) -> list[str]:
    """megatron/core/timers.py, --timing-log-option minmax (times in ms)."""
    return ["(min, max) time across ranks (ms):",
            *(f"    {(name + ' ').ljust(48, '.')}: ({lo:.2f}, {hi:.2f})" for name, lo, hi in rows)]


def validation_block(prefix: str, loss: float) -> list[str]:
    """evaluate_and_print_results: the dashes are one longer than the string,
    which ends in '| ' (trailing space); PPL caps at exp(20)."""
    string = f" validation loss at {prefix} | "
    string += "{} value: {:.6E} | ".format("lm loss", loss)
    string += "{} PPL: {:.6E} | ".format("lm loss", math.exp(min(20, loss)))
    dashes = "-" * (len(string) + 1)
    return [dashes, string, dashes]


@dataclass(frozen=True)
class Iteration:
    """The figures of one training_log line."""

    when: str
    step: int
    total: int
    samples: int
    ms: float
    tflops: float
    lr: float
    batch: int
    loss: float | None  # the mean over the interval's iterations that stepped (None: all were skipped)
    grad_norm: float | None  # the last iteration's (None: it was skipped)
    loss_scale: float = 1.0  # bf16 has no loss scaler
    skipped: int = 0


def iteration_line(it: Iteration) -> str:
    """training.training_log (--log-throughput): the loss is the mean over
    the interval's iterations that stepped, left out if none did (avg > 0.0);
    the grad norm the last iteration's, left out when fp16's scaler skipped
    it (optimizer.step returns None); bf16 has no loss scaler (1.0)."""
    loss = f" lm loss: {it.loss:.6E} |" if it.loss else ""
    norm = f" grad norm: {it.grad_norm:.3f} |" if it.grad_norm is not None else ""
    return (f" [{it.when}] iteration {it.step:8d}/{it.total:8d} | consumed samples: {it.samples:12d} |"
            f" elapsed time per iteration (ms): {it.ms:.1f} |"
            f" throughput per GPU (TFLOP/s/GPU): {it.tflops:.1f} |"
            f" learning rate: {it.lr:.6E} | global batch size: {it.batch:5d} |{loss}"
            f" loss scale: {it.loss_scale:.1f} |{norm} number of skipped iterations: {it.skipped:3d} |"
            f" number of nan iterations: {0:3d} |")


def save_lines(step: int, save: str, started: str, finished: str, shards: str,
               fmt: str = "torch_dist") -> tuple[str, str]:
    """checkpointing.save_checkpoint's first and last lines (rank 0); `started`,
    `finished`: the 2026 upstream's "[time] " prefixes, `shards` the
    " [ t 1/2, p 1/1 ]" suffix (core_v0.10.0 on), each "" where the version
    has none; `fmt` the checkpoint format (a legacy save says torch)."""
    return (f"{started}saving checkpoint at iteration {step:7d} to {save} in {fmt} format",
            f"  {finished}successfully saved checkpoint from iteration {step:7d} to {save}{shards}")


def memory_report(name: str, allocated: float, peak: float, reserved: float) -> str:
    """utils.report_memory: raw MB floats (torch allocates in 512-byte blocks,
    reserves in 2 MiB segments)."""
    def mb(n: float, block: int) -> float:
        return round(n / block) * block / MIB
    return (f"{name} memory (MB) | allocated: {mb(allocated, 512)} | max allocated: {mb(peak, 512)} | "
            f"reserved: {mb(reserved, 2 * MIB)} | max reserved: {mb(reserved, 2 * MIB)}")
