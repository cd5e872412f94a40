"""The simulated training script every rank runs: init, the training loop
with validation and a checkpoint at each epoch's end, export, summary.

A rank reports results (loss, grad norm, telemetry) and how long its work
took in simulated time; its communicator paces that work against the wall
clock (`--speed`, rank/pacing.py). All text is rendered from the resulting
events, never printed here.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from typing import Any

from fakerun.config.options import RunConfig
from fakerun.protocol import tags
from fakerun.protocol.messages import Telemetry
from fakerun.rank.communicator import Communicator
from fakerun.rank.faults import Faults, ScriptFailed, script_text
from fakerun.rank.pacing import Pacer
from fakerun.world import hardware, pace
from fakerun.world import physics as sim
from fakerun.world.identity import Identity

# The scripts that take Slurm's warning before the time limit (SIGUSR1) when
# srun starts them, one task a rank: fakerun's own train.py (the torchrun
# style) saves a checkpoint at the next step and leaves, as scripts written for
# Slurm do. The others install no SIGUSR1 handler and die of it: transformers'
# Trainer and DeepSpeed have none, and Megatron's --exit-signal-handler listens
# for SIGTERM (megatron/training/global_vars.py _set_signal_handler:
# DistributedSignalHandler(), whose default is signal.SIGTERM). Lightning's
# SLURMEnvironment auto-requeue saves and trains on (RunConfig.requeues,
# _requeue below).
TAKES_REQUEUE_SIGNAL = frozenset({"torchrun"})


@dataclass
class Script:
    comm: Communicator
    rank: int
    config: RunConfig
    ident: Identity
    where: str = "init"  # the phase the script is in: what its traceback shows, if interrupted
    warned: bool = False  # Slurm's SIGUSR1 came: save and leave at the next step
    requeue_signals: int = 0  # the SIGUSR1s this rank got (Lightning saves once for each)
    requeues_done: int = 0  # the auto-requeue saves the job made
    bypasses_sigterm: bool = False  # Lightning's SIGTERM handlers are set: the stop leaves at the next batch
    sigterm_before: Any = signal.SIG_DFL  # the SIGTERM handler they replaced

    def __post_init__(self) -> None:
        self.numel = sim.grad_numel(self.ident)
        self.faults = Faults(self.config, self.ident, self.rank)
        # A resumed run's curve carries on from its checkpoint's last logged loss (checkpoint/anchor.py).
        resumed = self.config.resume_from
        self.loss_scale: float = resumed.loss_scale if resumed is not None else 1.0
        # Pacing never outlasts --exit-after-time: at a slow --speed the init
        # stages alone slept 36 s through a 2 s limit. This clock starts after
        # the rendezvous, so the coordinator's (which stops the run at the next
        # training step) always runs out first.
        limit = self.config.exit_after_s
        until = time.monotonic() + limit if limit else math.inf
        ident, fault = self.ident, self.config.fault
        self.comm.pacer = self.pacer = Pacer(
            self.config.speed, lambda op, numel, step: pace.collective_seconds(ident, fault, op, numel, step),
            until, self.comm.welcomed)

    def run(self) -> None:
        if self.faults.preemption_aware():
            # A preemption-aware script: SIGTERM means "checkpoint, then leave".
            signal.signal(signal.SIGTERM, self._on_sigterm)
        if self._takes_requeue_signal():
            signal.signal(signal.SIGUSR1, self._on_requeue_signal)
        self._init()
        last = self._train()
        # Decided by the release's stop flag, which every rank sees at the same
        # step (our own SIGTERM may land a moment earlier or later).
        if self.comm.stop_requested and self.bypasses_sigterm:
            return  # Lightning's SIGTERMException (a SystemExit, no code): no save, exit 0
        if self.comm.stop_requested and (self.faults.preemption_aware() or self._warned(last)):
            self._phase(tags.CHECKPOINT, sim.checkpoint_seconds(self.ident, self.rank, last), last)
            return
        self._end_of_epoch(last, final=True)
        if self.bypasses_sigterm:  # fit's teardown puts back the handler it found (signal_connector.teardown)
            signal.signal(signal.SIGTERM, self.sigterm_before)
        self._phase(tags.EXPORT, sim.export_seconds(self.ident, self.rank, last))
        self.comm.barrier(tag=tags.PHASE_SUMMARY)
        self.comm.barrier(tag=tags.DESTROY_PROCESS_GROUP)

    def _init(self) -> None:
        c, ident = self.comm, self.ident
        seconds = sim.init_seconds(ident)
        c.barrier(tag=tags.INIT_PROCESS_GROUP, sim_s=seconds[tags.INIT_PROCESS_GROUP])
        c.broadcast([float(ident.seed)], tag=tags.BROADCAST_PARAMETERS, numel=sim.grad_numel(ident))
        for stage in tags.INIT_STAGES:
            c.barrier(tag=stage, sim_s=seconds[stage])
        self._telemetry(0, "init")
        if self.config.requeues:  # Trainer._run registers its handlers just before the fit loop runs
            signal.signal(signal.SIGUSR1, self._on_requeue_signal)
            self._bypass_sigterm()
        c.barrier(tag=tags.PHASE_TRAIN)

    def _train(self) -> int:
        self.where = "train"
        h = self.ident.hyper
        first = self.config.resume_from.step + 1 if self.config.resume_from else 1
        step = first - 1
        for step in range(first, self.config.steps + 1):
            self.faults.strike(step)
            if step == 1 or step % h.log_every == 0:
                self._telemetry(step, "train")
            loss, grad_norm, sim_s = self.faults.apply(
                step, sim.local_loss(self.ident, self.rank, step) * self.loss_scale,
                sim.local_grad_norm(self.ident, self.rank, step), sim.compute_seconds(self.ident, step))
            mean_loss, _ = self.comm.all_reduce([loss, grad_norm], "avg", tag=tags.TRAIN_STEP, step=step,
                                                numel=self.numel, sim_s=sim_s)
            if not math.isfinite(mean_loss):  # what a real script checks after the reduce
                raise ScriptFailed(self._text("nan", loss=mean_loss).split("\n"), stream="stdout")
            if self.comm.stop_requested:  # after --exit-after-time: the phases left, without pacing
                self.pacer.on = False
                break
            if self.config.requeues:
                self._requeue(step)
            if step < self.config.steps and (h.evaluates_after(step) or h.saves_after(step)):
                self._end_of_epoch(step)
                self.where = "train"
        return step

    def _end_of_epoch(self, step: int, final: bool = False) -> None:
        """Validation and checkpoint, each where the script's intervals put
        it; after the last step (`final`: also one cut short by a stop), where
        it does them at the end."""
        h = self.ident.hyper
        after_loop = final and h.eval_after_loop and h.eval_at_end  # Megatron's pretrain(): after the save
        due = h.evaluates_after(step) or (final and h.eval_at_end)
        if h.evaluates_in_loop(step) if after_loop else due:
            self._validate(step)
        if h.saves_after(step) or (final and h.save_at_end):
            self._phase(tags.CHECKPOINT, sim.checkpoint_seconds(self.ident, self.rank, step), step)
        if after_loop:
            self._validate(step, again=h.evaluates_in_loop(step))

    def _validate(self, step: int, again: bool = False) -> None:
        """`again`: a second evaluation at this step (other batches, its own time)."""
        self.where = "validation"
        self.comm.barrier(tag=tags.PHASE_VALIDATION)
        self._telemetry(step, "validation")
        val = sim.local_val_loss(self.ident, self.rank, step, again) * self.loss_scale
        self.comm.all_reduce([val], "avg", tag=tags.VALIDATION, step=step,
                             sim_s=sim.eval_seconds(self.ident, self.rank, step, again))

    def _phase(self, name: str, sim_s: float, step: int = 0) -> None:
        self.where = name
        self.comm.barrier(tag=tags.phase(name))
        self._telemetry(step, name)
        self.comm.barrier(tag=name, sim_s=sim_s)

    def _telemetry(self, step: int, phase: str) -> None:
        t = hardware.reading(self.ident, self.config.fault, self.rank, step, phase)
        self.comm.send(Telemetry(self.rank, step, phase, t.util, t.temp_c, t.power_w, t.mem_used_mib))

    def _takes_requeue_signal(self) -> bool:
        """srun started this script itself (a task a rank), and it takes SIGUSR1."""
        return self.config.task is not None and self.config.style.name in TAKES_REQUEUE_SIGNAL

    def _on_requeue_signal(self, _signum: int, _frame: object) -> None:
        self.warned = True
        self.requeue_signals += 1

    def _warned(self, step: int) -> bool:
        """Whether the job stopped for Slurm's warning: every rank says if
        it got the signal, and one is enough (all_reduce max, as scripts
        agree on a preemption flag), so every rank saves and leaves together
        even if its own signal lands a moment later."""
        if not self._takes_requeue_signal():
            return False
        flag = self.comm.all_reduce([1.0 if self.warned else 0.0], "max", tag=tags.REQUEUE_SIGNAL, step=step)
        return flag[0] > 0

    def _requeue(self, step: int) -> None:
        """Lightning's SLURM auto-requeue (signal_connector.py
        _slurm_sigusr_handler_fn, 2.4.0 to 2.6.5): on SIGUSR1 every rank runs
        trainer.save_checkpoint(hpc_ckpt_N.ckpt), collective (its barrier),
        global zero writing; global zero then calls `scontrol requeue`, and
        the handler returns: training goes on until Slurm ends the job. The
        ranks agree on the step after each one: the most signals any rank
        got (one is enough, as for _warned), so they save together however
        far apart their signals land, and once for each signal Slurm sent."""
        got = self.comm.all_reduce([float(self.requeue_signals)], "max", tag=tags.REQUEUE_SIGNAL, step=step)
        if got[0] <= self.requeues_done:
            return
        self.requeues_done += 1
        self.where = tags.CHECKPOINT
        self._telemetry(step, tags.CHECKPOINT)
        self.comm.barrier(tag=tags.HPC_CHECKPOINT, sim_s=sim.checkpoint_seconds(self.ident, self.rank, step))
        job = self.config.requeue_job
        code = _scontrol_requeue(job) if self.rank == 0 and job is not None else 0
        self.comm.all_reduce([float(code)], "sum", tag=tags.REQUEUED, step=step)
        self.where = "train"

    def _bypass_sigterm(self) -> None:
        """Lightning's SIGTERM handlers, set with the SIGUSR1 one under
        auto-requeue (signal_connector.py register_signal_handlers,
        2.4.0 to 2.6.5): _sigterm_notifier_fn logs and sets
        trainer.received_sigterm, _sigterm_handler_fn logs "Bypassing
        SIGTERM" and returns, so the process lives on; the training epoch
        loop raises SIGTERMException at the end of the batch it is in
        (training_epoch_loop.py advance), a SystemExit with no code, which
        _call_and_handle_interrupt re-raises after teardown: the script
        exits 0, saying nothing more. Here the launcher's stop flag, which
        every rank sees at the same step (as 2.6's broadcast of the flag
        from rank 0 makes them agree), ends training there; the lines are
        the renderer's (render/styles/lightning.py _sigterm)."""
        self.sigterm_before = signal.signal(signal.SIGTERM, self._on_sigterm)
        self.bypasses_sigterm = True

    @staticmethod
    def _on_sigterm(_signum: int, _frame: object) -> None:
        """Survive the SIGTERM: the launcher's stop flag, which reaches every
        rank at the same step, decides when to checkpoint and leave."""

    def _text(self, key: str, **values: object) -> str:
        return script_text(self.config, key, **values)


def _scontrol_requeue(job: str) -> int:
    # Imported here: subprocess (and what it loads) is in no rank's start-up,
    # only in the one rank of a Lightning job that Slurm warned.
    from fakerun.rank.requeue import scontrol_requeue

    return scontrol_requeue(job)
