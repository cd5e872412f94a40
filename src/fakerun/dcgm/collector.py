"""dcgm-exporter on one node: events in, a collection every interval out.

The exporter collects on its own ticker (--collect-interval, 30 s by
default) and serves its latest collection until the next: a scrape between
two shows the same values, the run's clock moves them. Its ticker started
with the node, not with the job: where in the interval the job starts is
drawn from the seed. Each collection reads this node's GPUs as nvidia-smi
shows them (the same rows, from the same events and model), integrates
their energy since the last one, and turns the collectives that ran since
into traffic rates."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from fakerun import events as ev
from fakerun.dcgm.counters import Exporter, pinned
from fakerun.dcgm.exposition import GpuSample, render
from fakerun.dcgm.readings import IDLE, Reading, Traffic, values
from fakerun.dcgm.traffic import TrafficMeter
from fakerun.smi.device import Device
from fakerun.smi.sink import SmiStateSink
from fakerun.smi.snapshot import Snapshot
from fakerun.world import draws
from fakerun.world import physics as sim
from fakerun.world.hardware import Condition, FaultLike, uptime_at_start
from fakerun.world.identity import Identity


class _GpuRows(SmiStateSink):
    """nvidia-smi's rows from the events (smi/sink.py), without its file."""

    def _write_text(self, text: str) -> None:
        pass

    def _write(self) -> None:
        pass

    def close(self) -> None:
        pass  # no file to remove


class DcgmCollector:
    """An event sink (render/sinks.py EventSink) for one node's exporter.
    `run_clock`: the run's clock where it moves between events (a paced
    run); `pod`: the pod mapper's labels (container, namespace, pod);
    `before`: the same node's exporter in the previous run of a --loop (the
    same GPUs: their energy, last Xids and collections go on)."""

    console = False

    def __init__(self, ident: Identity, node: int, fault: FaultLike | None, start: float,
                 run_clock: Callable[[], float] | None = None, pod: dict[str, str] | None = None,
                 exporter: Exporter | None = None, before: DcgmCollector | None = None) -> None:
        self.ident, self.node, self.fault, self.pod = ident, node, fault, dict(pod or {})
        self.exporter = exporter or pinned()
        self.run_clock, self.clocked = run_clock, run_clock is not None
        self.ranks = ident.topology.node_ranks(node)
        self.gpus = _GpuRows(Path("."), "python", run_clock=None, fault=fault)
        self.gpus.event(ev.RunIdentity(ident))
        self.gpus.clock = start
        self.traffic = TrafficMeter(ident)
        self._text: bytes | None = None
        if before is not None:
            self.xid, self.energy, self.power = before.xid, before.energy, before.power
            self.at, self.next_due, self.samples = before.at, before.next_due, before.samples
            return
        self.xid = dict.fromkeys(self.ranks, 0)  # the last Xid each GPU raised: DCGM keeps it
        interval = self.exporter.interval_s
        phase = interval * draws.uniform(ident.seed, "dcgm-collect", node)
        last = start - ((start - phase) % interval)  # the exporter's last collection before the job
        self.next_due = last + interval
        up = uptime_at_start(ident, node) - (start - last)
        self.energy = dict.fromkeys(self.ranks, 0.0)
        self.at, self.power = last, dict[int, float]()
        self.samples, self.power = self._collect(last, IDLE, boot_s=up)

    # -- the sink ------------------------------------------------------
    def event(self, e: ev.Event) -> None:
        when = getattr(e, "time", None)
        if isinstance(when, float) and when >= self.next_due:
            self._due(when)  # the state before this event is what the boundary saw
        if isinstance(e, ev.Collective):
            self.traffic.add(e)
        self.gpus.event(e)

    def flush(self) -> None:
        if self.run_clock is not None:
            now = self.run_clock()
            if now >= self.next_due:
                self._due(now)

    def close(self) -> None:
        pass

    def body(self) -> bytes:
        """The latest collection as the scrape shows it (rendered once per collection)."""
        if self._text is None:
            self._text = render(self.exporter, self.samples).encode()
        return self._text

    # -- collections ---------------------------------------------------
    def _due(self, now: float) -> None:
        interval = self.exporter.interval_s
        at = self.next_due + interval * math.floor((now - self.next_due) / interval)
        rates = self.traffic.rates(at - self.at)
        self.samples, self.power = self._collect(at, rates)
        self.at, self.next_due, self._text = at, at + interval, None

    def _collect(self, at: float, rates: Traffic,
                 boot_s: float = 0.0) -> tuple[list[GpuSample], dict[int, float]]:
        """The GPUs at `at`, and their power (for the next collection's energy)."""
        step = self.gpus.step
        mfu = sim.mfu(self.ident, step) if self.gpus.pids and self.gpus.phase == "train" else 0.0
        samples, power = [], {}
        for row in self.gpus.rows(self.ranks):
            # nvidia-smi's row carries the GPU's condition (clock, heat, Xid, loss); DCGM keeps the last Xid.
            self.xid[row.rank] = row.xid or self.xid[row.rank]
            cond = Condition(xid=self.xid[row.rank], lost=row.lost)
            dev = Device(self._snapshot(step), row)
            power[row.rank] = 0.0 if cond.lost else round(dev.power, 3)
            self._integrate(row.rank, power[row.rank], at, boot_s)
            reading = Reading(dev, cond, self.energy[row.rank], rates, mfu, self._nvlink,
                              draws.uniform(self.ident.seed, "dcgm-ratio", row.rank, step))
            samples.append(GpuSample(row.index, dev.uuid, row.bus_id, row.name, row.host, values(reading),
                                     {"DCGM_FI_DRIVER_VERSION": self.ident.versions.driver}, self.pod))
        return samples, power

    def _integrate(self, rank: int, watts: float, at: float, boot_s: float) -> None:
        """Energy since boot: the board's draw before the job (`boot_s`, the
        first collection), then the trapezoid between the powers two collections showed."""
        before = self.power.get(rank, watts)
        self.energy[rank] += 1000.0 * (boot_s * watts + (before + watts) / 2 * (at - self.at))

    @property
    def _nvlink(self) -> bool:
        return self.ident.gpu.nvlink == "yes"

    def _snapshot(self, step: int) -> Snapshot:
        """What Device reads of the snapshot: the seed (the UUIDs) and the step (the power's fraction)."""
        return Snapshot(0.0, "", self.ident.versions.driver, "", "python", step, [], seed=self.ident.seed)
