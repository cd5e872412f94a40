"""The scenario catalog: named fault timelines, as data (data/scenarios.toml),
or a custom TOML file with the same keys."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from fakerun.errors import UsageError

# The mechanisms the ranks implement (rank/faults.py); a scenario picks one.
FAULTS = ("spike", "nan", "oom", "crash", "exit", "segv", "stall", "slow", "hang", "node-down", "preempt",
          "xid", "thermal", "link-flap")
# xid's code: which of data/xid.toml's Xids the GPU raises (world/xid.py).
PARAMS = {"spike": {"height": 0.6, "decay": 6.0}, "slow": {"factor": 2.5}, "xid": {"code": 79.0},
          "thermal": {"cooling": 2.5, "heat_steps": 4.0}, "link-flap": {"unplugged_s": 1.0}}
# The faults of the script itself: a restarted attempt runs the same code on
# the same data from its checkpoint, so under --max-restarts they fail every
# attempt at the same step, as a real deterministic bug does. The others
# (hardware, the network, the scheduler) are gone after a restart. A
# scenario's `recurs` key says otherwise.
RECURRING = frozenset({"nan", "oom", "exit"})
# A straggler is slower by a few times (a throttled GPU, a slow link), tens at
# worst; a rank 1000 times slower than its peers is a hung one (the `hang` and
# `nccl-timeout` scenarios). Its factor also stretches the rank's paced sleep:
# 1e13 overflowed time.sleep in the rank (a traceback, exit 1).
PARAM_MAX = {"factor": 1000.0, "cooling": 4.0}
# A GPU's cooling `cooling` times worse than its heatsink's: from twice, it
# would pass its slowdown temperature at full clock on every board of the
# catalog; at four times, its clock settles near a third of its boost clock,
# the hardware slowdown's deepest (world/thermal.py).
PARAM_MIN = {"cooling": 2.0}


class ScenarioError(UsageError):
    pass


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    fault: str | None = None
    params: dict[str, float] = field(default_factory=dict)
    recurs: bool = False  # the fault comes back in every restarted attempt


@cache
def catalog() -> dict[str, Scenario]:
    text = resources.files("fakerun").joinpath("data", "scenarios.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return {name: build(name, body, "fakerun/data/scenarios.toml") for name, body in data.items()}


def build(name: str, body: dict, source: str) -> Scenario:
    """A scenario from its TOML table, every key checked."""
    fault = body.get("fault")
    if fault is not None and fault not in FAULTS:
        raise ScenarioError(f"{source}: [{name}] fault {fault!r} is not one of {', '.join(FAULTS)}")
    unknown = set(body) - {"description", "fault", "recurs", *PARAMS.get(fault or "", {})}
    if unknown:
        raise ScenarioError(f"{source}: [{name}] unknown keys: {', '.join(sorted(unknown))}")
    params = dict(PARAMS.get(fault or "", {}))
    for key in params:
        value = body.get(key, params[key])
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
            raise ScenarioError(f"{source}: [{name}] {key} must be a positive number")
        if value > PARAM_MAX.get(key, math.inf):
            raise ScenarioError(f"{source}: [{name}] {key} must be at most {PARAM_MAX[key]:g}, got {value:g}")
        if value < PARAM_MIN.get(key, 0.0):
            raise ScenarioError(f"{source}: [{name}] {key} must be at least {PARAM_MIN[key]:g}, "
                                f"got {value:g}")
        params[key] = float(value)
    recurs = body.get("recurs", fault in RECURRING)
    if not isinstance(recurs, bool):
        raise ScenarioError(f"{source}: [{name}] recurs must be true or false")
    return Scenario(name, str(body.get("description", "")), fault, params, recurs)


def listing() -> str:
    width = max(len(n) for n in catalog())
    return "\n".join(f"{n:<{width}}  {s.description}" for n, s in catalog().items())
