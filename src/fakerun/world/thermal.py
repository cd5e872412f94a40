"""A GPU whose cooling fails (a chassis fan that stopped, a blocked air
path, a cold plate that lost its flow): the `thermal-throttle` scenario.

From the fault's step the board heats up over a few steps. Past its "GPU Max
Operating Temp" the driver's SW thermal slowdown lowers its SM clock; at its
"GPU Slowdown Temp" the hardware's own slowdown engages and holds it there,
at the clock whose heat its impaired cooling can still carry away. Its
compute slows by the clock's ratio, its draw falls with the clock, and NVML
reports the reasons. Pure: a function of the run's identity, the fault and
(rank, step), as world/hardware.py's condition is.

The board's limits and boost clock are nvidia-smi's (data/nvidia_smi.toml
[card.*] `limits` and `clocks`, from real `nvidia-smi -q` captures); the
reason bits are NVML's (nvml.h, nvmlClocksEventReason*)."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources

from fakerun.world import physics
from fakerun.world.identity import Identity

# nvml.h (and pynvml): nvmlClocksEventReasonHwSlowdown 0x8, SwThermalSlowdown
# 0x20, HwThermalSlowdown 0x40. nvidia-smi -q nests "HW Thermal Slowdown"
# under "HW Slowdown": the hardware's thermal slowdown is one of its causes,
# so both are active together.
HW_SLOWDOWN, SW_THERMAL, HW_THERMAL = 0x8, 0x20, 0x40
CLOCK_STEP_MHZ = 15  # boost clocks move in these steps (nvidia-smi never shows others)
# Of a training step's draw, what the SM clock does not move: HBM, NVLink,
# PCIe and leakage (an idle H100 in P0 alone draws 70 W of its 700 W cap,
# data/nvidia_smi.toml). The rest scales with f V^2, and V follows f along
# the board's voltage-frequency curve: with the cube of the clock.
FIXED_SHARE = 0.3
LOWEST_CLOCK = 0.3  # the hardware slowdown's deepest cut ("a factor of 2 or more", nvml.h), averaged


@dataclass(frozen=True)
class Throttle:
    clock_factor: float  # its SM clock over the boost clock
    temp_rise_c: float  # above what its training load alone would give
    power_factor: float  # its draw over what it would draw at the boost clock
    event_reasons: int


NONE = Throttle(1.0, 0.0, 1.0, 0)


@dataclass(frozen=True)
class Board:
    boost_mhz: int
    slowdown_c: int  # "GPU Slowdown Temp": the hardware slowdown engages
    max_operating_c: int  # "GPU Max Operating Temp": the driver's SW thermal slowdown holds below it


@functools.cache
def board(name: str) -> Board | None:
    """The card's figures in data/nvidia_smi.toml (the smi views read the
    same table through fakerun.texts); None for a board it has none of."""
    text = resources.files("fakerun").joinpath("data", "nvidia_smi.toml").read_text(encoding="utf-8")
    card = tomllib.loads(text)["card"].get(name)
    if card is None:
        return None
    _, slowdown, max_operating, _ = card["limits"]
    return Board(int(card["clocks"]["graphics"]), int(slowdown), int(max_operating))


def supported(ident: Identity) -> str | None:
    """Why the scenario cannot run on this run's GPUs, or None."""
    if ident.gpu.vendor != "nvidia" or board(ident.gpu.name) is None:
        return (f"--scenario thermal-throttle needs an NVIDIA GPU whose thermal limits nvidia-smi "
                f"reports (--gpu): {ident.gpu.name} has none here")
    return None


def throttle(ident: Identity, rank: int, step: int, start: int, cooling: float,
             heat_steps: float) -> Throttle:
    """The GPU of `rank` at `step`, its cooling `cooling` times worse since
    step `start`. In the first half of `heat_steps` it heats at full clock
    to its max operating temperature (the first, straight stretch of a
    climb towards a far hotter equilibrium); in the second the driver's SW
    slowdown trades clock for heat, which slows the climb, until the
    hardware slowdown holds it at its slowdown temperature."""
    card = board(ident.gpu.name)
    if card is None or step < start:
        return NONE
    load = physics.telemetry(ident, rank, step, "train")
    share = load.power_w / ident.gpu.power_cap_w
    progress = 2.0 * (step - start + 1) / heat_steps
    heating = min(1.0, progress)  # to its max operating temperature
    slowing = max(0.0, min(1.0, progress - 1.0))  # on from there to its slowdown temperature
    temp = load.temp_c + (card.max_operating_c - load.temp_c) * heating \
        + (card.slowdown_c - card.max_operating_c) * slowing
    clock = 1.0 - (1.0 - held_clock(card, load.temp_c, share, cooling)) * slowing
    clock = round(card.boost_mhz * clock / CLOCK_STEP_MHZ) * CLOCK_STEP_MHZ / card.boost_mhz
    reasons = (SW_THERMAL if heating >= 1 else 0) | (HW_SLOWDOWN | HW_THERMAL if slowing >= 1 else 0)
    return Throttle(clock, temp - load.temp_c, FIXED_SHARE + (1 - FIXED_SHARE) * clock**3, reasons)


def held_clock(card: Board, temp_c: float, share: float, cooling: float) -> float:
    """The clock at which the board stays at its slowdown temperature: its
    draw then heats it, through `cooling` times its heatsink's resistance,
    as far above the inlet as its slowdown temperature is. `temp_c` and
    `share` (of its power cap) are its healthy training reading."""
    inlet = temp_c - physics.HEATSINK_C_AT_CAP * share  # the inlet, and the board's own offset
    held = (card.slowdown_c - inlet) / (physics.HEATSINK_C_AT_CAP * cooling)
    dynamic = (held / share - FIXED_SHARE) / (1 - FIXED_SHARE)
    return max(LOWEST_CLOCK, min(1.0, max(0.0, dynamic) ** (1 / 3)))


def slowest(ident: Identity) -> float:
    """How many times slower the throttled GPU computes, at most: for the
    plan's bounds (its clock, rounded to the board's steps, never below
    the deepest cut)."""
    card = board(ident.gpu.name)
    return 1.0 if card is None else 1.0 / (LOWEST_CLOCK - CLOCK_STEP_MHZ / card.boost_mhz)
