"""The simulated training script every rank runs: init, the training loop
with validation and a checkpoint at each epoch's end, export, summary.

A rank reports results (loss, grad norm, telemetry) and how long its work
took in simulated time; it sleeps only to pace the show (`--speed`). All text
is rendered from the resulting events, never printed here.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass

from . import sim
from .comm import Communicator
from .config import RunConfig
from .identity import Identity
from .protocol import Telemetry
from .render import texts
from .render.torchrun import ENV_PREFIX

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

    def __post_init__(self) -> None:
        self.numel = sim.grad_numel(self.ident)
        # Pacing never outlasts --exit-after-time: at a slow --speed the init
        # stages alone slept 36 s through a 2 s limit. This clock starts after
        # the rendezvous, so the coordinator's (which stops the run at the next
        # training step) always runs out first.
        limit = self.config.exit_after_s
        self.pace_until = time.monotonic() + limit if limit else math.inf

    def run(self) -> None:
        if self._preemption_aware():
            # A preemption-aware script: SIGTERM means "checkpoint, then leave".
            signal.signal(signal.SIGTERM, self._on_sigterm)
        self._init()
        last = self._train()
        # Decided by the release's stop flag, which every rank sees at the same
        # step (our own SIGTERM may land a moment earlier or later).
        if self._preemption_aware() and self.comm.stop_requested:
            self._phase("checkpoint", sim.checkpoint_seconds(self.ident), last)
            return
        self._end_of_epoch(last)
        self._phase("export", sim.export_seconds(self.ident))
        self.comm.barrier(tag="phase:summary")
        self.comm.barrier(tag="destroy_process_group")

    def _init(self) -> None:
        c, ident = self.comm, self.ident
        seconds = sim.init_seconds(ident)
        c.barrier(tag="init_process_group", sim_s=seconds["init_process_group"])
        c.broadcast([float(ident.seed)], tag="broadcast_parameters", numel=sim.grad_numel(ident))
        for stage in INIT_STAGES:
            self._sleep("init_stage")
            c.barrier(tag=stage, sim_s=seconds[stage])
        self._telemetry(0, "init")
        c.barrier(tag="phase:train")

    def _train(self) -> int:
        h = self.ident.hyper
        first = self.config.resume_from.step + 1 if self.config.resume_from else 1
        step = first - 1
        for step in range(first, self.config.steps + 1):
            self._maybe_fault(step)
            self._sleep("step", self._pace_factor(step))
            if step == 1 or step % h.log_every == 0:
                self._telemetry(step, "train")
            loss, grad_norm, sim_s = self._faulted(
                step, sim.local_loss(self.ident, self.rank, step),
                sim.local_grad_norm(self.ident, self.rank, step), sim.compute_seconds(self.ident, step))
            mean_loss, _ = self.comm.all_reduce([loss, grad_norm], "avg", tag=TRAIN_STEP, step=step,
                                                numel=self.numel, sim_s=sim_s)
            if not math.isfinite(mean_loss):  # what a real script checks after the reduce
                raise ScriptFailed(self._text("nan", loss=mean_loss).split("\n"), stream="stdout")
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

    @staticmethod
    def _on_sigterm(_signum: int, _frame: object) -> None:
        """Survive the SIGTERM: the launcher's stop flag, which reaches every
        rank at the same step, decides when to checkpoint and leave."""

    def _preemption_aware(self) -> bool:
        return self.config.fault is not None and self.config.fault.kind == "preempt"

    def _sleep(self, activity: str, factor: float = 1.0) -> None:
        if self.config.speed > 0 and not self.compressed:
            wall = WALL[activity] * factor / self.config.speed
            time.sleep(max(0.0, min(wall, self.pace_until - time.monotonic())))

    # -- faults (scenarios.py names them; data/torchrun.toml holds their texts) --
    def _maybe_fault(self, step: int) -> None:
        fault = self.config.fault
        if fault is None or step != fault.step:
            return
        mine = fault.rank == self.rank
        if fault.kind == "hang" or (fault.kind == "stall" and mine):
            while True:  # no more progress; with "stall" the peers' watchdog fires
                time.sleep(3600)
        if fault.kind == "node-down" and self.rank // self.ident.nproc == fault.rank // self.ident.nproc:
            raise SimulatedSignal(signal.SIGKILL)
        if not mine:
            return
        if fault.kind == "preempt":  # the scheduler's SIGTERM, to the launcher as it would be
            os.kill(os.getppid(), signal.SIGTERM)
            return
        if fault.kind == "crash":
            raise ScriptFailed(self._text("crash").split("\n"))
        if fault.kind == "oom":
            raise ScriptFailed(self._text("oom", **oom_sizes(self.ident, self.rank)).split("\n"))
        if fault.kind == "exit":
            raise SimulatedExit(1)
        if fault.kind == "segv":
            raise SimulatedSignal(signal.SIGSEGV)

    def _faulted(self, step: int, loss: float, grad_norm: float, sim_s: float) -> tuple[float, float, float]:
        """This step's values under the scenario's fault (spike, nan, slow)."""
        fault = self.config.fault
        if fault is None or step < fault.step:
            return loss, grad_norm, sim_s
        if fault.kind == "spike":
            bump = fault.param("height") * math.exp(-(step - fault.step) / fault.param("decay"))
            return loss * (1 + bump), grad_norm * (1 + 8 * bump), sim_s
        if fault.kind == "nan" and fault.rank == self.rank:
            return math.nan, math.nan, sim_s
        if fault.kind == "slow" and fault.rank == self.rank:
            return loss, grad_norm, sim_s * fault.param("factor")
        return loss, grad_norm, sim_s

    def _pace_factor(self, step: int) -> float:
        fault = self.config.fault
        slow = fault is not None and fault.kind == "slow" and fault.rank == self.rank and step >= fault.step
        return fault.param("factor") if slow else 1.0

    def _text(self, key: str, **values: object) -> str:
        return script_text(self.config, key, **values)


def script_text(config: RunConfig, key: str, **values: object) -> str:
    """A text the training script prints, for this run: data/torchrun.toml's
    [script] table, overridden by the style's own (data/style-<name>.toml)."""
    own = texts.optional(f"style-{config.style.name}").get("script", {})
    script = {**texts.load("torchrun")["script"], **own}
    site = f"{ENV_PREFIX}/lib/python{config.identity.versions.python}/site-packages"
    return _expand(script[key], script).format(cwd=script["cwd"], entrypoint=config.entrypoint, site=site,
                                               nccl=config.identity.versions.nccl, **values).rstrip("\n")


def _expand(text: str, table: dict[str, str]) -> str:
    """Put in the table's own entries that `text` names (`{torch_backward}`),
    and theirs in turn: the tracebacks share their framework's frames."""
    while (names := [k for k in table if f"{{{k}}}" in text]):
        for name in names:
            text = text.replace(f"{{{name}}}", table[name])
    return text


def peer_lost(config: RunConfig, peer_host: str, seed: int) -> list[str]:
    """What a rank prints when NCCL finds that another node's rank is gone."""
    port = 32768 + seed % 28000  # the peer's ephemeral port
    return script_text(config, "peer_lost", peer=peer_host, port=port).split("\n")


class ScriptFailed(Exception):
    """The training script died of an exception; `lines` is its traceback."""

    def __init__(self, lines: list[str], code: int = 1, stream: str = "stderr") -> None:
        super().__init__(lines[-1] if lines else "")
        self.lines = lines
        self.code = code
        self.stream = stream  # stderr: a traceback (torch prefixes it); stdout: a print


class SimulatedSignal(Exception):
    """The process is to die of this signal (a crash in native code, the OOM killer...)."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.sig = sig


def oom_sizes(ident: Identity, rank: int) -> dict[str, str]:
    """torch's CUDA OOM figures, consistent with the run's memory model."""
    allocated, reserved = sim.memory_bytes(ident, rank)
    total = ident.gpu.memory_mib * 2**20 - 0.55 * 2**30  # what torch sees after the driver's share
    in_use = min(reserved + 0.52 * 2**30, total - 0.3 * 2**30)
    free = total - in_use
    tried = free + 0.25 * 2**30 + 0.05 * allocated
    return {"device": str(rank % ident.nproc), "total": format_size(total), "free": format_size(free),
            "in_use": format_size(in_use), "allocated": format_size(allocated),
            "unallocated": format_size(reserved - allocated), "tried": format_size(tried)}


def format_size(n: float) -> str:
    """c10's format_size: bytes, KiB, MiB or GiB with two decimals."""
    if n <= 1024:
        return f"{int(n)} bytes"
    for unit, size in (("KiB", 2**10), ("MiB", 2**20)):
        if n <= size * 1024:
            return f"{n / size:.2f} {unit}"
    return f"{n / 2**30:.2f} GiB"
