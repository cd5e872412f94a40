"""`--style megatron`: what Megatron-LM's pretrain_gpt.py prints under
torchrun, as the pinned megatron-core prints it: NVIDIA/Megatron-LM
core_v0.10.0 (and core_v0.8.0, core_v0.9.0, core_v0.15.0)
megatron/training/training.py (training_log's iteration line,
evaluate_and_print_results' validation block), megatron/training/utils.py
(print_rank_0, print_rank_last, report_memory) and
megatron/training/checkpointing.py (save_checkpoint's lines).

Everything goes to stdout (plain prints, and megatron.core's loggers through
Megatron's CustomHandler, which writes to stdout). Who prints is Megatron's:
print_rank_0 is global rank 0, print_rank_last (iteration lines, validation,
timers) the last rank, and the parameter count and memory report every
data-parallel rank 0. Ranks are laid out as the simulation lays them out
(tensor-parallel fastest, then pipeline, then data parallel), so a rank's
memory report agrees with its GPU in nvidia-smi.

Choices where the run leaves Megatron a choice: bf16 where the GPU has it
(loss scale 1.0, no loss scaler, so no iteration is ever skipped), else fp16
with --initial-loss-scale 65536 and the default dynamic scaler (hysteresis
2, window 1000: world/loss_scale.py, which DynamicGradScaler matches), whose
overflows skip iterations; the distributed optimizer,
--log-throughput on, --exit-signal-handler on, eval and save every epoch
(Megatron's default interval, 1000, past the end for a one-epoch run);
--exit-after-time is --exit-duration-in-mins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from fakerun import events as ev
from fakerun import texts
from fakerun.render.lines import STDOUT, Line
from fakerun.render.styles.megatron_args import INITIAL_LOSS_SCALE, arguments
from fakerun.render.styles.megatron_formats import (
    Iteration,
    args_block,
    iteration_line,
    save_lines,
    validation_block,
)
from fakerun.render.styles.megatron_launch import Launch, load_lines, load_seconds
from fakerun.render.styles.megatron_print import MegatronPrint
from fakerun.render.styles.routes import EventRoutes
from fakerun.world import physics as sim
from fakerun.world.loss_scale import LossScaler

SETUP_TIMERS = ("model-and-optimizer-setup", "train/valid/test-data-iterators-setup")


@dataclass
class _Interval:
    """Iterations since the last log line (Megatron averages the loss over
    those that stepped, and counts those its fp16 scaler skipped)."""

    losses: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    skipped: int = 0
    last_skipped: bool = False


class MegatronLines(EventRoutes, MegatronPrint):
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
        self.said: Launch | None = None
        self.marks: dict[str, float] = {}  # when each setup stage finished
        self.window = _Interval()
        self.scaler = LossScaler(scale=float(INITIAL_LOSS_SCALE))
        self.memory_reported = False
        self.saves = 0
        self.done = False  # "[after training is done]" printed
        self.held: list[Line] = []  # the final evaluation, printed after the final save
        self.in_loop_at = -1  # the step of train()'s last evaluation on its interval
        self.saved_at = -1  # the step of the last save
        self.stopped: ev.Step | None = None  # the iteration --exit-duration-in-mins ended training at

    def lines(self, event: ev.Event) -> list[Line]:
        return self.routed(event) or []

    # -- start-up (before the first collective) ---------------------------
    def banner(self, when: float) -> list[Line]:
        self._reset(when)
        i, f = self.ident, self.flavour
        shapes = self._launch.shapes(i, self._data)
        p, h = i.parallel, i.hyper
        datasets = f"{self._data['script']['cwd']}/megatron/core/datasets"
        vocab, padded = shapes.tokenizer_vocab, shapes.padded_vocab
        compile_s = self._data["startup"]["index_builder_seconds"]
        self.args = arguments(i, shapes, self._launch.cadence, self._launch.args(i.versions.megatron))
        bf16 = i.gpu.bf16  # arguments.py validate_args: what it says of the half type
        texts_ = [
            *(["accumulate and all-reduce gradients in fp32 for bfloat16 data type."] if bf16 else
              ["WARNING: Setting args.check_for_nan_in_loss_and_grad to False since dynamic loss scaling is "
               "being used"]),
            f"using torch.{'bfloat16' if bf16 else 'float16'} for parameters ...",
            *args_block(self.args),
            self._core_log("num_microbatches_calculator",
                           f"setting number of {f.microbatches} to constant {h.grad_accum}"),
            f"> building {self.args['tokenizer_type']} tokenizer ...",
            f" > padded vocab (size: {vocab}) with {padded - vocab} dummy tokens (new size: {padded})",
        ]
        # global_vars.py _set_tensorboard_writer, on the last rank: where the writer lives (tensorboard/)
        tensorboard = bool(self.args.get("tensorboard_dir"))
        setting = self._out(["> setting tensorboard ..."], self.last) if tensorboard else []
        started = [
            "> initializing torch distributed ...",
            f"> initialized tensor model parallel with size {p.tp}",
            f"> initialized pipeline model parallel with size {p.pp}",
            f"> setting random seeds to {self.args['seed']} ...",
            "> compiling dataset index builder ...",
            f"make: Entering directory '{datasets}'", "make: Nothing to be done for 'default'.",
            f"make: Leaving directory '{datasets}'",
            f">>> done with dataset index builder. Compilation time: {compile_s:.3f} seconds",
        ]
        return [*self._out(texts_), *setting, *self._out(started)]

    # -- setup phases -------------------------------------------------------
    def _phase(self, e: ev.Phase) -> list[Line]:
        if e.name == "init":
            self.marks[e.stage] = e.time
            stage = {"nccl": self._initialized, "model": self._model_built, "dataset": self._data_built}
            return stage[e.stage](e.time) if e.stage in stage else []
        if e.name == "train":
            return [self._datetime("before the start of training step", e.time)]
        if e.name == "validation" and self._post_training(e.step):
            return [] if self.stopped else self._training_done(e.time)
        if e.name == "checkpoint":
            return self._saving(e)
        if e.name == "export":  # after --exit-duration-in-mins the program has exited already
            return [] if self.stopped else self._training_done(e.time) + self._release_held()
        return []

    def _initialized(self, when: float) -> list[Line]:
        return [*self._out([f"time to initialize megatron (seconds): {when - self.start:.3f}"]),
                self._datetime("after megatron is initialized", when)]

    def _model_built(self, when: float) -> list[Line]:
        shapes = self._launch.shapes(self.ident, self._data)
        counts = [Line(" > number of parameters on (tensor, pipeline) model parallel rank "
                       f"{self.coordinates(r)}: {shapes.shard_params(self.coordinates(r)[1])}", STDOUT, r)
                  for r in self.dp_zero()]
        decay = f"> learning rate decay style: {self.ident.hyper.decay}"
        scheduler = self._core_log("optimizer_param_scheduler", decay) if self.flavour.core_logger else decay
        return [*self._out(["building GPT model ..."]), *counts, *self._out([scheduler]), *self._loaded(when),
                self._datetime("after model, optimizer, and learning rate scheduler are built", when)]

    def _loaded(self, when: float) -> list[Line]:
        """setup_model_and_optimizer's load_checkpoint under --load, and its timer."""
        launch = self._launch
        if launch.load is None:
            return []
        seconds = load_seconds(self.ident, launch, when - self.marks.get("nccl", self.start))
        timer = self._timers([("load-checkpoint", 1e3 * seconds)], 0)
        return self._out(load_lines(launch, self.ident)) + timer

    @property
    def _launch(self) -> Launch:
        if self.said is None:
            self.said = Launch.of(self.ident, self.launch)
        return self.said

    def _data_built(self, when: float) -> list[Line]:
        h = self.ident.hyper
        every = self._launch.cadence.eval_interval
        per_eval = h.eval_batches * h.global_batch
        # get_train_valid_test_num_samples: train_iters // eval_interval + 1 evaluations
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
                *self._timers(setup, 0), *self._out(["training ..."])]

    # -- training -------------------------------------------------------------
    def _step(self, e: ev.Step) -> list[Line]:
        if not math.isfinite(e.loss):
            return []  # the NaN check stops the script before this iteration logs
        if e.stopped:
            self.stopped = e
        skipped = not self.ident.gpu.bf16 and self.scaler.update(e.overflow) is not None
        self.window.skipped += skipped
        self.window.last_skipped = skipped
        if not skipped:
            self.window.losses.append(e.loss)
        self.window.times.append(e.step_time_s)
        if e.step % self.ident.hyper.log_every:
            return []
        line = Line(self._iteration(e), STDOUT, self.last)
        self.window = _Interval()
        return [line, *self._first_memory_report(e.step)]

    def _iteration(self, e: ev.Step) -> str:
        """training_log's line for the iterations since the previous one."""
        h, w = self.ident.hyper, self.window
        per_iter = sum(w.times) / len(w.times)
        return iteration_line(Iteration(
            when=self._time(e.time), step=e.step, total=h.total_steps, samples=e.step * h.global_batch,
            ms=per_iter * 1000.0, tflops=sim.throughput(self.ident, per_iter).tflops_per_gpu, lr=e.lr,
            batch=h.global_batch, loss=sum(w.losses) / len(w.losses) if w.losses else None,
            grad_norm=None if w.last_skipped else e.grad_norm,
            loss_scale=1.0 if self.ident.gpu.bf16 else self.scaler.scale, skipped=w.skipped))

    def _first_memory_report(self, step: int) -> list[Line]:
        """After the first logged iteration: rank 0's theoretical footprint, then
        every data-parallel rank 0's allocator figures."""
        if self.memory_reported:
            return []
        self.memory_reported = True
        theory = self._launch.shapes(self.ident, self._data).theoretical_memory(self.flavour.block)
        return self._out(theory) + self._memory(f"(after {step} iterations)", step)

    # -- validation -------------------------------------------------------------
    def _post_training(self, step: int) -> bool:
        """A validation off the eval interval, or the second at a step, is
        the one after training ended."""
        return not self._launch.cadence.in_loop_eval(step) or step == self.in_loop_at

    def _validation(self, e: ev.Validation) -> list[Line]:
        if not self._post_training(e.step):
            self.in_loop_at = e.step
            return self._evaluated(f"iteration {e.step}", e)
        if self.stopped:
            return []  # train() exits the program: pretrain() never gets to its final evaluation
        h = self.ident.hyper
        verbose = [f"Evaluating on {h.eval_batches * h.global_batch} samples",
                   *(f"Evaluating iter {k}/{h.eval_batches}" for k in range(1, h.eval_batches + 1))]
        final = self._out(verbose) + self._evaluated(f"iteration {e.step} on validation set", e)
        if self.saved_at == e.step or not self.ident.hyper.saves_after(e.step):
            return final  # after the final save (or with none), as pretrain() runs it
        self.held = final  # the final evaluation comes after the final save in Megatron's pretrain()
        return []

    def _evaluated(self, prefix: str, e: ev.Validation) -> list[Line]:
        return self._timers([("evaluate", 1e3 * e.eval_time_s)], e.step) + self._out(
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
        """A save off --save-interval before the last iteration: the
        scheduler's SIGTERM (--exit-signal-handler saves, then exits)."""
        return not self._launch.cadence.in_loop_save(step) and step < self.ident.hyper.total_steps

    def _saving(self, e: ev.Phase) -> list[Line]:
        out = []
        launch = self._launch
        if not self.stopped and not self._signalled(e.step) and not launch.cadence.in_loop_save(e.step):
            out += self._training_done(e.time)  # pretrain() saves what train() left unsaved
        saving, _ = save_lines(e.step, launch.save, self._stamp(e.time), "", "", launch.fmt.name)
        out += self._out([saving])
        if launch.fmt.dist and launch.fmt.distributed_optimizer:  # said even under --no-save-optim
            out += self._out([f"Storing distributed optimizer sharded state of type {launch.fmt.sharding}"])
        if self.flavour.save_memory and self.saves < 3:
            out += self._memory(f"(before save_checkpoint for iteration {e.step})", e.step)
        return out

    def _checkpoint(self, e: ev.Checkpoint) -> list[Line]:
        p, launch = self.ident.parallel, self._launch
        suffix = f" [ t 1/{p.tp}, p 1/{p.pp} ]" if self.flavour.shard_suffix else ""
        _, saved = save_lines(e.step, launch.save, "", self._stamp(e.time), suffix, launch.fmt.name)
        out = self._out([saved])
        if self.flavour.save_memory and self.saves < 3:
            out += self._memory(f"(after save_checkpoint for iteration {e.step})", e.step)
        self.saves += 1
        self.saved_at = e.step
        out += self._timers([("save-checkpoint", 1e3 * e.seconds)], e.step)
        if self.stopped is not None:
            out.append(self._datetime(self._exit_duration(), e.time))
        elif self._signalled(e.step):
            out.append(self._datetime("exiting program after receiving SIGTERM.", e.time))
        return out + self._release_held()

    def _exit_duration(self) -> str:
        """checkpoint_and_decide_exit under --exit-duration-in-mins (training.py,
        core_r0.10.0): after the iteration that ran past it, save, then say so
        with train_time, the minutes since _TRAIN_START_TIME (the script's
        start) as a bare float, and sys.exit: no "after training is done", no
        final evaluation. The iteration itself logs only on --log-interval."""
        return f"exiting program after {(self.stopped.time - self.start) / 60.0} minutes"

    def _stamp(self, when: float) -> str:
        """The 2026 upstream's "[time] " before the save lines."""
        return f"[{self._time(when)}] " if self.flavour.micro else ""
