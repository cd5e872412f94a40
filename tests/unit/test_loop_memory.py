"""A --loop's agent draws run after run in one process: what it keeps from
a draw must not grow with the number of draws."""

from __future__ import annotations

import sys
from typing import Any

from fakerun.cli.main import to_config
from fakerun.cli.parser import build_parser
from fakerun.config.plan import next_run

WARM_UP = 40  # bounded tables fill up in these (the largest, 128 entries, in ~30)
DRAWS = 30


def memos() -> dict[str, Any]:
    """Every functools cache of fakerun's loaded modules, by name."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("fakerun.") and module is not None:
            for obj in vars(module).values():
                if callable(getattr(obj, "cache_info", None)) and getattr(obj, "__module__", "") == name:
                    found[f"{name}.{obj.__qualname__}"] = obj
    return found


def test_a_loops_draws_leave_every_cache_as_full_as_it_was() -> None:
    # A default two-node job: no model or step count fixed, so draws differ most.
    config = to_config(build_parser().parse_args(["--nnodes", "2", "--nproc-per-node", "8", "--seed", "7"]))
    for cycle in range(1, WARM_UP + 1):
        next_run(config, cycle)
    before = {name: memo.cache_info().currsize for name, memo in memos().items()}
    for cycle in range(WARM_UP + 1, WARM_UP + DRAWS + 1):
        next_run(config, cycle)
    after = {name: memo.cache_info().currsize for name, memo in memos().items()}
    grown = {name: (before.get(name, 0), size) for name, size in after.items() if size > before.get(name, 0)}
    assert not grown, f"caches that grew over {DRAWS} more draws (entries before, after): {grown}"
