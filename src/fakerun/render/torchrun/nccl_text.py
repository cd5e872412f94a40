"""NCCL's debug output rules and texts, per pinned version (data/nccl.toml):
NCCL_DEBUG's level and NCCL_DEBUG_SUBSYS's mask as src/debug.cc
ncclDebugInit reads them, and which INFO line passes ncclDebugLog's filter."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from fakerun import texts
from fakerun.world.catalog import Versions
from fakerun.world.settings import Settings

# src/include/nccl_common.h ncclDebugLogLevel
LEVELS = {"VERSION": 1, "WARN": 2, "INFO": 3, "ABORT": 4, "TRACE": 5}
INFO, WARN = LEVELS["INFO"], LEVELS["WARN"]
UNKNOWN = -1  # a value debug.cc does not know leaves ncclDebugLevel at -1: nothing prints
ALL = (1 << 64) - 1  # NCCL_ALL (~0), as the uint64_t mask holds it


@dataclass(frozen=True)
class Version:
    """One pinned NCCL's texts and debug rules (data/nccl.toml)."""

    name: str
    tag: str
    subsystems: tuple[str, ...]
    default_mask: int
    version_as_info: bool
    nvls_buff: int
    text: dict[str, list[tuple[int, str]]]
    main_rank0: tuple[str, ...]  # what rank 0's main thread says, in order
    main_other: tuple[str, ...]  # the other ranks' main thread
    init: tuple[str, ...]  # the thread that builds the communicator
    ring_numbers: str  # "fixed" or "fitted": how rings.cc's dumpLine lays out a ring
    socket_closed: tuple[str, str]  # the WARN's file:line and text
    ib_async: tuple[str, str]  # an HCA's async event: the WARN's file:line and text
    warn_timestamp: bool  # WARN lines begin with "[%F %T] " (2.27's default)
    version_text: str  # showVersion's VERSION_STRING (NCCL's, or RCCL's with its git hash)
    connect_order: str  # "channel" or "peer": how a rank's connection lines come
    kernel: str  # the host's kernel release, where the library prints it (RCCL)


@cache
def version(name: str) -> Version:
    """The table of NCCL `name` ("2.21.5"), or of RCCL ("rccl-2.20.5"); a
    version with no table of its own prints 2.21.5's. A table's `base` gives
    what it does not say, and the base's own base in turn."""
    data = texts.load("nccl")
    tables = data["version"]
    chain = [tables.get(name, tables["2.21.5"])]
    while "base" in chain[-1]:
        chain.append(tables[chain[-1]["base"]])
    merged = {k: v for table in reversed(chain) for k, v in table.items()}
    lines = {k: v for table in reversed(chain) for k, v in table.get("text", {}).items()}
    bits = data["bits"]
    text = {key: [(_flags(bits, flags), line) for flags, line in said] for key, said in lines.items()}
    return Version(name, merged["tag"], tuple(merged["subsystems"]),
                   _flags(bits, "|".join(merged["default_mask"])), merged["version_as_info"],
                   merged["nvls_buff"], text, tuple(merged["main_rank0"]), tuple(merged["main_other"]),
                   tuple(merged["init"]), merged["ring_numbers"], tuple(merged["socket_closed"]),
                   tuple(merged["ib_async"]), merged["warn_timestamp"], merged["version_text"],
                   merged["connect_order"], merged.get("kernel", ""))


def library(versions: Versions, vendor: str) -> Version:
    """The communication library a job's ranks load: NCCL, or on AMD GPUs RCCL
    (whose NCCL API version versions.nccl holds)."""
    return version(f"rccl-{versions.nccl}" if vendor == "amd" else versions.nccl)


def _flags(bits: dict[str, int], names: str) -> int:
    return sum(bits[name] for name in names.split("|"))


@dataclass(frozen=True)
class Debug:
    """NCCL_DEBUG and NCCL_DEBUG_SUBSYS as src/debug.cc ncclDebugInit reads them."""

    level: int  # 0: NCCL_LOG_NONE
    mask: int

    @classmethod
    def of(cls, settings: Settings, nccl: Version) -> Debug:
        return cls(_level(settings.env("NCCL_DEBUG")), _mask(settings.env("NCCL_DEBUG_SUBSYS"), nccl))

    def warns(self) -> bool:
        """A WARN(...) prints: WARN and above, its NCCL_ALL flags in any mask."""
        return self.level >= WARN and self.mask != 0

    def info(self, flags: int) -> bool:
        """An INFO(flags, ...) call prints (ncclDebugLog: level and mask)."""
        return self.level >= INFO and bool(flags & self.mask)


def _level(value: str | None) -> int:
    if value is None:
        return 0
    return LEVELS.get(value.upper(), UNKNOWN)  # strcasecmp


def _mask(value: str | None, nccl: Version) -> int:
    """A comma-separated list of subsystems, `^` to remove them from all;
    names NCCL does not know are skipped (strtok skips empty ones)."""
    if value is None:
        return nccl.default_mask
    invert = value.startswith("^")
    mask = ALL if invert else 0
    bits = texts.load("nccl")["bits"]
    for name in filter(None, value.removeprefix("^").split(",")):
        name = name.upper()
        bit = ALL if name == "ALL" else bits[name] if name in nccl.subsystems else 0
        mask = mask & ~bit if invert else mask | bit
    return mask
