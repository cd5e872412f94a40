"""The scenario catalog: named fault timelines, as data (data/scenarios.toml),
or a custom TOML file with the same keys."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from .files import read_regular

# The mechanisms the ranks implement (script.py); a scenario picks one.
FAULTS = ("spike", "nan", "oom", "crash", "exit", "segv", "stall", "slow", "hang", "node-down", "preempt")
# A scenario file is a few lines; a larger one is not one (nor read whole).
MAX_FILE_BYTES = 64 * 1024
PARAMS = {"spike": {"height": 0.6, "decay": 6.0}, "slow": {"factor": 2.5}}
# A straggler is slower by a few times (a throttled GPU, a slow link), tens at
# worst; a rank 1000 times slower than its peers is a hung one (the `hang` and
# `nccl-timeout` scenarios). Its factor also stretches the rank's paced sleep:
# 1e13 overflowed time.sleep in the rank (a traceback, exit 1).
PARAM_MAX = {"factor": 1000.0}


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    fault: str | None = None
    params: dict[str, float] = field(default_factory=dict)


@cache
def catalog() -> dict[str, Scenario]:
    text = resources.files("fakerun").joinpath("data", "scenarios.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return {name: _build(name, body, "fakerun/data/scenarios.toml") for name, body in data.items()}


def resolve(name_or_path: str) -> Scenario:
    """A catalog name, or a path to a TOML file describing one scenario."""
    if name_or_path in catalog():
        return catalog()[name_or_path]
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or _there(path):
        try:  # a FIFO hung read_text for ever; /dev/null read as an empty scenario
            body = tomllib.loads(read_regular(path, MAX_FILE_BYTES).decode("utf-8"))
        except OSError as exc:
            raise ScenarioError(f"--scenario {_short(name_or_path)}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"--scenario {_short(name_or_path)}: {exc}") from None
        return _build(path.stem, body, name_or_path)
    raise ScenarioError(f"unknown scenario {_short(name_or_path)!r}; see --list-scenarios")


def _there(path: Path) -> bool:
    """Something is at `path`, or a stat says why it cannot tell (a name
    too long, a symlink loop): then the read says so."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _short(text: str) -> str:
    return text if len(text) <= 120 else f"{text[:80]}...{text[-30:]}"


def _build(name: str, body: dict, source: str) -> Scenario:
    fault = body.get("fault")
    if fault is not None and fault not in FAULTS:
        raise ScenarioError(f"{source}: [{name}] fault {fault!r} is not one of {', '.join(FAULTS)}")
    unknown = set(body) - {"description", "fault", *PARAMS.get(fault or "", {})}
    if unknown:
        raise ScenarioError(f"{source}: [{name}] unknown keys: {', '.join(sorted(unknown))}")
    params = dict(PARAMS.get(fault or "", {}))
    for key in params:
        value = body.get(key, params[key])
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
            raise ScenarioError(f"{source}: [{name}] {key} must be a positive number")
        if value > PARAM_MAX.get(key, math.inf):
            raise ScenarioError(f"{source}: [{name}] {key} must be at most {PARAM_MAX[key]:g}, got {value:g}")
        params[key] = float(value)
    return Scenario(name, str(body.get("description", "")), fault, params)


def listing() -> str:
    width = max(len(n) for n in catalog())
    return "\n".join(f"{n:<{width}}  {s.description}" for n, s in catalog().items())
