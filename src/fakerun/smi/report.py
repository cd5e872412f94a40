"""`nvidia-smi -q -d MEMORY,UTILIZATION,...`: the NVSMI LOG report, its
sections as data (data/nvidia_smi.toml [report]): the banner, the header
(timestamp, driver, CUDA, attached GPUs), then for each GPU its bus id and
the chosen sections in the report's own order, an empty line after each."""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from fakerun import texts
from fakerun.smi.device import Device, process_mib
from fakerun.world import draws
from fakerun.world.thermal import HW_SLOWDOWN, HW_THERMAL, SW_THERMAL

# The core's voltage, idle and at boost (the 535 A100 report: 706.250 mV idle), in 6.25 mV steps.
VOLTAGE_MV = {False: "706.250", True: "881.250"}
PCIE_KBPS_PER_UTIL = 120  # a training rank's host link: batches in, logs and metrics out
SAMPLES = 99  # the driver keeps this many of each reading; a query shows them all
SAMPLE_PERIOD_S = 0.2  # one sample every ~200 ms: 99 span about 19.6 s


def sections() -> list[str]:
    """The -d names nvidia-smi takes that fakerun draws, in report order."""
    return list(_data()["order"])


def report(devices: list[Device], count: int, chosen: list[str]) -> list[str]:
    """`devices`: the GPUs shown (-i); `count`: every GPU the host has;
    `chosen`: the -d sections, or none for the whole report."""
    data = _data()
    lines = ["", data["banner"], "", *(_line(t.format(**header(devices, count))) for t in data["header"])]
    for d in devices:
        lines.append(f"GPU {d.row.bus_id}")
        found = values(d)
        for template in templates(data, d, chosen):
            if not template.startswith("{samples:"):
                lines.append(_line(template.format(**found)))
            elif chosen:  # the samples blocks are only -d's
                lines.extend(_samples(d, *template[len("{samples:"):-1].split(":"), found))
        lines.append("")
    return lines


def header(devices: list[Device], count: int) -> dict[str, Any]:
    snap = devices[0].snap
    return {"timestamp": time.ctime(snap.shown_time), "driver": snap.driver, "cuda": snap.cuda,
            "count": count}


def values(d: Device) -> dict[str, Any]:
    """Every value either rendering (text or XML) of the report shows for `d`."""
    return {**_values(d), **_identity(d)}


def templates(table: dict[str, Any], d: Device, chosen: list[str]) -> list[str]:
    """`d`'s block of `table` (the text report's or the XML's): the chosen
    -d sections in the report's order, or the whole block."""
    if chosen:
        return [t for name in sections() if name in chosen for t in _section(table, name, d)]
    out: list[str] = []
    for template in table["whole"]:
        if template.startswith("{section:"):
            out.extend(_section(table, template[len("{section:"):-1], d))
        elif template.startswith("{block:"):
            out.extend(table["block"][_block(template[len("{block:"):-1], d)])
        else:
            out.append(template)
    return out


def _block(name: str, d: Device) -> str:
    return "no_remapping" if name == "remapped" and not d.card.banks else name


def _section(table: dict[str, Any], name: str, d: Device) -> list[str]:
    if name == "PIDS" and d.row.pid <= 0:
        return list(table["section"]["no_processes"])
    if name == "TEMPERATURE" and d.card.tlimit:
        name = "TEMPERATURE_TLIMIT"
    return list(table["section"][name])


def _identity(d: Device) -> dict[str, Any]:
    """The whole report's other keys: the board's identity, its link, its ECC."""
    card, row = d.card, d.row
    ecc, mig, fan = d.board("ecc"), d.board("mig"), d.board("fan")
    ecc_mode = {"N/A": "N/A", "Off": "Disabled"}.get(ecc, "Enabled")
    retires = ecc_mode == "Enabled" and not card.banks  # ECC before row remapping (Volta)
    traffic = round(row.util * PCIE_KBPS_PER_UTIL) if d.busy else 0
    return {
        "name": row.name, "brand": card.brand, "architecture": card.architecture,
        "persistence": "Enabled" if d.board("persistence") == "On" else "Disabled", "mig": mig,
        "serial": d.serial or "N/A", "uuid": d.uuid, "index": row.index, "vbios": card.vbios,
        "board_id": f"0x{d.bus.lower()}00", "board_part": card.parts[0], "gpu_part": card.parts[1],
        "module": d.module, "inforom_img": card.inforom[0], "inforom_oem": card.inforom[1],
        "inforom_ecc": card.inforom[2], "gsp": d.snap.driver, "bus": d.bus, "device_id": card.device_id,
        "bus_id": row.bus_id, "subsystem_id": card.subsystem_id, "pcie": d.pcie_gen, "tx": traffic,
        "rx": traffic, "fan": fan.replace("%", " %"), "ecc_mode": ecc_mode,
        "ecc_count": "0" if ecc_mode == "Enabled" else "N/A", "retired": "0" if retires else "N/A",
        "banks": card.banks, **_uncorrectable(d, ecc_mode == "Enabled", retires),
        "voltage": VOLTAGE_MV[d.busy],
    }


def _uncorrectable(d: Device, ecc: bool, retires: bool) -> dict[str, str]:
    """An uncorrectable DRAM error's traces (the ecc-* scenarios): counted,
    and its memory set aside at the next reset: a page to retire (Volta,
    "Pending Page Blacklist"), or a row recorded for remapping (Ampere on,
    "Pending : Yes"; NVIDIA's A100 memory error management guide, "User
    Visible Statistics"), the bank histogram unchanged until then."""
    count = d.dram_uncorrectable
    pending = "Yes" if count else "No"
    return {"dram_unc": str(count) if ecc else "N/A", "retired_dbe": str(count) if retires else "N/A",
            "retired_pending": pending if retires else "N/A", "remap_unc": str(count),
            "remap_pending": pending}


def _samples(d: Device, title: str, key: str, unit: str, values: dict[str, Any]) -> list[str]:
    """The last SAMPLES readings of `key`: a loaded reading swings a little
    around the current one, an idle one not at all."""
    now = float(values[key])
    spread = 0.0 if now == 0 else 0.04
    low = now * (1 - spread * draws.uniform(d.snap.seed, "samples", key, d.row.rank, d.snap.step))
    high = min(now * (1 + spread * draws.uniform(d.snap.seed, "samples-hi", key, d.row.rank, d.snap.step)),
               _ceiling(d, key, now))
    avg = (low + 2 * now + high) / 4
    show = (lambda v: f"{v:.2f}") if unit == "W" else (lambda v: str(round(v)))
    fields = {"title": title, "duration": f"{SAMPLES * SAMPLE_PERIOD_S:.2f}", "count": SAMPLES,
              "max": show(high), "min": show(low), "avg": show(avg), "unit": unit}
    return [_line(t.format(**fields)) for t in _data()["section"]["samples"]]


def _ceiling(d: Device, key: str, now: float) -> float:
    """No sample passes what the board can reach."""
    return {"util": 100.0, "mem_util": 100.0, "power": float(d.row.power_cap_w),
            "clock_graphics": float(d.card.clocks["graphics"]),
            "clock_memory": float(d.card.clocks["memory"])}.get(key, now)


def _values(d: Device) -> dict[str, Any]:
    card, row = d.card, d.row
    shutdown, slowdown, max_op, mem_max = card.limits
    return {
        "pstate": d.pstate, "reason_idle": _active(not d.busy), "reason_power": _active(d.capped),
        "reason_hw": _active(bool(d.reasons & HW_SLOWDOWN)),
        "reason_hw_thermal": _active(bool(d.reasons & HW_THERMAL)),
        "reason_sw_thermal": _active(bool(d.reasons & SW_THERMAL)),
        "mem_total": row.mem_total_mib, "mem_reserved": d.mem_reserved, "mem_used": row.mem_used_mib,
        "mem_free": d.mem_free, "bar1_total": card.bar1_mib, "bar1_used": d.bar1_used,
        "bar1_free": card.bar1_mib - d.bar1_used, "util": row.util, "mem_util": d.mem_util, "zero": 0,
        "temp": row.temp_c, "tlimit": d.tlimit, "shutdown": shutdown, "slowdown": slowdown,
        "max_op": max_op, "shutdown_margin": max_op - shutdown, "slowdown_margin": max_op - slowdown,
        "mem_temp": "N/A" if d.mem_temp is None else f"{d.mem_temp} C",
        "mem_max": f"{mem_max} C" if card.hbm else "N/A", "mem_margin": "0 C" if card.hbm else "N/A",
        "power": f"{d.power:.2f}", "cap": f"{row.power_cap_w:.2f}", "power_min": f"{card.power_min_w:.2f}",
        "clock_graphics": d.clock_graphics, "clock_memory": d.clock_memory, "clock_video": d.clock_video,
        "app_graphics": d.app_graphics, "max_graphics": card.clocks["graphics"],
        "max_memory": card.clocks["memory"], "max_video": card.clocks["video"],
        "pid": row.pid, "process": d.snap.process, "process_mib": process_mib(row),
    }


def _active(flag: bool) -> str:
    return "Active" if flag else "Not Active"


def _line(text: str) -> str:
    """"    Total : 40960 MiB" -> the key padded to the report's width, then ": "."""
    if " : " not in text:
        return text
    key, value = text.split(" : ", 1)
    return f"{key:<{_data()['key_width']}}: {value}"


@cache
def _data() -> dict[str, Any]:
    return texts.load("nvidia_smi")["report"]
