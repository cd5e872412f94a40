"""nvidia-smi's selective queries: `--query-gpu=<fields> --format=csv[,noheader][,nounits]`,
`--query-compute-apps=<fields>` and `-L`, in the formats of the real
captures data/nvidia_smi.toml names: "index, name, memory.used [MiB]" over
"0, NVIDIA H100 80GB HBM3, 71234 MiB"; "[N/A]" where a board reports
nothing (also with nounits)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fakerun import texts
from fakerun.smi.device import Device, process_mib
from fakerun.world.thermal import HW_SLOWDOWN, HW_THERMAL, SW_THERMAL

NA = "[N/A]"


class BadField(ValueError):
    """A field nvidia-smi does not know: its message is nvidia-smi's."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


@dataclass(frozen=True)
class Field:
    name: str  # canonical: what the header shows
    unit: str


@dataclass(frozen=True)
class Format:
    header: bool = True
    units: bool = True


def fields(table: str, asked: str) -> list[Field]:
    """The fields of `asked` ("index,name,...") in data/nvidia_smi.toml's
    [query_gpu] or [query_apps]; BadField for the first unknown one."""
    known = _names(table)
    chosen = []
    for word in asked.split(","):
        name = word.strip()
        if name not in known:
            raise BadField(name)
        chosen.append(known[name])
    return chosen


def csv(header: list[Field], rows: list[list[str | None]], fmt: Format) -> list[str]:
    lines = [", ".join(f"{f.name} [{f.unit}]" if f.unit else f.name for f in header)] if fmt.header else []
    return lines + [", ".join(_cell(value, f.unit, fmt) for value, f in zip(row, header, strict=True))
                    for row in rows]


def gpu_rows(devices: list[Device], chosen: list[Field], count: int) -> list[list[str | None]]:
    return [[_GPU.get(f.name, _none)(d, count) for f in chosen] for d in devices]


def app_rows(devices: list[Device], chosen: list[Field]) -> list[list[str | None]]:
    return [[_APPS[f.name](d) for f in chosen] for d in devices if d.row.pid > 0]


def listing(devices: list[Device]) -> list[str]:
    template = texts.load("nvidia_smi")["message"]["list_gpu"]
    return [template.format(index=d.row.index, name=d.row.name, uuid=d.uuid) for d in devices]


def timestamp(when: float) -> str:
    """"2024/11/21 19:58:02.123", local time, as nvidia-smi's timestamp field."""
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"


def _cell(value: str | None, unit: str, fmt: Format) -> str:
    if value is None:
        return NA
    return f"{value} {unit}" if unit and fmt.units else value


@cache
def _names(table: str) -> dict[str, Field]:
    """Every spelling (canonical and alias) -> its field."""
    names = {}
    for name, body in texts.load("nvidia_smi")[table].items():
        field = Field(name, body["unit"])
        for spelling in (name, *body.get("aliases", ())):
            names[spelling] = field
    return names


def _none(d: Device, count: int) -> None:
    return None


def _enabled(flag: bool) -> str:
    return "Enabled" if flag else "Disabled"


def _uncorrected(d: Device) -> str | None:
    return str(d.dram_uncorrectable) if _ecc(d) == "Enabled" else None


def _ecc(d: Device) -> str | None:
    mode = d.board("ecc")
    return None if mode == "N/A" else _enabled(mode != "Off")


def _mig(d: Device) -> str | None:
    mode = d.board("mig")
    return None if mode == "N/A" else mode


def _fan(d: Device) -> str | None:
    fan = d.board("fan")
    return None if fan == "N/A" else fan.rstrip("%")


def _reason(active: bool) -> str:
    return "Active" if active else "Not Active"


def _watts(value: float) -> str:
    return f"{value:.2f}"


def _zero(d: Device, count: int) -> str:
    return "0"


Value = Callable[[Device, int], "str | None"]

# The modelled --query-gpu fields; `count` is the number of GPUs on the host.
_GPU: dict[str, Value] = {
    "timestamp": lambda d, n: timestamp(d.snap.shown_time),
    "driver_version": lambda d, n: d.snap.driver,
    "count": lambda d, n: str(n),
    "name": lambda d, n: d.row.name,
    "serial": lambda d, n: d.serial,
    "uuid": lambda d, n: d.uuid,
    "pci.bus_id": lambda d, n: d.row.bus_id,
    "pci.domain": lambda d, n: "0x0000",
    "pci.bus": lambda d, n: f"0x{d.bus}",
    "pci.device": lambda d, n: "0x00",
    "pci.device_id": lambda d, n: d.card.device_id,
    "pci.sub_device_id": lambda d, n: d.card.subsystem_id,
    "pcie.link.gen.current": lambda d, n: str(d.pcie_gen),
    "pcie.link.gen.gpucurrent": lambda d, n: str(d.pcie_gen),
    "pcie.link.gen.max": lambda d, n: str(d.pcie_gen),
    "pcie.link.gen.gpumax": lambda d, n: str(d.pcie_gen),
    "pcie.link.gen.hostmax": lambda d, n: str(d.pcie_gen),
    "pcie.link.width.current": lambda d, n: "16",
    "pcie.link.width.max": lambda d, n: "16",
    "index": lambda d, n: str(d.row.index),
    "display_mode": lambda d, n: "Enabled",
    "display_active": lambda d, n: "Disabled",
    "persistence_mode": lambda d, n: _enabled(d.board("persistence") == "On"),
    "addressing_mode": lambda d, n: "None",
    "accounting.mode": lambda d, n: "Disabled",
    "accounting.buffer_size": lambda d, n: "4000",
    "vbios_version": lambda d, n: d.card.vbios,
    "fan.speed": lambda d, n: _fan(d),
    "pstate": lambda d, n: d.pstate,
    "clocks_event_reasons.supported": lambda d, n: "0x00000000000001FF",
    "clocks_event_reasons.active": lambda d, n: f"0x{d.reasons:016X}",
    "clocks_event_reasons.gpu_idle": lambda d, n: _reason(not d.busy),
    "clocks_event_reasons.sw_power_cap": lambda d, n: _reason(d.capped),
    # Each reason "Active" or "Not Active", as the H100 capture's --query-gpu of every field
    # (utkuozdemir/nvidia_gpu_exporter internal/captures/, 590.48.01) reads them.
    "clocks_event_reasons.applications_clocks_setting": lambda d, n: _reason(False),
    "clocks_event_reasons.hw_slowdown": lambda d, n: _reason(bool(d.reasons & HW_SLOWDOWN)),
    "clocks_event_reasons.hw_thermal_slowdown": lambda d, n: _reason(bool(d.reasons & HW_THERMAL)),
    "clocks_event_reasons.hw_power_brake_slowdown": lambda d, n: _reason(False),
    "clocks_event_reasons.sw_thermal_slowdown": lambda d, n: _reason(bool(d.reasons & SW_THERMAL)),
    "clocks_event_reasons.sync_boost": lambda d, n: _reason(False),
    "memory.total": lambda d, n: str(d.row.mem_total_mib),
    "memory.reserved": lambda d, n: str(d.mem_reserved),
    "memory.used": lambda d, n: str(d.row.mem_used_mib),
    "memory.free": lambda d, n: str(d.mem_free),
    "compute_mode": lambda d, n: "Default",
    "compute_cap": lambda d, n: d.card.compute_cap,
    "utilization.gpu": lambda d, n: str(d.row.util),
    "utilization.memory": lambda d, n: str(d.mem_util),
    "utilization.encoder": _zero,
    "utilization.decoder": _zero,
    "utilization.jpeg": _zero,
    "utilization.ofa": _zero,
    "ecc.mode.current": lambda d, n: _ecc(d),
    "ecc.mode.pending": lambda d, n: _ecc(d),
    "ecc.errors.corrected.volatile.total": lambda d, n: "0" if _ecc(d) == "Enabled" else None,
    "ecc.errors.uncorrected.volatile.total": lambda d, n: _uncorrected(d),
    "ecc.errors.corrected.aggregate.total": lambda d, n: "0" if _ecc(d) == "Enabled" else None,
    "ecc.errors.uncorrected.aggregate.total": lambda d, n: _uncorrected(d),
    "temperature.gpu": lambda d, n: str(d.row.temp_c),
    "temperature.gpu.tlimit": lambda d, n: str(d.tlimit) if d.card.tlimit else None,
    "temperature.memory": lambda d, n: None if d.mem_temp is None else str(d.mem_temp),
    "power.management": lambda d, n: "Enabled",
    "power.draw": lambda d, n: _watts(d.power),
    "power.limit": lambda d, n: _watts(d.row.power_cap_w),
    "enforced.power.limit": lambda d, n: _watts(d.row.power_cap_w),
    "power.default_limit": lambda d, n: _watts(d.row.power_cap_w),
    "power.min_limit": lambda d, n: _watts(d.card.power_min_w),
    "power.max_limit": lambda d, n: _watts(d.row.power_cap_w),
    "clocks.current.graphics": lambda d, n: str(d.clock_graphics),
    "clocks.current.sm": lambda d, n: str(d.clock_graphics),
    "clocks.current.memory": lambda d, n: str(d.clock_memory),
    "clocks.current.video": lambda d, n: str(d.clock_video),
    "clocks.applications.graphics": lambda d, n: str(d.app_graphics),
    "clocks.applications.memory": lambda d, n: str(d.card.clocks["memory"]),
    "clocks.default_applications.graphics": lambda d, n: str(d.app_graphics),
    "clocks.default_applications.memory": lambda d, n: str(d.card.clocks["memory"]),
    "clocks.max.graphics": lambda d, n: str(d.card.clocks["graphics"]),
    "clocks.max.sm": lambda d, n: str(d.card.clocks["graphics"]),
    "clocks.max.memory": lambda d, n: str(d.card.clocks["memory"]),
    "mig.mode.current": lambda d, n: _mig(d),
    "mig.mode.pending": lambda d, n: _mig(d),
    "protected_memory.total": _zero,
    "protected_memory.used": _zero,
    "protected_memory.free": _zero,
}

_APPS: dict[str, Callable[[Device], Any]] = {
    "timestamp": lambda d: timestamp(d.snap.shown_time),
    "gpu_name": lambda d: d.row.name,
    "gpu_bus_id": lambda d: d.row.bus_id,
    "gpu_serial": lambda d: d.serial,
    "gpu_uuid": lambda d: d.uuid,
    "pid": lambda d: str(d.row.pid),
    "process_name": lambda d: d.snap.process,
    "used_gpu_memory": lambda d: str(process_mib(d.row)),
}
