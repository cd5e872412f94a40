"""The launcher's side of `fakerun smi`: events in, the snapshot file out.

Between the ranks' GPU reports (a GpuStatus every ten log intervals) the
sink recomputes each GPU from the same model the ranks report from
(sim.telemetry at the latest step and phase), so a watching pane moves with
the run instead of freezing for minutes."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakerun import events as ev
from fakerun.render.sinks import SinkFailed
from fakerun.smi.snapshot import GpuRow, Snapshot, cuda_text
from fakerun.world import board, hardware, xid
from fakerun.world import physics as sim
from fakerun.world.hardware import HEALTHY, Condition, FaultLike
from fakerun.world.kfd import kfd_gpu

WRITE_INTERVAL_S = 1.0  # at most one write a second (what watch -n1 shows), whatever the event rate


class SmiStateSink:
    """An event sink keeping the snapshot file `path` up to date: written
    atomically (a temp file in the same directory, then os.replace), at most
    every WRITE_INTERVAL_S, at once when every rank has started, at the first
    GPU report and at the end; removed by close() (the job is over)."""

    console = False

    def __init__(self, path: Path, process: str, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, interval: float = WRITE_INTERVAL_S,
                 run_clock: Callable[[], float] | None = None, fault: FaultLike | None = None) -> None:
        """`run_clock`: the run's clock, where it moves between events (a
        paced run): the table's time then goes on with it, a write every
        `interval`, as nvidia-smi's header shows the time it runs at.
        `fault`: the run's (config.options.Fault), whose hardware condition
        the GPUs show (world/hardware.py) as the ranks report them; an Xid's
        once the driver has reported it."""
        self.path, self.process = Path(path), process
        self.monotonic, self.wall, self.interval = monotonic, wall, interval
        self.run_clock = run_clock
        self.fault = fault
        self.struck = False  # the node's kernel has logged the fault: the GPU shows it from now on
        self.clocked = run_clock is not None
        self.ident: Any = None
        self.run_id = ""
        self.pids: dict[int, int] = {}
        self.readings: dict[int, sim.Telemetry] = {}
        self.model_at: tuple[int, str] | None = None  # (step, phase) to recompute readings at
        self.step, self.phase, self.finished = 0, "init", False
        self.clock = 0.0  # the latest event's time: the run's clock, which the logs show too
        self.measured = False  # a GpuStatus has come
        self.dirty, self.last_write = False, -math.inf
        self._idle_cache: dict[int, sim.Telemetry] = {}
        self._static_cache: dict[int, tuple[Any, ...]] = {}
        self.handlers = self._handlers()  # built once: event() sees every collective
        self._write_text("")  # an unwritable place fails now, as one line

    def event(self, e: ev.Event) -> None:
        handler = self.handlers.get(type(e))
        if handler is not None:
            self.dirty, self.clock = True, getattr(e, "time", None) or self.clock
            if handler(e):
                self._write()

    def flush(self) -> None:
        if (self.dirty or self.run_clock is not None) and self.monotonic() - self.last_write >= self.interval:
            if self.run_clock is not None and self.ident is not None:
                self.clock = self.run_clock()
            self._write()

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    # -- events; a handler returns True when the snapshot must go out now --
    def _handlers(self) -> dict[type, Callable[[Any], bool]]:
        return {ev.RunIdentity: self._identity, ev.RunStarted: self._run_started,
                ev.RankStarted: self._rank_started, ev.RankExited: self._rank_exited,
                ev.GpuStatus: self._gpu_status, ev.Step: self._step, ev.Phase: self._phase,
                ev.RunFinished: self._finished, ev.KernelMessage: self._kernel}

    def _identity(self, e: ev.RunIdentity) -> bool:
        self.ident = e.identity
        self._idle_cache.clear()
        self._static_cache.clear()
        return False

    def _run_started(self, e: ev.RunStarted) -> bool:
        self.run_id, self.finished = e.run_id, False
        self.pids.clear()  # a restart brings a new worker group
        return False

    def _rank_started(self, e: ev.RankStarted) -> bool:
        self.pids[e.rank] = e.pid
        return self.ident is not None and len(self.pids) == self.ident.world

    def _rank_exited(self, e: ev.RankExited) -> bool:
        self.pids.pop(e.rank, None)
        return False

    def _gpu_status(self, e: ev.GpuStatus) -> bool:
        first, self.measured = not self.measured, True
        self.readings.update({g.rank: sim.Telemetry(g.util, g.temp_c, g.power_w, g.mem_used_mib)
                              for g in e.gpus})
        self.step, self.model_at = e.step, None  # measured: fresher than the model
        return first

    def _step(self, e: ev.Step) -> bool:
        self.step, self.phase = e.step, "train"
        self.model_at = (self.step, self.phase)
        return False

    def _phase(self, e: ev.Phase) -> bool:
        # Until training starts the GPUs show allocated but idle; "summary"
        # keeps the last readings.
        if e.name in sim.PHASE_LOAD and e.name != "init":
            self.phase = e.name
            self.model_at = (self.step, self.phase)
        return False

    def _kernel(self, e: ev.KernelMessage) -> bool:
        first, self.struck = not self.struck, True
        return first

    def _finished(self, e: ev.RunFinished) -> bool:
        self.finished = True
        return True

    # -- the file --------------------------------------------------------
    def snapshot(self) -> Snapshot | None:
        """None until the run's identity (GPU, driver, hosts) is known."""
        ident = self.ident
        if ident is None:
            return None
        return Snapshot(time=self.wall(), run_id=self.run_id, driver=ident.versions.driver,
                        cuda=cuda_text(ident.versions.cuda_driver), process=self.process, step=self.step,
                        gpus=self.rows(range(ident.world)), finished=self.finished,
                        clock=self.clock, vendor=ident.gpu.vendor, seed=ident.seed)

    def rows(self, ranks: range) -> list[GpuRow]:
        """The GPUs of `ranks`, recomputed from the model where a step or
        phase moved them since the last reading."""
        if self.model_at is not None and self.pids:  # with no process left, no row shows a reading
            step, phase = self.model_at
            self.readings.update({r: hardware.reading(self.ident, self.fault, r, step, phase) for r in ranks})
            self.model_at = None
        return [self._row(r) for r in ranks]

    def _row(self, rank: int) -> GpuRow:
        pid = self.pids.get(rank, 0)
        seen = self.readings.get(rank)
        if seen is None or pid == 0:
            # Not measured yet: allocated but idle (the memory the ranks hold
            # after init); no process at all: nothing allocated.
            init = self._idle(rank)
            seen = sim.Telemetry(0, init.temp_c, init.power_w, init.mem_used_mib if pid else 0)
        static, state = self._static(rank), self._condition(rank)
        return GpuRow(*static[:6], util=seen.util, mem_used_mib=seen.mem_used_mib, mem_total_mib=static[6],
                      temp_c=seen.temp_c, power_w=seen.power_w, power_cap_w=static[7], pid=pid,
                      kfd_node=static[8], guid=static[9], xid=state.xid, lost=state.lost,
                      clock_factor=state.clock_factor, throttle=state.event_reasons)

    def _condition(self, rank: int) -> Condition:
        """The GPU's hardware condition under the run's fault; an Xid's once
        the kernel has logged it (a lost GPU stays lost, a volatile ECC count
        stays counted, through a restarted attempt: the driver keeps them)."""
        fault, step = self.fault, self.step
        if fault is None:
            return HEALTHY
        if fault.kind == xid.KIND:  # the rank meets it at the top of its step: no Step event says so
            if not self.struck or fault.step is None:
                return HEALTHY
            step = max(step, fault.step)
        return hardware.condition(self.ident, fault, rank, step)

    # What a GPU's row shows that only the run's identity decides, computed
    # once a run (at 1024 GPUs, each write recomputed it: tens of ms, on the
    # coordinator's thread, once a second and again as the job ends).
    def _idle(self, rank: int) -> sim.Telemetry:
        if rank not in self._idle_cache:
            self._idle_cache[rank] = sim.telemetry(self.ident, rank, 0, "init")
        return self._idle_cache[rank]

    def _static(self, rank: int) -> tuple[Any, ...]:
        if rank not in self._static_cache:
            ident, gpu = self.ident, self.ident.gpu
            local, node = ident.topology.local_rank_of(rank), ident.topology.node_of(rank)
            kfd = kfd_gpu(ident.seed, node, gpu, local) if gpu.vendor == "amd" else None
            self._static_cache[rank] = (rank, node, local, ident.host(rank), gpu.name,
                                        board.smi_bus_id(gpu.bus_id(local)), gpu.memory_mib,
                                        gpu.power_cap_w, kfd.node_id if kfd else 0, kfd.gpu_id if kfd else 0)
        return self._static_cache[rank]

    def _write(self) -> None:
        snap = self.snapshot()
        if snap is None:
            return
        self._write_text(snap.to_json())
        self.dirty, self.last_write = False, self.monotonic()

    def _write_text(self, text: str) -> None:
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError as exc:
            raise SinkFailed(f"smi state file {self.path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            if text:  # the constructor's probe only proves the directory is writable
                os.replace(temp, self.path)
        except OSError as exc:
            raise SinkFailed(f"smi state file {self.path}: {exc.strerror}") from None
        finally:
            Path(temp).unlink(missing_ok=True)
