"""The reliability tier: faults injected at seeded-random moments.

Every random choice (which rank, which moment, which bytes) comes from
`rng(name)`, seeded by $FAKERUN_RELIABILITY_SEED (default 7): a failure
names its seed, and the same seed picks the same moments again (where the
signal then lands still depends on the machine's timing).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import py_compile
import random
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

import fakerun
from tests.conftest import wait_until

T = TypeVar("T")

SEED = int(os.environ.get("FAKERUN_RELIABILITY_SEED", "7"))


@pytest.fixture(scope="session", autouse=True)
def fakerun_bytecode() -> Iterator[None]:
    """The tier starts some four hundred fakerun interpreters. With
    $PYTHONDONTWRITEBYTECODE set (as on the shared test machine) none of
    them writes fakerun's bytecode, so each compiled its ~90 modules from
    source again: ~0.09 s of CPU per start. Compiled once here instead, as
    an installed copy is at install time (the flag still keeps the jobs
    from writing any), and removed again after the session: the tree is
    left as it was found. Where bytecode is written anyway, or the tree is
    read-only, this does nothing."""
    made: list[Path] = []
    if sys.flags.dont_write_bytecode and sys.pycache_prefix is None:
        for source in Path(fakerun.__file__).parent.rglob("*.py"):
            cached = Path(importlib.util.cache_from_source(str(source)))
            if cached.exists():
                continue  # someone's own: left alone (a stale one is not used)
            with contextlib.suppress(OSError, py_compile.PyCompileError):
                py_compile.compile(str(source), cfile=str(cached), doraise=True)
                made.append(cached)
    yield
    for cached in made:
        with contextlib.suppress(OSError):
            cached.unlink()
        with contextlib.suppress(OSError):
            cached.parent.rmdir()  # only once empty: a __pycache__ of ours


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
