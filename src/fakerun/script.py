"""The simulated training script every rank runs: init, the training loop
with validation and a checkpoint at each epoch's end, export, summary.

A rank reports results (loss, grad norm, telemetry) and how long its work
took in simulated time; it sleeps only to pace the show (`--speed`). All text
is rendered from the resulting events, never printed here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import sim
from .comm import Communicator
from .config import RunConfig
from .identity import Identity
from .protocol import Telemetry

TRAIN_STEP = "train_step"
# Wall seconds of each activity at --speed 1 (a default run lasts 2-4 min).
WALL = {"init_stage": 0.6, "step": sim.WALL_STEP_S, "validation": 2.0, "checkpoint": 2.5,
        "export": 2.5}
INIT_STAGES = ("load_model", "load_tokenizer", "load_dataset")


class SimulatedExit(Exception):
    """The training script called sys.exit(code) on its own."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Script:
    comm: Communicator
    rank: int
    config: RunConfig
    ident: Identity
    compressed: bool = False  # after --exit-after-time: finish the phases without pacing

    def run(self) -> None:
        self._init()
        last = self._train()
        self._end_of_epoch(last)
        self._phase("export", sim.export_seconds(self.ident))
        self.comm.barrier(tag="phase:summary")
        self.comm.barrier(tag="destroy_process_group")

    def _init(self) -> None:
        c, ident = self.comm, self.ident
        c.barrier(tag="init_process_group", sim_s=1.5 + 0.1 * ident.world)
        c.broadcast([float(ident.seed)], tag="broadcast_parameters", numel=sim.grad_numel(ident))
        seconds = {"load_model": sim.load_seconds(ident), "load_tokenizer": 1.1, "load_dataset": 7.5}
        for stage in INIT_STAGES:
            self._sleep("init_stage")
            c.barrier(tag=stage, sim_s=seconds[stage])
        self._telemetry(0, "init")
        c.barrier(tag="phase:train")

    def _train(self) -> int:
        h, step = self.ident.hyper, 0
        for step in range(1, self.config.steps + 1):
            self._maybe_fault(step)
            self._sleep("step")
            if step == 1 or step % h.log_every == 0:
                self._telemetry(step, "train")
            loss = sim.local_loss(self.ident, self.rank, step)
            grad_norm = sim.local_grad_norm(self.ident, self.rank, step)
            self.comm.all_reduce([loss, grad_norm], "avg", tag=TRAIN_STEP, step=step,
                                 numel=sim.grad_numel(self.ident),
                                 sim_s=sim.compute_seconds(self.ident, step))
            if self.comm.stop_requested:
                self.compressed = True
                break
            if step % h.steps_per_epoch == 0 and step < self.config.steps:
                self._end_of_epoch(step)
        return step

    def _end_of_epoch(self, step: int) -> None:
        self.comm.barrier(tag="phase:validation")
        self._telemetry(step, "validation")
        self._sleep("validation")
        self.comm.all_reduce([sim.local_val_loss(self.ident, self.rank, step)], "avg", tag="validation",
                             step=step, sim_s=sim.eval_seconds(self.ident))
        self._phase("checkpoint", sim.checkpoint_seconds(self.ident), step)

    def _phase(self, name: str, sim_s: float, step: int = 0) -> None:
        self.comm.barrier(tag=f"phase:{name}")
        self._telemetry(step, name)
        self._sleep(name)
        self.comm.barrier(tag=name, sim_s=sim_s)

    def _telemetry(self, step: int, phase: str) -> None:
        t = sim.telemetry(self.ident, self.rank, step, phase)
        self.comm.send(Telemetry(self.rank, step, phase, t.util, t.temp_c, t.power_w, t.mem_used_mib))

    def _sleep(self, activity: str) -> None:
        if self.config.speed > 0 and not self.compressed:
            time.sleep(WALL[activity] / self.config.speed)

    def _maybe_fault(self, step: int) -> None:
        fault = self.config.fault
        if fault is None or fault.rank != self.rank or fault.step != step:
            return
        if fault.kind == "crash":
            raise RuntimeError(f"Simulated failure on rank {self.rank} at step {step}")
        if fault.kind == "exit":
            raise SimulatedExit(1)
        if fault.kind == "hang":
            while True:  # stops entering collectives; the peers' watchdog fires
                time.sleep(3600)
