"""A --loop's agent draws run after run in one process, and computes each
run's GPUs (the smi sink's telemetry) and loss spikes: what it keeps of a run
must not grow with the number of runs."""

from __future__ import annotations

import sys
from typing import Any

from fakerun.cli.main import to_config
from fakerun.cli.parser import build_parser
from fakerun.config.options import RunConfig
from fakerun.config.plan import next_run
from fakerun.world import physics

WARM_UP = 40  # bounded tables fill up in these (the largest, 128 entries, in ~30)
RUNS = 30


def memos() -> dict[str, Any]:
    """Every functools cache of fakerun's loaded modules, by name."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("fakerun.") and module is not None:
            for obj in vars(module).values():
                if callable(getattr(obj, "cache_info", None)) and getattr(obj, "__module__", "") == name:
                    found[f"{name}.{obj.__qualname__}"] = obj
    return found


def run(config: RunConfig, cycle: int) -> None:
    """What node 0's agent computes of a --loop run, besides rendering: the
    draw, every GPU's readings at the first and last steps, rank 0's loss."""
    ident = next_run(config, cycle).identity
    for step in (1, ident.hyper.total_steps):
        for rank in range(ident.world):
            physics.telemetry(ident, rank, step, "train")
        physics.local_loss(ident, 0, step)


def test_a_loops_runs_leave_every_cache_as_full_as_it_was() -> None:
    # A default two-node job: no model or step count fixed, so runs differ most.
    config = to_config(build_parser().parse_args(["--nnodes", "2", "--nproc-per-node", "8", "--seed", "7"]))
    for cycle in range(1, WARM_UP + 1):
        run(config, cycle)
    before = {name: memo.cache_info().currsize for name, memo in memos().items()}
    for cycle in range(WARM_UP + 1, WARM_UP + RUNS + 1):
        run(config, cycle)
    after = {name: memo.cache_info().currsize for name, memo in memos().items()}
    grown = {name: (before.get(name, 0), size) for name, size in after.items() if size > before.get(name, 0)}
    assert not grown, f"caches that grew over {RUNS} more runs (entries before, after): {grown}"
