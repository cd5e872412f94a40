"""`--style megatron`: what Megatron-LM's pretrain_gpt.py prints under
torchrun, as the pinned megatron-core prints it (reference/log-formats.md §6).

Everything goes to stdout (plain prints, and megatron.core's loggers through
Megatron's CustomHandler, which writes to stdout). Who prints is Megatron's:
print_rank_0 is global rank 0, print_rank_last (iteration lines, validation,
timers) the last rank, and the parameter count and memory report every
data-parallel rank 0. Ranks are laid out as the simulation lays them out
(tensor-parallel fastest, then pipeline, then data parallel), so a rank's
memory report agrees with its GPU in nvidia-smi.

Choices where the run leaves Megatron a choice: bf16 (loss scale 1.0, no
loss scaler, so no iteration is ever skipped), the distributed optimizer,
--log-throughput on, --exit-signal-handler on, eval and save every epoch
(Megatron's default interval, 1000, past the end for a one-epoch run).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from fakerun import events as ev
from fakerun import texts
from fakerun.render.lines import STDOUT, Line
from fakerun.render.styles.megatron_args import Shapes, arguments, launch_args
from fakerun.render.styles.routes import EventRoutes
from fakerun.world import physics as sim
from fakerun.world.memory import state_bytes

MIB = 1024 * 1024
DEFAULT_INTERVAL = 1000  # --eval-interval's default
RULE_ARGS = ("------------------------ arguments ------------------------",
             "-------------------- end of arguments ---------------------")
SHARDING = "fully_sharded_model_space"  # --ckpt-fully-parallel-save
SETUP_TIMERS = ("model-and-optimizer-setup", "train/valid/test-data-iterators-setup")


@dataclass(frozen=True)
class Flavour:
    """What differs between the pinned megatron-core versions."""

    micro: bool  # 2026 upstream (0.15): microsecond timestamps, timestamped save lines
    shard_suffix: bool  # the save line's "[ t 1/2, p 1/1 ]" (2025+)
    core_logger: bool  # 0.9+: the LR scheduler lives in megatron.core and logs
    microbatches: str  # 0.8 says "micro-batches"
    block: bool  # theoretical memory says "transformer block" (else "layers")
    save_memory: bool  # memory reports around the first saves

    @classmethod
    def of(cls, version: str) -> Flavour:
        minor = int(version.split(".")[1])
        return cls(micro=minor >= 15, shard_suffix=minor >= 15, core_logger=minor >= 9,
                   microbatches="micro-batches" if minor < 9 else "microbatches", block=minor >= 15,
                   save_memory=minor >= 15)


def interval(hyper: Any) -> int:
    """--eval-interval and --save-interval: every epoch; a one-epoch run keeps
    Megatron's default (or the next power of ten past the end)."""
    if hyper.epochs > 1:
        return hyper.steps_per_epoch
    return max(DEFAULT_INTERVAL, 10 ** len(str(hyper.total_steps)))


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
    loss: float
    grad_norm: float


def iteration_line(it: Iteration) -> str:
    """training.training_log (bf16, --log-throughput): the loss is the
    interval's mean, the grad norm the last iteration's; bf16 has no loss
    scaler, so nothing is ever skipped."""
    return (f" [{it.when}] iteration {it.step:8d}/{it.total:8d} | consumed samples: {it.samples:12d} |"
            f" elapsed time per iteration (ms): {it.ms:.1f} |"
            f" throughput per GPU (TFLOP/s/GPU): {it.tflops:.1f} |"
            f" learning rate: {it.lr:.6E} | global batch size: {it.batch:5d} | lm loss: {it.loss:.6E} |"
            f" loss scale: {1.0:.1f} | grad norm: {it.grad_norm:.3f} | number of skipped iterations: {0:3d} |"
            f" number of nan iterations: {0:3d} |")


def save_lines(step: int, save: str, started: str, finished: str, shards: str) -> tuple[str, str]:
    """checkpointing.save_checkpoint's first and last lines (rank 0); `started`,
    `finished`: the 2026 upstream's "[time] " prefixes, `shards` the
    " [ t 1/2, p 1/1 ]" suffix, each "" where the version has none."""
    return (f"{started}saving checkpoint at iteration {step:7d} to {save} in torch_dist format",
            f"  {finished}successfully saved checkpoint from iteration {step:7d} to {save}{shards}")


def memory_report(name: str, allocated: float, peak: float, reserved: float) -> str:
    """utils.report_memory: raw MB floats (torch allocates in 512-byte blocks,
    reserves in 2 MiB segments)."""
    def mb(n: float, block: int) -> float:
        return round(n / block) * block / MIB
    return (f"{name} memory (MB) | allocated: {mb(allocated, 512)} | max allocated: {mb(peak, 512)} | "
            f"reserved: {mb(reserved, 2 * MIB)} | max reserved: {mb(reserved, 2 * MIB)}")


@dataclass
class _Interval:
    """Iterations since the last log line (Megatron averages the loss over them)."""

    losses: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


class MegatronLines(EventRoutes):
    def __init__(self, width: int, tz: tzinfo | None) -> None:
        self.tz = tz
        self._data = texts.load("style-megatron")
        self._reset(0.0)
        self._handlers: dict[type, Callable[[Any], list[Line]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.Validation: self._validation,
            ev.Checkpoint: self._checkpoint,
        }

    def _reset(self, start: float) -> None:
        self.start = start
        self.args: dict[str, Any] = {}
        self.marks: dict[str, float] = {}  # when each setup stage finished
        self.window = _Interval()
        self.memory_reported = False
        self.saves = 0
        self.done = False  # "[after training is done]" printed
        self.validated = -1  # the step of the last validation
        self.held: list[Line] = []  # the final evaluation, printed after the final save

    def lines(self, event: Any) -> list[Line]:
        return self.routed(event) or []

    # -- who prints -------------------------------------------------------
    @property
    def flavour(self) -> Flavour:
        return Flavour.of(self.ident.versions.megatron)

    @property
    def last(self) -> int:
        return self.ident.world - 1

    def dp_zero(self) -> list[int]:
        """Global ranks with data-parallel rank 0, in the simulation's layout."""
        p = self.ident.parallel
        return list(range(p.tp * p.pp))

    @staticmethod
    def _out(texts_: list[str], rank: int = 0) -> list[Line]:
        return [Line(t, STDOUT, rank) for t in texts_]

    def _core_log(self, module: str, message: str) -> str:
        """A megatron.core logger line through Megatron's CustomHandler."""
        return f"INFO:megatron.core.{module}:{message}"

    def _time(self, when: float) -> str:
        """datetime.now() as Megatron formats it (2026 upstream adds microseconds)."""
        fmt = "%Y-%m-%d %H:%M:%S.%f" if self.flavour.micro else "%Y-%m-%d %H:%M:%S"
        return datetime.fromtimestamp(when, self.tz).strftime(fmt)

    def _datetime(self, what: str, when: float) -> Line:
        """training.print_datetime (note the trailing space)."""
        return Line(f"[{what}] datetime: {self._time(when)} ", STDOUT, 0)

    def _skew_ms(self) -> float:
        """Ranks leave a barrier within one barrier latency of each other: the
        spread between a timer's min and max across ranks."""
        return 1e3 * 30e-6 * math.log2(max(2, self.ident.world))

    def _timers(self, rows: list[tuple[str, float]]) -> list[Line]:
        skew = self._skew_ms()
        return self._out(timers_block([(name, max(0.0, ms - skew), ms) for name, ms in rows]), self.last)

    # -- start-up (before the first collective) ---------------------------
    def banner(self, when: float) -> list[Line]:
        self._reset(when)
        i, f = self.ident, self.flavour
        shapes = Shapes.of(i, self._data)
        p, h = i.parallel, i.hyper
        datasets = f"{self._data['script']['cwd']}/megatron/core/datasets"
        vocab, padded = shapes.tokenizer_vocab, shapes.padded_vocab
        compile_s = self._data["startup"]["index_builder_seconds"]
        self.args = arguments(i, shapes, interval(h), launch_args(self.launch.args) if self.launch else {})
        texts_ = [
            "accumulate and all-reduce gradients in fp32 for bfloat16 data type.",
            "using torch.bfloat16 for parameters ...",
            *args_block(self.args),
            self._core_log("num_microbatches_calculator",
                           f"setting number of {f.microbatches} to constant {h.grad_accum}"),
            f"> building {self.args['tokenizer_type']} tokenizer ...",
            f" > padded vocab (size: {vocab}) with {padded - vocab} dummy tokens (new size: {padded})",
            "> initializing torch distributed ...",
            f"> initialized tensor model parallel with size {p.tp}",
            f"> initialized pipeline model parallel with size {p.pp}",
            f"> setting random seeds to {self.args['seed']} ...",
            "> compiling dataset index builder ...",
            f"make: Entering directory '{datasets}'", "make: Nothing to be done for 'default'.",
            f"make: Leaving directory '{datasets}'",
            f">>> done with dataset index builder. Compilation time: {compile_s:.3f} seconds",
        ]
        return self._out(texts_)

    # -- setup phases -------------------------------------------------------
    def _phase(self, e: ev.Phase) -> list[Line]:
        if e.name == "init":
            self.marks[e.stage] = e.time
            stage = {"nccl": self._initialized, "model": self._model_built, "dataset": self._data_built}
            return stage[e.stage](e.time) if e.stage in stage else []
        if e.name == "train":
            return [self._datetime("before the start of training step", e.time)]
        if e.name == "validation" and self._post_training(e.step):
            return self._training_done(e.time)
        if e.name == "checkpoint":
            return self._saving(e)
        if e.name == "export":
            return self._training_done(e.time) + self._release_held()
        return []

    def _initialized(self, when: float) -> list[Line]:
        return [*self._out([f"time to initialize megatron (seconds): {when - self.start:.3f}"]),
                self._datetime("after megatron is initialized", when)]

    def _model_built(self, when: float) -> list[Line]:
        shapes = Shapes.of(self.ident, self._data)
        p = self.ident.parallel
        counts = [Line(" > number of parameters on (tensor, pipeline) model parallel rank "
                       f"({r % p.tp}, {r // p.tp}): {shapes.shard_params(r // p.tp)}", STDOUT, r)
                  for r in self.dp_zero()]
        decay = "> learning rate decay style: cosine"
        scheduler = self._core_log("optimizer_param_scheduler", decay) if self.flavour.core_logger else decay
        return [*self._out(["building GPT model ..."]), *counts, *self._out([scheduler]),
                self._datetime("after model, optimizer, and learning rate scheduler are built", when)]

    def _data_built(self, when: float) -> list[Line]:
        h = self.ident.hyper
        every = interval(h)
        per_eval = h.eval_batches * h.global_batch
        sizes = (h.total_steps * h.global_batch, (h.total_steps // every + 1) * per_eval, per_eval)
        built = self.marks.get("model", when)
        setup = [(SETUP_TIMERS[0], 1e3 * (built - self.marks.get("nccl", self.start))),
                 (SETUP_TIMERS[1], 1e3 * (when - built))]
        return [*self._out(["> building train, validation, and test datasets ...",
                            " > datasets target sizes (minimum size):", f"    train:      {sizes[0]}",
                            f"    validation: {sizes[1]}", f"    test:       {sizes[2]}",
                            "> building train, validation, and test datasets for GPT ...",
                            "> finished creating GPT datasets ..."]),
                self._datetime("after dataloaders are built", when), *self._out(["done with setup ..."]),
                *self._timers(setup), *self._out(["training ..."])]

    # -- training -------------------------------------------------------------
    def _step(self, e: ev.Step) -> list[Line]:
        if not math.isfinite(e.loss):
            return []  # the NaN check stops the script before this iteration logs
        self.window.losses.append(e.loss)
        self.window.times.append(e.step_time_s)
        if e.step % self.ident.hyper.log_every:
            return []
        line = Line(self._iteration(e), STDOUT, self.last)
        self.window = _Interval()
        return [line, *self._first_memory_report(e.step)]

    def _iteration(self, e: ev.Step) -> str:
        """training_log's line for the iterations since the previous one."""
        h = self.ident.hyper
        per_iter = sum(self.window.times) / len(self.window.times)
        return iteration_line(Iteration(
            when=self._time(e.time), step=e.step, total=h.total_steps, samples=e.step * h.global_batch,
            ms=per_iter * 1000.0, tflops=sim.throughput(self.ident, per_iter).tflops_per_gpu, lr=e.lr,
            batch=h.global_batch, loss=sum(self.window.losses) / len(self.window.losses),
            grad_norm=e.grad_norm))

    def _first_memory_report(self, step: int) -> list[Line]:
        """After the first logged iteration: rank 0's theoretical footprint, then
        every data-parallel rank 0's allocator figures."""
        if self.memory_reported:
            return []
        self.memory_reported = True
        theory = Shapes.of(self.ident, self._data).theoretical_memory(self.flavour.block)
        return self._out(theory) + self._memory(f"(after {step} iterations)")

    def _memory(self, name: str) -> list[Line]:
        states = sum(state_bytes(self.ident.model, self.ident.parallel).values())
        out = []
        for r in self.dp_zero():
            peak, reserved = sim.memory_bytes(self.ident, r)
            out.append(Line(f"[Rank {r}] {memory_report(name, states, peak, reserved)}", STDOUT, r))
        return out

    # -- validation -------------------------------------------------------------
    def _post_training(self, step: int) -> bool:
        """A validation off the eval interval is the one after training ended."""
        return step % interval(self.ident.hyper) != 0

    def _validation(self, e: ev.Validation) -> list[Line]:
        self.validated = e.step
        if not self._post_training(e.step):
            return self._evaluated(f"iteration {e.step}", e)
        # The final evaluation comes after the final save in Megatron's pretrain().
        h = self.ident.hyper
        verbose = [f"Evaluating on {h.eval_batches * h.global_batch} samples",
                   *(f"Evaluating iter {k}/{h.eval_batches}" for k in range(1, h.eval_batches + 1))]
        self.held = self._out(verbose) + self._evaluated(f"iteration {e.step} on validation set", e)
        return []

    def _evaluated(self, prefix: str, e: ev.Validation) -> list[Line]:
        return self._timers([("evaluate", 1e3 * e.eval_time_s)]) + self._out(
            validation_block(prefix, e.val_loss), self.last)

    def _release_held(self) -> list[Line]:
        held, self.held = self.held, []
        return held

    def _training_done(self, when: float) -> list[Line]:
        if self.done:
            return []
        self.done = True
        return [self._datetime("after training is done", when)]

    # -- checkpoints --------------------------------------------------------------
    def _signalled(self, step: int) -> bool:
        """A save with no validation before it: the scheduler's SIGTERM
        (--exit-signal-handler saves, then exits)."""
        return self.validated != step

    def _saving(self, e: ev.Phase) -> list[Line]:
        out = []
        if not self._signalled(e.step) and e.step % interval(self.ident.hyper):
            out += self._training_done(e.time)  # pretrain() saves what train() left unsaved
        saving, _ = save_lines(e.step, self._save_dir(), self._stamp(e.time), "", "")
        out += self._out([saving, f"Storing distributed optimizer sharded state of type {SHARDING}"])
        if self.flavour.save_memory and self.saves < 3:
            out += self._memory(f"(before save_checkpoint for iteration {e.step})")
        return out

    def _checkpoint(self, e: ev.Checkpoint) -> list[Line]:
        p = self.ident.parallel
        suffix = f" [ t 1/{p.tp}, p 1/{p.pp} ]" if self.flavour.shard_suffix else ""
        _, saved = save_lines(e.step, self._save_dir(e.path), "", self._stamp(e.time), suffix)
        out = self._out([saved])
        if self.flavour.save_memory and self.saves < 3:
            out += self._memory(f"(after save_checkpoint for iteration {e.step})")
        self.saves += 1
        out += self._timers([("save-checkpoint", 1e3 * e.seconds)])
        if self._signalled(e.step):
            out.append(self._datetime("exiting program after receiving SIGTERM.", e.time))
        return out + self._release_held()

    def _stamp(self, when: float) -> str:
        """The 2026 upstream's "[time] " before the save lines."""
        return f"[{self._time(when)}] " if self.flavour.micro else ""

    def _save_dir(self, path: str = "") -> str:
        """--save: the run's checkpoint root (where fakerun writes it, when it does)."""
        path = path.rstrip("/")
        if "/checkpoint-" in path:
            return path.rsplit("/checkpoint-", 1)[0]
        return str(self.args.get("save", f"checkpoints/{self.ident.slug}"))
