"""The Xid scenarios: a GPU's hardware fault as NVIDIA's kernel driver
reports it (data/xid.toml). Pure: which GPUs can have the fault, the lines
the driver logs on the GPU's node, the CUDA error the process then gets.
The fault is `xid` on --fail-rank's GPU at --fail-step (world/scenarios.py's
`xid` mechanism, its `code` parameter)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fakerun.world import board, draws
from fakerun.world.catalog import Gpu
from fakerun.world.identity import Identity

KIND = "xid"  # the mechanism's name in world/scenarios.FAULTS
LOST = 79  # the GPU has fallen off the bus: NVML and DCGM read nothing from it any more
HINT = " (ask for one that has it: --gpu 'NVIDIA H100 80GB HBM3')"
LINE_GAP_S = 4e-6  # between the lines of one report: the kernel stamps each as it prints it


@cache
def table() -> dict[str, Any]:
    text = resources.files("fakerun").joinpath("data", "xid.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def codes() -> tuple[int, ...]:
    return tuple(int(c) for c in table()["xid"])


def refusal(code: int, gpu: Gpu) -> str | None:
    """Why `gpu` cannot have Xid `code` (None: it can). An Xid is NVIDIA's
    driver's report: an AMD GPU's amdgpu driver has none. ECC needs a board
    with ECC memory (no GeForce, no TITAN), containment an A100 or a Hopper."""
    if code not in codes():
        return f"Xid {code} is not one fakerun simulates (it does {', '.join(map(str, codes()))})"
    if gpu.vendor != "nvidia":
        return f"an Xid is NVIDIA's driver's report; this run's GPU is {gpu.name} (ask for NVIDIA's: --gpu)"
    spec = table()["xid"][str(code)]
    if spec["cuda_error"] == "ecc_uncorrectable" and _desktop(gpu):
        return f"Xid {code} is an ECC error; the {gpu.name} has no ECC memory{HINT}"
    if spec.get("contained") and not contains_errors(gpu):
        return (f"Xid {code} comes from Ampere's error containment, which only A100 and Hopper GPUs have; "
                f"this run's GPU is {gpu.name}{HINT}")
    return None


def contains_errors(gpu: Gpu) -> bool:
    """GA100 and GH100 (NVIDIA's A100 memory error management guide)."""
    return gpu.architecture == "hopper" or (gpu.architecture == "ampere" and "A100" in gpu.name)


def remaps_rows(gpu: Gpu) -> bool:
    """Row remapping: Ampere, Ada and Hopper boards with ECC memory (Volta retires pages)."""
    return gpu.architecture in ("ampere", "ada", "hopper") and not _desktop(gpu)


def _desktop(gpu: Gpu) -> bool:
    return gpu.name.startswith(("NVIDIA GeForce", "NVIDIA TITAN"))


def ecc_error(last: int) -> bool:
    """Whether a GPU whose last Xid is `last` has had an uncorrectable ECC
    error (63: the row it recorded for remapping after one)."""
    return last in (48, 94, 95, 63)


def cuda_error(code: int) -> str:
    """What a CUDA call returns after Xid `code`, as cudaGetErrorString spells it."""
    return str(table()["cuda_error"][table()["xid"][str(code)]["cuda_error"]])


@dataclass(frozen=True)
class Report:
    """Xid `code` on the GPU of `rank`, as its node's kernel logs it."""

    ident: Identity
    rank: int
    code: int

    @property
    def node(self) -> int:
        return self.ident.topology.node_of(self.rank)

    def lines(self, pid: int) -> list[tuple[float, str]]:
        """(seconds after the fault, the line as dmesg shows it after its
        stamp): the board's UUID, then each Xid, then what follows them."""
        lines = _lines(self.ident.versions.driver)
        gpu, local = self.ident.gpu, self.ident.topology.local_rank_of(self.rank)
        bus, smi_bus = f"0000:{gpu.bus_id(local)}:00", board.smi_bus_id(gpu.bus_id(local))
        seed, host = self.ident.seed, self.ident.host(self.rank)
        out = [lines["uuid"].format(bus=bus, uuid=board.uuid(seed, host, smi_bus))]
        values = self._values(lines["sep"])
        for code in self.logged():
            message = table()["message"][str(code)]
            named = message["process"]
            who = lines["process"].format(pid=pid, name=lines["name"]) if named else lines["unknown"]
            text = message["text"].format(**values)
            out.append(lines["xid"].format(bus=bus, code=code, who=who, message=text))
        if self.code == LOST:
            out.append(lines["lost"].format(bus=bus))
            if not _desktop(gpu):  # osHandleGpuLost names the board by its serial, where it has one
                out.append(lines["serial"].format(bus=bus, serial=board.serial(seed, host, smi_bus)))
        return [(i * LINE_GAP_S, line) for i, line in enumerate(out)]

    def logged(self) -> list[int]:
        spec = table()["xid"][str(self.code)]
        remap = [63] if spec.get("remapped") and remaps_rows(self.ident.gpu) else []
        return [*spec["logged"], *remap]

    def _values(self, sep: str) -> dict[str, Any]:
        """Where in the board's memory the uncorrectable error is: a
        32-byte sector of its DRAM, and the HBM partition holding it."""
        r = draws.rng(self.ident.seed, "xid-address", self.rank)
        size = self.ident.gpu.memory_mib << 20
        return {"address": r.randrange(size >> 5) << 5, "partition": r.randrange(8),
                "subpartition": r.randrange(2), "sep": sep}


def _lines(driver: str) -> dict[str, str]:
    """data/xid.toml's [lines], with the driver branch's own over them."""
    lines = table()["lines"]
    branch = lines.get(driver.split(".")[0], {})
    return {k: v for k, v in lines.items() if isinstance(v, str)} | branch
