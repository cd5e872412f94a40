"""`nvidia-smi dmon [-i ID] [-s puc...] [-c COUNT] [-d SECONDS]` and
`nvidia-smi pmon [-i ID] [-c COUNT] [-d SECONDS]`: the scrolling monitors,
a row a GPU (dmon) or a process (pmon) each sample, from the same device
model as the table and the report (smi/device.py). Columns, widths and
units are data/nvidia_smi.toml [monitor]'s."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TextIO

from fakerun import texts
from fakerun.smi.device import Device, host_gpus
from fakerun.smi.report import PCIE_KBPS_PER_UTIL

if TYPE_CHECKING:
    from fakerun.smi.snapshot import Snapshot

DEFAULT_DELAY_S = 1
NOT_SAMPLED = "-"  # what dmon and pmon print for a metric the device gives none of


class Bad(Exception):
    """An option the monitor does not take (nvidia-smi's own refusal)."""


@dataclass(frozen=True)
class Watch:
    command: str  # dmon or pmon
    ids: tuple[str, ...] = ()
    groups: str = ""  # dmon -s: the metric groups, in nvidia-smi's order
    count: int | None = None  # -c: samples, or until Ctrl+C
    delay_s: int = DEFAULT_DELAY_S


def parse(command: str, argv: list[str]) -> Watch:
    data = _data()
    taken: dict[str, str] = {}
    words = iter(argv)
    for word in words:
        if word not in data[command]["options"]:
            raise Bad(word)
        value = next(words, None)
        if value is None:
            raise Bad(word)
        taken[word] = value
    return Watch(command, ids=tuple(i for i in taken.get("-i", "").split(",") if i),
                 groups=_groups(taken.get("-s", data["dmon"]["default"])),
                 count=_positive(taken, "-c"), delay_s=_positive(taken, "-d") or DEFAULT_DELAY_S)


def _groups(letters: str) -> str:
    order = _data()["dmon"]["order"]
    if not letters or set(letters) - set(order):
        raise Bad("-s")
    return "".join(g for g in order if g in letters)


def _positive(taken: dict[str, str], option: str) -> int | None:
    if option not in taken:
        return None
    if not taken[option].isdigit() or int(taken[option]) <= 0:
        raise Bad(option)
    return int(taken[option])


def stream(watch: Watch, snap: Snapshot, out: TextIO, locate: Callable[[], Snapshot | None],
           choose: Callable[[list[Device], tuple[str, ...]], list[Device]],
           sleep: Callable[[float], Any]) -> None:
    """The header, then a sample each `delay_s` until `count` (or Ctrl+C, or the job's end)."""
    out.write("".join(line + "\n" for line in header(watch)))
    done = 0
    while True:
        devices = choose(host_gpus(snap), watch.ids)
        out.write("".join(line + "\n" for line in sample(watch, devices)))
        out.flush()
        done += 1
        if watch.count is not None and done >= watch.count:
            return
        sleep(watch.delay_s)
        found = locate()
        if found is None:
            return
        snap = found


def header(watch: Watch) -> list[str]:
    if watch.command == "pmon":
        return list(_data()["pmon"]["header"])
    columns = _columns(watch)
    return ["# gpu" + "".join(f"{name:>7}" for name, _, _ in columns) + " ",
            "# Idx" + "".join(f"{unit:>7}" for _, unit, _ in columns) + " "]


def sample(watch: Watch, devices: list[Device]) -> list[str]:
    if watch.command == "pmon":
        return [_process(d) for d in devices]
    columns = _columns(watch)
    return [f"{d.row.index:>5}" + "".join(f"{_reading(d, key)!s:>7}" for _, _, key in columns) + " "
            for d in devices]


def _columns(watch: Watch) -> list[list[str]]:
    groups = _data()["dmon"]["columns"]
    return [column for g in watch.groups for column in groups[g]]


def _reading(d: Device, key: str) -> int | str:
    """One dmon column's value for `d` now."""
    traffic_mb = round(d.row.util * PCIE_KBPS_PER_UTIL / 1000) if d.busy else 0
    ecc = d.board("ecc") not in ("N/A", "Off")
    return {
        "power": int(d.power), "temp": d.row.temp_c,  # whole watts, as the table drops the fraction
        "mem_temp": NOT_SAMPLED if d.mem_temp is None else d.mem_temp,
        "util": d.row.util, "mem_util": d.mem_util, "clock_memory": d.clock_memory,
        "clock_graphics": d.clock_graphics, "fb": d.row.mem_used_mib, "bar1": d.bar1_used,
        "pci": traffic_mb, "ecc": 0 if ecc else NOT_SAMPLED, "zero": 0,
    }[key]


def _process(d: Device) -> str:
    """pmon's row for the GPU's process: Linux's 15-character command name
    (/proc/PID/comm); an idle sample shows "-" for its engines."""
    layout = _data()["pmon"]
    if d.row.pid <= 0:
        return layout["row"].format(gpu=d.row.index, pid=NOT_SAMPLED, type=NOT_SAMPLED, sm=NOT_SAMPLED,
                                    mem=NOT_SAMPLED, command=NOT_SAMPLED)
    sm, mem = (d.row.util, d.mem_util) if d.busy else (NOT_SAMPLED, NOT_SAMPLED)
    return layout["row"].format(gpu=d.row.index, pid=d.row.pid, type="C", sm=sm, mem=mem,
                                command=os.path.basename(d.snap.process)[:15])


@cache
def _data() -> dict[str, Any]:
    return texts.load("nvidia_smi")["monitor"]
