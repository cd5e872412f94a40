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
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

import fakerun
from tests.conftest import Runner, wait_until

T = TypeVar("T")

SEED = int(os.environ.get("FAKERUN_RELIABILITY_SEED", "7"))
SCENARIO_TIMEOUT_S = 120.0  # a scenario started ahead of its test (each job has bounds of its own)


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


class Started:
    """A test's jobs, started before the test (see started_together): its
    result() is what the test's scenario returned, once the runner's checks
    (no launcher still running, no process of the jobs left) have passed."""

    def __init__(self, future: Future[Any], runner: Runner) -> None:
        self.future, self.runner = future, runner

    def result(self, timeout: float = SCENARIO_TIMEOUT_S) -> Any:
        left = None
        try:
            value = self.future.result(timeout)  # the scenario's own failure, as raised there
            still = [job.proc.pid for job in self.runner.jobs if job.proc.poll() is None]
            assert not still, f"launchers {still} still running after the test"
            left = self.runner.leftovers()
            assert not left, f"processes of the job left behind: {left}"
            return value
        finally:
            self.runner.cleanup(left)


def started_together(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                     scenarios: dict[str, Callable[[Runner], Any]]) -> Iterator[dict[str, Started]]:
    """A module fixture's body, for tests whose jobs mostly wait (for a
    random moment, a bound, a timeout to pass): each test's scenario, in a
    thread with a runner of its own, all started with the module's first
    test, so that their waits pass side by side rather than one after the
    other. Each test takes its own result and makes its own assertions.
    Only the tests to run are started. Threads: the scenarios start their
    jobs with Popen, and must not fork otherwise."""
    selected = {item.name for item in request.session.items}
    chosen = {name: scenario for name, scenario in scenarios.items() if name in selected}
    runners = {name: Runner(tmp_path_factory.mktemp(name[:40])) for name in chosen}
    with ThreadPoolExecutor(max(1, len(chosen))) as pool:
        try:
            yield {name: Started(pool.submit(scenario, runners[name]), runners[name])
                   for name, scenario in chosen.items()}
        finally:
            for runner in runners.values():
                runner.cleanup()  # a scenario still running ends here, its jobs killed


def seconds_until(predicate: Callable[[], Any], timeout: float, where: str = "") -> float:
    """How long `predicate` took to come true (fails the test at `timeout`,
    saying `where`)."""
    start = time.monotonic()
    try:
        wait_until(predicate, timeout)
    except pytest.fail.Exception as exc:
        pytest.fail(f"{where}: {exc}")
    return time.monotonic() - start
