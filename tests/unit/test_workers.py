"""The worker group's fork, when the system stops giving processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fakerun.config.options import RunConfig
from fakerun.config.plan import plan
from fakerun.launcher.workers import ForkFailed, WorkerGroup
from fakerun.rank.process import RankSpec
from fakerun.world.topology import Topology


def refusing_after(started: int, pids: list[int]) -> Callable[[], int]:
    """os.fork for `started` calls (recording the pids), then EAGAIN, as
    Python raises it when `ulimit -u` or the pids run out."""
    def fork() -> int:
        if len(pids) == started:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        pid = os.fork()
        if pid:
            pids.append(pid)
        return pid
    return fork


def specs(tmp_path: Path, count: int) -> list[RankSpec]:
    return [RankSpec(r, r, 0, f"ipc://{tmp_path}/nobody-listens", "token", "run", {}, os.getpid(),
                     str(tmp_path / f"{r}.out"), str(tmp_path / f"{r}.err"), 0) for r in range(count)]


def test_a_refused_fork_stops_the_ranks_started(tmp_path: Path):
    pids: list[int] = []
    with pytest.raises(ForkFailed, match=r"^cannot start rank 2: fork: Resource temporarily unavailable "
                                         r".*the 2 ranks started were stopped$"):
        WorkerGroup.fork(specs(tmp_path, 4), plan(RunConfig(Topology(1, 4), max_steps=3)),
                         refusing_after(2, pids))
    assert len(pids) == 2
    for pid in pids:  # killed and reaped already: not even a zombie is left
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    for path in tmp_path.glob("*.err"):  # the ranks said nothing
        assert path.read_text() == ""
