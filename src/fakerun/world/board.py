"""What an NVIDIA board carries from the factory and every tool reports the
same: its UUID (nvidia-smi, NVML, DCGM, the kernel driver's "NVRM: GPU at
PCI:..." line) and its serial number. Drawn from the run's seed, the host and
the bus id ("00000000:18:00.0", as nvidia-smi spells it), so each view that
names the board names the same one."""

from __future__ import annotations

import uuid as uuidlib

from fakerun.world import draws


def smi_bus_id(bus: str) -> str:
    """data/gpus.txt's bus ("18") as nvidia-smi writes it: "00000000:18:00.0"."""
    return f"00000000:{bus.upper()}:00.0"


def uuid(seed: int, host: str, bus_id: str) -> str:
    r = draws.rng(seed, "nvidia-uuid", host, bus_id)
    return f"GPU-{uuidlib.UUID(int=r.getrandbits(128))}"


def serial(seed: int, host: str, bus_id: str) -> str:
    """A data-centre board's 13-digit serial (desktop boards report none)."""
    r = draws.rng(seed, "nvidia-serial", host, bus_id)
    return f"1{r.randrange(10**12):012d}"
