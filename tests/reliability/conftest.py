"""The reliability tier: faults injected at seeded-random moments.

Every random choice (which rank, which moment, which bytes) comes from
`rng(name)`, seeded by $FAKERUN_RELIABILITY_SEED (default 7): a failure
names its seed, and the same seed picks the same moments again (where the
signal then lands still depends on the machine's timing).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from tests.conftest import wait_until

T = TypeVar("T")

SEED = int(os.environ.get("FAKERUN_RELIABILITY_SEED", "7"))


def rng(name: str) -> random.Random:
    """An RNG of its own for each use, so adding a draw elsewhere changes nothing here."""
    return random.Random(f"{SEED}:{name}")


def seed_note() -> str:
    return f"FAKERUN_RELIABILITY_SEED={SEED}"


def side_by_side(run: Callable[[int], T], count: int, at_once: int | None = None) -> list[T]:
    """`run(0) .. run(count - 1)` in threads, results in order. The jobs are
    paced (they mostly sleep), so side by side they cost little more wall
    time than one; an exception in any is raised here."""
    with ThreadPoolExecutor(at_once or count) as pool:
        return list(pool.map(run, range(count)))


def seconds_until(predicate: Callable[[], Any], timeout: float, where: str = "") -> float:
    """How long `predicate` took to come true (fails the test at `timeout`,
    saying `where`)."""
    start = time.monotonic()
    try:
        wait_until(predicate, timeout)
    except pytest.fail.Exception as exc:
        pytest.fail(f"{where}: {exc}")
    return time.monotonic() - start
