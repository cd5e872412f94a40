"""One GPU as nvidia-smi's other outputs (--query-gpu, -q, -L) show it:
the table's row (its readings) and what the board itself reports (its
card in data/nvidia_smi.toml: ids, clocks, limits). Every figure follows
from the row, so the query, the report and the table agree; the run's seed
draws what a real board carries from the factory (UUID, serial number)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from fakerun import texts
from fakerun.world import board, catalog, draws, xid
from fakerun.world.thermal import CLOCK_STEP_MHZ

if TYPE_CHECKING:
    from fakerun.smi.snapshot import GpuRow, Snapshot

# A process-less board's BAR1 holds the driver's own mapping; a CUDA
# context maps a few MiB more (1 MiB idle in the captures data/nvidia_smi.toml names).
BAR1_IDLE_MIB, BAR1_CONTEXT_MIB = 1, 4
MEMORY_UTIL_SHARE = 0.35  # DRAM busy time per unit of SM busy time in a training step
CAPPED_CLOCK = 0.9  # the share of its boost clock a board at its power cap keeps


@dataclass(frozen=True)
class Card:
    brand: str
    architecture: str
    compute_cap: str
    device_id: str
    subsystem_id: str
    vbios: str
    clocks: dict[str, int]
    idle: dict[str, Any]
    power_min_w: int
    reserved_mib: int
    bar1_mib: int
    hbm: bool
    tlimit: bool
    limits: tuple[int, int, int, int]  # shutdown, slowdown, max operating, memory max operating (C)
    app_graphics: int = 0  # 0: the boost clock
    parts: tuple[str, str] = ("N/A", "N/A")  # board, GPU part numbers
    inforom: tuple[str, str, str] = ("N/A", "N/A", "N/A")
    banks: int = 0  # row-remapping banks: 0, none (the board retires pages instead, or has no ECC)

    @property
    def desktop(self) -> bool:
        return self.brand in ("GeForce", "Titan")


@cache
def card(name: str) -> Card:
    body = dict(texts.load("nvidia_smi")["card"][name])
    for key in ("limits", "parts", "inforom"):
        if key in body:
            body[key] = tuple(body[key])
    return Card(**body)


def known(name: str) -> bool:
    return name in texts.load("nvidia_smi")["card"]


def process_mib(row: GpuRow) -> int:
    """The rank's own share of its GPU's used memory (the processes table's
    "GPU Memory"): what the driver keeps outside any process is not its."""
    return max(0, row.mem_used_mib - texts.load("nvidia_smi")["driver_reserved_mib"])


def pstate(row: GpuRow) -> str:
    """Held by a process, a board stays in P0; idle, in its idle state."""
    if row.pid or row.util or not known(row.name):
        return "P0"
    return str(card(row.name).idle["pstate"])


@dataclass(frozen=True)
class Device:
    snap: Snapshot
    row: GpuRow

    @cached_property
    def card(self) -> Card:
        return card(self.row.name)

    @property
    def busy(self) -> bool:
        return self.row.util > 0

    @property
    def pstate(self) -> str:
        return pstate(self.row)

    @property
    def capped(self) -> bool:
        return self.row.power_w >= self.row.power_cap_w

    @property
    def clock_graphics(self) -> int:
        """Idle, its idle clock; at work, its boost clock, less what its
        power cap or a thermal slowdown takes (world/hardware.py's condition)."""
        top = self.card.clocks["graphics"]
        if not self.busy:
            return int(self.card.idle["graphics"])
        share = min(self.row.clock_factor, CAPPED_CLOCK if self.capped else 1.0)
        return round(top * share / CLOCK_STEP_MHZ) * CLOCK_STEP_MHZ

    @property
    def clock_memory(self) -> int:
        return int(self.card.clocks["memory"] if self.pstate == "P0" else self.card.idle["memory"])

    @property
    def clock_video(self) -> int:
        return int(self.card.clocks["video"] if self.busy else self.card.idle["video"])

    @property
    def power(self) -> float:
        """The table's whole watts with the fraction it drops (never past the cap)."""
        fraction = 0.99 * draws.uniform(self.snap.seed, "smi-power", self.row.rank, self.snap.step)
        return min(float(self.row.power_cap_w), self.row.power_w + fraction)

    @property
    def mem_util(self) -> int:
        return round(self.row.util * MEMORY_UTIL_SHARE)

    @property
    def mem_reserved(self) -> int:
        return self.card.reserved_mib

    @property
    def mem_free(self) -> int:
        return max(0, self.row.mem_total_mib - self.card.reserved_mib - self.row.mem_used_mib)

    @property
    def bar1_used(self) -> int:
        return BAR1_CONTEXT_MIB if self.row.pid else BAR1_IDLE_MIB

    @property
    def mem_temp(self) -> int | None:
        """HBM sits beside the die and follows it, damped; GDDR boards report none."""
        return round(0.6 * self.row.temp_c + 20) if self.card.hbm else None

    @property
    def tlimit(self) -> int:
        """Degrees left below the board's maximum operating temperature."""
        return self.card.limits[2] - self.row.temp_c

    @cached_property
    def uuid(self) -> str:
        return board.uuid(self.snap.seed, self.row.host, self.row.bus_id)

    @cached_property
    def serial(self) -> str | None:
        """A data-centre board's 13-digit serial; desktop boards report none."""
        if self.card.desktop:
            return None
        return board.serial(self.snap.seed, self.row.host, self.row.bus_id)

    @property
    def dram_uncorrectable(self) -> int:
        """Uncorrectable DRAM ECC errors since the driver loaded (volatile):
        the Xid scenario's one, and none before it."""
        return 1 if xid.ecc_error(self.row.xid) else 0

    @property
    def app_graphics(self) -> int:
        return self.card.app_graphics or self.card.clocks["graphics"]

    @property
    def reasons(self) -> int:
        """NVML's clocks event reason bits: 0x1 GPU idle, 0x4 SW power cap,
        at work the thermal slowdowns its condition adds (0x8, 0x20, 0x40)."""
        work = self.row.throttle if self.busy else 0x1
        return work | (0x4 if self.capped else 0)

    def board(self, key: str) -> str:
        """How nvidia-smi's table shows the board (data/nvidia_smi.toml [board])."""
        boards = texts.load("nvidia_smi")["board"]
        return str(boards.get(self.row.name, boards["default"])[key])

    @cached_property
    def gpu(self) -> catalog.Gpu | None:
        """The board's row in data/gpus.txt (its bus ids, NVLink, architecture)."""
        return next((g for g in catalog.gpus() if g.name == self.row.name), None)

    @property
    def pcie_gen(self) -> int:
        return self.gpu.pcie_gen if self.gpu else 4

    @property
    def module(self) -> int:
        """An SXM board's place on its baseboard; a PCIe card is a module of its own."""
        return self.row.index + 1 if self.gpu and self.gpu.nvlink == "yes" else 1

    @property
    def bus(self) -> str:
        """"00000000:18:00.0" -> "18"."""
        return self.row.bus_id.split(":")[1]


def host_gpus(snap: Snapshot) -> list[Device]:
    """The GPUs of the host nvidia-smi runs on: node 0's (the coordinator's
    node, the one whose launcher writes the snapshot), in index order."""
    first = min(g.node for g in snap.gpus)
    return [Device(snap, g) for g in sorted(snap.gpus, key=lambda g: g.index) if g.node == first]
