"""Megatron-LM's event file (NVIDIA/Megatron-LM core_v0.8.0, core_v0.9.0,
core_v0.10.0, core_v0.15.0): training/global_vars.py _set_tensorboard_writer
makes `SummaryWriter(log_dir=args.tensorboard_dir, max_queue=
args.tensorboard_queue_size)` on the last rank alone, as Megatron initialises
(after the tokenizer, before torch.distributed); train() begins with
initialize.write_args_to_tensorboard (every argument as text, at
args.iteration); training.training_log, every --tensorboard-log-interval
(default 1) iterations: `learning-rate`, `batch-size`, each loss of the
iteration's loss_dict (`lm loss`), `loss-scale` (unless
--no-log-loss-scale-to-tensorboard), `world-size` (with
--log-world-size-to-tensorboard), `grad-norm` (not on an iteration the fp16
scaler skipped: its optimizer step returns None), each also `<tag> vs
samples` at the consumed samples; at each --log-interval, with
--log-timers-to-tensorboard, `iteration-time` (seconds) and `throughput`;
evaluate_and_print_results: `lm loss validation` (and `... vs samples`),
`lm loss validation ppl` with --log-validation-ppl-to-tensorboard.

The figures are those the iteration lines print (render/styles/megatron.py):
the LR, the global batch, the loss scale after the step's update, the
interval's mean iteration time. Not written: --log-memory-to-tensorboard's
allocator counters and timers.write's per-timer times (fakerun models no
per-phase timers of an iteration)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fakerun import events as ev
from fakerun import texts
from fakerun.render.styles.megatron_args import INITIAL_LOSS_SCALE, arguments
from fakerun.render.styles.megatron_launch import Launch
from fakerun.render.styles.routes import EventRoutes
from fakerun.tensorboard.choice import Board
from fakerun.tensorboard.writes import Open, Scalar, Text, Write
from fakerun.world import physics as sim
from fakerun.world.loss_scale import LossScaler
from fakerun.world.megatron import launch_args


class MegatronBoard(EventRoutes):
    def __init__(self, board: Board, script_args: tuple[str, ...]) -> None:
        self.board = board
        flags = launch_args(script_args)
        self.interval = max(1, int(flags.get("tensorboard_log_interval", 1)))
        self.timers = flags.get("log_timers_to_tensorboard") is True
        self.ppl = flags.get("log_validation_ppl_to_tensorboard") is True
        self.loss_scale = "no_log_loss_scale_to_tensorboard" not in flags
        self.world_size = flags.get("log_world_size_to_tensorboard") is True
        self._handlers: dict[type, Callable[[Any], list[Write]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.Validation: self._validation}
        self._restart()

    def _restart(self) -> None:
        self.opened = False
        self.scaler = LossScaler(scale=float(INITIAL_LOSS_SCALE))
        self.times: list[float] = []  # the iteration times since the last --log-interval
        self.in_loop_at = -1
        self.stopped = False

    def writes(self, e: ev.Event) -> list[Write]:
        if isinstance(e, ev.RunStarted):
            self.launched(e)
            self._restart()
            return []
        return self.routed(e) or []

    def _phase(self, e: ev.Phase) -> list[Write]:
        opened = [] if self.opened else [Open(self.board.logdir, e.time)]  # initialize_megatron's
        self.opened = True
        if e.name != "train":
            return opened
        launch = Launch.of(self.ident, self.launch)
        iteration = launch.resumed_step
        return [*opened, *(Text(name, str(value), iteration, e.time) for name, value in self._args(launch))]

    def _args(self, launch: Launch) -> list[tuple[str, Any]]:
        """The namespace as the style's arguments block shows it (its
        tensorboard_dir too: the launch line's, or fakerun's --tensorboard)."""
        shapes = launch.shapes(self.ident, texts.load("style-megatron"))
        given = launch.args(self.ident.versions.megatron)
        return sorted(arguments(self.ident, shapes, launch.cadence, given).items())

    def _step(self, e: ev.Step) -> list[Write]:
        if not math.isfinite(e.loss):
            return []  # the NaN check stops the script before this iteration logs
        self.stopped = self.stopped or e.stopped
        bf16 = self.ident.gpu.bf16
        skipped = not bf16 and self.scaler.update(e.overflow) is not None
        self.times.append(e.step_time_s)
        h = self.ident.hyper
        out: list[Write] = []
        if e.step % self.interval == 0:
            values = {"learning-rate": e.lr, "batch-size": float(h.global_batch), "lm loss": e.loss}
            if self.loss_scale:
                values["loss-scale"] = 1.0 if bf16 else self.scaler.scale
            if self.world_size:
                values["world-size"] = float(self.ident.world)
            if not skipped:
                values["grad-norm"] = e.grad_norm
            out += self._with_samples(values, e.step, e.time)
        if e.step % h.log_every == 0:
            per_iter = sum(self.times) / len(self.times)
            self.times = []
            if self.timers:
                tflops = sim.throughput(self.ident, per_iter).tflops_per_gpu
                out += [Scalar("iteration-time", per_iter, e.step, e.time),
                        Scalar("throughput", tflops, e.step, e.time)]
        return out

    def _with_samples(self, values: dict[str, float], step: int, when: float) -> list[Write]:
        """Each tag at the iteration, then `<tag> vs samples` at the consumed samples."""
        samples = step * self.ident.hyper.global_batch
        out: list[Write] = []
        for tag, value in values.items():
            out += [Scalar(tag, value, step, when), Scalar(f"{tag} vs samples", value, samples, when)]
        return out

    def _validation(self, e: ev.Validation) -> list[Write]:
        """train()'s evaluations on the interval, and pretrain()'s final one
        (none after --exit-duration-in-mins ended training: the program exits)."""
        cadence = Launch.of(self.ident, self.launch).cadence
        final = not cadence.in_loop_eval(e.step) or e.step == self.in_loop_at
        if not final:
            self.in_loop_at = e.step
        elif self.stopped:
            return []
        values = {"lm loss validation": e.val_loss}
        if self.ppl:
            values["lm loss validation ppl"] = math.exp(min(20, e.val_loss))
        return self._with_samples(values, e.step, e.time)
