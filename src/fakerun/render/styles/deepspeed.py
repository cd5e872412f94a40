"""`--style deepspeed`: a training script built on `deepspeed.initialize`
(fp16 with the dynamic loss scaler, the run's ZeRO stage, a client AdamW and
LambdaLR), launched by torchrun, as the pinned DeepSpeed version logs it:
deepspeedai/DeepSpeed v0.14.4 (and v0.15.4, v0.16.4, v0.18.2)
deepspeed/utils/logging.py (LoggerFactory.create_logger: a StreamHandler on
sys.stdout formatted "[%(asctime)s] [%(levelname)s]
[%(filename)s:%(lineno)d:%(funcName)s] %(message)s"; log_dist's
"[Rank {}] " prefix). The file:line:function of every call, per version, is
in data/style-deepspeed.toml, read from each version's sdist.

DeepSpeed's logger writes to stdout: `log_dist`, ZeRO and the throughput timer
from rank 0 only, the accelerator and `cdb=` lines from every rank, a
checkpoint shard from the rank that writes it. The script logs the way
DeepSpeedExamples' HelloDeepSpeed does: loguru on stderr, rank 0, the loss
with 4 decimals every `steps_per_print` steps, and at the step where its
time budget (--exit-after-time) breaks the loop before it saves and exports.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from fakerun import events as ev
from fakerun.render.lines import Line
from fakerun.render.styles.deepspeed_checkpoint import CheckpointLoad, CheckpointSave, export_lines
from fakerun.render.styles.deepspeed_config import MOMENTA, PARAM_GROUPS
from fakerun.render.styles.deepspeed_engine import EngineInit
from fakerun.render.styles.deepspeed_log import DeepSpeedLog, version_table
from fakerun.render.styles.deepspeed_memory import Memory, gib
from fakerun.render.styles.routes import EventRoutes
from fakerun.world import ds_config
from fakerun.world import physics as sim
from fakerun.world.loss_scale import LossScaler, ScaleReduced, Skip, restored

TIMER_START = 2  # ThroughputTimer's start_step: the first two steps are not timed
ACCELERATOR = "Setting ds_accelerator to cuda (auto detect)"  # real_accelerator.py, at import


def timer_text(step: int, micro_step: int, running: float, current: float, allocated: float,
               peak: float) -> str:
    """ThroughputTimer.stop's line (raw float reprs)."""
    return (f"epoch=0/micro_step={micro_step}/global_step={step}, RunningAvgSamplesPerSec={running}, "
            f"CurrSamplesPerSec={current}, MemAllocated={gib(allocated)}GB, MaxMemAllocated={gib(peak)}GB")


def skip_record(skip: Skip) -> tuple[str, str]:
    """(which of update_scale's two logging calls, its message) for a skipped step."""
    head = f"[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: {int(skip.attempted)}"
    if isinstance(skip, ScaleReduced):
        return "overflow", f"{head}, reducing to {int(skip.reduced_to)}"
    return "hysteresis", f"{head}, but hysteresis is {skip.hysteresis}. Reducing hysteresis to {skip.left}"


class DeepSpeedLines(EventRoutes, DeepSpeedLog):
    """The script's and DeepSpeed's lines, through the two loggers."""

    # HelloDeepSpeed's train() returns without destroy_process_group(), and
    # DeepSpeed (0.14-0.18) does not call it for the script.
    leaves_process_group = True

    def __init__(self, width: int, tz: tzinfo | None) -> None:
        DeepSpeedLog.__init__(self, tz)
        self.saved: dict[int, str] = {}  # step -> the tag folder its save_checkpoint wrote, for a restart
        self._reset()
        self._handlers: dict[type, Callable[[Any], list[Line]]] = {
            ev.Phase: self._phase, ev.Step: self._step, ev.Validation: self._validation,
            ev.Checkpoint: self._checkpoint, ev.Export: self._export, ev.Restart: self._restart,
        }

    def _reset(self) -> None:
        """A new run (or a restart): a new process, a new engine."""
        self.scaler = LossScaler()
        self.timed: list[float] = []  # the step times the throughput timer measured
        self.timer_steps = 0  # the timer's own global_step_count
        self.global_step = 0
        self.phase_time = 0.0

    def lines(self, event: ev.Event) -> list[Line]:
        if isinstance(event, ev.RunIdentity):
            self.routed(event)
            self.v = version_table(event.identity.versions.deepspeed)
            self._reset()
            return []
        return self.routed(event) or []

    def _restart(self, e: ev.Restart) -> list[Line]:
        """A restarted worker group is new processes: a new engine, whose
        loss scaler the checkpoint restores at its first step (`_step`)."""
        self._reset()
        return []

    # -- start-up ----------------------------------------------------------
    def banner(self, when: float) -> list[Line]:
        """`import deepspeed` on every rank, then deepspeed.init_distributed():
        every rank says cdb=None, rank 0 which backend it initialises."""
        ranks = range(self.ident.world)
        imported = [when + 0.6 + 0.04 * abs(sim.gauss(self.ident.seed, "ds-import", r)) for r in ranks]
        out: list[Line] = []
        if self.v["level"] == "INFO":  # from 0.17.6 logged before the script raises the level
            for rank in ranks:
                out += self.log(imported[rank], "accelerator", ACCELERATOR, rank)
        for rank in ranks:
            out += self.log(imported[rank] + 0.35, "cdb", "cdb=None", rank)
            if rank == 0:
                out += self.log(imported[0] + 0.35, "backend",
                                "Initializing TorchBackend in DeepSpeed with backend nccl")
        return out

    # -- phases ---------------------------------------------------------------
    def _phase(self, e: ev.Phase) -> list[Line]:
        began, self.phase_time = self.phase_time or e.time, e.time
        if e.name == "init" and e.stage == "model":
            return self.script(began, "Creating Model") + self.script(e.time, "Model Creation Done")
        if e.name == "init" and e.stage == "dataset":
            return self.script(began, "Creating Datasets") + self.script(e.time, "Dataset Creation Done")
        if e.name == "train":
            return EngineInit(self, self.ident, e.time, self._load()).lines()
        return []

    def _load(self) -> CheckpointLoad | None:
        """What the script's load_checkpoint reads: the tag folder --resume
        found (its parent the load_dir, its name the tag `latest` gives), or
        for a restarted worker group the one this run saved at that step."""
        launch = self.launch
        if launch is None or not launch.resumed_step:
            return None
        step = launch.resumed_step
        folder = launch.resumed_from if launch.restart_count == 0 else self.saved.get(step)
        return CheckpointLoad(self, self.ident, folder, step) if folder else None

    # -- training ---------------------------------------------------------------
    def _step(self, e: ev.Step) -> list[Line]:
        self.global_step = e.step
        self.timer_steps += 1
        if self.timer_steps > TIMER_START:
            self.timed.append(e.step_time_s)
        out: list[Line] = []
        if self.scaler.iteration == 0 and e.step > 1:
            # A resumed run: load_checkpoint restored the scaler and skipped_steps.
            self.scaler = restored(self.ident, e.step - 1)
        skip = self.scaler.step(self.ident, e.step, e.overflow)
        if skip is not None:
            out += self.log(e.time, *skip_record(skip))
        every, skipped = self.ident.hyper.log_every, self.scaler.skipped
        if e.step % every == 0:  # engine._report_progress
            # A skipped step does not step the LR scheduler: the LR lags by `skipped`.
            lr = [sim.learning_rate(self.ident, e.step - skipped)] * PARAM_GROUPS
            out += self.dist(e.time, f"step={e.step}, skipped={skipped}, lr={lr}, mom={MOMENTA}")
        if self.timed and self.timer_steps % every == 0:  # the timer counts the steps it saw itself
            out += self.log(e.time + 0.0004, "timer", self._throughput(e))
        # The script's `if step % log_every == 0`, and the step its time budget ends the
        # loop at: DeepSpeed itself says nothing of a stop (the engine reports progress on
        # steps_per_print only; the checkpoint's tag, global_step<N>, names the step).
        if e.step % every == 0 or e.stopped:
            out += self.script(e.time + 0.0009, f"Loss: {e.loss:.4f}")
        return out

    def _throughput(self, e: ev.Step) -> str:
        """ThroughputTimer.stop: samples/s over the timed steps and this one."""
        h = self.ident.hyper
        epsilon = 1e-6 if self.v["timer_epsilon"] else 0.0  # TIME_EPSILON, from 0.15
        running = h.global_batch / (sum(self.timed) / len(self.timed))
        return timer_text(self.timer_steps, self.timer_steps * h.grad_accum, running,
                          h.global_batch / (e.step_time_s + epsilon), Memory(self.ident).steady(),
                          sim.memory_bytes(self.ident, 0, e.step)[0])

    def _validation(self, e: ev.Validation) -> list[Line]:
        # DeepSpeed-Chat's evaluation print, through the script's logger.
        return self.script(e.time, f"ppl: {e.val_ppl}, loss: {e.val_loss}")

    # -- saving ---------------------------------------------------------------
    def _checkpoint(self, e: ev.Checkpoint) -> list[Line]:
        """model_engine.save_checkpoint(save_dir): tag global_step<N>."""
        save_dir = os.path.dirname(e.path.rstrip("/")) or "."
        self.saved[e.step] = f"{save_dir}/{ds_config.tag(e.step)}"
        saved = CheckpointSave(self, self.ident, e, save_dir, ds_config.tag(e.step)).lines()
        return saved + self.script(e.time, f"Saved model to {save_dir}")

    def _export(self, e: ev.Export) -> list[Line]:
        return export_lines(self, self.ident, e, self.global_step)
